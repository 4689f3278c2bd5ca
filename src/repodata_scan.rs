//! Reads a repodata.json as it streams in, one record at a time: a push scanner that is fed the
//! document's bytes in whatever chunks they arrive and hands back each `"<filename>": {record}`
//! entry of `packages` and `packages.conda` as the record's own bytes, for serde_json to read.
//! A run_exports.json has the same shape (its entries are `{"run_exports": {…}}`) and is read
//! alike.
//!
//! Memory is bounded by the largest single value it keeps (a record, a file name, `info`), not
//! by the document: other top-level values (`removed`, `repodata_version`, …) are skipped
//! without being kept. A value larger than the bound, bytes that are not JSON where the
//! structure needs them, or a document that ends early is an error naming what and where.

use crate::mirror::RECORD_MAPS;

/// One record of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    /// `packages` or `packages.conda`.
    pub map: &'static str,
    pub filename: String,
    /// The record's JSON text, as the document has it.
    pub bytes: Vec<u8>,
}

/// Why a document could not be read; the message is a sentence for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScanError(pub String);

/// Where the scanner is in the document's structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `{`.
    Start,
    /// After `{` or `,` of the top level: a key (or `}` after `{`).
    TopKey {
        first: bool,
    },
    /// After a top-level key: its `:`.
    TopColon,
    /// A top-level value: a record map's `{`, or any value to keep or skip.
    TopValue,
    /// After a top-level value: `,` or `}`.
    TopNext,
    /// Inside a record map, after `{` or `,`: a file name (or `}` after `{`).
    MapKey {
        first: bool,
    },
    MapColon,
    /// A record: `{`.
    MapValue,
    MapNext,
    /// After the closing `}`: only whitespace.
    End,
}

/// A JSON value or string being read, byte by byte, kept or skipped.
#[derive(Debug, Default)]
struct Value {
    bytes: Vec<u8>,
    keep: bool,
    /// Nesting of `{` and `[`; 0 for a string or scalar value.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// A number, `true`, `false` or `null`: ends before the first byte that is none of it.
    scalar: bool,
    len: usize,
}

/// What one byte did to a [`Value`].
enum Step {
    More,
    /// The value ended with this byte.
    Done,
    /// The value ended before this byte, which the structure must read.
    DoneBefore,
}

impl Value {
    fn start(keep: bool) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    /// Reads one byte; `what` names the value in an error (called only then).
    fn push(&mut self, b: u8, max: usize, what: impl Fn() -> String) -> Result<Step, ScanError> {
        if self.scalar && !(b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return Ok(Step::DoneBefore);
        }
        self.len += 1;
        if self.len > max {
            return Err(ScanError(format!(
                "{} is larger than {max} bytes, the most one may have \
                 (MIRROR_MAX_RECORD_BYTES)",
                what()
            )));
        }
        if self.keep {
            self.bytes.push(b);
        }
        if self.len == 1 {
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth = 1,
                b if b.is_ascii_alphanumeric() || b == b'-' => self.scalar = true,
                _ => return Err(ScanError(format!("{} starts with {}", what(), shown(b)))),
            }
            return Ok(Step::More);
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 0 {
                    return Ok(Step::Done);
                }
            }
            return Ok(Step::More);
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    return Ok(Step::Done);
                }
            }
            _ => {}
        }
        Ok(Step::More)
    }
}

/// Scans one repodata.json. Feed it every chunk in order ([`Self::feed`]), then [`Self::finish`].
#[derive(Debug)]
pub struct RepodataScanner {
    max_value: usize,
    state: State,
    /// The value being read, if one is.
    value: Option<Value>,
    /// The last top-level key read.
    key: String,
    /// The record map being read.
    map: Option<&'static str>,
    filename: String,
    info: Option<Vec<u8>>,
    offset: u64,
}

/// What the scanner kept of the document besides its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The `info` object's JSON text, if the document has one.
    pub info: Option<Vec<u8>>,
}

impl RepodataScanner {
    /// A scanner that refuses any record, file name or `info` larger than `max_value` bytes.
    pub fn new(max_value: usize) -> Self {
        Self {
            max_value,
            state: State::Start,
            value: None,
            key: String::new(),
            map: None,
            filename: String::new(),
            info: None,
            offset: 0,
        }
    }

    /// Reads the next chunk of the document; answers the records it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<ScannedRecord>, ScanError> {
        let mut records = Vec::new();
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if self.byte(b, &mut records)? {
                i += 1;
                self.offset += 1;
            }
        }
        Ok(records)
    }

    /// Ends the document: an error unless it was complete.
    pub fn finish(mut self) -> Result<Scanned, ScanError> {
        // A top-level scalar ends only at the byte after it; the document cannot end in one.
        if self.state != State::End {
            return Err(ScanError(format!(
                "the document ends after {} bytes, before its end: it is truncated",
                self.offset
            )));
        }
        Ok(Scanned {
            info: self.info.take(),
        })
    }

    /// Reads one byte; answers whether it was consumed (a scalar's end is read again).
    fn byte(&mut self, b: u8, records: &mut Vec<ScannedRecord>) -> Result<bool, ScanError> {
        if let Some(value) = &mut self.value {
            let (state, key, filename) = (self.state, &self.key, &self.filename);
            let what = || match state {
                State::TopKey { .. } => "a top-level key".to_owned(),
                State::TopValue => format!("the value of '{key}'"),
                State::MapKey { .. } => "a file name".to_owned(),
                _ => format!("the record of '{filename}'"),
            };
            let step = value.push(b, self.max_value, what)?;
            let consumed = match step {
                Step::More => return Ok(true),
                Step::Done => true,
                Step::DoneBefore => false,
            };
            let value = self.value.take().expect("a value is being read");
            self.value_done(value, records)?;
            return Ok(consumed);
        }
        if b.is_ascii_whitespace() {
            return Ok(true);
        }
        let unexpected = |wanted: &str| {
            ScanError(format!(
                "the document is not shaped as repodata: {} at byte {} where {wanted} belongs",
                shown(b),
                self.offset
            ))
        };
        self.state = match (self.state, b) {
            (State::Start, b'{') => State::TopKey { first: true },
            (State::Start, _) => return Err(unexpected("'{'")),
            (State::TopKey { first: true }, b'}') => State::End,
            (State::TopKey { .. }, b'"') => {
                self.value = Some(Value::start(true));
                return Ok(false);
            }
            (State::TopKey { .. }, _) => return Err(unexpected("a key")),
            (State::TopColon, b':') => State::TopValue,
            (State::TopColon, _) => return Err(unexpected("':'")),
            (State::TopValue, b'{') if self.map.is_some() => State::MapKey { first: true },
            (State::TopValue, _) if self.map.is_some() => {
                return Err(unexpected(&format!("the object of '{}'", self.key)))
            }
            (State::TopValue, _) => {
                self.value = Some(Value::start(self.key == "info"));
                return Ok(false);
            }
            (State::TopNext, b',') => State::TopKey { first: false },
            (State::TopNext, b'}') => State::End,
            (State::TopNext, _) => return Err(unexpected("',' or '}'")),
            (State::MapKey { first: true }, b'}') => {
                self.map = None;
                State::TopNext
            }
            (State::MapKey { .. }, b'"') => {
                self.value = Some(Value::start(true));
                return Ok(false);
            }
            (State::MapKey { .. }, _) => return Err(unexpected("a file name")),
            (State::MapColon, b':') => State::MapValue,
            (State::MapColon, _) => return Err(unexpected("':'")),
            (State::MapValue, b'{') => {
                self.value = Some(Value::start(true));
                return Ok(false);
            }
            (State::MapValue, _) => {
                return Err(unexpected(&format!("the record of '{}'", self.filename)))
            }
            (State::MapNext, b',') => State::MapKey { first: false },
            (State::MapNext, b'}') => {
                self.map = None;
                State::TopNext
            }
            (State::MapNext, _) => return Err(unexpected("',' or '}'")),
            (State::End, _) => return Err(unexpected("nothing")),
        };
        Ok(true)
    }

    fn value_done(
        &mut self,
        value: Value,
        records: &mut Vec<ScannedRecord>,
    ) -> Result<(), ScanError> {
        let string = |bytes: &[u8]| {
            serde_json::from_slice::<String>(bytes)
                .map_err(|e| ScanError(format!("a key of the document is not a string: {e}")))
        };
        self.state = match self.state {
            State::TopKey { .. } => {
                self.key = string(&value.bytes)?;
                self.map = RECORD_MAPS.iter().copied().find(|map| *map == self.key);
                State::TopColon
            }
            State::TopValue => {
                if self.key == "info" {
                    self.info = Some(value.bytes);
                }
                State::TopNext
            }
            State::MapKey { .. } => {
                self.filename = string(&value.bytes)?;
                State::MapColon
            }
            State::MapValue => {
                records.push(ScannedRecord {
                    map: self.map.expect("a record is read inside a record map"),
                    filename: std::mem::take(&mut self.filename),
                    bytes: value.bytes,
                });
                State::MapNext
            }
            other => other,
        };
        Ok(())
    }
}

fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}
