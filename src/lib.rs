//! condaflare: conda channels served from Cloudflare's edge.
//!
//! The domain core (package reading, repodata, names) is plain Rust and tested natively; the
//! Worker glue in [`worker`] is built for wasm32 only.

pub mod access;
pub mod attestation;
pub mod browse;
pub mod config;
pub mod consistency;
pub mod d1_retry;
pub mod directory;
pub mod edge_cache;
pub mod error;
pub mod http_rules;
pub mod index_plan;
pub mod index_store;
pub mod jwt;
pub mod keys;
pub mod mirror;
pub mod mirror_state;
#[cfg(not(target_arch = "wasm32"))]
pub mod mirror_sync;
pub mod multipart;
pub mod names;
pub mod package;
pub mod pages;
pub mod placement;
pub mod provenance;
pub mod publish;
pub mod r2_checksum;
pub mod repodata;
pub mod repodata_scan;
pub mod session;
pub mod shards;
pub mod signin;
#[cfg(not(target_arch = "wasm32"))]
pub mod sqlite;
pub mod statement;
pub mod trusted_publishing;
pub mod ttl_cache;
pub mod unzstd;

#[cfg(target_arch = "wasm32")]
mod edge;
