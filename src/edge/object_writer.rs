//! Writes one R2 object from bytes produced in order, holding at most one part in memory.
//!
//! Everything that fits in one part is a single put; anything larger becomes a multipart
//! upload of equal parts (R2 wants every part but the last the same size, 5 MiB at least).
//! Until `finish` completes, readers keep seeing the previous object whole.

use worker::{Bucket, HttpMetadata, MultipartUpload, UploadedPart};

pub struct ObjectWriter<'a> {
    bucket: &'a Bucket,
    key: String,
    content_type: &'static str,
    part_bytes: usize,
    buf: Vec<u8>,
    upload: Option<MultipartUpload>,
    parts: Vec<UploadedPart>,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(
        bucket: &'a Bucket,
        key: String,
        content_type: &'static str,
        part_bytes: usize,
    ) -> Self {
        Self {
            bucket,
            key,
            content_type,
            part_bytes,
            buf: Vec::new(),
            upload: None,
            parts: Vec::new(),
        }
    }

    fn metadata(&self) -> HttpMetadata {
        HttpMetadata {
            content_type: Some(self.content_type.into()),
            ..Default::default()
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> worker::Result<()> {
        self.buf.extend_from_slice(bytes);
        // Strictly more than a part: an object of exactly one part stays a single put.
        while self.buf.len() > self.part_bytes {
            let rest = self.buf.split_off(self.part_bytes);
            let part = std::mem::replace(&mut self.buf, rest);
            self.upload_part(part).await?;
        }
        Ok(())
    }

    async fn upload_part(&mut self, part: Vec<u8>) -> worker::Result<()> {
        if self.upload.is_none() {
            let upload = self
                .bucket
                .create_multipart_upload(self.key.clone())
                .http_metadata(self.metadata())
                .execute()
                .await?;
            self.upload = Some(upload);
        }
        let upload = self.upload.as_ref().expect("created above");
        let number = self.parts.len() as u16 + 1;
        match upload.upload_part(number, part).await {
            Ok(uploaded) => {
                self.parts.push(uploaded);
                Ok(())
            }
            Err(error) => {
                let _ = upload.abort().await;
                Err(error)
            }
        }
    }

    /// The number of parts written, for logs: 0 for a single put.
    pub async fn finish(mut self) -> worker::Result<usize> {
        let Some(upload) = self.upload.take() else {
            let metadata = self.metadata();
            self.bucket
                .put(self.key, std::mem::take(&mut self.buf))
                .http_metadata(metadata)
                .execute()
                .await?;
            return Ok(0);
        };
        self.upload = Some(upload);
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.upload_part(last).await?;
        }
        let upload = self.upload.take().expect("still there");
        let count = self.parts.len();
        upload.complete(self.parts).await?;
        Ok(count)
    }
}
