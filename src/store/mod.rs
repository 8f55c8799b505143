//! Stores for more than one machine (issue #15): the seams the registry,
//! the pipeline and the API talk to, and their shared implementations.
//!
//! - [`queue`]: the job store over PostgreSQL (sqlx): jobs as rows, admission
//!   as a queue (`SELECT … FOR UPDATE SKIP LOCKED`), leases with an expiry
//!   that workers renew, a job finished exactly once.
//! - [`blobs`]: uploads and results as objects (`object_store`): local disk
//!   or any S3-compatible server.
//!
//! The embedded default (sled and local folders, `make run`) stays as it is.

pub mod blobs;
pub mod queue;
