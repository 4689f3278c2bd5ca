//! What a channel's index decides, apart from where it keeps its rows and objects: whether a
//! commit creates, keeps or refuses a file; which shard a changed package name gets and which
//! one retires; when a retired shard expires; when a build releases its claim on a mark; which
//! staging objects are left over; when the alarm is due; and in which pages the monolithic
//! files read the rows. The Durable Object (`edge::channel_index`) carries these decisions out
//! with its storage ([`crate::index_store`]) and R2.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// What a commit did to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitStatus {
    /// The file is new, or replaced a different one under `force`.
    Created,
    /// The same bytes were already there.
    Unchanged,
}

/// What committing bytes with `sha256` as `subdir/filename` does, given the SHA-256 stored under
/// that name. The same bytes again are a success that changes nothing (uploads are safe to
/// retry, with or without `force`); other bytes replace the stored ones only under `force`.
pub fn commit_status(
    subdir: &str,
    filename: &str,
    stored: Option<&str>,
    sha256: &str,
    force: bool,
) -> ApiResult<CommitStatus> {
    match stored {
        Some(stored) if stored == sha256 => Ok(CommitStatus::Unchanged),
        _ if conflicts(stored, sha256, force) => Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!(
                "{subdir}/{filename} already exists with other content; \
                 add ?force=true to replace it"
            ),
        )),
        _ => Ok(CommitStatus::Created),
    }
}

/// Whether bytes with `sha256` are refused under a name that holds bytes with `stored`: other
/// bytes are, unless `force`.
pub fn conflicts(stored: Option<&str>, sha256: &str, force: bool) -> bool {
    stored.is_some_and(|stored| stored != sha256) && !force
}

/// What becomes of one package name's shard once its rows changed. Shards are named by the
/// hex SHA-256 of their bytes (`B`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardUpdate<B> {
    /// The rows give the bytes of the current shard again: nothing to write.
    Keep,
    /// Write the rebuilt shard, then name it current and take it off the retired list (it may
    /// be one retired earlier that has not expired yet). `retire` is the shard it replaces.
    Write {
        sha256: String,
        bytes: B,
        retire: Option<String>,
    },
    /// No rows are left: the name leaves the shard index and `retire` is its last shard.
    Remove { retire: Option<String> },
}

/// The update from the name's `current` shard to the one `rebuilt` from its rows, given as its
/// SHA-256 and bytes (`None` when the name has no rows left).
pub fn shard_update<B>(current: Option<&str>, rebuilt: Option<(String, B)>) -> ShardUpdate<B> {
    let retire = current.map(str::to_owned);
    match rebuilt {
        None => ShardUpdate::Remove { retire },
        Some((sha256, _)) if current == Some(sha256.as_str()) => ShardUpdate::Keep,
        Some((sha256, bytes)) => ShardUpdate::Write {
            sha256,
            bytes,
            retire,
        },
    }
}

/// Whether a subdir with `names` package names keeps a shard index: clients read a missing one
/// as an empty subdir, and noarch, which every client asks for, always has one.
pub fn keeps_shard_index(subdir: &str, names: usize) -> bool {
    names > 0 || subdir == "noarch"
}

/// When a shard retired at `retired_at` (milliseconds) may be deleted: after the retention, a
/// client can no longer hold a shard index that names it.
pub fn expires_at(retired_at: u64, retention_ms: u64) -> u64 {
    retired_at.saturating_add(retention_ms)
}

/// The latest retirement time whose shards have expired by `now` (a shard retired exactly
/// then expires now), or `None` while none can have.
pub fn expiry_cutoff(now: u64, retention_ms: u64) -> Option<u64> {
    now.checked_sub(retention_ms)
}

/// How long after a change, or after an object starts, the alarm looks for work a request left
/// unfinished: long enough for a request to finish its own work, so that the alarm steps in only
/// for one that died (or failed) and does not race the live ones.
pub const RECOVERY_MS: u64 = 5_000;

/// What the alarm has to do, as the Durable Object finds it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AlarmWork {
    /// A change answered before the monolithic files held it, a build of them being under way:
    /// the alarm builds them next, as soon as it can.
    pub behind: bool,
    /// Marks (dirty names, stale subdirs) or object intents are held: their request releases
    /// them, or, if it died or failed, the alarm finishes them after [`RECOVERY_MS`].
    pub unfinished: bool,
    /// When the staging objects are next swept.
    pub sweep_at: Option<u64>,
    /// When the oldest retired shard retired.
    pub oldest_retired: Option<u64>,
}

/// When the alarm is due: the earliest of its pending tasks (the next monolithic build now, the
/// recovery of unfinished work shortly, a sweep, the expiry of the oldest retired shard);
/// `None` with nothing to do.
pub fn alarm_due(now: u64, work: AlarmWork, retention_ms: u64) -> Option<u64> {
    [
        work.behind.then_some(now),
        work.unfinished.then_some(now.saturating_add(RECOVERY_MS)),
        work.sweep_at,
        work.oldest_retired
            .map(|retired_at| expires_at(retired_at, retention_ms)),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// Whether a build may release its claim on a mark (a dirty name, a stale subdir) once what it
/// built is durable: only if the mark is still the one it claimed. A change during the build
/// marks again with a newer number, which the next build must see.
pub fn releases(claimed: i64, current: Option<i64>) -> bool {
    current == Some(claimed)
}

/// What a package object was about to undergo when its request started: written before the
/// R2 write, cleared once the rows agree with the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectIntent {
    /// A commit was moving the object into place.
    Place,
    /// A delete had removed the record and was to remove the object.
    Remove,
}

impl ObjectIntent {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectIntent::Place => "place",
            ObjectIntent::Remove => "remove",
        }
    }
}

/// A staging object, as a sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged<'a> {
    pub key: &'a str,
    /// When it was written (epoch milliseconds).
    pub uploaded: u64,
    /// Whether a request of this object is committing from it.
    pub in_flight: bool,
}

/// The staging objects a sweep deletes: those written `grace_ms` or more before `now` and not
/// in flight, which only an upload that died can have left. Also when the next sweep is due:
/// when the youngest kept one (not in flight: those are deleted by their upload) expires.
pub fn sweep_staging<'a>(
    objects: &[Staged<'a>],
    now: u64,
    grace_ms: u64,
) -> (Vec<&'a str>, Option<u64>) {
    let expiry = |object: &Staged| object.uploaded.saturating_add(grace_ms);
    let idle = objects.iter().filter(|object| !object.in_flight);
    let expired = idle
        .clone()
        .filter(|object| expiry(object) <= now)
        .map(|object| object.key)
        .collect();
    let next = idle.map(expiry).filter(|&at| at > now).min();
    (expired, next)
}

/// Whether the alarm must be set to `due`, given the one already set: an earlier alarm stays,
/// since it runs first and sets the next one when it ends.
pub fn moves_alarm(set: Option<u64>, due: u64) -> bool {
    set.is_none_or(|at| at > due)
}

/// Rows read at a time while building the monolithic files (a row holds at most about 1 MB:
/// index.json and run_exports.json are capped at 256 KiB each).
pub const PAGE_ROWS: usize = 32;

/// One page of rows to read: those of one section (`.conda` files or `.tar.bz2` ones) whose file
/// name sorts after `after`, in file name order, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<'a> {
    pub conda: bool,
    pub after: &'a str,
    pub limit: usize,
}

/// The pages that read a subdir's rows in the order repodata.json lists them: the .tar.bz2
/// section, then the .conda one, each by keyset pagination along (subdir, filename), so that
/// every page costs the same however large the subdir.
#[derive(Debug, Default)]
pub struct Pages {
    conda: bool,
    after: String,
    done: bool,
}

impl Pages {
    /// The page to read next, or `None` once both sections are read.
    pub fn next(&self) -> Option<Page<'_>> {
        (!self.done).then_some(Page {
            conda: self.conda,
            after: &self.after,
            limit: PAGE_ROWS,
        })
    }

    /// Moves past the page just read: `rows` rows, the last of them the file `last`. A page
    /// shorter than the limit ends its section.
    pub fn advance(&mut self, rows: usize, last: Option<&str>) {
        match last {
            Some(last) if rows >= PAGE_ROWS => last.clone_into(&mut self.after),
            _ if self.conda => self.done = true,
            _ => {
                self.conda = true;
                self.after.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const A: &str = "aaaa";
    const B: &str = "bbbb";

    /// A shard rebuilt from a name's rows, with no bytes worth looking at.
    fn rebuilt<'a>(sha256: impl Into<Option<&'a str>>) -> Option<(String, ())> {
        sha256.into().map(|sha256| (sha256.to_owned(), ()))
    }

    #[test]
    fn a_new_file_is_created() {
        assert_eq!(
            commit_status("noarch", "a-1-0.conda", None, A, false),
            Ok(CommitStatus::Created)
        );
        assert_eq!(
            commit_status("noarch", "a-1-0.conda", None, A, true),
            Ok(CommitStatus::Created)
        );
    }

    #[test]
    fn the_same_bytes_again_change_nothing_even_under_force() {
        for force in [false, true] {
            assert_eq!(
                commit_status("noarch", "a-1-0.conda", Some(A), A, force),
                Ok(CommitStatus::Unchanged)
            );
        }
    }

    #[test]
    fn other_bytes_conflict_unless_forced() {
        let error = commit_status("linux-64", "a-1-0.conda", Some(A), B, false).unwrap_err();
        assert_eq!(error.code, ErrorCode::AlreadyExists);
        assert_eq!(error.status(), 409);
        assert_eq!(
            error.message,
            "linux-64/a-1-0.conda already exists with other content; add ?force=true to replace it"
        );
        assert_eq!(
            commit_status("linux-64", "a-1-0.conda", Some(A), B, true),
            Ok(CommitStatus::Created)
        );
    }

    #[test]
    fn only_other_bytes_unforced_conflict() {
        assert!(conflicts(Some(A), B, false));
        assert!(!conflicts(Some(A), B, true));
        assert!(!conflicts(Some(A), A, false));
        assert!(!conflicts(None, A, false));
    }

    #[test]
    fn a_shard_with_the_same_bytes_is_kept() {
        assert_eq!(shard_update(Some(A), rebuilt(A)), ShardUpdate::Keep);
    }

    #[test]
    fn a_changed_shard_is_written_and_the_old_one_retires() {
        assert_eq!(
            shard_update(None, rebuilt(A)),
            ShardUpdate::Write {
                sha256: A.into(),
                bytes: (),
                retire: None
            }
        );
        assert_eq!(
            shard_update(Some(A), rebuilt(B)),
            ShardUpdate::Write {
                sha256: B.into(),
                bytes: (),
                retire: Some(A.into())
            }
        );
    }

    #[test]
    fn a_name_without_rows_loses_its_shard() {
        assert_eq!(
            shard_update(Some(A), rebuilt(None)),
            ShardUpdate::Remove {
                retire: Some(A.into())
            }
        );
        assert_eq!(
            shard_update(None, rebuilt(None)),
            ShardUpdate::Remove { retire: None }
        );
    }

    #[test]
    fn an_empty_subdir_keeps_a_shard_index_only_in_noarch() {
        assert!(keeps_shard_index("noarch", 0));
        assert!(!keeps_shard_index("linux-64", 0));
        assert!(keeps_shard_index("linux-64", 1));
    }

    /// One name's shards as the Durable Object keeps them: the current one, and the retired
    /// ones with the time each retired.
    #[derive(Default)]
    struct Book {
        current: Option<String>,
        retired: BTreeMap<String, u64>,
    }

    impl Book {
        fn rebuild(&mut self, sha256: Option<&str>, now: u64) {
            let (retire, current) = match shard_update(self.current.as_deref(), rebuilt(sha256)) {
                ShardUpdate::Keep => return,
                ShardUpdate::Write { sha256, retire, .. } => {
                    self.retired.remove(&sha256);
                    (retire, Some(sha256))
                }
                ShardUpdate::Remove { retire } => (retire, None),
            };
            self.current = current;
            if let Some(old) = retire {
                self.retired.insert(old, now);
            }
        }

        fn expire(&mut self, now: u64, retention_ms: u64) -> Vec<String> {
            let Some(cutoff) = expiry_cutoff(now, retention_ms) else {
                return Vec::new();
            };
            let expired: Vec<String> = self
                .retired
                .iter()
                .filter(|(_, &at)| at <= cutoff)
                .map(|(key, _)| key.clone())
                .collect();
            for key in &expired {
                self.retired.remove(key);
            }
            expired
        }
    }

    #[test]
    fn a_retired_shard_written_again_before_it_expires_is_not_deleted() {
        let mut book = Book::default();
        book.rebuild(Some(A), 0);
        book.rebuild(Some(B), 1_000);
        assert_eq!(book.retired, BTreeMap::from([(A.to_owned(), 1_000)]));
        // The name's rows are back to what they were: A is current again, B retires.
        book.rebuild(Some(A), 2_000);
        assert_eq!(book.current.as_deref(), Some(A));
        assert_eq!(book.retired, BTreeMap::from([(B.to_owned(), 2_000)]));
        assert_eq!(book.expire(1_000 + 10_000, 10_000), Vec::<String>::new());
        assert_eq!(book.expire(2_000 + 10_000, 10_000), vec![B.to_owned()]);
        assert_eq!(book.current.as_deref(), Some(A));
    }

    #[test]
    fn a_retired_shard_expires_exactly_at_the_end_of_its_retention() {
        let retention = 7_000;
        let retired_at = 1_700_000_000_000;
        let expiry = expires_at(retired_at, retention);
        assert_eq!(expiry, retired_at + retention);
        assert_eq!(expiry_cutoff(expiry, retention), Some(retired_at));
        assert!(expiry_cutoff(expiry - 1, retention).unwrap() < retired_at);
        assert_eq!(expiry_cutoff(retention - 1, retention), None);

        let mut book = Book::default();
        book.rebuild(Some(A), 0);
        book.rebuild(None, retired_at);
        assert!(book.expire(expiry - 1, retention).is_empty());
        assert_eq!(book.expire(expiry, retention), vec![A.to_owned()]);
    }

    #[test]
    fn the_alarm_is_due_now_when_a_change_is_behind() {
        let work = AlarmWork {
            behind: true,
            unfinished: true,
            oldest_retired: Some(1_000),
            ..AlarmWork::default()
        };
        assert_eq!(alarm_due(5_000, work, 60_000), Some(5_000));
    }

    #[test]
    fn unfinished_work_is_recovered_after_the_delay_unless_something_is_due_sooner() {
        let work = AlarmWork {
            unfinished: true,
            ..AlarmWork::default()
        };
        assert_eq!(alarm_due(5_000, work, 60_000), Some(5_000 + RECOVERY_MS));
        let sweep_first = AlarmWork {
            sweep_at: Some(6_000),
            ..work
        };
        assert_eq!(alarm_due(5_000, sweep_first, 60_000), Some(6_000));
    }

    #[test]
    fn otherwise_the_alarm_is_due_at_the_next_sweep_or_shard_expiry() {
        let retired = AlarmWork {
            oldest_retired: Some(1_000),
            ..AlarmWork::default()
        };
        assert_eq!(alarm_due(5_000, retired, 60_000), Some(61_000));
        let both = AlarmWork {
            sweep_at: Some(90_000),
            ..retired
        };
        assert_eq!(alarm_due(5_000, both, 60_000), Some(61_000));
    }

    #[test]
    fn with_nothing_to_do_no_alarm_is_due() {
        assert_eq!(alarm_due(5_000, AlarmWork::default(), 60_000), None);
    }

    /// Marks as the Durable Object numbers them: a mark of a marked name takes a number above
    /// every one held, and a build claims the numbers it read.
    #[derive(Default)]
    struct Marks(BTreeMap<&'static str, i64>);

    impl Marks {
        fn mark(&mut self, name: &'static str) {
            let next = self.0.values().max().map_or(1, |max| max + 1);
            self.0.insert(name, next);
        }

        fn claim(&self) -> Vec<(&'static str, i64)> {
            self.0.iter().map(|(name, mark)| (*name, *mark)).collect()
        }

        fn release(&mut self, claimed: &[(&'static str, i64)]) {
            for (name, mark) in claimed {
                if releases(*mark, self.0.get(name).copied()) {
                    self.0.remove(name);
                }
            }
        }
    }

    #[test]
    fn a_claim_is_released_after_its_build_unless_marked_again_meanwhile() {
        let mut marks = Marks::default();
        marks.mark("a");
        marks.mark("b");
        let claimed = marks.claim();
        // While the build runs, b changes again: the next build must see it.
        marks.mark("b");
        marks.release(&claimed);
        assert_eq!(marks.claim(), vec![("b", 3)]);
        marks.release(&marks.claim());
        assert!(marks.claim().is_empty());
    }

    #[test]
    fn a_build_that_dies_releases_nothing() {
        let mut marks = Marks::default();
        marks.mark("a");
        let _claimed = marks.claim();
        // The process dies before the release: the mark is there for the next build.
        assert_eq!(marks.claim(), vec![("a", 1)]);
    }

    #[test]
    fn a_sweep_deletes_expired_idle_staging_objects_and_comes_back_for_the_rest() {
        let staged = |key, uploaded, in_flight| Staged {
            key,
            uploaded,
            in_flight,
        };
        let objects = [
            staged("old", 1_000, false),
            staged("exactly", 4_000, false),
            staged("committing", 1_000, true),
            staged("young", 9_000, false),
            staged("younger", 9_500, false),
        ];
        let (expired, next) = sweep_staging(&objects, 10_000, 6_000);
        assert_eq!(expired, vec!["old", "exactly"]);
        assert_eq!(next, Some(15_000));
        assert_eq!(sweep_staging(&objects[..3], 10_000, 6_000).1, None);
    }

    #[test]
    fn an_earlier_alarm_stays_and_a_later_one_moves() {
        assert!(moves_alarm(None, 61_000));
        assert!(!moves_alarm(Some(5_000), 61_000));
        assert!(!moves_alarm(Some(61_000), 61_000));
        assert!(moves_alarm(Some(90_000), 61_000));
    }

    /// Reads a subdir whose rows are `filenames` page by page, as the Durable Object's query
    /// does; returns the files in the order read and the number of queries.
    fn read_all(filenames: &[String]) -> (Vec<String>, usize) {
        let mut sorted = filenames.to_vec();
        sorted.sort();
        let mut pages = Pages::default();
        let (mut read, mut queries) = (Vec::new(), 0);
        while let Some(page) = pages.next() {
            queries += 1;
            let rows: Vec<String> = sorted
                .iter()
                .filter(|f| f.ends_with(".conda") == page.conda && f.as_str() > page.after)
                .take(page.limit)
                .cloned()
                .collect();
            pages.advance(rows.len(), rows.last().map(String::as_str));
            read.extend(rows);
        }
        (read, queries)
    }

    fn files(count: usize, extension: &str) -> Vec<String> {
        (0..count)
            .map(|i| format!("pkg{i:03}-1.0-0{extension}"))
            .collect()
    }

    #[test]
    fn an_empty_subdir_takes_one_query_per_section() {
        assert_eq!(read_all(&[]), (Vec::new(), 2));
    }

    #[test]
    fn an_exact_multiple_of_the_page_size_ends_with_an_empty_page() {
        let tar_bz2 = files(2 * PAGE_ROWS, ".tar.bz2");
        let (read, queries) = read_all(&tar_bz2);
        assert_eq!(read, tar_bz2);
        // Two full pages, an empty one, then the (empty) .conda section.
        assert_eq!(queries, 4);
    }

    #[test]
    fn the_tar_bz2_section_comes_first_each_in_file_name_order() {
        let tar_bz2 = files(PAGE_ROWS + 5, ".tar.bz2");
        let conda = files(3, ".conda");
        let mut mixed: Vec<String> = conda.iter().chain(&tar_bz2).cloned().collect();
        mixed.reverse();
        let (read, queries) = read_all(&mixed);
        assert_eq!(read, [tar_bz2, conda].concat());
        assert_eq!(queries, 3);
    }
}
