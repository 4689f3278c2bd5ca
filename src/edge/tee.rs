//! A body split by the runtime: one branch to store, one for wasm to read as far as it needs,
//! and, when no SHA-256 is claimed for R2 to check, one hashed by the runtime's digest stream
//! (`crypto.DigestStream`). The bytes reach storage and the digest without being copied into
//! wasm.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStream, ReadableStreamDefaultReader};
use worker::worker_sys::DigestStream;

/// The branches of one body.
pub struct Split {
    /// Every byte, for storage.
    pub store: ReadableStream,
    /// Every byte, for wasm to read.
    pub read: Chunks,
    pub sha256: Option<Sha256>,
}

/// Splits `body` into its branches, with a SHA-256 branch if `sha256`.
pub fn split(body: &ReadableStream, sha256: bool) -> Split {
    let (store, rest) = tee(body);
    let (read, sha256) = if sha256 {
        let (for_digest, read) = tee(&rest);
        let digest = DigestStream::new("SHA-256");
        let piped = JsFuture::from(for_digest.pipe_to(&digest));
        (read, Some(Sha256 { digest, piped }))
    } else {
        (rest, None)
    };
    let reader = read
        .get_reader()
        .unchecked_into::<ReadableStreamDefaultReader>();
    Split {
        store,
        read: Chunks { reader },
        sha256,
    }
}

fn tee(stream: &ReadableStream) -> (ReadableStream, ReadableStream) {
    let branches = stream.tee();
    (
        branches.get(0).unchecked_into(),
        branches.get(1).unchecked_into(),
    )
}

/// The runtime's SHA-256 of a body, ready once its branch has been read to the end.
pub struct Sha256 {
    digest: DigestStream,
    piped: JsFuture,
}

impl Sha256 {
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
