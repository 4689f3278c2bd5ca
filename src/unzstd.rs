//! Decompression of zstd data from outside (a package's info component, an upstream's shards)
//! within a memory bound. A streaming decoder allocates the window its frame header asks for,
//! up to 128 MiB (`zstd --ultra -22`, streamed without its size), however small the content:
//! one such frame of a few KB would take a whole isolate's memory. So a frame that records its
//! content size is decoded into a buffer of that size, one with a window of at most
//! [`STREAM_WINDOW_MAX`] is streamed, and any other is decoded in one piece into a buffer that
//! grows as needed: memory then follows the content, never the window.

use std::io::Read;

/// The largest window a frame is streamed with (what `zstd -19`, conda's usual level, uses).
pub const STREAM_WINDOW_MAX: u64 = 8 << 20;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// The memory a streaming decoder takes for `data`'s first frame: the smaller of its window
/// and its content size (when the header records it). `None` when `data` does not start with a
/// zstd frame header.
pub fn stream_memory(data: &[u8]) -> Option<u64> {
    if data.len() < 6 || u32::from_le_bytes(data[..4].try_into().ok()?) != ZSTD_MAGIC {
        return None;
    }
    let descriptor = data[4];
    let single_segment = descriptor & 0x20 != 0;
    let content_size = content_size(data);
    if single_segment {
        // No window descriptor: the window is the content.
        return content_size;
    }
    let window = data[5];
    let log = 10 + u64::from(window >> 3);
    let size = (1u64 << log) + ((1u64 << log) / 8) * u64::from(window & 7);
    Some(content_size.map_or(size, |content| content.min(size)))
}

fn content_size(data: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(data).ok().flatten()
}

/// All of `compressed` decompressed, in at most `max_bytes` of output and as little memory
/// beyond it as the frame allows; an error says why not (`what` names the data).
pub fn decompress(compressed: &[u8], max_bytes: usize, what: &str) -> Result<Vec<u8>, String> {
    let too_large = || format!("{what} is larger than {max_bytes} bytes uncompressed");
    let Some(memory) = stream_memory(compressed) else {
        return Err(format!("{what} is not zstd"));
    };
    if let Some(size) = content_size(compressed) {
        if size > max_bytes as u64 {
            return Err(too_large());
        }
    }
    if memory <= STREAM_WINDOW_MAX {
        let mut decoder = zstd::stream::read::Decoder::new(compressed)
            .map_err(|e| format!("{what} is not valid zstd ({e})"))?;
        // A later frame asking for a larger window fails instead of allocating it.
        decoder
            .window_log_max(STREAM_WINDOW_MAX.ilog2())
            .map_err(|e| format!("{what}: {e}"))?;
        let mut raw = Vec::new();
        decoder
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| format!("{what} is not valid zstd ({e})"))?;
        if raw.len() > max_bytes {
            return Err(too_large());
        }
        return Ok(raw);
    }
    decompress_whole(compressed, max_bytes, what)
}

/// In one piece, into a buffer that grows fourfold from 64 KiB (or the recorded content size)
/// while decoding fails, up to `max_bytes`: the output is its own window.
fn decompress_whole(compressed: &[u8], max_bytes: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut capacity = content_size(compressed)
        .map_or(64 << 10, |size| size as usize)
        .clamp(1, max_bytes.max(1));
    loop {
        match zstd::bulk::decompress(compressed, capacity) {
            Ok(raw) => return Ok(raw),
            // Too small a buffer and bad data fail alike; bad data fails fast.
            Err(_) if capacity < max_bytes => capacity = capacity.saturating_mul(4).min(max_bytes),
            Err(e) => {
                return Err(format!(
                    "{what} does not decompress within {max_bytes} bytes ({e})"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Streamed, so the header records no content size, with the window `window_log` sets.
    fn streamed(data: &[u8], window_log: u32) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder
            .set_parameter(zstd::stream::raw::CParameter::WindowLog(window_log))
            .unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn the_memory_a_frame_asks_for_is_read_from_its_header() {
        let data = b"conda".repeat(1000);
        assert_eq!(stream_memory(&streamed(&data, 27)), Some(128 << 20));
        assert_eq!(stream_memory(&streamed(&data, 20)), Some(1 << 20));
        // One-shot compression records the content size, which bounds the window.
        let sized = zstd::bulk::compress(&data, 19).unwrap();
        assert_eq!(stream_memory(&sized), Some(data.len() as u64));
        assert_eq!(stream_memory(b"not zstd at all"), None);
    }

    #[test]
    fn a_large_window_is_decoded_into_a_buffer_that_follows_the_content() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for window_log in [20, 27] {
            let compressed = streamed(&data, window_log);
            assert_eq!(decompress(&compressed, 2 << 20, "it").unwrap(), data);
            let error = decompress(&compressed, 1000, "it").unwrap_err();
            assert!(error.contains("1000 bytes"), "{error}");
        }
        let sized = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(decompress(&sized, data.len(), "it").unwrap(), data);
        assert!(decompress(&sized, data.len() - 1, "it").is_err());
    }

    #[test]
    fn bad_data_is_an_error_naming_it() {
        let mut compressed = streamed(&b"conda".repeat(1000), 27);
        compressed.truncate(compressed.len() / 2);
        let error = decompress(&compressed, 1 << 20, "the info component").unwrap_err();
        assert!(error.starts_with("the info component"), "{error}");
        assert!(decompress(b"plain text", 100, "it")
            .unwrap_err()
            .contains("not zstd"));
    }
}
