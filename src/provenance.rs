//! Who published a file: the user and key of the upload, and for a key minted for a trusted
//! publisher, the CI run that asked for it. The channel index keeps it beside each record (never
//! in the served repodata); the package page and the browse API show it to the channel's readers.

use serde::{Deserialize, Serialize};

/// The CI run behind a key minted by `POST /api/oidc/mint_token`, as its OIDC token's claims
/// named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// The trusted publisher's id in the directory.
    pub publisher: i64,
    /// The token's issuer (`iss`).
    pub issuer: String,
    /// `owner/name` on GitHub, the project path on GitLab.
    pub repository: String,
    /// The workflow file (GitHub) or CI config path (GitLab), when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The git ref the run built (`refs/heads/main`, `refs/tags/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The commit the run built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The deployment environment the run used, when it used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// Who published one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The user the key belongs to.
    pub user: String,
    /// The key's name.
    pub key: String,
    /// The CI run, for a key minted for a trusted publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowRun>,
}

impl Provenance {
    /// The JSON the channel index stores beside the record.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("provenance serializes")
    }

    /// What the channel index stored: `None` for a record stored before provenance was kept
    /// (or a value that does not read as one), which readers are shown as unknown.
    pub fn from_stored(stored: Option<&str>) -> Option<Self> {
        stored.and_then(|text| serde_json::from_str(text).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_provenance_round_trips_and_unknown_is_none() {
        let by_key = Provenance {
            user: "alice".into(),
            key: "<b>laptop</b>".into(),
            workflow: None,
        };
        assert_eq!(
            by_key.to_json(),
            r#"{"user":"alice","key":"<b>laptop</b>"}"#
        );
        let by_ci = Provenance {
            workflow: Some(WorkflowRun {
                publisher: 3,
                issuer: "https://token.actions.githubusercontent.com".into(),
                repository: "org/repo".into(),
                workflow: Some("release.yml".into()),
                run_id: Some("42".into()),
                git_ref: Some("refs/tags/v1".into()),
                commit: Some("abc".into()),
                environment: None,
            }),
            ..by_key.clone()
        };
        for provenance in [by_key, by_ci] {
            let stored = provenance.to_json();
            assert_eq!(Provenance::from_stored(Some(&stored)), Some(provenance));
        }
        assert_eq!(Provenance::from_stored(None), None);
        assert_eq!(Provenance::from_stored(Some("not json")), None);
    }
}
