//! The Flamingo network in candle.
