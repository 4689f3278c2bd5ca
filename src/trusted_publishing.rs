//! Trusted publishing: which OIDC issuers the server trusts, what their tokens' claims say of
//! the CI run, and whether a run matches a channel's trusted publisher. The token's signature,
//! issuer, audience and times are checked before this (`jwt`); the rules here are pure.
//!
//! A refusal names the claim that did not match and the token's own value of it, never a
//! publisher's: a token's holder learns nothing of which publishers exist.

use serde_json::{Map, Value};

use crate::directory::CandidateRow;

/// GitHub Actions' issuer, unless `GITHUB_OIDC_ISSUER` names another.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// GitLab.com's issuer, unless `GITLAB_OIDC_ISSUER` names another.
pub const GITLAB_ISSUER: &str = "https://gitlab.com";
/// The audience prefix.dev's clients ask for, accepted unless `TRUSTED_PUBLISHING_AUDIENCES`
/// says otherwise.
pub const DEFAULT_AUDIENCES: &str = "prefix.dev";

/// Whose claims an issuer's tokens carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// GitHub Actions (github.com, or a GitHub Enterprise Server).
    GitHub,
    /// GitLab CI (gitlab.com, or a self-managed GitLab).
    GitLab,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "github" => Some(Self::GitHub),
            "gitlab" => Some(Self::GitLab),
            _ => None,
        }
    }

    /// What a token of this provider says of its run (`claims`: those beyond the registered
    /// ones); an error naming the claim when it has no repository.
    pub fn run(self, claims: &Map<String, Value>) -> Result<Run, String> {
        let text = |name: &str| match claims.get(name) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        let (repository_claim, run_id, workflow, git_ref) = match self {
            Self::GitHub => (
                "repository",
                text("run_id"),
                text("job_workflow_ref")
                    .or_else(|| text("workflow_ref"))
                    .and_then(|reference| github_workflow(&reference)),
                text("ref"),
            ),
            Self::GitLab => (
                "project_path",
                text("pipeline_id"),
                text("ci_config_ref_uri").and_then(|uri| gitlab_config_path(&uri)),
                text("ref_path").or_else(|| text("ref")),
            ),
        };
        let repository = text(repository_claim).ok_or_else(|| {
            format!("trusted publishing refused: the token has no '{repository_claim}' claim")
        })?;
        Ok(Run {
            repository,
            workflow,
            git_ref,
            environment: text("environment"),
            run_id,
            commit: text("sha"),
        })
    }
}

/// `release.yml` of `owner/name/.github/workflows/release.yml@refs/heads/main`.
fn github_workflow(reference: &str) -> Option<String> {
    let path = reference
        .split_once('@')
        .map_or(reference, |(path, _)| path);
    let (_, file) = path.split_once("/.github/workflows/")?;
    (!file.is_empty()).then(|| file.to_owned())
}

/// `ci/release.yml` of `gitlab.com/group/project//ci/release.yml@refs/heads/main`.
fn gitlab_config_path(uri: &str) -> Option<String> {
    let path = uri.rsplit_once('@').map_or(uri, |(path, _)| path);
    let (_, file) = path.split_once("//")?;
    (!file.is_empty()).then(|| file.to_owned())
}

/// What a token's claims say of the CI run that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Run {
    /// `owner/name` on GitHub, the project path on GitLab.
    pub repository: String,
    /// The workflow file name (GitHub) or CI config path (GitLab).
    pub workflow: Option<String>,
    /// The full git ref: `refs/heads/main`, `refs/tags/v1`.
    pub git_ref: Option<String>,
    pub environment: Option<String>,
    pub run_id: Option<String>,
    pub commit: Option<String>,
}

/// An OIDC issuer the server trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub provider: Provider,
    /// Its `iss`, the base of its discovery document.
    pub url: String,
}

/// The trusted-publishing settings (`[vars]` in wrangler.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// GitHub's, GitLab's, then those an operator added.
    pub issuers: Vec<Issuer>,
    /// The audiences accepted besides the server's own host name.
    pub audiences: Vec<String>,
}

/// An issuer URL: https, or plain http on the loopback interface (a test's own issuer).
fn check_issuer_url(name: &str, url: &str) -> Result<(), String> {
    let local = ["http://127.0.0.1:", "http://localhost:"]
        .iter()
        .any(|prefix| url.starts_with(prefix));
    let host = url.strip_prefix("https://").unwrap_or_default();
    if local || (!host.is_empty() && !host.starts_with('/')) {
        Ok(())
    } else {
        Err(format!("{name} names '{url}', not an https:// issuer URL"))
    }
}

impl Settings {
    /// Reads `GITHUB_OIDC_ISSUER`, `GITLAB_OIDC_ISSUER`, `TRUSTED_PUBLISHING_ISSUERS`
    /// (`github=<url>` or `gitlab=<url>`, separated by spaces or commas) and
    /// `TRUSTED_PUBLISHING_AUDIENCES` (separated likewise; unset: `prefix.dev`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let list = |text: &str| -> Vec<String> {
            text.split([' ', ',', '\n'])
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut issuers = Vec::new();
        for (provider, name, default) in [
            (Provider::GitHub, "GITHUB_OIDC_ISSUER", GITHUB_ISSUER),
            (Provider::GitLab, "GITLAB_OIDC_ISSUER", GITLAB_ISSUER),
        ] {
            let url = var(name).map_or(default.to_owned(), |url| url.trim().to_owned());
            check_issuer_url(name, &url)?;
            issuers.push(Issuer { provider, url });
        }
        for entry in list(&var("TRUSTED_PUBLISHING_ISSUERS").unwrap_or_default()) {
            let parsed = entry
                .split_once('=')
                .and_then(|(provider, url)| Some((Provider::parse(provider)?, url)));
            let Some((provider, url)) = parsed else {
                return Err(format!(
                    "TRUSTED_PUBLISHING_ISSUERS has '{entry}', not github=<url> or gitlab=<url>"
                ));
            };
            check_issuer_url("TRUSTED_PUBLISHING_ISSUERS", url)?;
            issuers.push(Issuer {
                provider,
                url: url.to_owned(),
            });
        }
        let audiences =
            list(&var("TRUSTED_PUBLISHING_AUDIENCES").unwrap_or_else(|| DEFAULT_AUDIENCES.into()));
        Ok(Self { issuers, audiences })
    }

    /// The trusted issuer whose `iss` is `url`.
    pub fn issuer(&self, url: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|issuer| issuer.url == url)
    }

    /// The issuer a publisher's registration names: `github`, `gitlab`, or a trusted issuer's
    /// URL.
    pub fn named(&self, name: &str) -> Result<&Issuer, String> {
        let found = match Provider::parse(name) {
            Some(provider) => self.issuers.iter().find(|i| i.provider == provider),
            None => self.issuer(name),
        };
        found.ok_or_else(|| {
            let others: Vec<&str> = self
                .issuers
                .iter()
                .skip(2)
                .map(|i| i.url.as_str())
                .collect();
            let mut allowed = "'github' or 'gitlab'".to_owned();
            if !others.is_empty() {
                allowed = format!("'github', 'gitlab' or one of {}", others.join(", "));
            }
            format!("issuer is {allowed}")
        })
    }

    /// The audiences a token for the server at `host` (its name, without the port) may have.
    pub fn accepted_audiences(&self, host: &str) -> Vec<String> {
        let mut audiences = vec![host.to_owned()];
        audiences.extend(self.audiences.iter().filter(|a| *a != host).cloned());
        audiences
    }
}

/// A trusted publisher's conditions beyond its issuer and repository (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conditions<'a> {
    pub workflow: Option<&'a str>,
    pub environment: Option<&'a str>,
    /// A full ref; one ending in `*` matches every ref it begins.
    pub git_ref: Option<&'a str>,
}

/// The claims a run is matched on, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Claim {
    Repository,
    Workflow,
    Environment,
    GitRef,
}

impl Claim {
    fn describe(self) -> &'static str {
        match self {
            Self::Repository => "repository",
            Self::Workflow => "workflow",
            Self::Environment => "environment",
            Self::GitRef => "git ref",
        }
    }
}

/// The first claim of `run` that the publisher for `repository` with `conditions` does not
/// accept; `None` when it accepts the run. Repositories and environments are compared without
/// case, as GitHub and GitLab treat them; workflows and refs exactly.
pub fn mismatch(repository: &str, conditions: &Conditions, run: &Run) -> Option<Claim> {
    let matches = |wanted: Option<&str>, got: Option<&str>, same: fn(&str, &str) -> bool| {
        wanted.is_none_or(|wanted| got.is_some_and(|got| same(wanted, got)))
    };
    let ref_matches = |wanted: &str, got: &str| match wanted.strip_suffix('*') {
        Some(prefix) => got.starts_with(prefix),
        None => wanted == got,
    };
    let caseless = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if !repository.eq_ignore_ascii_case(&run.repository) {
        Some(Claim::Repository)
    } else if !matches(conditions.workflow, run.workflow.as_deref(), |a, b| a == b) {
        Some(Claim::Workflow)
    } else if !matches(conditions.environment, run.environment.as_deref(), caseless) {
        Some(Claim::Environment)
    } else if !matches(conditions.git_ref, run.git_ref.as_deref(), ref_matches) {
        Some(Claim::GitRef)
    } else {
        None
    }
}

/// The refusal of a run that no publisher accepted, `closest` being the latest claim at which
/// any publisher for its repository refused it: it names that claim and the token's value.
pub fn refusal(closest: Claim, run: &Run) -> String {
    let value = match closest {
        Claim::Repository => Some(&run.repository),
        Claim::Workflow => run.workflow.as_ref(),
        Claim::Environment => run.environment.as_ref(),
        Claim::GitRef => run.git_ref.as_ref(),
    };
    let what = closest.describe();
    match (closest, value) {
        (Claim::Repository, _) => format!(
            "trusted publishing refused: no trusted publisher is registered for the token's \
             repository '{}'",
            short(&run.repository)
        ),
        (_, Some(value)) => format!(
            "trusted publishing refused: the token's {what} '{}' does not match a trusted \
             publisher of its repository",
            short(value)
        ),
        (_, None) => format!(
            "trusted publishing refused: the token names no {what}, and the trusted publishers \
             of its repository require one"
        ),
    }
}

/// The publishers among `candidates` (those of the run's repository, oldest first) that accept
/// `run`: the oldest of each channel. When none does, the refusal naming the claim that came
/// closest to matching (see [`refusal`]).
pub fn accepting<'a>(
    candidates: &'a [CandidateRow],
    run: &Run,
) -> Result<Vec<&'a CandidateRow>, String> {
    let mut closest = Claim::Repository;
    let mut accepted: Vec<&CandidateRow> = Vec::new();
    for candidate in candidates {
        let conditions = Conditions {
            workflow: candidate.workflow.as_deref(),
            environment: candidate.environment.as_deref(),
            git_ref: candidate.git_ref.as_deref(),
        };
        match mismatch(&candidate.repository, &conditions, run) {
            None if !accepted.iter().any(|a| a.channel == candidate.channel) => {
                accepted.push(candidate)
            }
            None => {}
            Some(claim) => closest = closest.max(claim),
        }
    }
    if accepted.is_empty() {
        Err(refusal(closest, run))
    } else {
        Ok(accepted)
    }
}

/// Claim values echoed in refusals are cut short: clients show at most 512 characters.
fn short(value: &str) -> String {
    value.chars().take(100).collect()
}

/// Checks what an owner registers: the repository's shape for the provider (GitHub
/// `owner/name`; GitLab `group/…/project`), a workflow file name (GitHub) or config path
/// (GitLab), an environment, and a full git ref with at most a trailing `*`.
pub fn check_publisher(
    provider: Provider,
    repository: &str,
    conditions: &Conditions,
) -> Result<(), String> {
    let name_chars = |segment: &str| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let segments: Vec<&str> = repository.split('/').collect();
    let repository_ok = repository.len() <= 255
        && segments.iter().all(|s| name_chars(s))
        && match provider {
            Provider::GitHub => segments.len() == 2,
            Provider::GitLab => segments.len() >= 2,
        };
    if !repository_ok {
        return Err(match provider {
            Provider::GitHub => "repository is owner/name on GitHub".to_owned(),
            Provider::GitLab => "repository is the project path on GitLab (group/project)".into(),
        });
    }
    let printable =
        |text: &str| !text.is_empty() && text.len() <= 255 && !text.chars().any(|c| c.is_control());
    if let Some(workflow) = conditions.workflow {
        let ok = match provider {
            Provider::GitHub => {
                name_chars(workflow) && (workflow.ends_with(".yml") || workflow.ends_with(".yaml"))
            }
            Provider::GitLab => {
                workflow.len() <= 255
                    && !workflow.starts_with('/')
                    && workflow.split('/').all(|s| name_chars(s) && s != "..")
            }
        };
        if !ok {
            return Err(match provider {
                Provider::GitHub => {
                    "workflow is a file name under .github/workflows/, such as release.yml".into()
                }
                Provider::GitLab => {
                    "workflow is the CI config's path in the project, such as .gitlab-ci.yml"
                        .to_owned()
                }
            });
        }
    }
    if conditions.environment.is_some_and(|e| !printable(e)) {
        return Err("environment has 1 to 255 printable characters".into());
    }
    if let Some(git_ref) = conditions.git_ref {
        let star_inside = git_ref.trim_end_matches('*').contains('*') || git_ref.ends_with("**");
        if !printable(git_ref) || !git_ref.starts_with("refs/") || star_inside {
            return Err(
                "ref is a full git ref (refs/heads/main, refs/tags/v1), optionally ending in *"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_vars as vars;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn github_claims_name_the_run() {
        let run = Provider::GitHub
            .run(&claims(json!({
                "repository": "Acme/Widgets",
                "job_workflow_ref": "Acme/Widgets/.github/workflows/release.yml@refs/tags/v1",
                "workflow_ref": "Acme/Widgets/.github/workflows/caller.yml@refs/tags/v1",
                "ref": "refs/tags/v1",
                "environment": "pypi",
                "run_id": "1234",
                "sha": "abc123",
            })))
            .unwrap();
        assert_eq!(
            run,
            Run {
                repository: "Acme/Widgets".into(),
                workflow: Some("release.yml".into()),
                git_ref: Some("refs/tags/v1".into()),
                environment: Some("pypi".into()),
                run_id: Some("1234".into()),
                commit: Some("abc123".into()),
            }
        );
        // Without job_workflow_ref, workflow_ref; without either, no workflow.
        let caller = Provider::GitHub
            .run(&claims(json!({
                "repository": "a/b",
                "workflow_ref": "a/b/.github/workflows/caller.yml@refs/heads/main",
                "run_id": 77,
            })))
            .unwrap();
        assert_eq!(caller.workflow.as_deref(), Some("caller.yml"));
        assert_eq!(caller.run_id.as_deref(), Some("77"));
        let bare = Provider::GitHub
            .run(&claims(
                json!({"repository": "a/b", "workflow_ref": "nonsense"}),
            ))
            .unwrap();
        assert_eq!(
            bare,
            Run {
                repository: "a/b".into(),
                ..Run::default()
            }
        );
    }

    #[test]
    fn gitlab_claims_name_the_run() {
        let run = Provider::GitLab
            .run(&claims(json!({
                "project_path": "group/sub/project",
                "ci_config_ref_uri": "gitlab.com/group/sub/project//ci/release.yml@refs/heads/main",
                "ref": "main",
                "ref_path": "refs/heads/main",
                "environment": "production",
                "pipeline_id": "987",
                "sha": "def456",
            })))
            .unwrap();
        assert_eq!(
            run,
            Run {
                repository: "group/sub/project".into(),
                workflow: Some("ci/release.yml".into()),
                git_ref: Some("refs/heads/main".into()),
                environment: Some("production".into()),
                run_id: Some("987".into()),
                commit: Some("def456".into()),
            }
        );
        let short_ref = Provider::GitLab
            .run(&claims(json!({"project_path": "g/p", "ref": "main"})))
            .unwrap();
        assert_eq!(short_ref.git_ref.as_deref(), Some("main"));
    }

    #[test]
    fn a_token_without_a_repository_names_the_claim() {
        for (provider, claim) in [
            (Provider::GitHub, "repository"),
            (Provider::GitLab, "project_path"),
        ] {
            for given in [json!({}), json!({claim: ""}), json!({claim: ["a"]})] {
                let error = provider.run(&claims(given)).unwrap_err();
                assert!(error.contains(&format!("'{claim}'")), "{error}");
            }
        }
    }

    #[test]
    fn issuers_and_audiences_are_configured() {
        let defaults = Settings::from_vars(vars(&[])).unwrap();
        assert_eq!(
            defaults.issuers,
            [
                Issuer {
                    provider: Provider::GitHub,
                    url: GITHUB_ISSUER.into()
                },
                Issuer {
                    provider: Provider::GitLab,
                    url: GITLAB_ISSUER.into()
                },
            ]
        );
        assert_eq!(
            defaults.accepted_audiences("conda.example.com"),
            ["conda.example.com", "prefix.dev"]
        );
        assert_eq!(defaults.accepted_audiences("prefix.dev"), ["prefix.dev"]);
        assert_eq!(defaults.named("github").unwrap().url, GITHUB_ISSUER);
        assert_eq!(
            defaults.named(GITLAB_ISSUER).unwrap().provider,
            Provider::GitLab
        );
        assert_eq!(
            defaults.named("bitbucket").unwrap_err(),
            "issuer is 'github' or 'gitlab'"
        );

        let custom = Settings::from_vars(vars(&[
            ("GITHUB_OIDC_ISSUER", "http://127.0.0.1:4567"),
            (
                "TRUSTED_PUBLISHING_ISSUERS",
                "gitlab=https://gitlab.example.com, github=https://ghe.example.com/_services/token",
            ),
            (
                "TRUSTED_PUBLISHING_AUDIENCES",
                "conda.example.com other.example.com",
            ),
        ]))
        .unwrap();
        assert_eq!(custom.named("github").unwrap().url, "http://127.0.0.1:4567");
        assert_eq!(custom.issuer(GITHUB_ISSUER), None);
        let ghe = custom
            .issuer("https://ghe.example.com/_services/token")
            .unwrap();
        assert_eq!(ghe.provider, Provider::GitHub);
        assert_eq!(
            custom.named("https://gitlab.example.com").unwrap().provider,
            Provider::GitLab
        );
        assert!(custom
            .named("https://elsewhere.example.com")
            .unwrap_err()
            .contains("https://gitlab.example.com"));
        assert_eq!(
            custom.accepted_audiences("127.0.0.1"),
            ["127.0.0.1", "conda.example.com", "other.example.com"]
        );
        let host_only = Settings::from_vars(vars(&[("TRUSTED_PUBLISHING_AUDIENCES", "")])).unwrap();
        assert_eq!(host_only.accepted_audiences("h"), ["h"]);
    }

    #[test]
    fn malformed_issuers_are_errors_naming_the_setting() {
        for (name, value) in [
            ("GITHUB_OIDC_ISSUER", "http://token.example.com"),
            ("GITLAB_OIDC_ISSUER", "gitlab.com"),
            ("TRUSTED_PUBLISHING_ISSUERS", "https://gitlab.example.com"),
            (
                "TRUSTED_PUBLISHING_ISSUERS",
                "bitbucket=https://bitbucket.org",
            ),
            (
                "TRUSTED_PUBLISHING_ISSUERS",
                "gitlab=ftp://gitlab.example.com",
            ),
        ] {
            let error = Settings::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(error.contains(name), "{error}");
        }
    }

    fn run(
        repository: &str,
        workflow: Option<&str>,
        environment: Option<&str>,
        git_ref: Option<&str>,
    ) -> Run {
        Run {
            repository: repository.into(),
            workflow: workflow.map(Into::into),
            environment: environment.map(Into::into),
            git_ref: git_ref.map(Into::into),
            ..Run::default()
        }
    }

    #[test]
    fn a_run_matches_a_publisher_claim_by_claim() {
        let any = Conditions::default();
        let release = Conditions {
            workflow: Some("release.yml"),
            ..any
        };
        let pypi = Conditions {
            environment: Some("PyPI"),
            ..release
        };
        let tags = Conditions {
            git_ref: Some("refs/tags/v*"),
            ..release
        };
        let main = Conditions {
            git_ref: Some("refs/heads/main"),
            ..any
        };
        let full = run(
            "acme/widgets",
            Some("release.yml"),
            Some("pypi"),
            Some("refs/tags/v1.2"),
        );
        use Claim::*;
        // (publisher's repository, conditions, run, first claim refused)
        let rows = [
            ("acme/widgets", any, full.clone(), None),
            ("ACME/Widgets", release, full.clone(), None),
            ("acme/widgets", pypi, full.clone(), None),
            ("acme/widgets", tags, full.clone(), None),
            ("acme/gadgets", any, full.clone(), Some(Repository)),
            ("acme/widget", any, full.clone(), Some(Repository)),
            (
                "acme/widgets",
                Conditions {
                    workflow: Some("RELEASE.yml"),
                    ..any
                },
                full.clone(),
                Some(Workflow),
            ),
            (
                "acme/widgets",
                release,
                run("acme/widgets", None, None, None),
                Some(Workflow),
            ),
            (
                "acme/widgets",
                pypi,
                run("acme/widgets", Some("release.yml"), Some("test"), None),
                Some(Environment),
            ),
            (
                "acme/widgets",
                pypi,
                run("acme/widgets", Some("release.yml"), None, None),
                Some(Environment),
            ),
            (
                "acme/widgets",
                tags,
                run(
                    "acme/widgets",
                    Some("release.yml"),
                    None,
                    Some("refs/heads/v1"),
                ),
                Some(GitRef),
            ),
            (
                "acme/widgets",
                tags,
                run("acme/widgets", Some("release.yml"), None, None),
                Some(GitRef),
            ),
            ("acme/widgets", main, full.clone(), Some(GitRef)),
            (
                "acme/widgets",
                main,
                run("acme/widgets", None, None, Some("refs/heads/main")),
                None,
            ),
            (
                "acme/widgets",
                main,
                run("acme/widgets", None, None, Some("refs/heads/main2")),
                Some(GitRef),
            ),
        ];
        for (repository, conditions, run, expected) in rows {
            assert_eq!(
                mismatch(repository, &conditions, &run),
                expected,
                "{repository} {conditions:?} {run:?}"
            );
        }
    }

    #[test]
    fn a_refusal_names_the_claim_and_the_tokens_value_only() {
        let full = run(
            "acme/widgets",
            Some("deploy.yml"),
            Some("test"),
            Some("refs/heads/dev"),
        );
        let cases = [
            (
                Claim::Repository,
                &full,
                "no trusted publisher is registered for the token's repository 'acme/widgets'",
            ),
            (
                Claim::Workflow,
                &full,
                "the token's workflow 'deploy.yml' does not match",
            ),
            (
                Claim::Environment,
                &full,
                "the token's environment 'test' does not match",
            ),
            (
                Claim::GitRef,
                &full,
                "the token's git ref 'refs/heads/dev' does not match",
            ),
        ];
        for (claim, run, expected) in cases {
            let sentence = refusal(claim, run);
            assert!(
                sentence.starts_with("trusted publishing refused: "),
                "{sentence}"
            );
            assert!(sentence.contains(expected), "{sentence}");
        }
        let bare = run("acme/widgets", None, None, None);
        assert!(refusal(Claim::Environment, &bare).contains("names no environment"));
        let long = run(&"x".repeat(1000), None, None, None);
        assert!(refusal(Claim::Repository, &long).len() < 300);
    }

    fn candidate(
        id: i64,
        channel: &str,
        workflow: Option<&str>,
        git_ref: Option<&str>,
    ) -> CandidateRow {
        CandidateRow {
            id,
            channel: channel.into(),
            repository: "Acme/Widgets".into(),
            workflow: workflow.map(Into::into),
            environment: None,
            git_ref: git_ref.map(Into::into),
            created_by: 1,
        }
    }

    #[test]
    fn a_run_is_accepted_by_one_publisher_per_channel() {
        let candidates = [
            candidate(1, "alpha", Some("release.yml"), None),
            candidate(2, "alpha", None, None),
            candidate(3, "beta", Some("other.yml"), None),
            candidate(4, "gamma", None, Some("refs/tags/*")),
            candidate(5, "beta", None, Some("refs/heads/main")),
        ];
        let on_main = run(
            "acme/widgets",
            Some("release.yml"),
            None,
            Some("refs/heads/main"),
        );
        let ids = |accepted: Vec<&CandidateRow>| accepted.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(accepting(&candidates, &on_main).unwrap()), [1, 5]);
        let tagged = run(
            "acme/widgets",
            Some("deploy.yml"),
            None,
            Some("refs/tags/v1"),
        );
        assert_eq!(ids(accepting(&candidates, &tagged).unwrap()), [2, 4]);

        // None accepts it: the refusal names the claim that came closest, with the token's value.
        let narrow = [
            candidate(1, "alpha", Some("release.yml"), None),
            candidate(2, "beta", None, Some("refs/tags/*")),
        ];
        let deploy_on_main = run(
            "acme/widgets",
            Some("deploy.yml"),
            None,
            Some("refs/heads/main"),
        );
        let error = accepting(&narrow, &deploy_on_main).unwrap_err();
        assert!(error.contains("git ref 'refs/heads/main'"), "{error}");
        let error = accepting(&narrow[..1], &tagged).unwrap_err();
        assert!(error.contains("workflow 'deploy.yml'"), "{error}");
        let error = accepting(&[], &tagged).unwrap_err();
        assert!(error.contains("repository 'acme/widgets'"), "{error}");
        assert!(
            !error.contains("alpha") && !error.contains("release.yml"),
            "{error}"
        );
    }

    #[test]
    fn what_an_owner_registers_is_checked() {
        let none = Conditions::default();
        let ok = [
            (Provider::GitHub, "acme/widgets", none),
            (
                Provider::GitHub,
                "Acme-1/my_pkg.py",
                Conditions {
                    workflow: Some("release.yaml"),
                    ..none
                },
            ),
            (
                Provider::GitLab,
                "group/sub/project",
                Conditions {
                    workflow: Some("ci/release.yml"),
                    ..none
                },
            ),
            (
                Provider::GitLab,
                "g/p",
                Conditions {
                    environment: Some("prod env"),
                    git_ref: Some("refs/tags/*"),
                    ..none
                },
            ),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    git_ref: Some("refs/heads/main"),
                    ..none
                },
            ),
        ];
        for (provider, repository, conditions) in ok {
            assert_eq!(
                check_publisher(provider, repository, &conditions),
                Ok(()),
                "{repository} {conditions:?}"
            );
        }
        let refused = [
            (Provider::GitHub, "acme", none, "repository"),
            (Provider::GitHub, "group/sub/project", none, "repository"),
            (Provider::GitLab, "project", none, "repository"),
            (Provider::GitHub, "acme/wid gets", none, "repository"),
            (Provider::GitHub, "acme//widgets", none, "repository"),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    workflow: Some(".github/workflows/release.yml"),
                    ..none
                },
                "workflow",
            ),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    workflow: Some("release.sh"),
                    ..none
                },
                "workflow",
            ),
            (
                Provider::GitLab,
                "g/p",
                Conditions {
                    workflow: Some("../x.yml"),
                    ..none
                },
                "workflow",
            ),
            (
                Provider::GitLab,
                "g/p",
                Conditions {
                    workflow: Some("/x.yml"),
                    ..none
                },
                "workflow",
            ),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    environment: Some(""),
                    ..none
                },
                "environment",
            ),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    environment: Some("a\nb"),
                    ..none
                },
                "environment",
            ),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    git_ref: Some("main"),
                    ..none
                },
                "ref",
            ),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    git_ref: Some("refs/*/main"),
                    ..none
                },
                "ref",
            ),
            (
                Provider::GitHub,
                "a/b",
                Conditions {
                    git_ref: Some("refs/tags/**"),
                    ..none
                },
                "ref",
            ),
        ];
        for (provider, repository, conditions, field) in refused {
            let error = check_publisher(provider, repository, &conditions).unwrap_err();
            assert!(
                error.starts_with(field),
                "{repository} {conditions:?}: {error}"
            );
        }
    }
}
