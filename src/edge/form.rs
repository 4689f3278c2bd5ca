//! The stream plumbing of an upload sent as `multipart/form-data`: the body is read up to its
//! `file` part, whose content then streams on as it is stored, and the fields around it stay
//! readable. Which bytes are the file's and which a field's is decided by
//! [`crate::multipart::FileForm`].

use std::{cell::RefCell, pin::Pin, rc::Rc};

use futures_util::{stream, Stream, StreamExt};
use worker::ByteStream;

use super::error::{ApiError, ApiResult};
use crate::multipart::{FileForm, PartHeaders, SmallParts};

/// The bytes of a body, or of one part of it, as they arrive.
pub type BodyStream = Pin<Box<dyn Stream<Item = worker::Result<Vec<u8>>>>>;

/// A form's `file` part.
pub struct FilePart {
    pub headers: PartHeaders,
    /// Known when the part says it, or when it ended in the first chunk read.
    pub length: Option<u64>,
    pub bytes: BodyStream,
}

/// The body and its reader, once the file part's stream has let go of them.
struct Reading {
    body: ByteStream,
    form: FileForm,
}

/// The fields of a form around its file part.
pub struct Fields {
    /// Left here by the file part's stream in the step that reads the part's end, with its
    /// last bytes: a consumer that stops once it has the announced length still leaves it.
    after_file: Rc<RefCell<Option<Reading>>>,
}

impl Fields {
    /// A field read so far: those before the file part, once its content has been consumed.
    pub fn before_file(&self, name: &str) -> Option<Vec<u8>> {
        let reading = self.after_file.borrow();
        reading.as_ref()?.form.field(name).map(<[u8]>::to_vec)
    }

    /// The fields of the whole body; call once the file's content has been consumed.
    pub async fn all(self) -> ApiResult<SmallParts> {
        let after_file = self.after_file.borrow_mut().take();
        let Some(Reading { mut body, mut form }) = after_file else {
            return Err(ApiError::bad_request("the file part does not end"));
        };
        while !form.is_done() {
            let Some(chunk) = body.next().await else {
                break;
            };
            let chunk = chunk.map_err(|_| ApiError::broken_off())?;
            form.feed(&chunk).map_err(ApiError::bad_request)?;
        }
        form.into_fields().map_err(ApiError::bad_request)
    }
}

/// Reads a form body of `total_length` bytes up to the start of its `file` part.
pub async fn file_part(
    mut body: ByteStream,
    boundary: &str,
    total_length: u64,
) -> ApiResult<(FilePart, Fields)> {
    let mut form = FileForm::new(boundary);
    loop {
        // The stream fails only when the client's connection breaks off mid-body.
        let chunk = body
            .next()
            .await
            .transpose()
            .map_err(|_| ApiError::short_body(total_length))?
            .ok_or_else(|| ApiError::bad_request("the multipart body has no 'file' part"))?;
        let mut first = form.feed(&chunk).map_err(ApiError::bad_request)?;
        let length = first.file_length().map_err(ApiError::bad_request)?;
        let Some(headers) = first.start.take() else {
            continue;
        };
        let after_file = Rc::new(RefCell::new(None));
        let reading = Reading { body, form };
        let rest = if first.ended {
            *after_file.borrow_mut() = Some(reading);
            None
        } else {
            Some(reading)
        };
        let bytes = stream::iter([Ok(first.data)]).chain(rest_of_file(rest, after_file.clone()));
        let part = FilePart {
            headers,
            length,
            bytes: Box::pin(bytes),
        };
        return Ok((part, Fields { after_file }));
    }
}

/// The rest of the file part's content, ending where the part ends.
fn rest_of_file(
    reading: Option<Reading>,
    after_file: Rc<RefCell<Option<Reading>>>,
) -> impl Stream<Item = worker::Result<Vec<u8>>> {
    stream::unfold(reading, move |reading| {
        let after_file = after_file.clone();
        async move {
            let Reading { mut body, mut form } = reading?;
            let chunk = match body.next().await? {
                Ok(chunk) => chunk,
                Err(error) => return Some((Err(error), None)),
            };
            let file = match form.feed(&chunk) {
                Ok(file) => file,
                Err(message) => return Some((Err(worker::Error::RustError(message)), None)),
            };
            let reading = Reading { body, form };
            if file.ended {
                *after_file.borrow_mut() = Some(reading);
                return Some((Ok(file.data), None));
            }
            Some((Ok(file.data), Some(reading)))
        }
    })
}
