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

/// A rebuild of a subdir's monolithic repodata, with what compressing it cost.
pub fn build(subdir: &str, bytes: usize, zstd_bytes: usize, zstd_ms: u64) {
    line(json!({
        "time": Date::now().as_millis(),
        "event": "build",
        "subdir": subdir,
        "repodata_bytes": bytes,
        "zstd_bytes": zstd_bytes,
        "zstd_ms": zstd_ms,
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
