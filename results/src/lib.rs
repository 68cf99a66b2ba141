//! The results side of `runner`: the SQLite store of experiments, jobs and results, report
//! building (pivot tables over seeds), and the published reference numbers.

pub mod compare;
pub mod plot;
pub mod reference;
pub mod render;
pub mod report;
pub mod store;

pub use store::{
    EvalCell, JobState, JobStatus, NewJob, Prediction, Store, StoreError, TrainMetric,
};
