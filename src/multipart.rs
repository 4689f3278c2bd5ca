//! A push-based `multipart/form-data` reader for upload bodies.
//!
//! The upload's file part is streamed straight to storage, so the body is parsed as chunks
//! arrive: small parts (such as an attestation) and all part headers are kept, the file part's
//! content is handed on as it is found.

use std::collections::HashMap;

/// The most header and small-part bytes kept; the file itself is never kept.
const MAX_KEPT: usize = 256 * 1024;
/// The most parts a body may have: an upload's form has a file, an attestation and a few
/// fields; thousands of empty parts would only cost the reader.
pub const MAX_PARTS: usize = 32;

/// What one call to [`MultipartReader::feed`] found, in body order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A part begins; header names are lowercase.
    PartStart(PartHeaders),
    /// Content of the current part.
    Data(Vec<u8>),
    /// The current part ended.
    PartEnd,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders {
    pub headers: HashMap<String, String>,
}

impl PartHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `name` parameter of Content-Disposition.
    pub fn field_name(&self) -> Option<&str> {
        self.disposition_param("name")
    }

    /// The `filename` parameter of Content-Disposition.
    pub fn file_name(&self) -> Option<&str> {
        self.disposition_param("filename")
    }

    /// The part's `Content-Length`, if it has one.
    pub fn content_length(&self) -> Result<Option<u64>, String> {
        self.get("content-length")
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| "the file part's Content-Length is not a number".to_string())
            })
            .transpose()
    }

    /// The name and claimed SHA-256 of an upload's file part: its `X-File-Name` header (else
    /// the disposition's file name) and its `X-File-SHA256` header.
    pub fn upload_naming(&self) -> Result<(String, String), String> {
        let filename = self
            .get("x-file-name")
            .or(self.file_name())
            .ok_or("the file part has no X-File-Name header")?;
        let sha256 = self
            .get("x-file-sha256")
            .ok_or("the file part has no X-File-SHA256 header")?;
        Ok((filename.to_owned(), sha256.to_owned()))
    }

    fn disposition_param(&self, key: &str) -> Option<&str> {
        self.get("content-disposition")?
            .split(';')
            .skip(1)
            .find_map(|param| {
                let (k, v) = param.trim().split_once('=')?;
                (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"'))
            })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before the first boundary (a preamble is allowed and ignored).
    Preamble,
    Headers,
    Body,
    /// After the closing boundary.
    Done,
}

pub struct MultipartReader {
    /// `\r\n--<boundary>`: what ends a part's content.
    delimiter: Vec<u8>,
    state: State,
    buf: Vec<u8>,
    /// Parts begun so far.
    parts: usize,
}

impl MultipartReader {
    pub fn new(boundary: &str) -> Self {
        Self {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            state: State::Preamble,
            // The body starts with the delimiter minus its CRLF; pretend one came before it.
            buf: b"\r\n".to_vec(),
            parts: 0,
        }
    }

    /// The boundary of a `multipart/form-data` Content-Type, if it is one.
    pub fn boundary_of(content_type: &str) -> Option<&str> {
        let mut parts = content_type.split(';');
        if !parts
            .next()?
            .trim()
            .eq_ignore_ascii_case("multipart/form-data")
        {
            return None;
        }
        parts.find_map(|param| {
            let (k, v) = param.trim().split_once('=')?;
            let v = v.trim().trim_matches('"');
            (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= 70)
                .then_some(v)
        })
    }

    /// Bytes fed but not yet handed out in an event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        let mut events = Vec::new();
        if self.state == State::Done {
            return Ok(events);
        }
        self.buf.extend_from_slice(chunk);
        loop {
            match self.state {
                State::Preamble => match find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        self.buf.drain(..at + self.delimiter.len());
                        self.state = State::Headers;
                    }
                    None => {
                        let keep = self.delimiter.len() - 1;
                        if self.buf.len() > MAX_KEPT {
                            return Err("the multipart body has no boundary line".into());
                        }
                        let cut = self.buf.len().saturating_sub(keep);
                        self.buf.drain(..cut);
                        return Ok(events);
                    }
                },
                State::Headers => {
                    // After a delimiter: "--" closes the body, otherwise CRLF and headers.
                    if self.buf.len() < 2 {
                        return Ok(events);
                    }
                    if self.buf.starts_with(b"--") {
                        self.state = State::Done;
                        self.buf.clear();
                        return Ok(events);
                    }
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        if self.buf.len() > MAX_KEPT {
                            return Err("a multipart part's headers are too long".into());
                        }
                        return Ok(events);
                    };
                    self.parts += 1;
                    if self.parts > MAX_PARTS {
                        return Err(format!(
                            "the multipart body has more than {MAX_PARTS} parts"
                        ));
                    }
                    let block = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    self.buf.drain(..end + 4);
                    events.push(Event::PartStart(parse_headers(&block)?));
                    self.state = State::Body;
                }
                State::Body => match find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        if at > 0 {
                            events.push(Event::Data(self.buf[..at].to_vec()));
                        }
                        self.buf.drain(..at + self.delimiter.len());
                        events.push(Event::PartEnd);
                        self.state = State::Headers;
                    }
                    None => {
                        // Hold back what could be the start of a delimiter.
                        let safe = self.buf.len().saturating_sub(self.delimiter.len() - 1);
                        if safe > 0 {
                            events.push(Event::Data(self.buf.drain(..safe).collect()));
                        }
                        return Ok(events);
                    }
                },
                State::Done => return Ok(events),
            }
        }
    }
}

/// The small parts of a body (form fields, an attestation) gathered from its events, by
/// field name; at most [`MAX_KEPT`] bytes of them in all.
#[derive(Debug, Default)]
pub struct SmallParts {
    parts: Vec<(String, Vec<u8>)>,
    current: Option<(String, Vec<u8>)>,
    kept: usize,
}

impl SmallParts {
    pub fn feed(&mut self, events: impl IntoIterator<Item = Event>) -> Result<(), String> {
        for event in events {
            match event {
                Event::PartStart(headers) => {
                    let name = headers.field_name().unwrap_or_default().to_owned();
                    self.current = Some((name, Vec::new()));
                }
                Event::Data(data) => {
                    self.kept += data.len();
                    if self.kept > MAX_KEPT {
                        return Err("the multipart body's fields are too large".into());
                    }
                    if let Some((_, content)) = &mut self.current {
                        content.extend(data);
                    }
                }
                Event::PartEnd => self.parts.extend(self.current.take()),
            }
        }
        Ok(())
    }

    /// The content of the complete part named `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.parts
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, content)| content.as_slice())
    }
}

/// A form read around its `file` part: the small parts before and after it are kept, the
/// file's content is handed on as it comes.
pub struct FileForm {
    reader: MultipartReader,
    fields: SmallParts,
    phase: Phase,
}

/// Where the reader is, relative to the file part.
enum Phase {
    Before,
    Within,
    /// What the chunk that ended the file held beyond it: read into the fields with the rest
    /// of the body, so the fields seen until then are those before the file.
    After(Vec<Event>),
}

/// What of the file part one chunk of the body held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileChunk {
    /// The part's headers, in the chunk where it begins.
    pub start: Option<PartHeaders>,
    pub data: Vec<u8>,
    /// Whether the part ended in this chunk.
    pub ended: bool,
}

impl FileChunk {
    /// The file's length as its first chunk tells it: the part's Content-Length, or what the
    /// chunk held when the part ended in it; unknown otherwise, since other parts may follow.
    pub fn file_length(&self) -> Result<Option<u64>, String> {
        let declared = match &self.start {
            Some(headers) => headers.content_length()?,
            None => None,
        };
        Ok(declared.or(self.ended.then_some(self.data.len() as u64)))
    }
}

impl FileForm {
    pub fn new(boundary: &str) -> Self {
        Self {
            reader: MultipartReader::new(boundary),
            fields: SmallParts::default(),
            phase: Phase::Before,
        }
    }

    /// Reads a chunk of the body: what it holds of the file part is returned, the rest is kept
    /// among the fields.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<FileChunk, String> {
        let mut events = self.reader.feed(chunk)?;
        let mut file = FileChunk::default();
        if let Phase::Before = self.phase {
            let Some(at) = events
                .iter()
                .position(|e| matches!(e, Event::PartStart(h) if h.field_name() == Some("file")))
            else {
                self.fields.feed(events)?;
                return Ok(file);
            };
            let mut rest = events.split_off(at).into_iter();
            self.fields.feed(events)?;
            if let Some(Event::PartStart(headers)) = rest.next() {
                file.start = Some(headers);
            }
            self.phase = Phase::Within;
            events = rest.collect();
        }
        match &mut self.phase {
            Phase::Within => {
                let mut beyond = Vec::new();
                for event in events {
                    match event {
                        Event::Data(data) if !file.ended => file.data.extend(data),
                        Event::PartEnd if !file.ended => file.ended = true,
                        other => beyond.push(other),
                    }
                }
                if file.ended {
                    self.phase = Phase::After(beyond);
                }
            }
            Phase::After(beyond) => {
                self.fields.feed(std::mem::take(beyond))?;
                self.fields.feed(events)?;
            }
            Phase::Before => unreachable!("left above"),
        }
        Ok(file)
    }

    /// Whether the closing boundary has been read.
    pub fn is_done(&self) -> bool {
        self.reader.is_done()
    }

    /// A complete small part read so far: before the file, until the body after it is read.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.get(name)
    }

    /// The small parts of all that was read.
    pub fn into_fields(mut self) -> Result<SmallParts, String> {
        if let Phase::After(beyond) = &mut self.phase {
            self.fields.feed(std::mem::take(beyond))?;
        }
        Ok(self.fields)
    }
}

fn parse_headers(block: &str) -> Result<PartHeaders, String> {
    let mut headers = HashMap::new();
    // The block starts right after the delimiter, so its first line is the rest of it.
    for line in block.split("\r\n").skip(1) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| "a multipart part has a malformed header line".to_string())?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Ok(PartHeaders { headers })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    // Jump between occurrences of the first byte: file content rarely holds it next to the rest.
    let mut from = 0;
    while let Some(offset) = haystack.get(from..)?.iter().position(|&b| b == needle[0]) {
        let at = from + offset;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Vec<u8> {
        let mut body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"attestation\"\r\n\r\n{\"a\":1}\r\n"
                .to_vec();
        body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x-1-0.conda\"\r\nX-File-SHA256: abc\r\n\r\n");
        body.extend_from_slice(&[b'-'; 300]);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    }

    fn collect(chunk: usize) -> (Vec<PartHeaders>, Vec<Vec<u8>>) {
        let mut reader = MultipartReader::new("XyZ");
        let (mut parts, mut contents) = (Vec::new(), Vec::new());
        for piece in body().chunks(chunk) {
            for event in reader.feed(piece).unwrap() {
                match event {
                    Event::PartStart(headers) => {
                        parts.push(headers);
                        contents.push(Vec::new());
                    }
                    Event::Data(data) => contents.last_mut().unwrap().extend(data),
                    Event::PartEnd => {}
                }
            }
        }
        assert!(reader.is_done());
        (parts, contents)
    }

    #[test]
    fn parts_and_content_whatever_the_chunking() {
        for chunk in [1, 2, 5, 64, 4096] {
            let (parts, contents) = collect(chunk);
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0].field_name(), Some("attestation"));
            assert_eq!(contents[0], b"{\"a\":1}");
            assert_eq!(parts[1].field_name(), Some("file"));
            assert_eq!(parts[1].file_name(), Some("x-1-0.conda"));
            assert_eq!(parts[1].get("x-file-sha256"), Some("abc"));
            assert_eq!(contents[1], vec![b'-'; 300]);
        }
    }

    #[test]
    fn small_parts_by_name() {
        let mut reader = MultipartReader::new("XyZ");
        let mut parts = SmallParts::default();
        for piece in body().chunks(7) {
            parts.feed(reader.feed(piece).unwrap()).unwrap();
        }
        assert_eq!(parts.get("attestation"), Some(&b"{\"a\":1}"[..]));
        assert_eq!(parts.get("file"), Some(&[b'-'; 300][..]));
        assert_eq!(parts.get("other"), None);
        let mut huge = SmallParts::default();
        let too_much = vec![Event::Data(vec![0; MAX_KEPT + 1])];
        assert!(huge.feed(too_much).is_err());
    }

    #[test]
    fn the_number_of_parts_is_limited() {
        let part = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n";
        let body = |parts: usize| [part.repeat(parts), b"--XyZ--\r\n".to_vec()].concat();
        let mut reader = MultipartReader::new("XyZ");
        let events = reader.feed(&body(MAX_PARTS)).unwrap();
        assert!(reader.is_done());
        assert_eq!(events.len(), MAX_PARTS * 3);
        let error = MultipartReader::new("XyZ")
            .feed(&body(MAX_PARTS + 1))
            .unwrap_err();
        assert!(error.contains("more than 32 parts"), "{error}");
    }

    /// Feeds `body` in chunks of `chunk` bytes: the file's headers, content and first-chunk
    /// length, and the fields seen before the file ended and at the end.
    fn split(body: &[u8], chunk: usize) -> (PartHeaders, Vec<u8>, Option<u64>, SmallParts) {
        let mut form = FileForm::new("XyZ");
        let (mut start, mut data, mut length) = (None, Vec::new(), None);
        for piece in body.chunks(chunk) {
            let file = form.feed(piece).unwrap();
            if file.start.is_some() {
                length = file.file_length().unwrap();
            }
            start = start.or(file.start);
            data.extend(file.data);
            if file.ended {
                // What came with the file's end is kept back for the reading of the rest.
                assert_eq!(form.field("after"), None);
            }
        }
        assert!(form.is_done());
        (start.unwrap(), data, length, form.into_fields().unwrap())
    }

    #[test]
    fn a_file_part_split_from_the_fields_around_it() {
        let mut body = body();
        body.truncate(body.len() - b"--XyZ--\r\n".len());
        body.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\nz\r\n--XyZ--\r\n",
        );
        for chunk in [1, 2, 5, 64, 4096] {
            let (headers, data, length, fields) = split(&body, chunk);
            assert_eq!(
                headers.upload_naming().unwrap(),
                ("x-1-0.conda".into(), "abc".into())
            );
            assert_eq!(data, vec![b'-'; 300]);
            // Whole in one chunk, the part's length is known from where it ends.
            assert_eq!(length, (chunk == 4096).then_some(300));
            assert_eq!(fields.get("attestation"), Some(&b"{\"a\":1}"[..]));
            assert_eq!(fields.get("after"), Some(&b"z"[..]));
            assert_eq!(fields.get("file"), None);
        }
    }

    #[test]
    fn a_file_part_of_declared_length() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Length: 3\r\nX-File-Name: a-1-0.conda\r\n\r\nabc\r\n--XyZ--\r\n";
        let (headers, data, length, _) = split(body, 1);
        assert_eq!(length, Some(3));
        assert_eq!(data, b"abc");
        assert_eq!(
            headers.upload_naming().unwrap_err(),
            "the file part has no X-File-SHA256 header"
        );
        let mut bad = PartHeaders::default();
        bad.headers.insert("content-length".into(), "x".into());
        assert!(bad.content_length().is_err());
        assert_eq!(
            PartHeaders::default().upload_naming().unwrap_err(),
            "the file part has no X-File-Name header"
        );
    }

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(
            MultipartReader::boundary_of("multipart/form-data; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(
            MultipartReader::boundary_of("application/octet-stream"),
            None
        );
        assert_eq!(MultipartReader::boundary_of("multipart/form-data"), None);
    }
}
