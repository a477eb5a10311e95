//! The file source of `--input FILE`: stands in for the input callback, pushing the decoded file
//! into the same input ring at its real-time pace.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rtrb::Producer;

use super::ring::Counters;

/// Pushes `samples` into the input ring in blocks of `block` frames: at their real-time pace,
/// or as fast as the ring takes them when `lossless`. Counts like an input callback.
#[allow(clippy::too_many_arguments)]
pub(crate) fn feed_file(
    samples: &[f32],
    rate: u32,
    block: usize,
    lossless: bool,
    mut ring: Producer<f32>,
    counters: &Counters,
    stop: &AtomicBool,
    epoch: Instant,
) {
    let start = Instant::now();
    for (k, chunk) in samples.chunks(block).enumerate() {
        if stop.load(Relaxed) {
            return;
        }
        if !lossless {
            let due = Duration::from_secs_f64((k * block) as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut rest = chunk;
        loop {
            let (pushed, left) = ring.push_partial_slice(rest);
            counters.arrived(pushed.len() as u64, epoch.elapsed().as_nanos() as u64);
            rest = left;
            if rest.is_empty() || stop.load(Relaxed) {
                break;
            }
            if !lossless {
                counters.overruns.fetch_add(1, Relaxed);
                counters
                    .overrun_frames
                    .fetch_add(rest.len() as u64, Relaxed);
                counters.arrived(rest.len() as u64, epoch.elapsed().as_nanos() as u64);
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}
