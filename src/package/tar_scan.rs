//! A push-based tar reader that keeps only the `info/` files condaflare needs.
//!
//! Upload bodies arrive as a stream of chunks, so the archive is read as it is fed rather than
//! pulled through `std::io::Read`. Everything that is not a wanted metadata file is skipped
//! without being kept.

use super::PackageError;

const BLOCK: usize = 512;

/// The metadata files kept from `info/`, each with the largest size accepted for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoFile {
    Index,
    RunExports,
    About,
}

impl InfoFile {
    fn from_path(path: &str) -> Option<Self> {
        match path {
            "info/index.json" => Some(Self::Index),
            "info/run_exports.json" => Some(Self::RunExports),
            "info/about.json" => Some(Self::About),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::Index => "info/index.json",
            Self::RunExports => "info/run_exports.json",
            Self::About => "info/about.json",
        }
    }

    /// Sizes are capped so a record row stays well inside a Durable Object row (2 MB).
    fn max_size(self) -> u64 {
        match self {
            Self::Index | Self::RunExports => 256 * 1024,
            Self::About => 512 * 1024,
        }
    }
}

/// The metadata files found in an archive.
#[derive(Debug, Default, Clone)]
pub struct InfoFiles {
    pub index: Option<Vec<u8>>,
    pub run_exports: Option<Vec<u8>>,
    pub about: Option<Vec<u8>>,
}

impl InfoFiles {
    fn slot(&mut self, file: InfoFile) -> &mut Option<Vec<u8>> {
        match file {
            InfoFile::Index => &mut self.index,
            InfoFile::RunExports => &mut self.run_exports,
            InfoFile::About => &mut self.about,
        }
    }
}

enum State {
    /// Collecting a 512-byte header.
    Header,
    /// Inside an entry's data (plus padding up to the block boundary).
    Data {
        remaining: u64,
        padding: usize,
        target: DataTarget,
    },
    /// The end-of-archive marker was seen.
    End,
}

enum DataTarget {
    Skip,
    Keep(InfoFile),
    /// Too large to keep, but not an error (about.json is informational).
    Drop,
    /// A long-name or pax header naming the next entry.
    Extended(TarEntryKind),
}

pub struct TarScanner {
    state: State,
    buf: Vec<u8>,
    paths: TarPaths,
    files: InfoFiles,
    /// Set once `info/index.json` was kept and an entry outside `info/` followed it. Conda
    /// writers put `info/` first in `.tar.bz2` files, so nothing wanted can come after.
    past_info: bool,
}

impl Default for TarScanner {
    fn default() -> Self {
        Self {
            state: State::Header,
            buf: Vec::with_capacity(BLOCK),
            paths: TarPaths::default(),
            files: InfoFiles::default(),
            past_info: false,
        }
    }
}

impl TarScanner {
    /// True when feeding more data cannot change the result.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::End) || self.past_info
    }

    /// `info/index.json`, once read whole.
    pub fn index(&self) -> Option<&[u8]> {
        self.files.index.as_deref()
    }

    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), PackageError> {
        while !data.is_empty() && !self.is_done() {
            match &mut self.state {
                State::Header => {
                    let take = (BLOCK - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() == BLOCK {
                        let header = std::mem::take(&mut self.buf);
                        self.start_entry(&header)?;
                        self.buf = header;
                        self.buf.clear();
                    }
                }
                State::Data {
                    remaining,
                    padding,
                    target,
                } => {
                    if *remaining > 0 {
                        let take = (*remaining).min(data.len() as u64) as usize;
                        if matches!(target, DataTarget::Keep(_) | DataTarget::Extended(_)) {
                            self.buf.extend_from_slice(&data[..take]);
                        }
                        *remaining -= take as u64;
                        data = &data[take..];
                    } else {
                        let take = (*padding).min(data.len());
                        *padding -= take;
                        data = &data[take..];
                    }
                    if *remaining == 0 && *padding == 0 {
                        let State::Data { target, .. } =
                            std::mem::replace(&mut self.state, State::Header)
                        else {
                            unreachable!()
                        };
                        self.finish_entry(target)?;
                    }
                }
                State::End => {}
            }
        }
        Ok(())
    }

    /// Ends the scan; `complete` says whether the whole archive was fed.
    pub fn finish(self, complete: bool) -> Result<InfoFiles, PackageError> {
        if complete
            && !self.is_done()
            && !(matches!(self.state, State::Header) && self.buf.is_empty())
        {
            return Err(PackageError::Corrupt(
                "the tar archive ends in the middle of an entry".into(),
            ));
        }
        Ok(self.files)
    }

    fn start_entry(&mut self, block: &[u8]) -> Result<(), PackageError> {
        let Some(header) = TarHeader::parse(block)? else {
            self.state = State::End;
            return Ok(());
        };
        let size = header.size;
        let target = match header.kind {
            kind @ (TarEntryKind::LongName | TarEntryKind::PaxHeader) => DataTarget::Extended(kind),
            TarEntryKind::File => {
                let path = self.paths.entry_path(header.path);
                self.entry_target(&path, size)?
            }
            TarEntryKind::Other => {
                let path = self.paths.entry_path(header.path);
                self.note_path(&path);
                DataTarget::Skip
            }
        };
        self.state = State::Data {
            remaining: size,
            padding: padding_for(size),
            target,
        };
        Ok(())
    }

    fn entry_target(&mut self, path: &str, size: u64) -> Result<DataTarget, PackageError> {
        self.note_path(path);
        let Some(file) = InfoFile::from_path(path) else {
            return Ok(DataTarget::Skip);
        };
        if size > file.max_size() {
            return match file {
                InfoFile::About => Ok(DataTarget::Drop),
                _ => Err(PackageError::Invalid(format!(
                    "{} is {size} bytes; the limit is {} KiB",
                    file.path(),
                    file.max_size() / 1024
                ))),
            };
        }
        if self.files.slot(file).is_some() {
            return Err(PackageError::Invalid(format!(
                "the archive holds {} more than once",
                file.path()
            )));
        }
        Ok(DataTarget::Keep(file))
    }

    fn note_path(&mut self, path: &str) {
        if self.files.index.is_some() && !path.starts_with("info/") && path != "info" {
            self.past_info = true;
        }
    }

    fn finish_entry(&mut self, target: DataTarget) -> Result<(), PackageError> {
        let data = std::mem::take(&mut self.buf);
        match target {
            DataTarget::Keep(file) => *self.files.slot(file) = Some(data),
            DataTarget::Extended(kind) => self.paths.read_extended(kind, &data)?,
            DataTarget::Skip | DataTarget::Drop => {}
        }
        Ok(())
    }
}

/// What kind of tar entry a header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarEntryKind {
    File,
    /// GNU: the entry's data is the next entry's path.
    LongName,
    /// pax: the entry's data holds `path=` (and other) records for the next entry.
    PaxHeader,
    Other,
}

/// One 512-byte tar header, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarHeader {
    pub path: String,
    pub size: u64,
    pub kind: TarEntryKind,
}

impl TarHeader {
    /// `None` for the all-zero block that ends an archive.
    pub fn parse(block: &[u8]) -> Result<Option<Self>, PackageError> {
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        verify_checksum(block)?;
        let size = parse_size(&block[124..136])?;
        let kind = match block[156] {
            b'0' | 0 | b'7' => TarEntryKind::File,
            b'L' => TarEntryKind::LongName,
            b'x' => TarEntryKind::PaxHeader,
            _ => TarEntryKind::Other,
        };
        if matches!(kind, TarEntryKind::LongName | TarEntryKind::PaxHeader) && size > 64 * 1024 {
            return Err(PackageError::Corrupt(
                "a tar extended header is larger than 64 KiB".into(),
            ));
        }
        let path = header_path(block).unwrap_or_default();
        Ok(Some(Self { path, size, kind }))
    }
}

/// The paths of a tar archive's entries: GNU long-name and pax headers give their path to the
/// entry after them, so what a header says of itself is not always its path.
#[derive(Debug, Default)]
pub struct TarPaths {
    /// The path an extended header announced for the next entry.
    next: Option<String>,
}

impl TarPaths {
    /// Takes in the data of a long-name or pax header (`kind`), which names the next entry.
    pub fn read_extended(&mut self, kind: TarEntryKind, data: &[u8]) -> Result<(), PackageError> {
        let path = match kind {
            TarEntryKind::LongName => {
                let name = data.split(|&b| b == 0).next().unwrap_or_default();
                Some(utf8_path(name)?)
            }
            TarEntryKind::PaxHeader => pax_path(data)?,
            TarEntryKind::File | TarEntryKind::Other => None,
        };
        // A pax header without a path leaves a long name before it in force.
        if path.is_some() {
            self.next = path;
        }
        Ok(())
    }

    /// The path of the entry whose header gives `own_path`, without a leading `./`. Every
    /// header that is not itself an extended header must come through here, so that an
    /// announced path goes to exactly one entry.
    pub fn entry_path(&mut self, own_path: String) -> String {
        let path = self.next.take().unwrap_or(own_path);
        match path.strip_prefix("./") {
            Some(stripped) => stripped.to_owned(),
            None => path,
        }
    }
}

pub fn padding_for(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

fn verify_checksum(header: &[u8]) -> Result<(), PackageError> {
    let stored = parse_octal(&header[148..156])
        .ok_or_else(|| PackageError::Corrupt("a tar header has an unreadable checksum".into()))?;
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    if sum != stored {
        return Err(PackageError::Corrupt(
            "a tar header's checksum does not match".into(),
        ));
    }
    Ok(())
}

fn parse_size(field: &[u8]) -> Result<u64, PackageError> {
    // GNU base-256 encoding for sizes of 8 GiB and more.
    if field[0] & 0x80 != 0 {
        return field[1..]
            .iter()
            .try_fold(u64::from(field[0] & 0x7f), |acc, &b| {
                acc.checked_mul(256)
                    .map(|v| v + u64::from(b))
                    .ok_or_else(|| PackageError::Corrupt("a tar entry size overflows".into()))
            });
    }
    parse_octal(field)
        .ok_or_else(|| PackageError::Corrupt("a tar entry has an unreadable size".into()))
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn header_path(header: &[u8]) -> Result<String, PackageError> {
    let field = |range: std::ops::Range<usize>| {
        let bytes = &header[range];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        utf8_path(&bytes[..end])
    };
    let name = field(0..100)?;
    let is_ustar = &header[257..262] == b"ustar";
    let prefix = if is_ustar {
        field(345..500)?
    } else {
        String::new()
    };
    Ok(if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    })
}

fn utf8_path(bytes: &[u8]) -> Result<String, PackageError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| PackageError::Corrupt("a tar entry name is not UTF-8".into()))
}

/// The `path` record of a pax extended header ("<len> path=<value>\n" records).
fn pax_path(data: &[u8]) -> Result<Option<String>, PackageError> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| PackageError::Corrupt("a pax header record is malformed".into()))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&len| len > space && len <= rest.len())
            .ok_or_else(|| PackageError::Corrupt("a pax header record is malformed".into()))?;
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            return utf8_path(value).map(Some);
        }
        rest = &rest[len..];
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn scan_in_chunks(bytes: &[u8], chunk: usize) -> Result<InfoFiles, PackageError> {
        let mut scanner = TarScanner::default();
        for part in bytes.chunks(chunk) {
            scanner.feed(part)?;
        }
        scanner.finish(true)
    }

    #[test]
    fn keeps_wanted_files_whatever_the_chunking() {
        let long = format!("info/{}/deep.txt", "d".repeat(150));
        let tar = tar_with(&[
            ("info/about.json", b"{\"a\":1}"),
            (&long, b"x"),
            ("info/index.json", b"{\"name\":\"x\"}"),
            ("bin/tool", &[7u8; 1000]),
        ]);
        for chunk in [1, 7, 512, 4096, tar.len()] {
            let files = scan_in_chunks(&tar, chunk).unwrap();
            assert_eq!(files.index.as_deref(), Some(&b"{\"name\":\"x\"}"[..]));
            assert_eq!(files.about.as_deref(), Some(&b"{\"a\":1}"[..]));
            assert!(files.run_exports.is_none());
        }
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        // The length counts its own digits.
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    #[test]
    fn extended_headers_name_the_next_entry_only() {
        let mut paths = TarPaths::default();
        assert_eq!(
            paths.entry_path("./info/index.json".into()),
            "info/index.json"
        );

        paths
            .read_extended(TarEntryKind::LongName, b"info/a-long-name.json\0\0")
            .unwrap();
        assert_eq!(
            paths.entry_path("info/a-lo".into()),
            "info/a-long-name.json"
        );
        assert_eq!(paths.entry_path("bin/x".into()), "bin/x");

        let mut pax = pax_record("mtime", "1");
        pax.extend(pax_record("path", "./info/p\u{e9}.json"));
        paths.read_extended(TarEntryKind::PaxHeader, &pax).unwrap();
        assert_eq!(paths.entry_path("info/p.json".into()), "info/p\u{e9}.json");

        // A pax header without a path leaves the long name before it in force.
        paths
            .read_extended(TarEntryKind::LongName, b"long")
            .unwrap();
        paths
            .read_extended(TarEntryKind::PaxHeader, &pax_record("mtime", "1"))
            .unwrap();
        assert_eq!(paths.entry_path("short".into()), "long");

        assert!(paths
            .read_extended(TarEntryKind::PaxHeader, b"99 path=x\n")
            .is_err());
        assert!(paths
            .read_extended(TarEntryKind::LongName, &[0xff, 0])
            .is_err());
    }

    #[test]
    fn stops_after_info_section() {
        let tar = tar_with(&[("info/index.json", b"{}"), ("lib/a.so", b"abc")]);
        let mut scanner = TarScanner::default();
        scanner.feed(&tar[..1536]).unwrap();
        assert!(scanner.is_done());
    }

    #[test]
    fn rejects_oversized_index() {
        let big = vec![b' '; 300 * 1024];
        let tar = tar_with(&[("info/index.json", &big)]);
        let err = scan_in_chunks(&tar, 4096).unwrap_err();
        assert!(err.to_string().contains("limit is 256 KiB"), "{err}");
    }

    #[test]
    fn rejects_a_bad_header_checksum() {
        let mut tar = tar_with(&[("info/index.json", b"{}")]);
        tar[0] ^= 1;
        assert!(matches!(
            scan_in_chunks(&tar, 512),
            Err(PackageError::Corrupt(_))
        ));
    }

    #[test]
    fn rejects_a_truncated_entry() {
        let tar = tar_with(&[("info/index.json", &[b'x'; 2000])]);
        let err = scan_in_chunks(&tar[..1024], 512).unwrap_err();
        assert!(matches!(err, PackageError::Corrupt(_)));
    }
}
