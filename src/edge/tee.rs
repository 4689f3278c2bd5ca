//! A body split by the runtime: one branch to store, two hashed by the runtime's own digest
//! streams (`crypto.DigestStream`, SHA-256 and MD5), and one for wasm to read as far as it
//! needs. The bytes reach storage and the digests without being copied into wasm.

use js_sys::{Array, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStream, ReadableStreamDefaultReader};
use worker::worker_sys::DigestStream;

/// The branches of one body.
pub struct Split {
    /// Every byte, for storage.
    pub store: ReadableStream,
    /// Every byte, for wasm to read.
    pub read: Chunks,
    pub digests: Digesting,
}

/// Splits `body` into its branches; the digests are computed as the branches are read.
pub fn split(body: &ReadableStream) -> Split {
    let (store, rest) = tee(body);
    let (for_sha256, rest) = tee(&rest);
    let (for_md5, read) = tee(&rest);
    let sha256 = DigestStream::new("SHA-256");
    let md5 = DigestStream::new("MD5");
    let piped = Promise::all(&Array::of2(
        &for_sha256.pipe_to(&sha256),
        &for_md5.pipe_to(&md5),
    ));
    let reader = read
        .get_reader()
        .unchecked_into::<ReadableStreamDefaultReader>();
    Split {
        store,
        read: Chunks { reader },
        digests: Digesting { sha256, md5, piped },
    }
}

fn tee(stream: &ReadableStream) -> (ReadableStream, ReadableStream) {
    let branches = stream.tee();
    (
        branches.get(0).unchecked_into(),
        branches.get(1).unchecked_into(),
    )
}

/// The runtime's digests of a body, ready once it has been read to its end.
pub struct Digesting {
    sha256: DigestStream,
    md5: DigestStream,
    piped: Promise,
}

impl Digesting {
    /// The SHA-256 and MD5 of every byte, in hex; fails when the body broke off.
    pub async fn finish(self) -> worker::Result<(String, String)> {
        JsFuture::from(self.piped).await?;
        let sha256 = JsFuture::from(self.sha256.digest()).await?;
        let md5 = JsFuture::from(self.md5.digest()).await?;
        Ok((hex_of(&sha256), hex_of(&md5)))
    }
}

fn hex_of(digest: &JsValue) -> String {
    hex::encode(Uint8Array::new(digest).to_vec())
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
