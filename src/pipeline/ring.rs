//! The real-time edge of the live pipeline (DESIGN.md §4): the bodies of the cpal data callbacks
//! and the lock-free counters they share with the worker and control threads.
//!
//! A callback only copies between the device buffer and a pre-allocated SPSC ring (`rtrb`),
//! converts the sample format and channel layout, writes silence on underrun and bumps atomic
//! counters: no allocation, no lock, no I/O, no panic (`tests/live_callbacks.rs` runs both bodies
//! under an allocation detector).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use cpal::{FromSample, SizedSample};
use rtrb::{Consumer, Producer, RingBuffer};

/// Counters shared by the callbacks, the worker and the control thread. Frames are device
/// frames (one time step across channels) at the device's rate; all monotonic except the
/// latency window, which the control thread reads and resets once a second.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames the input callback received (or the file source produced).
    pub captured_frames: AtomicU64,
    /// When the last input block arrived: ns since the run's epoch (see [`Counters::arrived`]).
    pub last_arrival_ns: AtomicU64,
    /// Input callbacks that found the input ring full (overruns).
    pub overruns: AtomicU64,
    /// Frames those callbacks could not store (dropped at the input).
    pub overrun_frames: AtomicU64,
    /// Oldest input frames the worker skipped to keep latency bounded (drop-oldest).
    pub dropped_oldest_frames: AtomicU64,
    /// Frames the worker could not store in a full output ring.
    pub dropped_output_frames: AtomicU64,
    /// Frames the output callback skipped because they had queued longer than needed (the
    /// queue's minimum over half a second stayed above the jitter margin): latency trimming.
    pub trimmed_frames: AtomicU64,
    /// Frames the worker pushed to the output ring.
    pub produced_frames: AtomicU64,
    /// Frames of real (not underrun-silence) output the output callback played.
    pub played_frames: AtomicU64,
    /// Output callbacks, after playback started, that found too little in the ring.
    pub underruns: AtomicU64,
    /// Frames of silence written by those callbacks.
    pub underrun_frames: AtomicU64,
    /// Sum / count / minimum (µs) of the added latency seen at each output callback since the
    /// control thread last reset them: arrival of the last frame handed to the device, to now.
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub latency_min_us: AtomicU64,
    /// Worker: nanoseconds spent processing and input frames processed (for the real-time
    /// factor).
    pub worker_busy_ns: AtomicU64,
    pub worker_frames: AtomicU64,
    /// Set by the worker when it has produced its last frame: running dry is then the end of
    /// the stream, not an underrun.
    pub finished: AtomicBool,
    /// Set by the output callback once it started playing (the start threshold was reached).
    pub playing: AtomicBool,
    /// The jitter margin the output callback keeps queued now (output frames): it starts at the
    /// configured margin, grows by each underrun's missing frames (up to a cap) and relaxes back
    /// towards the configured one after quiet spells.
    pub margin_frames: AtomicU64,
}

impl Counters {
    pub fn new() -> Arc<Counters> {
        let c = Counters::default();
        c.latency_min_us.store(u64::MAX, Relaxed);
        Arc::new(c)
    }

    /// Records the arrival of `frames` input frames at `now` (ns since the epoch).
    pub fn arrived(&self, frames: u64, now_ns: u64) {
        self.last_arrival_ns.store(now_ns, Relaxed);
        self.captured_frames.fetch_add(frames, Relaxed);
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
    epoch: Instant,
}

impl InputCallback {
    /// `epoch`: the run's time origin, shared with the output callback.
    pub fn new(
        producer: Producer<f32>,
        channels: u16,
        counters: Arc<Counters>,
        epoch: Instant,
    ) -> InputCallback {
        InputCallback {
            producer,
            channels: usize::from(channels.max(1)),
            counters,
            epoch,
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
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        self.counters.arrived(frames as u64, now_ns);
        if n < frames {
            self.counters.overruns.fetch_add(1, Relaxed);
            self.counters
                .overrun_frames
                .fetch_add((frames - n) as u64, Relaxed);
        }
    }
}

/// Latency trimming for the output callback: a queue that never fell below `left` frames during
/// half a second held `left − target` frames longer than needed; they are skipped at the next
/// callback (a startup transient or two drifting clocks, not the steady state).
#[derive(Debug)]
struct Trimmer {
    /// Smallest queue left after a callback in the current window, and the window's frames.
    window_min_left: usize,
    window_frames: usize,
    /// Window length (frames).
    window: usize,
    /// Frames to skip at the next callback.
    trim: usize,
    on: bool,
    /// Queue to keep (the jitter margin), and the configured margin it relaxes back to.
    target: usize,
    base: usize,
    /// Windows since the last underrun.
    quiet_windows: u32,
}

impl Trimmer {
    /// Windows without an underrun (½ s each) after which the margin gives back half of what
    /// underruns added: a passing load spike costs latency for seconds, not for the whole run.
    const RELAX_WINDOWS: u32 = 20;

    fn track(&mut self, left: usize, frames: usize) {
        self.window_min_left = self.window_min_left.min(left);
        self.window_frames += frames;
        if self.window_frames >= self.window {
            self.quiet_windows += 1;
            if self.quiet_windows >= Self::RELAX_WINDOWS {
                self.target = self.base + (self.target - self.base) / 2;
                self.quiet_windows = 0;
            }
            if self.on {
                self.trim = self.window_min_left.saturating_sub(self.target);
            }
            self.window_min_left = usize::MAX;
            self.window_frames = 0;
        }
    }

    /// An underrun of `missing` frames: keep that much more queued (up to `cap`).
    fn underrun(&mut self, missing: usize, cap: usize) {
        self.target = (self.target + missing).min(cap.max(self.base));
        self.quiet_windows = 0;
    }
}

/// The output (speaker) callback body: pops mono f32 samples from the output ring and writes
/// each to every channel of the device buffer; silence where the ring is short (an underrun once
/// playback has started). Playback starts when the ring first holds a callback's frames plus
/// `start_frames` (keep both well under the ring's capacity), a jitter margin against the worker's
/// block-wise output. The margin adapts: each underrun adds its missing frames to the queue that
/// latency trimming keeps, up to [`OutputCallback::MAX_MARGIN_MS`], so a machine that cannot hold
/// a small margin settles on a larger one instead of underrunning again; every 10 s without an
/// underrun it gives back half of what was added.
pub struct OutputCallback {
    consumer: Consumer<f32>,
    channels: usize,
    start_frames: usize,
    /// The largest margin the adaptation may reach (frames).
    max_margin: usize,
    trimmer: Trimmer,
    counters: Arc<Counters>,
    /// Input and output device rates (Hz), to convert frame counts to seconds for the latency.
    in_rate: f64,
    out_rate: f64,
    epoch: Instant,
}

impl OutputCallback {
    /// Cap of the adaptive jitter margin (ms), unless the configured margin is larger.
    pub const MAX_MARGIN_MS: u32 = 20;

    pub fn new(
        consumer: Consumer<f32>,
        channels: u16,
        start_frames: usize,
        counters: Arc<Counters>,
        in_rate: u32,
        out_rate: u32,
        epoch: Instant,
    ) -> OutputCallback {
        counters.margin_frames.store(start_frames as u64, Relaxed);
        OutputCallback {
            consumer,
            channels: usize::from(channels.max(1)),
            start_frames,
            max_margin: start_frames.max((out_rate * Self::MAX_MARGIN_MS / 1000) as usize),
            trimmer: Trimmer {
                window_min_left: usize::MAX,
                window_frames: 0,
                window: (out_rate / 2).max(1) as usize,
                trim: 0,
                on: true,
                target: start_frames,
                base: start_frames,
                quiet_windows: 0,
            },
            counters,
            in_rate: f64::from(in_rate.max(1)),
            out_rate: f64::from(out_rate.max(1)),
            epoch,
        }
    }

    /// Turns latency trimming on (the default) or off (lossless runs keep every frame).
    pub fn with_trimming(mut self, on: bool) -> OutputCallback {
        self.trimmer.on = on;
        self
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
            // Start with enough for this callback plus the margin left queued after it.
            if avail < self.start_frames + frames.max(1) {
                data.fill(T::EQUILIBRIUM);
                return;
            }
            c.playing.store(true, Relaxed);
        }
        let mut avail = avail;
        if self.trimmer.trim > 0 {
            let k = self.trimmer.trim.min(avail);
            if let Ok(chunk) = self.consumer.read_chunk(k) {
                chunk.commit_all();
                c.trimmed_frames.fetch_add(k as u64, Relaxed);
                avail -= k;
            }
            self.trimmer.trim = 0;
        }
        let n = frames.min(avail);
        self.trimmer.track(avail - n, frames);
        c.margin_frames.store(self.trimmer.target as u64, Relaxed);
        if let Ok(chunk) = self.consumer.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            for (frame, &x) in data.chunks_exact_mut(ch).zip(a.iter().chain(b)) {
                frame.fill(T::from_sample(x));
            }
            chunk.commit_all();
        }
        data[n * ch..].fill(T::EQUILIBRIUM);
        c.played_frames.fetch_add(n as u64, Relaxed);
        if n > 0 {
            self.measure_latency();
        }
        if n < frames && !c.finished.load(Relaxed) {
            c.underruns.fetch_add(1, Relaxed);
            c.underrun_frames.fetch_add((frames - n) as u64, Relaxed);
            // The silence just written delays what follows by (frames − n): keep that much more
            // queued from now on rather than trimming it away again.
            self.trimmer.underrun(frames - n, self.max_margin);
            c.margin_frames.store(self.trimmer.target as u64, Relaxed);
        }
    }

    /// The added latency of the last frame just handed to the device: from its arrival with an
    /// input block (the last block's arrival time, less the frames captured after it at the
    /// input rate) to now. The device buffers on either side are not included.
    fn measure_latency(&self) {
        let c = &*self.counters;
        let arrival_ns = c.last_arrival_ns.load(Relaxed);
        let captured = c
            .captured_frames
            .load(Relaxed)
            .saturating_sub(c.overrun_frames.load(Relaxed))
            .saturating_sub(c.dropped_oldest_frames.load(Relaxed));
        let handed = c.played_frames.load(Relaxed)
            + c.dropped_output_frames.load(Relaxed)
            + c.trimmed_frames.load(Relaxed);
        // (captured − handed) frames arrived after the last one handed over.
        let after_s = captured as f64 / self.in_rate - handed as f64 / self.out_rate;
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let lat_s = now_ns.saturating_sub(arrival_ns) as f64 * 1e-9 + after_s;
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
        let mut cb = InputCallback::new(p, 2, counters.clone(), Instant::now());
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
        let mut cb = OutputCallback::new(c, 2, 1, counters.clone(), 48_000, 48_000, Instant::now());
        p.push(0.25).unwrap();
        let mut buf = [1.0f32; 4];
        cb.process(&mut buf);
        assert_eq!(buf, [0.0; 4]); // below 2 frames + margin 1: silence, no underrun
        assert_eq!(counters.underruns.load(Relaxed), 0);
        p.push(0.5).unwrap();
        p.push(0.75).unwrap();
        cb.process(&mut buf);
        assert_eq!(buf, [0.25, 0.25, 0.5, 0.5]);
        let mut buf = [1.0f32; 4];
        cb.process(&mut buf);
        assert_eq!(buf, [0.75, 0.75, 0.0, 0.0]);
        assert_eq!(counters.played_frames.load(Relaxed), 3);
        assert_eq!(counters.underruns.load(Relaxed), 1);
        assert_eq!(counters.underrun_frames.load(Relaxed), 1);
        // The underrun's missing frame is added to the margin kept queued.
        assert_eq!(counters.margin_frames.load(Relaxed), 2);
    }

    #[test]
    fn underruns_grow_the_margin_up_to_the_cap() {
        let counters = Counters::new();
        let (_p, c) = ring(4096);
        // 1 kHz output: the cap is MAX_MARGIN_MS frames.
        let mut cb = OutputCallback::new(c, 1, 2, counters.clone(), 1_000, 1_000, Instant::now());
        counters.playing.store(true, Relaxed);
        let mut buf = [0.0f32; 8];
        for _ in 0..10 {
            cb.process(&mut buf); // empty ring: 8 frames of underrun each time
        }
        assert_eq!(counters.underruns.load(Relaxed), 10);
        assert_eq!(
            counters.margin_frames.load(Relaxed),
            u64::from(OutputCallback::MAX_MARGIN_MS)
        );
        assert_eq!(cb.trimmer.target, OutputCallback::MAX_MARGIN_MS as usize);
    }

    #[test]
    fn quiet_spells_give_the_added_margin_back_and_underruns_take_it_again() {
        let counters = Counters::new();
        let (mut p, c) = ring(4096);
        // 1 kHz output, configured margin 2 frames: windows of 500 frames, relax after 10 s.
        let mut cb = OutputCallback::new(c, 1, 2, counters.clone(), 1_000, 1_000, Instant::now());
        counters.playing.store(true, Relaxed);
        let mut buf = [0.0f32; 10];
        cb.process(&mut buf); // empty: 10 frames missing
        assert_eq!(counters.margin_frames.load(Relaxed), 12);
        // Keep the ring fed: no underrun for 10 s (1000 callbacks of 10 frames).
        let feed = |p: &mut Producer<f32>, n: usize| {
            for _ in 0..n {
                let _ = p.push(0.1);
            }
        };
        feed(&mut p, 30);
        for i in 0..1000 {
            feed(&mut p, 10);
            cb.process(&mut buf);
            if i < 990 {
                assert_eq!(counters.margin_frames.load(Relaxed), 12, "callback {i}");
            }
        }
        assert_eq!(counters.underruns.load(Relaxed), 1);
        assert_eq!(
            counters.margin_frames.load(Relaxed),
            2 + 10 / 2,
            "half the excess back"
        );
        for _ in 0..3000 {
            feed(&mut p, 10);
            cb.process(&mut buf);
        }
        assert_eq!(
            counters.margin_frames.load(Relaxed),
            2,
            "back at the configured margin"
        );
        let mut big = [0.0f32; 64];
        cb.process(&mut big); // at most ~30 queued: an underrun
        assert!(counters.underruns.load(Relaxed) >= 2);
        assert!(counters.margin_frames.load(Relaxed) > 2, "grown again");
    }
}
