//! The web app's page URLs: which paths a browser's request is answered with the shell page
//! for, and the headers that page is sent with. Conda clients never ask for HTML, so every
//! channel URL answers them as before; a path that is not a page answers browsers as before too
//! (a package file downloads).

use crate::names::check_channel_name;

/// Where the shell page is among the static files.
pub const SHELL_PATH: &str = "/-/shell.html";

/// The shell's headers. Its script and styles come from `/-/` only: no inline script or style
/// can run, whatever a package's metadata contains.
pub const SHELL_HEADERS: [(&str, &str); 7] = [
    ("Content-Type", "text/html; charset=utf-8"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    // Whether a channel page is a 200 or a 404 depends on who asks.
    ("Cache-Control", "private, no-cache"),
    ("Vary", "Accept, Cookie"),
];

/// The web app's page URLs and the module that renders each, shared with its router
/// (`web/public/-/app.js`): `:channel` is a channel's name, `:name` a package's.
pub const ROUTES: &str = include_str!("../web/public/-/routes.json");

/// A page of the web app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page<'a> {
    /// A page about no channel: the channel list, sign-in, keys.
    Site,
    /// A page of one channel: found only if the caller may read it.
    Channel(&'a str),
}

/// Whether a request's `Accept` header asks for a page rather than data.
pub fn wants_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

/// The page a path names, if one of [`ROUTES`] matches it.
pub fn page_of(path: &str) -> Option<Page<'_>> {
    let segments: Vec<&str> = path.split('/').collect();
    routes()
        .iter()
        .find_map(|pattern| matches(pattern, &segments))
}

fn routes() -> &'static [Vec<String>] {
    static PATTERNS: std::sync::OnceLock<Vec<Vec<String>>> = std::sync::OnceLock::new();
    PATTERNS.get_or_init(|| {
        let routes: Vec<(String, String)> =
            serde_json::from_str(ROUTES).expect("routes.json is a list of [pattern, page]");
        routes
            .into_iter()
            .map(|(pattern, _)| pattern.split('/').map(str::to_owned).collect())
            .collect()
    })
}

/// The page `segments` are, if they match `pattern` segment by segment.
fn matches<'p>(pattern: &[String], segments: &[&'p str]) -> Option<Page<'p>> {
    if pattern.len() != segments.len() {
        return None;
    }
    let mut page = Page::Site;
    for (expected, &segment) in pattern.iter().zip(segments) {
        match expected.as_str() {
            ":channel" if check_channel_name(segment).is_ok() => page = Page::Channel(segment),
            ":name" if !segment.is_empty() => {}
            literal if literal == segment => {}
            _ => return None,
        }
    }
    Some(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_urls() {
        assert_eq!(page_of("/"), Some(Page::Site));
        assert_eq!(page_of("/-/signin"), Some(Page::Site));
        assert_eq!(page_of("/-/keys"), Some(Page::Site));
        assert_eq!(page_of("/team"), Some(Page::Channel("team")));
        for path in [
            "/team/upload",
            "/team/members",
            "/team/settings",
            "/team/packages/numpy",
        ] {
            assert_eq!(page_of(path), Some(Page::Channel("team")), "{path}");
        }
    }

    #[test]
    fn channel_files_and_everything_else_are_no_pages() {
        for path in [
            "/team/noarch/repodata.json",
            "/team/linux-64/numpy-1.0-0.conda",
            "/team/noarch",
            "/team/packages",
            "/team/packages/",
            "/team/packages/a/b",
            "/team/",
            "/team/unknown",
            "/api",
            "/api/v1/channels",
            "/t",
            "/-",
            "/-/app.js",
            "/-/shell.html",
            "/-/other",
            "/Team",
            "/.hidden",
            "//",
        ] {
            assert_eq!(page_of(path), None, "{path}");
        }
    }

    #[test]
    fn every_route_has_its_page_module() {
        let routes: Vec<(String, String)> = serde_json::from_str(ROUTES).unwrap();
        let pages = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/public/-/pages");
        for (pattern, page) in routes {
            assert!(
                pages.join(format!("{page}.js")).is_file(),
                "{pattern}: {page}"
            );
        }
    }

    #[test]
    fn browsers_ask_for_html() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(Some(browser)));
        assert!(wants_html(Some("TEXT/HTML")));
        assert!(!wants_html(Some("application/json")));
        assert!(!wants_html(Some("*/*")));
        assert!(!wants_html(None));
    }

    #[test]
    fn the_shell_forbids_inline_script() {
        let csp = SHELL_HEADERS
            .iter()
            .find(|(name, _)| *name == "Content-Security-Policy")
            .unwrap()
            .1;
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains("unsafe-inline"));
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}
