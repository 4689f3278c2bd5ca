//! The upload protocols of the other publishers, each a thin adapter onto the one ingest path
//! of [`super::ingest`] (the same checks, idempotency and index commit), answering as its
//! client expects. The protocols' pure decisions are in [`crate::publish`].
//!
//! - [`quetz`]: `POST /api/channels/<channel>/upload/<filename>?sha256=…&force=…`
//! - [`artifactory`]: `PUT /<channel>/<subdir>/<filename>`
//! - [`anaconda`]: anaconda.org's package, release, stage, transfer, commit and dist calls
//!   under `/api/anaconda/`
//! - [`prefix`]: `POST /api/v1/reindex/<channel>/<subdir>` (the upload itself is
//!   [`super::upload::upload`])

pub mod anaconda;
pub mod artifactory;
pub mod prefix;
pub mod quetz;
