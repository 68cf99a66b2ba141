//! Background batching: each source of a [`DataMix`] runs in its own thread and prepares up to
//! `depth` batches ahead, so image decoding and preprocessing overlap with training and with
//! each other.
//!
//! Exact resume is kept: every batch travels with the source's state *after* it, and
//! [`PrefetchMix::state`] reports the states of the batches the trainer has received, not of the
//! ones prepared ahead. A state saved here restores into a plain [`DataMix`] or a new
//! `PrefetchMix` (restore the `DataMix` first, then wrap it) alike.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::error::DataError;
use super::mix::{Batch, DataMix, MixState, SourceBatcher, SourceState};
use super::skip::SkipCounts;

type Message = Result<(Batch, SourceState), DataError>;

/// A [`DataMix`] whose sources batch in background threads.
pub struct PrefetchMix {
    receivers: Vec<Receiver<Message>>,
    states: Vec<SourceState>,
    handles: Vec<JoinHandle<()>>,
    failed: Option<String>,
}

fn run(mut batcher: SourceBatcher, tx: SyncSender<Message>) {
    loop {
        let msg = batcher.next_batch().map(|b| (b, batcher.state()));
        let failed = msg.is_err();
        // A closed channel means the consumer is gone: stop.
        if tx.send(msg).is_err() || failed {
            return;
        }
    }
}

impl PrefetchMix {
    /// Starts one thread per source, each keeping up to `depth` (at least 1) batches ready.
    /// Memory: `depth` batches per source, images included.
    pub fn new(mix: DataMix, depth: usize) -> Self {
        let sources = mix.into_sources();
        let states = sources.iter().map(SourceBatcher::state).collect();
        let mut receivers = Vec::with_capacity(sources.len());
        let mut handles = Vec::with_capacity(sources.len());
        for batcher in sources {
            let (tx, rx) = sync_channel(depth.max(1));
            receivers.push(rx);
            handles.push(std::thread::spawn(move || run(batcher, tx)));
        }
        Self {
            receivers,
            states,
            handles,
            failed: None,
        }
    }

    /// One batch per source, in configuration order (as [`DataMix::next_step`]). After an error
    /// the mix stays failed.
    pub fn next_step(&mut self) -> Result<Vec<Batch>, DataError> {
        if let Some(f) = &self.failed {
            return Err(DataError::Config {
                source_name: "mix".into(),
                message: format!("the data mix failed earlier: {f}"),
            });
        }
        let mut batches = Vec::with_capacity(self.receivers.len());
        let mut states = Vec::with_capacity(self.receivers.len());
        for (rx, old) in self.receivers.iter().zip(&self.states) {
            let msg = rx.recv().unwrap_or_else(|_| {
                Err(DataError::Config {
                    source_name: old.source.clone(),
                    message: "the batching thread stopped".into(),
                })
            });
            match msg {
                Ok((b, s)) => {
                    batches.push(b);
                    states.push(s);
                }
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        self.states = states;
        Ok(batches)
    }

    /// The position after the last batches returned by [`PrefetchMix::next_step`].
    pub fn state(&self) -> MixState {
        MixState {
            sources: self.states.clone(),
        }
    }

    /// Skip counts per source, as of the last batches returned.
    pub fn skip_counts(&self) -> Vec<(String, SkipCounts)> {
        self.states
            .iter()
            .map(|s| (s.source.clone(), s.skips.clone()))
            .collect()
    }
}

impl Drop for PrefetchMix {
    fn drop(&mut self) {
        // Closing the channels wakes producers blocked on a full channel; they then return.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
