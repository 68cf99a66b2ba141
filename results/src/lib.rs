//! The SQLite store, reports and the published reference numbers.
