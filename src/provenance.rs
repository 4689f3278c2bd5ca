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
