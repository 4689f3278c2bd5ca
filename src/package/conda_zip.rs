//! `.conda` packages: an uncompressed zip holding `metadata.json`, `info-*.tar.zst` and
//! `pkg-*.tar.zst` at its root.
//!
//! The zip is read front to back through its local file headers, so the whole file is never
//! needed at once. Only the small info component is kept and decompressed; the payload
//! component is skipped.

use std::io::Read;

use super::tar_scan::{InfoFiles, TarScanner};
use super::{ComponentNames, PackageError};
use crate::unzstd;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIR: u32 = 0x0605_4b50;
const FIXED_HEADER_LEN: usize = 30;
const MAX_METADATA: u64 = 64 * 1024;
const MAX_INFO_COMPRESSED: u64 = 32 * 1024 * 1024;
const MAX_INFO_DECOMPRESSED: u64 = 128 * 1024 * 1024;
/// The largest info component decoded in one piece (one whose zstd window is too large to
/// stream with): its memory is its size.
const MAX_INFO_WHOLE: u64 = 32 * 1024 * 1024;
/// The end-of-central-directory record is 22 bytes plus a comment of at most 64 KiB.
const MAX_TAIL: usize = 22 + 0xffff;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Component {
    Metadata,
    Info,
    Payload,
    Other,
}

enum State {
    Header,
    Data {
        remaining: u64,
        component: Component,
    },
    /// The central directory started: every entry was read. Its tail is kept to check that
    /// the archive ends with a complete end-of-central-directory record.
    CentralDirectory {
        tail: Vec<u8>,
    },
}

pub struct CondaScanner {
    state: State,
    buf: Vec<u8>,
    metadata: Option<Vec<u8>>,
    info: Option<InfoFiles>,
    /// The zip entry names of the info and payload components, once met.
    info_name: Option<String>,
    payload_name: Option<String>,
    entries: u64,
}

impl Default for CondaScanner {
    fn default() -> Self {
        Self {
            state: State::Header,
            buf: Vec::new(),
            metadata: None,
            info: None,
            info_name: None,
            payload_name: None,
            entries: 0,
        }
    }
}

impl CondaScanner {
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), PackageError> {
        while !data.is_empty() {
            match &mut self.state {
                State::CentralDirectory { tail } => {
                    tail.extend_from_slice(data);
                    if tail.len() > 2 * MAX_TAIL {
                        tail.drain(..tail.len() - MAX_TAIL);
                    }
                    return Ok(());
                }
                State::Header => {
                    let needed = self.header_len()?;
                    let take = (needed - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    // The length grows as the header reveals itself (signature, then name and
                    // extra lengths); the entry starts once it stops growing.
                    if self.buf.len() == needed && self.header_len()? == needed {
                        self.start_entry()?;
                    }
                }
                State::Data {
                    remaining,
                    component,
                } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    if matches!(component, Component::Metadata | Component::Info) {
                        self.buf.extend_from_slice(&data[..take]);
                    }
                    *remaining -= take as u64;
                    data = &data[take..];
                    if *remaining == 0 {
                        let component = *component;
                        self.finish_entry(component)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// How many of the next bytes are data of an entry that is stepped over unkept.
    pub fn skippable(&self) -> u64 {
        match self.state {
            State::Data {
                remaining,
                component: Component::Payload | Component::Other,
            } => remaining,
            _ => 0,
        }
    }

    /// Steps over `count` bytes of such an entry's data, at most [`Self::skippable`].
    pub fn skip(&mut self, count: u64) {
        if let State::Data {
            remaining,
            component: Component::Payload | Component::Other,
        } = &mut self.state
        {
            *remaining -= count.min(*remaining);
            if *remaining == 0 {
                self.state = State::Header;
            }
        }
    }

    /// The info component's `info/index.json`, once the component was read whole.
    pub fn index(&self) -> Option<&[u8]> {
        self.info.as_ref()?.index.as_deref()
    }

    pub fn finish(self) -> Result<(Vec<u8>, InfoFiles, ComponentNames), PackageError> {
        let State::CentralDirectory { tail } = &self.state else {
            return Err(PackageError::Corrupt(
                "the zip archive is truncated (no central directory)".into(),
            ));
        };
        match end_of_central_directory_entries(tail) {
            Some(entries) if entries == self.entries => {}
            Some(_) => {
                return Err(PackageError::Corrupt(
                    "the zip central directory does not list the entries the archive holds".into(),
                ))
            }
            None => {
                return Err(PackageError::Corrupt(
                    "the zip archive is truncated (no end of central directory)".into(),
                ))
            }
        }
        let (Some(info), Some(info_name)) = (self.info, self.info_name) else {
            return Err(PackageError::Invalid(
                "the .conda file has no info-*.tar.zst component".into(),
            ));
        };
        let payload_name = self.payload_name.ok_or_else(|| {
            PackageError::Invalid("the .conda file has no pkg-*.tar.zst component".into())
        })?;
        let metadata = self
            .metadata
            .ok_or_else(|| PackageError::Invalid("the .conda file has no metadata.json".into()))?;
        let components = ComponentNames {
            info: info_name,
            payload: payload_name,
        };
        Ok((metadata, info, components))
    }

    /// How many header bytes the current entry needs: the fixed part, then its name and extra.
    fn header_len(&self) -> Result<usize, PackageError> {
        if self.buf.len() < 4 {
            return Ok(4);
        }
        match le32(&self.buf[0..4]) {
            LOCAL_HEADER if self.buf.len() < FIXED_HEADER_LEN => Ok(FIXED_HEADER_LEN),
            LOCAL_HEADER => {
                let name_len = le16(&self.buf[26..28]) as usize;
                let extra_len = le16(&self.buf[28..30]) as usize;
                Ok(FIXED_HEADER_LEN + name_len + extra_len)
            }
            CENTRAL_HEADER | END_OF_CENTRAL_DIR => Ok(4),
            _ => Err(PackageError::Corrupt(
                "not a zip archive (bad entry signature)".into(),
            )),
        }
    }

    fn start_entry(&mut self) -> Result<(), PackageError> {
        let header = std::mem::take(&mut self.buf);
        if le32(&header[0..4]) != LOCAL_HEADER {
            self.state = State::CentralDirectory { tail: header };
            return Ok(());
        }
        self.entries += 1;
        let flags = le16(&header[6..8]);
        let method = le16(&header[8..10]);
        let name_len = le16(&header[26..28]) as usize;
        let name = std::str::from_utf8(&header[FIXED_HEADER_LEN..FIXED_HEADER_LEN + name_len])
            .map_err(|_| PackageError::Corrupt("a zip entry name is not UTF-8".into()))?
            .to_owned();
        let extra = &header[FIXED_HEADER_LEN + name_len..];
        let size = entry_size(&header, extra)?;
        if flags & 0x0008 != 0 && size == 0 {
            return Err(PackageError::Invalid(format!(
                "zip entry '{name}' has its size after the data; repack the package with conda-package-handling or rattler-build"
            )));
        }
        if name.contains('/') || name.contains('\\') {
            return Err(PackageError::Invalid(format!(
                "zip entry '{name}' is not at the archive root; a .conda file keeps its components at the root"
            )));
        }
        let component = match name.as_str() {
            "metadata.json" => Component::Metadata,
            n if n.starts_with("info-") && n.ends_with(".tar.zst") => Component::Info,
            n if n.starts_with("pkg-") && n.ends_with(".tar.zst") => Component::Payload,
            _ => Component::Other,
        };
        match component {
            Component::Metadata | Component::Info if method != 0 => {
                return Err(PackageError::Invalid(format!(
                    "zip entry '{name}' is compressed; .conda components are stored uncompressed"
                )))
            }
            Component::Metadata if size > MAX_METADATA => {
                return Err(PackageError::Invalid(
                    "metadata.json is larger than 64 KiB".into(),
                ))
            }
            Component::Info if size > MAX_INFO_COMPRESSED => {
                return Err(PackageError::Invalid(format!(
                    "the info component is larger than {} MiB",
                    MAX_INFO_COMPRESSED >> 20
                )))
            }
            Component::Metadata if self.metadata.is_some() => {
                return Err(PackageError::Invalid(
                    "the .conda file holds metadata.json twice".into(),
                ))
            }
            Component::Info if self.info_name.is_some() => {
                return Err(PackageError::Invalid(
                    "the .conda file holds more than one info component".into(),
                ))
            }
            Component::Payload if self.payload_name.is_some() => {
                return Err(PackageError::Invalid(
                    "the .conda file holds more than one pkg component".into(),
                ))
            }
            Component::Info => self.info_name = Some(name),
            Component::Payload => self.payload_name = Some(name),
            _ => {}
        }
        self.state = State::Data {
            remaining: size,
            component,
        };
        if size == 0 {
            self.finish_entry(component)?;
        }
        Ok(())
    }

    fn finish_entry(&mut self, component: Component) -> Result<(), PackageError> {
        let data = std::mem::take(&mut self.buf);
        match component {
            Component::Metadata => self.metadata = Some(data),
            Component::Info => self.info = Some(scan_info_component(&data)?),
            Component::Payload | Component::Other => {}
        }
        self.state = State::Header;
        Ok(())
    }
}

/// The compressed size of an entry, from the fixed header or its zip64 extra field.
fn entry_size(header: &[u8], extra: &[u8]) -> Result<u64, PackageError> {
    let compressed = le32(&header[18..22]);
    if compressed != u32::MAX {
        return Ok(compressed.into());
    }
    let uncompressed_in_zip64 = le32(&header[22..26]) == u32::MAX;
    let mut rest = extra;
    while rest.len() >= 4 {
        let id = le16(&rest[0..2]);
        let len = le16(&rest[2..4]) as usize;
        let body = rest.get(4..4 + len).ok_or_else(zip64_error)?;
        if id == 0x0001 {
            let offset = if uncompressed_in_zip64 { 8 } else { 0 };
            let bytes = body.get(offset..offset + 8).ok_or_else(zip64_error)?;
            return Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
        }
        rest = &rest[4 + len..];
    }
    Err(zip64_error())
}

/// The entry count of the end-of-central-directory record that ends `tail`, if one does.
/// (A zip64 archive stores 0xffff there; .conda files never hold that many entries.)
fn end_of_central_directory_entries(tail: &[u8]) -> Option<u64> {
    (0..=tail.len().saturating_sub(22)).rev().find_map(|at| {
        let record = &tail[at..];
        let comment_len = le16(&record[20..22]) as usize;
        (le32(&record[0..4]) == END_OF_CENTRAL_DIR && record.len() == 22 + comment_len)
            .then(|| u64::from(le16(&record[10..12])))
    })
}

fn zip64_error() -> PackageError {
    PackageError::Corrupt("a zip64 entry has no readable size".into())
}

fn scan_info_component(compressed: &[u8]) -> Result<InfoFiles, PackageError> {
    let mut tar = TarScanner::default();
    // Streamed when its window is small (conda's usual levels), else whole: its memory then
    // follows its content, not the window its header asks for (`crate::unzstd`).
    match unzstd::stream_memory(compressed) {
        None => {
            return Err(PackageError::Corrupt(
                "the info component is not zstd".into(),
            ))
        }
        Some(memory) if memory > unzstd::STREAM_WINDOW_MAX => {
            let raw = unzstd::decompress(compressed, MAX_INFO_WHOLE as usize, "the info component")
                .map_err(PackageError::Corrupt)?;
            tar.feed(&raw)?;
            return tar.finish(true);
        }
        Some(_) => {}
    }
    let corrupt = |e: std::io::Error| {
        PackageError::Corrupt(format!("the info component is not valid zstd ({e})"))
    };
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(corrupt)?;
    decoder
        .window_log_max(unzstd::STREAM_WINDOW_MAX.ilog2())
        .map_err(corrupt)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = decoder.read(&mut buf).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_INFO_DECOMPRESSED {
            return Err(PackageError::Invalid(format!(
                "the info component decompresses to more than {} MiB",
                MAX_INFO_DECOMPRESSED >> 20
            )));
        }
        tar.feed(&buf[..n])?;
        if tar.is_done() {
            break;
        }
    }
    tar.finish(true)
}

fn le16(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}
