//! Data: the synthetic world, WebDataset shards and the evaluation datasets' real formats.

pub mod shards;
pub mod synth;
