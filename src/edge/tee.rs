//! A body split by the runtime (`ReadableStream.tee`): one branch to store, one for wasm to
//! read as far as it needs, and branches hashed by the runtime's digest streams
//! (`crypto.DigestStream`). The bytes reach storage and the digests without being copied into
//! wasm.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStream, ReadableStreamDefaultReader};
use worker::worker_sys::DigestStream;

/// The branches of one body.
pub struct Split {
    /// Every byte, for storage; unread until the store starts, the runtime holding what the
    /// other branch has read ahead.
    pub store: ReadableStream,
    /// Every byte, for wasm to read.
    pub read: Chunks,
}

/// Splits `body` into its branches.
pub fn split(body: &ReadableStream) -> Split {
    let (store, read) = branch(body);
    Split {
        store,
        read: Chunks::of(&read),
    }
}

/// Two branches of `stream`, each with every byte.
pub fn branch(stream: &ReadableStream) -> (ReadableStream, ReadableStream) {
    let branches = stream.tee();
    (
        branches.get(0).unchecked_into(),
        branches.get(1).unchecked_into(),
    )
}

/// The runtime's digest of a branch, ready once the branch has been read to its end.
pub struct Digest {
    digest: DigestStream,
    piped: JsFuture,
}

impl Digest {
    /// Hashes `stream` with `algorithm` (`"SHA-256"`, `"MD5"`).
    pub fn of(stream: &ReadableStream, algorithm: &str) -> Self {
        let digest = DigestStream::new(algorithm);
        let piped = JsFuture::from(stream.pipe_to(&digest));
        Self { digest, piped }
    }

    /// In hex; fails when the body broke off.
    pub async fn finish(self) -> worker::Result<String> {
        self.piped.await?;
        let digest = JsFuture::from(self.digest.digest()).await?;
        Ok(hex::encode(Uint8Array::new(&digest).to_vec()))
    }
}

/// A branch read chunk by chunk, each chunk left in JS until some of it is asked for.
pub struct Chunks {
    reader: ReadableStreamDefaultReader,
}

impl Chunks {
    pub fn of(stream: &ReadableStream) -> Self {
        Self {
            reader: stream.get_reader().unchecked_into(),
        }
    }

    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> worker::Result<Option<Uint8Array>> {
        let result = JsFuture::from(self.reader.read()).await?;
        if Reflect::get(&result, &"done".into())?.is_truthy() {
            return Ok(None);
        }
        Ok(Some(
            Reflect::get(&result, &"value".into())?.unchecked_into(),
        ))
    }

    /// Stops reading; the other branches flow on.
    pub fn cancel(self) {
        // The promise settles once the branch is released; nothing waits for it.
        let _ = self.reader.cancel();
    }
}
