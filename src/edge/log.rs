//! Logs: one JSON object per line. Callers pass paths with any token already removed.

use serde_json::{json, Value};
use worker::{console_error, console_log, Date};

pub fn request(method: &str, path: &str, status: u16, millis: u64) {
    line(json!({
        "time": Date::now().as_millis(),
        "method": method,
        "path": path,
        "status": status,
        "ms": millis,
    }));
}

/// A change to a channel, for the audit trail.
pub fn change(action: &str, user: &str, path: &str, status: u16) {
    line(json!({
        "time": Date::now().as_millis(),
        "event": action,
        "user": user,
        "path": path,
        "status": status,
    }));
}

/// A rebuild of a subdir's monolithic repodata: its size and the R2 parts it took (0: a
/// single put). (No timings: a Worker's clock does not advance while it computes.)
pub fn build(channel: &str, subdir: &str, bytes: usize, json_parts: usize, zstd_parts: usize) {
    line(json!({
        "time": Date::now().as_millis(),
        "event": "build",
        "channel": channel,
        "subdir": subdir,
        "repodata_bytes": bytes,
        "repodata_parts": json_parts,
        "zstd_parts": zstd_parts,
    }));
}

/// What one refresh of a mirror's subdir did, and how long each step took.
pub struct MirrorRefreshLog<'a> {
    pub channel: &'a str,
    pub subdir: &'a str,
    /// `shards` or `repodata.json`.
    pub source: &'a str,
    pub documents: usize,
    pub records: usize,
    pub admitted: usize,
    pub changed: u64,
    pub read_ms: u64,
    pub swap_ms: u64,
    pub build_ms: u64,
}

pub fn mirror_refresh(refresh: &MirrorRefreshLog<'_>) {
    line(json!({
        "time": Date::now().as_millis(),
        "event": "mirror_refresh",
        "channel": refresh.channel,
        "subdir": refresh.subdir,
        "source": refresh.source,
        "documents": refresh.documents,
        "records": refresh.records,
        "admitted": refresh.admitted,
        "changed": refresh.changed,
        "read_ms": refresh.read_ms,
        "swap_ms": refresh.swap_ms,
        "build_ms": refresh.build_ms,
    }));
}

/// A change a request left unfinished, finished by the channel index's alarm: the object was
/// kept (a record names it) or deleted.
pub fn recovered(intent: &str, key: &str, kept: bool) {
    line(json!({
        "time": Date::now().as_millis(),
        "event": "recovered",
        "intent": intent,
        "key": key,
        "object": if kept { "kept" } else { "deleted" },
    }));
}

/// A sign-in with an identity provider that was refused, and why (never a token).
pub fn sign_in_refused(provider: &str, code: &str, detail: &str) {
    line(json!({
        "time": Date::now().as_millis(),
        "event": "sign-in refused",
        "provider": provider,
        "code": code,
        "detail": detail,
    }));
}

pub fn error(message: &str) {
    console_error!(
        "{}",
        json!({ "time": Date::now().as_millis(), "level": "error", "message": message })
    );
}

fn line(value: Value) {
    console_log!("{value}");
}
