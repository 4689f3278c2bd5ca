//! Counts what mirror channels cost and save, per channel, in the isolate that did it (as
//! [`super::r2_counter`] counts R2 operations): the Worker counts its upstream fetches of
//! repodata.json and its hits, a channel's Durable Object its upstream fetches of packages and
//! the bytes it kept.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One channel's counts in one isolate, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorCounts {
    /// Requests sent to the upstream (a followed redirect counts once).
    pub upstream_fetches: u64,
    /// Bytes of package files fetched from the upstream and kept in R2.
    pub bytes_cached: u64,
    /// Package requests answered from what was kept, with no upstream fetch of their own.
    pub hits: u64,
}

thread_local! {
    static COUNTS: RefCell<BTreeMap<String, MirrorCounts>> = const { RefCell::new(BTreeMap::new()) };
}

fn add(channel: &str, change: impl FnOnce(&mut MirrorCounts)) {
    COUNTS.with(|counts| change(counts.borrow_mut().entry(channel.to_owned()).or_default()));
}

pub fn upstream_fetch(channel: &str) {
    add(channel, |counts| counts.upstream_fetches += 1);
}

pub fn cached(channel: &str, bytes: u64) {
    add(channel, |counts| counts.bytes_cached += bytes);
}

pub fn hit(channel: &str) {
    add(channel, |counts| counts.hits += 1);
}

/// The channel's counts in this isolate (zeros before its first).
pub fn counts(channel: &str) -> MirrorCounts {
    COUNTS.with(|counts| counts.borrow().get(channel).copied().unwrap_or_default())
}
