//! The job store over PostgreSQL: see `store`.
