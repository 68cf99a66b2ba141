//! The synthetic world: deterministic scenes written in the real dataset formats.
