//! WebDataset shards: plain tar files whose members `KEY.EXT` group into samples by `KEY`.
//! Headers are fixed (mode 0644, mtime 0, uid/gid 0, no user names) so equal content gives
//! byte-identical shards.

use std::path::Path;

use tar::{Builder, EntryType, Header};

use super::SynthError;

/// One WebDataset sample: its key (no dots) and its members as (extension, bytes).
pub struct Sample {
    /// The sample key, shared by all members (`KEY.png`, `KEY.txt`, ...).
    pub key: String,
    /// (extension without the dot, content) in the order they are written.
    pub members: Vec<(&'static str, Vec<u8>)>,
}

/// The relative path of shard `index` of a shard set: `{prefix}/{index:03}.tar`.
pub fn shard_path(prefix: &str, index: usize) -> String {
    format!("{prefix}/{index:03}.tar")
}

/// The brace pattern naming all `count` shards: `{prefix}/{000..NNN}.tar`.
pub fn shard_pattern(prefix: &str, count: usize) -> String {
    format!("{prefix}/{{000..{:03}}}.tar", count.saturating_sub(1))
}

/// The 9-digit key of a sample from its global index.
pub fn sample_key(index: usize) -> String {
    format!("{index:09}")
}

/// Serialises samples as a tar archive in memory; `path` only names the shard in errors.
pub fn tar_bytes(path: &Path, samples: &[Sample]) -> Result<Vec<u8>, SynthError> {
    let io_err = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut builder = Builder::new(Vec::new());
    for sample in samples {
        for (ext, data) in &sample.members {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_username("").map_err(io_err)?;
            header.set_groupname("").map_err(io_err)?;
            builder
                .append_data(
                    &mut header,
                    format!("{}.{ext}", sample.key),
                    data.as_slice(),
                )
                .map_err(io_err)?;
        }
    }
    builder.into_inner().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_round_trips_members_in_order() {
        let samples = vec![
            Sample {
                key: sample_key(0),
                members: vec![("png", vec![1, 2, 3]), ("txt", b"a red circle".to_vec())],
            },
            Sample {
                key: sample_key(1),
                members: vec![("json", b"{}".to_vec())],
            },
        ];
        let bytes = tar_bytes(Path::new("x.tar"), &samples).unwrap();
        assert_eq!(bytes, tar_bytes(Path::new("x.tar"), &samples).unwrap());
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["000000000.png", "000000000.txt", "000000001.json"]);
        assert_eq!(shard_pattern("laion", 10), "laion/{000..009}.tar");
        assert_eq!(shard_path("laion", 7), "laion/007.tar");
    }
}
