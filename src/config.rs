//! The deployment's settings (`[vars]` in wrangler.toml), read once per request into one
//! struct. A missing setting takes its default; a malformed one is a configuration error,
//! reported instead of silently replaced.

/// Every setting the Worker and the channel index read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest accepted upload body (`MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// How long an isolate trusts a verified key, a channel and a membership
    /// (`AUTH_CACHE_SECONDS`).
    pub auth_cache_ms: u64,
    /// How long a superseded shard stays readable (`SHARD_RETENTION_SECONDS`).
    pub shard_retention_ms: u64,
    /// Part size of streamed artifact writes (`R2_PART_BYTES`; R2's minimum is 5 MiB).
    pub r2_part_bytes: usize,
    /// How much of a large upload's body is held unstored while the package's scan looks for
    /// its subdir, before it is staged instead of written straight to its key
    /// (`UPLOAD_HOLD_BYTES`; see [`crate::placement`]).
    pub upload_hold_bytes: u64,
    /// How old a staging object must be before the channel index's sweep deletes it as left
    /// over from an upload that died, and the consistency check reports it as stale
    /// (`STAGING_GRACE_SECONDS`); longer than any upload takes to commit.
    pub staging_grace_ms: u64,
    /// How long a browser session lasts at most (`SESSION_HOURS`); never beyond its key's expiry.
    pub session_ms: u64,
    /// How long a key minted for a trusted publisher lasts (`MINTED_KEY_SECONDS`): at most
    /// [`MAX_MINTED_KEY_MS`].
    pub minted_key_ms: u64,
    /// Whether a successful read (GET or HEAD answered below 400) gets a log line
    /// (`LOG_READS`). Off by default: the Workers dashboard already counts every request, and
    /// a line per read is most of a cached read's CPU time.
    pub log_reads: bool,
    /// Whether a mirror channel's upstream may be a plain `http://` URL
    /// (`MIRROR_ALLOW_HTTP`): off by default, on for local tests against a server on
    /// 127.0.0.1.
    pub mirror_allow_http: bool,
    /// How long a mirror's copy of an upstream repodata.json is served before it is
    /// revalidated with the upstream (`MIRROR_REVALIDATE_SECONDS`).
    pub mirror_revalidate_ms: u64,
    /// The largest single record (or `info`) of an upstream repodata.json a mirror reads
    /// (`MIRROR_MAX_RECORD_BYTES`): the document is read a record at a time, so this, not the
    /// document's size, bounds the memory a refresh needs.
    pub mirror_max_record_bytes: u64,
    /// Whether a read that finds a mirror's index older than `MIRROR_REVALIDATE_SECONDS` is
    /// answered from it while the refresh runs after the answer
    /// (`MIRROR_REFRESH_IN_BACKGROUND`, on by default), rather than waiting for the refresh.
    pub mirror_refresh_in_background: bool,
    /// How long a mirror waits for its upstream's answer, and for each chunk of its body
    /// (`MIRROR_UPSTREAM_TIMEOUT_SECONDS`, 15 by default).
    pub mirror_upstream_timeout_ms: u64,
}

/// A key minted for a trusted publisher lasts 15 minutes at most: long enough for one CI job's
/// uploads, short enough that a leaked one is soon worthless.
pub const MAX_MINTED_KEY_MS: u64 = 15 * 60 * 1000;

impl Default for Config {
    fn default() -> Self {
        Self {
            // Cloudflare's Free and Pro plans cap request bodies at 100 MB.
            max_upload_bytes: 100 * 1024 * 1024,
            auth_cache_ms: 30_000,
            shard_retention_ms: 7 * 24 * 3600 * 1000,
            r2_part_bytes: 8 * 1024 * 1024,
            upload_hold_bytes: crate::placement::HELD_BYTES,
            staging_grace_ms: 24 * 3600 * 1000,
            session_ms: 12 * 3600 * 1000,
            minted_key_ms: MAX_MINTED_KEY_MS,
            log_reads: false,
            mirror_allow_http: false,
            mirror_revalidate_ms: 60_000,
            mirror_max_record_bytes: 1024 * 1024,
            mirror_refresh_in_background: true,
            mirror_upstream_timeout_ms: 15_000,
        }
    }
}

impl Config {
    /// Reads the settings through `var`, which gives a variable's text if it is set.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let defaults = Self::default();
        let number = |name: &str| -> Result<Option<f64>, String> {
            var(name)
                .map(|text| match text.trim().parse::<f64>() {
                    Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
                    _ => Err(format!("{name} is '{text}', not a non-negative number")),
                })
                .transpose()
        };
        let seconds = |name: &str, default_ms: u64| {
            Ok::<_, String>(number(name)?.map_or(default_ms, |s| (s * 1000.0) as u64))
        };
        let minted_key_ms = seconds("MINTED_KEY_SECONDS", defaults.minted_key_ms)?;
        if minted_key_ms > MAX_MINTED_KEY_MS {
            return Err(format!(
                "MINTED_KEY_SECONDS is over {}, the longest a minted key may last",
                MAX_MINTED_KEY_MS / 1000
            ));
        }
        let flag = |name: &str| match var(name).as_deref().map(str::trim) {
            None | Some("") | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(format!("{name} is '{other}', not true or false")),
        };
        Ok(Self {
            minted_key_ms,
            log_reads: flag("LOG_READS")?,
            mirror_allow_http: flag("MIRROR_ALLOW_HTTP")?,
            mirror_revalidate_ms: seconds(
                "MIRROR_REVALIDATE_SECONDS",
                defaults.mirror_revalidate_ms,
            )?,
            mirror_max_record_bytes: number("MIRROR_MAX_RECORD_BYTES")?
                .map_or(defaults.mirror_max_record_bytes, |v| v as u64),
            mirror_refresh_in_background: match var("MIRROR_REFRESH_IN_BACKGROUND") {
                None => defaults.mirror_refresh_in_background,
                Some(_) => flag("MIRROR_REFRESH_IN_BACKGROUND")?,
            },
            mirror_upstream_timeout_ms: match seconds(
                "MIRROR_UPSTREAM_TIMEOUT_SECONDS",
                defaults.mirror_upstream_timeout_ms,
            )? {
                0 => return Err("MIRROR_UPSTREAM_TIMEOUT_SECONDS must be more than 0".into()),
                ms => ms,
            },
            max_upload_bytes: number("MAX_UPLOAD_BYTES")?
                .map_or(defaults.max_upload_bytes, |v| v as u64),
            auth_cache_ms: seconds("AUTH_CACHE_SECONDS", defaults.auth_cache_ms)?,
            shard_retention_ms: seconds("SHARD_RETENTION_SECONDS", defaults.shard_retention_ms)?,
            r2_part_bytes: number("R2_PART_BYTES")?.map_or(defaults.r2_part_bytes, |v| v as usize),
            upload_hold_bytes: number("UPLOAD_HOLD_BYTES")?
                .map_or(defaults.upload_hold_bytes, |v| v as u64),
            staging_grace_ms: seconds("STAGING_GRACE_SECONDS", defaults.staging_grace_ms)?,
            session_ms: number("SESSION_HOURS")?.map_or(defaults.session_ms, |hours| {
                (hours * 3600.0 * 1000.0) as u64
            }),
        })
    }

    /// Whether a request gets its log line: every change and every refusal or failure, and a
    /// successful read only when `LOG_READS` asks for it.
    pub fn logs_request(&self, read: bool, status: u16) -> bool {
        !read || status >= 400 || self.log_reads
    }
}

/// The variables of `pairs`, as `from_vars` reads them: what the settings' tests pass.
#[cfg(test)]
pub fn test_vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    |name| {
        pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::test_vars as vars;
    use super::*;

    #[test]
    fn unset_settings_take_their_defaults() {
        assert_eq!(Config::from_vars(vars(&[])), Ok(Config::default()));
    }

    #[test]
    fn settings_are_read_in_their_units() {
        let config = Config::from_vars(vars(&[
            ("MAX_UPLOAD_BYTES", "1000"),
            ("AUTH_CACHE_SECONDS", "0.5"),
            ("SHARD_RETENTION_SECONDS", "3"),
            ("R2_PART_BYTES", "5242880"),
            ("STAGING_GRACE_SECONDS", "2"),
            ("UPLOAD_HOLD_BYTES", "1048576"),
            ("SESSION_HOURS", "0.5"),
            ("MINTED_KEY_SECONDS", "5"),
            ("LOG_READS", "true"),
            ("MIRROR_ALLOW_HTTP", "true"),
            ("MIRROR_REVALIDATE_SECONDS", "2"),
            ("MIRROR_MAX_RECORD_BYTES", "1000"),
            ("MIRROR_REFRESH_IN_BACKGROUND", "false"),
            ("MIRROR_UPSTREAM_TIMEOUT_SECONDS", "2.5"),
        ]))
        .unwrap();
        assert_eq!(config.max_upload_bytes, 1000);
        assert_eq!(config.auth_cache_ms, 500);
        assert_eq!(config.shard_retention_ms, 3000);
        assert_eq!(config.r2_part_bytes, 5 * 1024 * 1024);
        assert_eq!(config.staging_grace_ms, 2000);
        assert_eq!(config.upload_hold_bytes, 1024 * 1024);
        assert_eq!(config.session_ms, 1800 * 1000);
        assert_eq!(config.minted_key_ms, 5000);
        assert!(config.log_reads);
        assert!(config.mirror_allow_http);
        assert_eq!(config.mirror_revalidate_ms, 2000);
        assert_eq!(config.mirror_max_record_bytes, 1000);
        assert!(!config.mirror_refresh_in_background);
        assert_eq!(config.mirror_upstream_timeout_ms, 2500);
    }

    #[test]
    fn successful_reads_are_logged_only_when_asked() {
        let quiet = Config::default();
        assert!(!quiet.logs_request(true, 200));
        assert!(!quiet.logs_request(true, 304));
        assert!(quiet.logs_request(true, 404));
        assert!(quiet.logs_request(true, 500));
        assert!(quiet.logs_request(false, 201));
        let chatty = Config {
            log_reads: true,
            ..quiet
        };
        assert!(chatty.logs_request(true, 200));
    }

    #[test]
    fn a_malformed_setting_is_an_error_naming_it() {
        let error = Config::from_vars(vars(&[("AUTH_CACHE_SECONDS", "soon")])).unwrap_err();
        assert!(error.contains("AUTH_CACHE_SECONDS"), "{error}");
        assert!(Config::from_vars(vars(&[("MAX_UPLOAD_BYTES", "-1")])).is_err());
        let error = Config::from_vars(vars(&[("MINTED_KEY_SECONDS", "901")])).unwrap_err();
        assert!(error.contains("MINTED_KEY_SECONDS"), "{error}");
        assert!(Config::from_vars(vars(&[("MINTED_KEY_SECONDS", "900")])).is_ok());
        let error = Config::from_vars(vars(&[("LOG_READS", "yes")])).unwrap_err();
        assert!(error.contains("LOG_READS"), "{error}");
        let error = Config::from_vars(vars(&[("MIRROR_ALLOW_HTTP", "1")])).unwrap_err();
        assert!(error.contains("MIRROR_ALLOW_HTTP"), "{error}");
        let error =
            Config::from_vars(vars(&[("MIRROR_UPSTREAM_TIMEOUT_SECONDS", "0")])).unwrap_err();
        assert!(error.contains("MIRROR_UPSTREAM_TIMEOUT_SECONDS"), "{error}");
    }
}
