//! Content hashes: a job's identity is the SHA-256 of the canonical JSON of the inputs that
//! determine its result (object keys sorted, no whitespace), and only those.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Canonical JSON: objects with keys sorted, compact. Sorting is explicit because another crate
/// in the build may turn on serde_json's `preserve_order`.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// SHA-256 of a JSON value's canonical form, as lowercase hex.
pub fn hash_json(v: &serde_json::Value) -> String {
    hex(&Sha256::digest(canonical_json(v).as_bytes()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type FileKey = (std::path::PathBuf, u64, Option<std::time::SystemTime>);

static FILE_HASHES: Mutex<Option<HashMap<FileKey, String>>> = Mutex::new(None);

/// SHA-256 of a file's bytes (cached per path, size and modification time in this process).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some(h) = FILE_HASHES
        .lock()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(&key).cloned()))
    {
        return Ok(h);
    }
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let h = hex(&hasher.finalize());
    if let Ok(mut m) = FILE_HASHES.lock() {
        m.get_or_insert_with(HashMap::new).insert(key, h.clone());
    }
    Ok(h)
}
