//! Which D1 failures the Worker runs again, and after what pauses.
//!
//! Local D1 is one SQLite file, which `npm run admin` writes beside the running server. A
//! statement that meets the admin command's write lock fails at once (workerd sets no busy
//! timeout), and its transaction is rolled back, so running it again is safe and sees the
//! admin command's change. At the edge D1 answers its own retryable failures, and these
//! messages do not occur.

/// The pauses before each new attempt, in milliseconds: 635 ms in all, far longer than the
/// admin command's transactions hold the lock.
pub const PAUSES_MS: [u64; 7] = [5, 10, 20, 40, 80, 160, 320];

/// Whether a D1 failure says that the statement met another connection's lock on the file:
/// SQLite's own words, or local D1's when reading the session's commit token met the lock
/// (its cause is redacted to "internal error").
pub fn is_lock_conflict(message: &str) -> bool {
    [
        "SQLITE_BUSY",
        "database is locked",
        "Failed to get session commit token",
    ]
    .iter()
    .any(|sign| message.contains(sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_conflicts_as_local_d1_reports_them() {
        // As workerd's D1 binding words them (from wrangler dev's log).
        assert!(is_lock_conflict(
            "D1Error { cause: JsValue(Error: database is locked: SQLITE_BUSY\n    at \
             D1DatabaseSessionAlwaysPrimary._sendOrThrow (cloudflare-internal:d1-api:194:24)) }"
        ));
        assert!(is_lock_conflict(
            "Error: D1_ERROR: Failed to get session commit token: internal error; reference = \
             q9olc63gbh5btk47hp1h8nat"
        ));
    }

    #[test]
    fn other_failures_are_not_run_again() {
        for message in [
            "D1_ERROR: UNIQUE constraint failed: keys.hash: SQLITE_CONSTRAINT",
            "D1_ERROR: no such table: channels: SQLITE_ERROR",
            "D1_ERROR: Network connection lost.",
        ] {
            assert!(!is_lock_conflict(message), "{message}");
        }
    }
}
