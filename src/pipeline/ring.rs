//! The real-time edge of the live pipeline (DESIGN.md §4): the bodies of the cpal data callbacks
//! and the lock-free counters they share with the worker and control threads.
//!
//! A callback only copies between the device buffer and a pre-allocated SPSC ring (`rtrb`),
//! converts the sample format and channel layout, writes silence on underrun and bumps atomic
//! counters: no allocation, no lock, no I/O, no panic (`tests/live_callbacks.rs` runs both bodies
//! under an allocation detector).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use cpal::{FromSample, SizedSample};
use rtrb::{Consumer, Producer, RingBuffer};

/// Counters shared by the callbacks, the worker and the control thread. Frames are device
/// frames (one time step across channels) at the device's rate; all monotonic except the
/// latency window, which the control thread reads and resets once a second.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames the input callback received (or the file source produced).
    pub captured_frames: AtomicU64,
    /// Input callbacks that found the input ring full (overruns).
    pub overruns: AtomicU64,
    /// Frames those callbacks could not store (dropped at the input).
    pub overrun_frames: AtomicU64,
    /// Oldest input frames the worker skipped to keep latency bounded (drop-oldest).
    pub dropped_oldest_frames: AtomicU64,
    /// Frames the worker could not store in a full output ring.
    pub dropped_output_frames: AtomicU64,
    /// Frames the worker pushed to the output ring.
    pub produced_frames: AtomicU64,
    /// Frames of real (not underrun-silence) output the output callback played.
    pub played_frames: AtomicU64,
    /// Output callbacks, after playback started, that found too little in the ring.
    pub underruns: AtomicU64,
    /// Frames of silence written by those callbacks.
    pub underrun_frames: AtomicU64,
    /// Sum / count / minimum (µs) of the pipeline latency seen at each output callback since the
    /// control thread last reset them: capture time of the next frame to play, to now.
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub latency_min_us: AtomicU64,
    /// Worker: nanoseconds spent processing and input frames processed (for the real-time
    /// factor).
    pub worker_busy_ns: AtomicU64,
    pub worker_frames: AtomicU64,
    /// Set by the output callback once it started playing (the start threshold was reached).
    pub playing: AtomicBool,
}

impl Counters {
    pub fn new() -> Arc<Counters> {
        let c = Counters::default();
        c.latency_min_us.store(u64::MAX, Relaxed);
        Arc::new(c)
    }

    /// Takes the latency window: (mean ms, min ms), or `None` when no output callback measured.
    pub fn take_latency_ms(&self) -> Option<(f64, f64)> {
        let n = self.latency_count.swap(0, Relaxed);
        let sum = self.latency_sum_us.swap(0, Relaxed);
        let min = self.latency_min_us.swap(u64::MAX, Relaxed);
        (n > 0).then(|| (sum as f64 / n as f64 / 1e3, min as f64 / 1e3))
    }
}

/// A ring of mono f32 device-rate samples: `(producer, consumer)` holding `capacity_frames`.
pub fn ring(capacity_frames: usize) -> (Producer<f32>, Consumer<f32>) {
    RingBuffer::new(capacity_frames.max(1))
}

/// The input (microphone) callback body: downmixes interleaved device frames of `channels`
/// samples of type `T` to mono f32 and pushes them to the input ring; what does not fit is
/// dropped and counted as an overrun.
pub struct InputCallback {
    producer: Producer<f32>,
    channels: usize,
    counters: Arc<Counters>,
}

impl InputCallback {
    pub fn new(producer: Producer<f32>, channels: u16, counters: Arc<Counters>) -> InputCallback {
        InputCallback {
            producer,
            channels: usize::from(channels.max(1)),
            counters,
        }
    }

    /// One callback: `data` is interleaved, `frames × channels` samples.
    pub fn process<T>(&mut self, data: &[T])
    where
        T: SizedSample,
        f32: FromSample<T>,
    {
        let ch = self.channels;
        let frames = data.len() / ch;
        let n = frames.min(self.producer.slots());
        if let Ok(chunk) = self.producer.write_chunk_uninit(n) {
            let scale = 1.0 / ch as f32;
            let mono = data.chunks_exact(ch).map(|frame| {
                if ch == 1 {
                    frame[0].to_sample::<f32>()
                } else {
                    frame.iter().map(|s| s.to_sample::<f32>()).sum::<f32>() * scale
                }
            });
            chunk.fill_from_iter(mono);
        }
        self.counters
            .captured_frames
            .fetch_add(frames as u64, Relaxed);
        if n < frames {
            self.counters.overruns.fetch_add(1, Relaxed);
            self.counters
                .overrun_frames
                .fetch_add((frames - n) as u64, Relaxed);
        }
    }
}

/// The output (speaker) callback body: pops mono f32 samples from the output ring and writes
/// each to every channel of the device buffer; silence where the ring is short (an underrun once
/// playback has started). Playback starts when the ring first holds `start_frames` (≤ the ring's
/// capacity, else it never starts), a jitter margin against the worker's block-wise output.
pub struct OutputCallback {
    consumer: Consumer<f32>,
    channels: usize,
    start_frames: usize,
    counters: Arc<Counters>,
    /// Input and output device rates (Hz), to convert frame counts to seconds for the latency.
    in_rate: f64,
    out_rate: f64,
}

impl OutputCallback {
    pub fn new(
        consumer: Consumer<f32>,
        channels: u16,
        start_frames: usize,
        counters: Arc<Counters>,
        in_rate: u32,
        out_rate: u32,
    ) -> OutputCallback {
        OutputCallback {
            consumer,
            channels: usize::from(channels.max(1)),
            start_frames,
            counters,
            in_rate: f64::from(in_rate.max(1)),
            out_rate: f64::from(out_rate.max(1)),
        }
    }

    /// One callback: fills `data` (interleaved, `frames × channels` samples).
    pub fn process<T>(&mut self, data: &mut [T])
    where
        T: SizedSample + FromSample<f32>,
    {
        let ch = self.channels;
        let frames = data.len() / ch;
        let c = &*self.counters;
        let avail = self.consumer.slots();
        if !c.playing.load(Relaxed) {
            if avail < self.start_frames.max(1) {
                data.fill(T::EQUILIBRIUM);
                return;
            }
            c.playing.store(true, Relaxed);
        }
        self.measure_latency();
        let n = frames.min(avail);
        if let Ok(chunk) = self.consumer.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            for (frame, &x) in data.chunks_exact_mut(ch).zip(a.iter().chain(b)) {
                frame.fill(T::from_sample(x));
            }
            chunk.commit_all();
        }
        data[n * ch..].fill(T::EQUILIBRIUM);
        c.played_frames.fetch_add(n as u64, Relaxed);
        if n < frames {
            c.underruns.fetch_add(1, Relaxed);
            c.underrun_frames.fetch_add((frames - n) as u64, Relaxed);
        }
    }

    /// Latency of the next frame to play: its capture time to now, i.e. frames captured (less
    /// those dropped) minus frames played (plus those dropped after the model), in seconds.
    fn measure_latency(&self) {
        let c = &*self.counters;
        let captured = c
            .captured_frames
            .load(Relaxed)
            .saturating_sub(c.overrun_frames.load(Relaxed))
            .saturating_sub(c.dropped_oldest_frames.load(Relaxed));
        let played = c.played_frames.load(Relaxed) + c.dropped_output_frames.load(Relaxed);
        let lat_s = captured as f64 / self.in_rate - played as f64 / self.out_rate;
        if lat_s >= 0.0 && lat_s.is_finite() {
            let us = (lat_s * 1e6) as u64;
            c.latency_sum_us.fetch_add(us, Relaxed);
            c.latency_count.fetch_add(1, Relaxed);
            c.latency_min_us.fetch_min(us, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_downmixes_and_counts_overruns() {
        let counters = Counters::new();
        let (p, mut c) = ring(3);
        let mut cb = InputCallback::new(p, 2, counters.clone());
        cb.process::<f32>(&[1.0, 0.0, 0.5, 0.5]);
        cb.process::<i16>(&[16384, 16384, 0, 0, 0, 0]);
        assert_eq!(c.pop().unwrap(), 0.5);
        assert_eq!(c.pop().unwrap(), 0.5);
        assert_eq!(c.pop().unwrap(), 0.5);
        assert!(c.pop().is_err());
        assert_eq!(counters.captured_frames.load(Relaxed), 5);
        assert_eq!(counters.overruns.load(Relaxed), 1);
        assert_eq!(counters.overrun_frames.load(Relaxed), 2);
    }

    #[test]
    fn output_waits_for_start_then_counts_underruns() {
        let counters = Counters::new();
        let (mut p, c) = ring(16);
        let mut cb = OutputCallback::new(c, 2, 3, counters.clone(), 48_000, 48_000);
        p.push(0.25).unwrap();
        let mut buf = [1.0f32; 4];
        cb.process(&mut buf);
        assert_eq!(buf, [0.0; 4]); // below the start threshold: silence, no underrun
        assert_eq!(counters.underruns.load(Relaxed), 0);
        p.push(0.5).unwrap();
        p.push(0.75).unwrap();
        let mut buf = [1.0f32; 8];
        cb.process(&mut buf);
        assert_eq!(buf, [0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.0, 0.0]);
        assert_eq!(counters.played_frames.load(Relaxed), 3);
        assert_eq!(counters.underruns.load(Relaxed), 1);
        assert_eq!(counters.underrun_frames.load(Relaxed), 1);
    }
}
