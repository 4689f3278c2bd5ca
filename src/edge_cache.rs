//! What the edge cache (the data centre's Cache API) keeps of a channel's files, under which
//! key, and for how long it may answer from it. The Worker consults it only after the caller's
//! access check; see `docs/serving-and-index.md#the-edge-cache`.

use crate::names::ChannelFile;

/// The cache keys' origin: a host no request is for (`.internal` is reserved for private use,
/// and the zone's own cache is keyed by the request's host), so no URL names a cached private
/// file; only the Worker looks here, after deciding the caller may read.
const KEY_ORIGIN: &str = "https://edge-cache.condaflare.internal";

/// Index files: never longer than the `max-age` they are served with.
pub const INDEX_LIFETIME_MS: u64 = 30_000;
/// Package files change only by a forced replacement or a delete, which drop the copy where
/// the channel's index writes them; other data centres may serve the old bytes this long.
pub const PACKAGE_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// Shards are content-addressed: their bytes never change, so they stay until evicted (or
/// until a superseded one is deleted, after its retention).
pub const SHARD_LIFETIME_MS: u64 = 365 * 24 * 3600 * 1000;

/// The headers a cached copy carries besides the served ones: when it was stored, and the
/// creation time of the channel it was read from (a channel deleted and created again under the
/// same name must not see the old one's files).
pub const STORED_AT_HEADER: &str = "X-Edge-Cache-Stored-At";
pub const CHANNEL_CREATED_HEADER: &str = "X-Edge-Cache-Channel-Created";
/// The object's upload time in milliseconds (Last-Modified has whole seconds only).
pub const UPLOADED_HEADER: &str = "X-Edge-Cache-Uploaded";

/// How long a copy of a file of this kind may answer; `None`: never cached (attestations are
/// added to stored packages, and are rarely read).
pub fn lifetime_ms(kind: ChannelFile) -> Option<u64> {
    match kind {
        ChannelFile::Index => Some(INDEX_LIFETIME_MS),
        ChannelFile::Package => Some(PACKAGE_LIFETIME_MS),
        ChannelFile::Shard => Some(SHARD_LIFETIME_MS),
        ChannelFile::Attestation => None,
    }
}

/// The cache key of `<channel>/<subdir>/<file>` (the file's R2 key under [`KEY_ORIGIN`]).
pub fn key(object_key: &str) -> String {
    format!("{KEY_ORIGIN}/{object_key}")
}

/// Whether a cached copy may answer now: stored for this very channel (not an earlier one of
/// the same name) and within its kind's lifetime.
pub fn usable(
    kind: ChannelFile,
    stored_at_ms: u64,
    stored_for_channel_created: u64,
    channel_created: u64,
    now_ms: u64,
) -> bool {
    let Some(lifetime) = lifetime_ms(kind) else {
        return false;
    };
    stored_for_channel_created == channel_created
        && now_ms >= stored_at_ms
        && now_ms - stored_at_ms < lifetime
}

/// The `Cache-Control` a copy is stored with, so the cache itself drops it no later than
/// [`usable`] would.
pub fn stored_cache_control(kind: ChannelFile) -> Option<String> {
    lifetime_ms(kind).map(|ms| format!("max-age={}", ms / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_an_unreachable_host() {
        assert_eq!(
            key("team/linux-64/a-1-0.conda"),
            "https://edge-cache.condaflare.internal/team/linux-64/a-1-0.conda"
        );
    }

    #[test]
    fn copies_answer_within_their_lifetime_for_the_same_channel_only() {
        let t = 1_000_000;
        assert!(usable(ChannelFile::Index, t, 5, 5, t + 29_999));
        assert!(!usable(ChannelFile::Index, t, 5, 5, t + 30_000));
        assert!(usable(ChannelFile::Package, t, 5, 5, t + 3_600_000));
        assert!(!usable(
            ChannelFile::Package,
            t,
            5,
            5,
            t + PACKAGE_LIFETIME_MS
        ));
        assert!(usable(ChannelFile::Shard, t, 5, 5, t + PACKAGE_LIFETIME_MS));
        // A channel created again under the same name.
        assert!(!usable(ChannelFile::Shard, t, 5, 6, t + 1));
        // A clock that went back: not trusted.
        assert!(!usable(ChannelFile::Package, t, 5, 5, t - 1));
        assert!(!usable(ChannelFile::Attestation, t, 5, 5, t));
    }

    #[test]
    fn the_stored_lifetime_matches() {
        assert_eq!(
            stored_cache_control(ChannelFile::Index).as_deref(),
            Some("max-age=30")
        );
        assert_eq!(
            stored_cache_control(ChannelFile::Package).as_deref(),
            Some("max-age=86400")
        );
        assert_eq!(stored_cache_control(ChannelFile::Attestation), None);
    }
}
