//! `runner`: declare a Flamingo-style experiment in TOML; train, evaluate, record and report.
//!
//! The binary (`src/main.rs`) is glue over this library: [`cli`] parses arguments and calls
//! [`config`] (the experiment DSL), [`plan`] (sweeps and job identity), [`exec`] (the resumable
//! executor), [`data`], [`train`] and [`eval`].

pub mod cli;
pub mod config;
pub mod data;
pub mod eval;
pub mod exec;
pub mod infer;
pub mod plan;
pub mod pretrain;
pub mod train;
