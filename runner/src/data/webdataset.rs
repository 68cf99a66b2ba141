//! WebDataset samples streamed from tar shards, never unpacked to disk (spec §4.8).
//!
//! A shard is a plain (uncompressed) tar file. Members are grouped into samples by key as
//! webdataset's `group_by_keys` does: `dir/KEY.EXT` (the key ends at the first dot of the file
//! name, the extension is lower-cased) belongs to sample `dir/KEY`; a new sample starts when the
//! key changes or an extension repeats. Names without a dot and top-level `__*__` metadata members
//! are ignored. Unlike webdataset, a sample never spans two shards.
//!
//! The stream is infinite: shards are visited either drawn **with replacement** (`resample`,
//! webdataset's `ResampledShards2`) or in **shuffled epochs** (every shard once per epoch, a fresh
//! permutation per epoch, `detshuffle2`), and samples pass through a seeded **shuffle buffer**
//! (the buffer is filled to its size, then one uniformly drawn sample leaves per step and one new
//! sample enters). The buffer holds raw samples in memory: about `shuffle_buffer` times the
//! size of one sample (MMC4 documents carry their images in base64: ~0.5-1 MB each).
//!
//! # Exact resume
//! Every random decision is a pure function of the seed and a counter (see [`super::seeded`]): the
//! shard at position `k` of the visiting order, and the buffer slot picked for the `n`-th output.
//! [`SampleStream::state`] therefore only records counters and *where* things are:
//! the shard ordinal and byte offset of the next unread member, the number of samples emitted, and
//! for each buffered sample its shard and byte offset ([`SampleRef`]), not its bytes.
//! [`SampleStream::restore`] re-reads the buffered samples from those offsets (seeking into the
//! tar files) and continues: the restored stream yields exactly the samples, in the same order,
//! that the original stream would have yielded.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::DataError;
use super::seeded::{self, Purpose};

const BLOCK: u64 = 512;

/// One sample: the members sharing a key, by lower-cased extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The key (member path up to the first dot of its file name).
    pub key: String,
    /// Member bytes by extension (`"jpg"`, `"txt"`, `"json"`, ...).
    pub fields: BTreeMap<String, Vec<u8>>,
}

/// Where a sample starts: enough to read it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRef {
    /// Index of the shard in the expanded shard list.
    pub shard: usize,
    /// Byte offset of the first header of the sample's first member.
    pub offset: u64,
    /// The sample's key, checked when re-reading.
    pub key: String,
}

/// A sample as it leaves the shuffle buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamItem {
    /// The sample.
    pub sample: Sample,
    /// Position in the stream's output (0, 1, 2, ...): the index of per-sample random decisions.
    pub ordinal: u64,
    /// Where it was read from.
    pub origin: SampleRef,
}

/// How a stream visits its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The shard pattern as configured (for messages).
    pub pattern: String,
    /// The expanded shard files, in pattern order.
    pub shards: Vec<PathBuf>,
    /// Draw shards with replacement (true) or visit them in shuffled epochs (false).
    pub resample: bool,
    /// Shuffle-buffer size in samples (0 or 1: no shuffling).
    pub shuffle_buffer: usize,
    /// Seed of shard order and buffer picks.
    pub seed: u64,
}

impl StreamConfig {
    /// SHA-256 over the shard names, to recognise a state saved for other shards.
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for s in &self.shards {
            h.update(s.to_string_lossy().as_bytes());
            h.update([0u8]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The serialisable position of a [`SampleStream`]; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Seed the stream was built with.
    pub seed: u64,
    /// Shard-visiting mode the stream was built with.
    pub resample: bool,
    /// SHA-256 of the shard list.
    pub shards_digest: String,
    /// Ordinal (in the visiting order) of the shard being read, or to be read next.
    pub shard_ordinal: u64,
    /// Byte offset of the next unread member in that shard.
    pub offset: u64,
    /// Samples emitted so far.
    pub emitted: u64,
    /// The shuffle buffer's samples, in slot order.
    pub buffer: Vec<SampleRef>,
    /// Shards found empty since the last sample was read (guards against an endless empty loop).
    pub empty_run: Vec<usize>,
    /// Shards whose tail was unreadable, so far.
    pub broken_shards: u64,
}

/// A member read from a tar shard.
struct Member {
    name: String,
    data: Vec<u8>,
    /// Offset of the member's first header (extension headers included).
    start: u64,
}

/// Splits a member name into (key, lower-cased extension) like webdataset's `base_plus_ext`.
fn key_and_ext(name: &str) -> Option<(String, String)> {
    let (dir, base) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    let dot = base.find('.')?;
    if dot == 0 {
        return None;
    }
    Some((
        format!("{dir}{}", &base[..dot]),
        base[dot + 1..].to_lowercase(),
    ))
}

/// Reads one tar shard sequentially from a byte offset, grouping members into samples.
pub struct ShardReader {
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the next unread header.
    pos: u64,
    /// A member read ahead that begins the next sample.
    pending: Option<Member>,
    /// A read error met after a sample was started: that sample is returned first, the error
    /// on the next call (webdataset also keeps the sample grouped before a broken member).
    failed: Option<String>,
}

impl ShardReader {
    /// Opens `path` and positions it at `offset` (0, or an offset from a [`SampleRef`] / state).
    pub fn open(path: &Path, offset: u64) -> Result<Self, DataError> {
        let err = |source| DataError::ShardOpen {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(err)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).map_err(err)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            pos: offset,
            pending: None,
            failed: None,
        })
    }

    /// Offset of the first member not yet returned inside a sample.
    pub fn resume_offset(&self) -> u64 {
        self.pending.as_ref().map_or(self.pos, |m| m.start)
    }

    fn tar_err(&self, e: impl std::fmt::Display) -> String {
        format!(
            "{}: tar read error near byte {}: {e}",
            self.path.display(),
            self.pos
        )
    }

    /// The next regular member (metadata and non-files skipped), or `None` at the end of the archive.
    fn next_member(&mut self) -> Result<Option<Member>, String> {
        loop {
            let start = self.pos;
            // A fresh `Archive` per member keeps no borrow of the reader between calls; positions
            // it reports are relative to `start`.
            let (file_pos, size, name, keep, data) = {
                let mut archive = tar::Archive::new(&mut self.reader);
                let mut entries = archive.entries().map_err(|e| format!("{e}"))?;
                let mut entry = match entries.next() {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(format!("{e}")),
                    Some(Ok(e)) => e,
                };
                let size = entry.size();
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let is_meta = !name.contains('/') && name.starts_with("__") && name.ends_with("__");
                let keep = entry.header().entry_type().is_file() && !is_meta;
                let mut data = Vec::new();
                if keep {
                    data.reserve(size.min(1 << 30) as usize);
                    entry
                        .read_to_end(&mut data)
                        .map_err(|e| format!("member `{name}`: {e}"))?;
                    if data.len() as u64 != size {
                        return Err(format!(
                            "member `{name}` truncated: {} of {size} bytes",
                            data.len()
                        ));
                    }
                }
                (start + entry.raw_file_position(), size, name, keep, data)
            };
            // Skip the rest of the data and the padding to the next 512-byte block.
            let consumed = file_pos + data.len() as u64;
            let end = file_pos + size.div_ceil(BLOCK) * BLOCK;
            self.reader
                .seek_relative((end - consumed) as i64)
                .map_err(|e| format!("{e}"))?;
            self.pos = end;
            if keep {
                return Ok(Some(Member { name, data, start }));
            }
        }
    }

    /// The next sample and its start offset, `Ok(None)` at the end of the shard, `Err` (a
    /// message naming the shard) if the archive is corrupt from here on.
    pub fn next_sample(&mut self) -> Result<Option<(Sample, u64)>, String> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut current: Option<(Sample, u64)> = None;
        loop {
            let member = match self.pending.take() {
                Some(m) => Some(m),
                None => match self.next_member() {
                    Ok(m) => m,
                    Err(e) => {
                        let e = self.tar_err(e);
                        if current.is_none() {
                            return Err(e);
                        }
                        self.failed = Some(e);
                        return Ok(current);
                    }
                },
            };
            let Some(member) = member else {
                return Ok(current);
            };
            let Some((key, ext)) = key_and_ext(&member.name) else {
                continue;
            };
            match &mut current {
                None => {
                    let mut fields = BTreeMap::new();
                    fields.insert(ext, member.data);
                    current = Some((Sample { key, fields }, member.start));
                }
                Some((sample, _)) if sample.key == key && !sample.fields.contains_key(&ext) => {
                    sample.fields.insert(ext, member.data);
                }
                Some(_) => {
                    self.pending = Some(member);
                    return Ok(current);
                }
            }
        }
    }
}

/// Reads the single sample starting at `r` (used to refill a restored shuffle buffer).
fn read_ref(cfg: &StreamConfig, r: &SampleRef) -> Result<Sample, String> {
    let path = cfg
        .shards
        .get(r.shard)
        .ok_or_else(|| format!("shard index {} out of range", r.shard))?;
    let mut reader = ShardReader::open(path, r.offset).map_err(|e| e.to_string())?;
    match reader.next_sample()? {
        Some((s, _)) if s.key == r.key => Ok(s),
        Some((s, _)) => Err(format!(
            "{} at byte {}: expected sample `{}`, found `{}`",
            path.display(),
            r.offset,
            r.key,
            s.key
        )),
        None => Err(format!(
            "{} at byte {}: no sample `{}`",
            path.display(),
            r.offset,
            r.key
        )),
    }
}

/// The infinite, shuffled stream of samples of one source; see the module docs.
pub struct SampleStream {
    cfg: StreamConfig,
    digest: String,
    shard_ordinal: u64,
    /// The open shard (`shard_ordinal`), or where to open it.
    reader: Option<ShardReader>,
    start_offset: u64,
    buffer: Vec<(Sample, SampleRef)>,
    emitted: u64,
    empty_run: BTreeSet<usize>,
    read_in_shard: u64,
    broken_shards: u64,
    /// Permutation cache for shuffled epochs: (epoch, order).
    epoch_order: Option<(u64, Vec<usize>)>,
}

impl SampleStream {
    /// A stream at its beginning. Fails if the shard list is empty.
    pub fn new(cfg: StreamConfig) -> Result<Self, DataError> {
        if cfg.shards.is_empty() {
            return Err(DataError::NoSamples {
                pattern: cfg.pattern.clone(),
            });
        }
        let digest = cfg.digest();
        Ok(Self {
            cfg,
            digest,
            shard_ordinal: 0,
            reader: None,
            start_offset: 0,
            buffer: Vec::new(),
            emitted: 0,
            empty_run: BTreeSet::new(),
            read_in_shard: 0,
            broken_shards: 0,
            epoch_order: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// Shards whose tail was unreadable so far (each also counted as a `bad_tar` skip by the caller).
    pub fn broken_shards(&self) -> u64 {
        self.broken_shards
    }

    /// Index (in the shard list) of the shard at position `ordinal` of the visiting order.
    pub fn shard_at(&mut self, ordinal: u64) -> usize {
        let n = self.cfg.shards.len();
        if self.cfg.resample {
            return seeded::below(self.cfg.seed, Purpose::ResampleShard, ordinal, n);
        }
        let epoch = ordinal / n as u64;
        let fresh = !matches!(&self.epoch_order, Some((e, _)) if *e == epoch);
        if fresh {
            let mut order: Vec<usize> = (0..n).collect();
            let seed = self.cfg.seed ^ epoch.wrapping_mul(0xa076_1d64_78bd_642f);
            for i in (1..n).rev() {
                let j = seeded::below(seed, Purpose::EpochShuffle, i as u64, i + 1);
                order.swap(i, j);
            }
            self.epoch_order = Some((epoch, order));
        }
        match &self.epoch_order {
            Some((_, order)) => order[(ordinal % n as u64) as usize],
            None => 0,
        }
    }

    /// Reads the next sample from the shard sequence (before the buffer). Returns the number of
    /// broken shards met on the way in `broken` (the caller counts them as skips).
    fn read_next(&mut self, broken: &mut u64) -> Result<(Sample, SampleRef), DataError> {
        loop {
            let shard = self.shard_at(self.shard_ordinal);
            if self.reader.is_none() {
                let path = &self.cfg.shards[shard];
                self.reader = Some(ShardReader::open(path, self.start_offset)?);
                self.read_in_shard = 0;
            }
            let result = match &mut self.reader {
                Some(r) => r.next_sample(),
                None => Ok(None),
            };
            match result {
                Ok(Some((sample, offset))) => {
                    self.read_in_shard += 1;
                    self.empty_run.clear();
                    let origin = SampleRef {
                        shard,
                        offset,
                        key: sample.key.clone(),
                    };
                    return Ok((sample, origin));
                }
                Ok(None) | Err(_) => {
                    if result.is_err() {
                        self.broken_shards += 1;
                        *broken += 1;
                    }
                    if self.read_in_shard == 0 {
                        self.empty_run.insert(shard);
                        if self.empty_run.len() >= self.cfg.shards.len() {
                            return Err(DataError::NoSamples {
                                pattern: self.cfg.pattern.clone(),
                            });
                        }
                    }
                    self.reader = None;
                    self.start_offset = 0;
                    self.shard_ordinal += 1;
                }
            }
        }
    }

    /// The next sample out of the shuffle buffer. `broken` is increased by the number of shards
    /// found corrupt while reading.
    pub fn next_item(&mut self, broken: &mut u64) -> Result<StreamItem, DataError> {
        let size = self.cfg.shuffle_buffer.max(1);
        while self.buffer.len() < size {
            let item = self.read_next(broken)?;
            self.buffer.push(item);
        }
        let k = seeded::below(
            self.cfg.seed,
            Purpose::ShuffleBuffer,
            self.emitted,
            self.buffer.len(),
        );
        let (sample, origin) = self.buffer.swap_remove(k);
        let ordinal = self.emitted;
        self.emitted += 1;
        Ok(StreamItem {
            sample,
            ordinal,
            origin,
        })
    }

    /// The stream's position; see the module docs.
    pub fn state(&self) -> StreamState {
        let offset = match &self.reader {
            Some(r) => r.resume_offset(),
            None => self.start_offset,
        };
        StreamState {
            seed: self.cfg.seed,
            resample: self.cfg.resample,
            shards_digest: self.digest.clone(),
            shard_ordinal: self.shard_ordinal,
            offset,
            emitted: self.emitted,
            buffer: self.buffer.iter().map(|(_, r)| r.clone()).collect(),
            empty_run: self.empty_run.iter().copied().collect(),
            broken_shards: self.broken_shards,
        }
    }

    /// Moves the stream to a saved position, re-reading the buffered samples from their shards.
    /// `source_name` is used in errors.
    pub fn restore(&mut self, state: &StreamState, source_name: &str) -> Result<(), DataError> {
        let mismatch = |message: String| DataError::State {
            source_name: source_name.to_string(),
            message,
        };
        if state.seed != self.cfg.seed || state.resample != self.cfg.resample {
            return Err(mismatch(format!(
                "saved for seed {} resample {}, this source has seed {} resample {}",
                state.seed, state.resample, self.cfg.seed, self.cfg.resample
            )));
        }
        if state.shards_digest != self.digest {
            return Err(mismatch(format!(
                "the shard list `{}` differs from the one the state was saved with",
                self.cfg.pattern
            )));
        }
        let mut buffer = Vec::with_capacity(state.buffer.len());
        for r in &state.buffer {
            let sample = read_ref(&self.cfg, r).map_err(&mismatch)?;
            buffer.push((sample, r.clone()));
        }
        self.buffer = buffer;
        self.shard_ordinal = state.shard_ordinal;
        self.start_offset = state.offset;
        self.reader = None;
        self.read_in_shard = u64::from(state.offset > 0);
        self.emitted = state.emitted;
        self.empty_run = state.empty_run.iter().copied().collect();
        self.broken_shards = state.broken_shards;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_extensions_like_webdataset() {
        assert_eq!(
            key_and_ext("a/b/000123.JPG"),
            Some(("a/b/000123".into(), "jpg".into()))
        );
        assert_eq!(
            key_and_ext("x.seg.png"),
            Some(("x".into(), "seg.png".into()))
        );
        assert_eq!(key_and_ext("dir.d/noext"), None);
        assert_eq!(key_and_ext(".hidden"), None);
    }
}
