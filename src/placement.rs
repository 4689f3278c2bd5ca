//! Where a large upload's bytes are written while it is checked: straight to the file's own key
//! when its subdir is known early enough, else to a staging object that the channel index copies
//! into place.
//!
//! A `.conda` whose info component comes last (as conda-package-handling writes them) names its
//! subdir only at its end. Its bytes go to the key of the subdir the channel's records suggest
//! (that of its newest file of the package's name, else of its newest file): right, the upload is
//! written once; wrong, the object there serves as the staging object would have, copied into
//! place and deleted, for the same three R2 operations.
//!
//! Written straight, the bytes go once, in one put that R2 checks against the SHA-256 the
//! uploader claims (a put of other bytes stores nothing), to a key the channel index has
//! reserved for the upload: no other commit writes there until the upload commits or is
//! released, and a refused or broken-off upload's object is deleted (a dead upload's by the
//! index's sweep). The object is readable at its URL from the end of the put until the commit
//! lists it, an instant later. A staged file is written twice (staging object, then the copy),
//! but its key need not be known until its end, nor its SHA-256 before it, and a forced
//! replacement keeps the old bytes whole until the copy.

/// By default, the most bytes of a body held unstored while the package's scan looks for its
/// subdir (`UPLOAD_HOLD_BYTES`). The
/// runtime buffers the held branch in the isolate's memory (128 MB, shared by the uploads it
/// runs), so the wait is bounded: conda-build's `info/` section, which comes first in a
/// `.tar.bz2`, compresses to a few KiB, rarely a MiB; a `.conda` with its info component first
/// holds it within its first few KiB. A package that names its subdir later is staged, or
/// written where its channel's records suggest; so is one whose scan reaches a stretch it steps
/// over (a `.conda`'s pkg component) ending beyond the bound, at once rather than at the bound.
pub const HELD_BYTES: u64 = 8 * 1024 * 1024;

/// Where the bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Straight to `<channel>/<subdir>/<filename>`.
    Direct { subdir: String },
    /// The subdir is not known in time: to the key of the subdir the channel's records
    /// suggest, else to a staging object.
    Guessed,
    /// To a staging object.
    Staged,
}

/// What the scan has seen so far of a body, and what the upload asks.
#[derive(Debug, Clone, Copy)]
pub struct Scanned<'a> {
    /// The uploader claims the file's SHA-256, which R2 can check as it stores the bytes.
    pub claimed: bool,
    /// A forced replacement (`?force`), whose old bytes must stay whole until the commit.
    pub force: bool,
    /// The subdir the route's URL names (Artifactory's PUT), which the package must match.
    pub named: Option<&'a str>,
    /// The subdir the package's `info/index.json` names, once read.
    pub found: Option<&'a str>,
    /// Bytes of the body read so far.
    pub read: u64,
    /// Bytes the scan steps over next, unseen (a `.conda`'s pkg component): the subdir cannot
    /// show before them.
    pub steps_over: u64,
    /// The scan will read no more of the body (it has what it needs, or the body ended).
    pub finished: bool,
    /// The most bytes held before the body is staged.
    pub held_bytes: u64,
}

/// Where the bytes go, or `None` while the scan should read on before deciding.
pub fn placement(scanned: Scanned<'_>) -> Option<Placement> {
    if !scanned.claimed || scanned.force {
        return Some(Placement::Staged);
    }
    match scanned.named.or(scanned.found) {
        Some(subdir) => Some(Placement::Direct {
            subdir: subdir.to_owned(),
        }),
        None if scanned.finished => Some(Placement::Staged),
        // Not found within the bound, or not to be found before it.
        None if scanned.read.saturating_add(scanned.steps_over) >= scanned.held_bytes => {
            Some(Placement::Guessed)
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(
        named: Option<&str>,
        found: Option<&str>,
        read: u64,
        finished: bool,
    ) -> Option<Placement> {
        placement(Scanned {
            claimed: true,
            force: false,
            named,
            found,
            read,
            steps_over: 0,
            finished,
            held_bytes: HELD_BYTES,
        })
    }

    fn direct(subdir: &str) -> Option<Placement> {
        Some(Placement::Direct {
            subdir: subdir.to_owned(),
        })
    }

    #[test]
    fn the_subdir_a_url_names_is_known_before_any_byte() {
        assert_eq!(
            scanned(Some("linux-64"), None, 0, false),
            direct("linux-64")
        );
        // The package's own, if different, is refused later; the key is the URL's.
        assert_eq!(
            scanned(Some("linux-64"), Some("noarch"), 9, false),
            direct("linux-64")
        );
    }

    #[test]
    fn the_scan_reads_on_until_the_subdir_or_the_bound() {
        assert_eq!(scanned(None, None, 0, false), None);
        assert_eq!(scanned(None, None, HELD_BYTES - 1, false), None);
        assert_eq!(scanned(None, Some("noarch"), 4096, false), direct("noarch"));
        assert_eq!(
            scanned(None, Some("noarch"), HELD_BYTES * 3, false),
            direct("noarch")
        );
        // The scan reads on (an info component last), but the body can be held no longer.
        assert_eq!(
            scanned(None, None, HELD_BYTES, false),
            Some(Placement::Guessed)
        );
        // A scan that stopped (info/ read without an index.json, a broken archive, the end).
        assert_eq!(scanned(None, None, 10, true), Some(Placement::Staged));
    }

    #[test]
    fn a_stretch_the_scan_steps_over_to_beyond_the_bound_ends_the_wait_at_once() {
        let at = |steps_over| {
            placement(Scanned {
                claimed: true,
                force: false,
                named: None,
                found: None,
                read: 4096,
                steps_over,
                finished: false,
                held_bytes: HELD_BYTES,
            })
        };
        // A pkg component before the info component: its subdir shows only after it.
        assert_eq!(at(HELD_BYTES), Some(Placement::Guessed));
        assert_eq!(at(u64::MAX), Some(Placement::Guessed));
        // A stretch that ends within the bound is waited out.
        assert_eq!(at(HELD_BYTES - 4097), None);
    }

    #[test]
    fn bytes_r2_cannot_check_or_a_forced_replacement_are_staged_at_once() {
        for (claimed, force) in [(false, false), (true, true), (false, true)] {
            let placed = placement(Scanned {
                claimed,
                force,
                named: Some("linux-64"),
                found: Some("linux-64"),
                read: 0,
                steps_over: 0,
                finished: false,
                held_bytes: HELD_BYTES,
            });
            assert_eq!(placed, Some(Placement::Staged), "{claimed} {force}");
        }
    }
}
