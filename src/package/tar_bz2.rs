//! `.tar.bz2` packages: a bzip2 stream around a tar archive.

use bzip2::{Decompress, Status};

use super::tar_scan::{InfoFiles, TarScanner};
use super::PackageError;

/// How much decompressed data is read while looking for `info/`: a small archive must not be
/// able to make the server inflate gigabytes.
const MAX_DECOMPRESSED: u64 = 512 * 1024 * 1024;
/// bzip2's low-memory decoder: about 2.3 MB instead of 3.6 MB per upload for 900k blocks. Only
/// the info/ section is decompressed, so its lower speed costs little, and uploads running side
/// by side in one isolate share its 128 MB.
const SMALL_DECOMPRESS: bool = true;

pub struct TarBz2Scanner {
    decoder: Decompress,
    tar: TarScanner,
    out: Vec<u8>,
    decompressed: u64,
    stream_ended: bool,
}

impl Default for TarBz2Scanner {
    fn default() -> Self {
        Self {
            decoder: Decompress::new(SMALL_DECOMPRESS),
            tar: TarScanner::default(),
            out: vec![0; 64 * 1024],
            decompressed: 0,
            stream_ended: false,
        }
    }
}

impl TarBz2Scanner {
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), PackageError> {
        // Keep going while input remains or the last call filled the output buffer, so no
        // decompressed bytes are left inside the decoder.
        let mut output_full = false;
        while (!data.is_empty() || output_full) && !self.tar.is_done() {
            if self.stream_ended {
                if data.is_empty() {
                    break;
                }
                // Concatenated bzip2 streams (as written by parallel compressors).
                self.decoder = Decompress::new(SMALL_DECOMPRESS);
                self.stream_ended = false;
            }
            let (in_before, out_before) = (self.decoder.total_in(), self.decoder.total_out());
            let status = self
                .decoder
                .decompress(data, &mut self.out)
                .map_err(|e| PackageError::Corrupt(format!("the bzip2 data is corrupt ({e})")))?;
            let consumed = (self.decoder.total_in() - in_before) as usize;
            let produced = (self.decoder.total_out() - out_before) as usize;
            data = &data[consumed..];
            output_full = produced == self.out.len();
            self.decompressed += produced as u64;
            if self.decompressed > MAX_DECOMPRESSED {
                return Err(PackageError::Invalid(format!(
                    "the archive decompresses to more than {} MiB before its info/ section ends",
                    MAX_DECOMPRESSED >> 20
                )));
            }
            self.tar.feed(&self.out[..produced])?;
            if status == Status::StreamEnd {
                self.stream_ended = true;
            } else if consumed == 0 && produced == 0 {
                break;
            }
        }
        Ok(())
    }

    /// True when feeding more data cannot change the result.
    pub fn is_done(&self) -> bool {
        self.tar.is_done()
    }

    /// `info/index.json`, once read whole.
    pub fn index(&self) -> Option<&[u8]> {
        self.tar.index()
    }

    pub fn finish(self) -> Result<InfoFiles, PackageError> {
        if !self.tar.is_done() && !self.stream_ended {
            return Err(PackageError::Corrupt(
                "the bzip2 stream is truncated".into(),
            ));
        }
        self.tar.finish(true)
    }
}
