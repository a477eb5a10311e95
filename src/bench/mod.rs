//! Benchmarks behind `wavemamba bench …`: timing helpers shared by every benchmark.

pub mod loader;
pub mod prefill;
pub mod scan;
pub mod step;
pub mod train;

use std::time::Instant;

use tch::Device;

/// Median wall time in milliseconds of `reps` runs of `f` after `warmup` runs; synchronises the
/// CUDA device around each run so GPU work is counted.
pub fn median_ms(device: Device, warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for _ in 0..warmup {
        f();
    }
    sync();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            sync();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// How [`median_device_ms`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingMethod {
    /// Wall clock (CPU).
    WallClock,
    /// CUDA events on the current stream around each run.
    CudaEvents,
}

impl std::fmt::Display for TimingMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimingMethod::WallClock => "wall clock",
            TimingMethod::CudaEvents => "CUDA events",
        })
    }
}

/// Median in milliseconds of `reps` runs of `f` after `warmup` runs: on CUDA each run is timed by
/// CUDA events recorded on the current stream before and after it (device time of the work `f`
/// enqueues, gaps while the host enqueues included), on CPU with the wall clock.
///
/// # Errors
/// A CUDA error from the events.
pub fn median_device_ms(
    device: Device,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut(),
) -> crate::Result<(f64, TimingMethod)> {
    let Device::Cuda(index) = device else {
        return Ok((median_ms(device, warmup, reps, f), TimingMethod::WallClock));
    };
    let timer = crate::ops::cuda::CudaTimer::new(index)?;
    for _ in 0..warmup {
        f();
    }
    tch::Cuda::synchronize(index as i64);
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        timer.start()?;
        f();
        times.push(timer.stop_ms()?);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], TimingMethod::CudaEvents))
}

/// Mean device time in milliseconds of one run of `f` among `reps` runs queued back to back on
/// CUDA, after `warmup` runs: one pair of CUDA events around all of them, no wait in between, as
/// in a training loop. [`median_device_ms`] starts every run on an idle GPU, so its times also
/// count the host's launch latency wherever it exceeds the GPU work queued so far; this one
/// counts it only where the host cannot keep ahead of the GPU at all. `None` off CUDA.
///
/// # Errors
/// A CUDA error from the events.
pub fn queued_device_ms(
    device: Device,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut(),
) -> crate::Result<Option<f64>> {
    let Device::Cuda(index) = device else {
        return Ok(None);
    };
    let timer = crate::ops::cuda::CudaTimer::new(index)?;
    for _ in 0..warmup {
        f();
    }
    tch::Cuda::synchronize(index as i64);
    let reps = reps.max(1);
    timer.start()?;
    for _ in 0..reps {
        f();
    }
    Ok(Some(timer.stop_ms()? / reps as f64))
}

/// Resident-set high-water mark of this process (Linux `/proc/self/status` VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current resident set (VmRSS), in bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

/// Resets the high-water mark to the current RSS (Linux ≥ 4.0; ignored elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
