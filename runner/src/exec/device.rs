//! The compute device of an experiment's `device` key.

use anyhow::{Result, bail};
use candle_core::Device;

/// `cpu`, `cuda` (GPU 0) or `cuda:N`. CUDA needs a binary built with the `cuda` feature; without
/// it the error says so instead of failing deep inside candle.
pub fn device_from_name(name: &str) -> Result<Device> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => bail!("unknown device `{name}`: expected cpu, cuda or cuda:N"),
        },
    };
    if !cfg!(feature = "cuda") {
        bail!(
            "device `{name}` needs CUDA, but this runner binary was built without it \
             (rebuild with `cargo build --features cuda`)"
        );
    }
    Device::new_cuda(ordinal).map_err(|e| anyhow::anyhow!("cannot open CUDA device {ordinal}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_clear_errors() {
        assert!(device_from_name("cpu").unwrap().is_cpu());
        assert!(device_from_name("tpu").is_err());
        if !cfg!(feature = "cuda") {
            let e = device_from_name("cuda:1").unwrap_err().to_string();
            assert!(e.contains("built without"), "{e}");
        }
    }
}
