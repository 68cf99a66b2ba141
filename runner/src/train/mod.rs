//! Training: the data mix, the Flamingo objective and checkpoints.
