//! Training: the optimizer, the learning-rate schedule, gradient clipping and checkpoints; the
//! Flamingo objective and loop build on these.

pub mod adamw;
pub mod checkpoint;
pub mod schedule;
