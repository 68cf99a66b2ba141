//! Data: the synthetic world, WebDataset shards and the evaluation datasets' real formats.
//!
//! Training data (spec §4.1-4.4, §4.8): [`webdataset`] streams samples from tar shards with
//! seeded shard order and shuffle buffer and an exactly resumable state; the layouts [`pairs`],
//! [`interleaved`] and [`sequences`] turn samples into tokens and images ([`images`] decodes and
//! preprocesses); [`labels`] applies the loss masks; [`mix`] batches each source and is the API
//! the trainer uses ([`prefetch`] runs it in background threads). Skipped samples are counted
//! in [`skip`].

pub mod assignment;
pub mod error;
pub mod images;
pub mod interleaved;
pub mod labels;
pub mod mix;
pub mod pairs;
pub mod prefetch;
pub mod prepared;
pub mod seeded;
pub mod sequences;
pub mod shards;
pub mod skip;
pub mod synth;
pub mod webdataset;

pub use error::DataError;
pub use images::ImageTransform;
pub use mix::{Batch, DataMix, MixState, SourceBatcher, SourceSpec, SourceState};
pub use prefetch::PrefetchMix;
pub use skip::{SkipCounts, SkipReason};
