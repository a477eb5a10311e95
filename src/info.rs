//! What `wavemamba info` reports: versions, compiled kernels, CUDA devices, CPU threads.

use serde::Serialize;

use crate::ops::build;

/// A description of this build and the machine it runs on.
#[derive(Debug, Serialize)]
pub struct Info {
    pub wavemamba_version: &'static str,
    pub libtorch_version: String,
    pub kernels: Vec<String>,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cuda_devices: Vec<String>,
    pub cpu_threads: i32,
}

/// Collects [`Info`]; never fails (absent CUDA shows as `cuda_available: false`).
pub fn collect() -> Info {
    let kernels = build::kernels();
    let cuda_available = tch::Cuda::is_available();
    Info {
        wavemamba_version: env!("CARGO_PKG_VERSION"),
        libtorch_version: build::torch_version(),
        cuda_devices: if kernels.iter().any(|k| k == "cuda") {
            build::cuda_device_names()
        } else {
            Vec::new()
        },
        kernels,
        cuda_available,
        cuda_device_count: tch::Cuda::device_count(),
        cpu_threads: tch::get_num_threads(),
    }
}

impl std::fmt::Display for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "wavemamba        {}", self.wavemamba_version)?;
        writeln!(f, "libtorch         {}", self.libtorch_version)?;
        writeln!(f, "kernels          {}", self.kernels.join(", "))?;
        writeln!(f, "cpu threads      {}", self.cpu_threads)?;
        write!(
            f,
            "cuda available   {}",
            if self.cuda_available { "yes" } else { "no" }
        )?;
        if self.cuda_available {
            write!(f, " ({} device(s))", self.cuda_device_count)?;
        }
        for (i, name) in self.cuda_devices.iter().enumerate() {
            write!(f, "\ncuda:{i}           {name}")?;
        }
        Ok(())
    }
}
