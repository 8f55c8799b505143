//! Uploads and results as objects (local disk or S3): see `store`.
