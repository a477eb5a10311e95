//! Device names on the command line: `cpu`, `cuda`, `cuda:N`.

use tch::Device;

use crate::{Error, Result};

/// Parses `cpu`, `cuda` (device 0) or `cuda:N`; checks that CUDA is available when asked for.
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown name, or CUDA requested where libtorch sees none.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = match s.trim().to_ascii_lowercase().as_str() {
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => {
                return Err(Error::InvalidArgument {
                    name: "device",
                    reason: format!("'{s}' is not one of cpu, cuda, cuda:N"),
                })
            }
        },
    };
    if let Device::Cuda(i) = device {
        let count = tch::Cuda::device_count();
        if !tch::Cuda::is_available() || i as i64 >= count {
            return Err(Error::InvalidArgument {
                name: "device",
                reason: format!(
                    "{s} requested but libtorch sees {count} CUDA device(s) (see `wavemamba info`)"
                ),
            });
        }
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert_eq!(parse_device("CPU").unwrap(), Device::Cpu);
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(
            err.contains("'tpu' is not one of cpu, cuda, cuda:N"),
            "{err}"
        );
        if !tch::Cuda::is_available() {
            let err = parse_device("cuda:0").unwrap_err().to_string();
            assert!(err.contains("libtorch sees 0 CUDA device(s)"), "{err}");
        }
    }
}
