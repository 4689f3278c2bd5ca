//! The parts of HTTP semantics the channel server decides itself: byte ranges and entity tags.

/// A satisfiable byte range of an object of known size: bytes `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn length(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end)
    }
}

/// How a `Range` header applies to an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: serve the whole object (also for multi-range requests, which
    /// RFC 9110 allows a server to ignore).
    Whole,
    Partial(ByteRange),
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let range = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            Some(_) => return RangeRequest::Unsatisfiable,
            None => return RangeRequest::Whole,
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return RangeRequest::Whole;
            };
            let end = if last.is_empty() {
                size.saturating_sub(1)
            } else {
                match parse(last) {
                    Some(end) if end >= start => end.min(size.saturating_sub(1)),
                    _ => return RangeRequest::Whole,
                }
            };
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            ByteRange { start, end }
        }
        (true, true) => return RangeRequest::Whole,
    };
    RangeRequest::Partial(range)
}

/// An entity tag without its weakness prefix and quotes: what weak comparison compares.
pub fn bare_etag(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/").trim_matches('"')
}

/// The one entity tag of an `If-None-Match` header, bare, when it holds exactly one.
pub fn single_etag(header: &str) -> Option<&str> {
    let tag = header.trim();
    (!tag.contains(',') && tag != "*").then(|| bare_etag(tag))
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 asks).
pub fn none_match(header: &str, etag: &str) -> bool {
    let etag = bare_etag(etag);
    header
        .split(',')
        .any(|candidate| candidate.trim() == "*" || bare_etag(candidate) == etag)
}

/// Whether a conditional GET or HEAD may answer 304. `If-None-Match` wins over
/// `If-Modified-Since`, which compares whole seconds (the precision of HTTP dates).
pub fn is_not_modified(
    if_none_match: Option<&str>,
    if_modified_since_ms: Option<u64>,
    etag: &str,
    last_modified_ms: u64,
) -> bool {
    match (if_none_match, if_modified_since_ms) {
        (Some(tags), _) => none_match(tags, etag),
        (None, Some(since)) => last_modified_ms / 1000 <= since / 1000,
        (None, None) => false,
    }
}

/// Whether a plain GET answers 304, decided as R2's conditional get decides it for the Worker
/// (one entity tag compared, a list or `*` ignored; else `If-Modified-Since` in whole seconds),
/// so a copy from the edge cache answers exactly as a read from R2 does.
pub fn get_is_not_modified(
    if_none_match: Option<&str>,
    if_modified_since_ms: Option<u64>,
    etag: &str,
    last_modified_ms: u64,
) -> bool {
    match (if_none_match, if_modified_since_ms) {
        (Some(header), _) => single_etag(header).is_some_and(|tag| tag == bare_etag(etag)),
        (None, Some(since)) => last_modified_ms <= since + 999,
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(
            r("bytes=0-9"),
            RangeRequest::Partial(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            r("bytes=90-"),
            RangeRequest::Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            r("bytes=-10"),
            RangeRequest::Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            r("bytes=50-500"),
            RangeRequest::Partial(ByteRange { start: 50, end: 99 })
        );
        assert_eq!(
            r("bytes=-500"),
            RangeRequest::Partial(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(r("bytes=100-"), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=5-1"), RangeRequest::Whole);
        assert_eq!(r("bytes=0-1,5-6"), RangeRequest::Whole);
        assert_eq!(r("items=0-1"), RangeRequest::Whole);
        assert_eq!(parse_range(None, 100), RangeRequest::Whole);
        assert_eq!(
            ByteRange { start: 90, end: 99 }.content_range(100),
            "bytes 90-99/100"
        );
    }

    #[test]
    fn etags() {
        assert!(none_match("\"abc\"", "\"abc\""));
        assert!(none_match("W/\"abc\", \"x\"", "\"abc\""));
        assert!(none_match("*", "\"abc\""));
        assert!(!none_match("\"abd\"", "\"abc\""));
        assert_eq!(bare_etag(" W/\"abc\" "), "abc");
        assert_eq!(bare_etag("abc"), "abc");
        assert_eq!(single_etag(" W/\"abc\""), Some("abc"));
        assert_eq!(single_etag("\"a\", \"b\""), None);
        assert_eq!(single_etag("*"), None);
    }

    #[test]
    fn conditions() {
        assert!(is_not_modified(Some("\"a\""), Some(0), "\"a\"", 5_000));
        assert!(!is_not_modified(
            Some("\"b\""),
            Some(10_000),
            "\"a\"",
            5_000
        ));
        assert!(is_not_modified(None, Some(5_000), "\"a\"", 5_999));
        assert!(!is_not_modified(None, Some(5_000), "\"a\"", 6_000));
        assert!(!is_not_modified(None, None, "\"a\"", 0));
    }

    #[test]
    fn conditions_of_a_plain_get() {
        assert!(get_is_not_modified(Some("\"a\""), None, "\"a\"", 0));
        assert!(get_is_not_modified(Some("W/\"a\""), None, "\"a\"", 0));
        assert!(!get_is_not_modified(Some("\"a\", \"b\""), None, "\"a\"", 0));
        assert!(!get_is_not_modified(Some("*"), None, "\"a\"", 0));
        // A tag that does not match wins over a date that would.
        assert!(!get_is_not_modified(
            Some("\"b\""),
            Some(10_000),
            "\"a\"",
            5_000
        ));
        assert!(get_is_not_modified(None, Some(5_000), "\"a\"", 5_999));
        assert!(!get_is_not_modified(None, Some(5_000), "\"a\"", 6_000));
        assert!(!get_is_not_modified(None, None, "\"a\"", 0));
    }
}
