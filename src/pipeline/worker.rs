//! The worker thread: input ring → streaming resampler to the model rate → [`Processor`] one
//! sample at a time → resampler to the output rate → output ring (and the recorders).
//!
//! Both resamplers' warm-up samples (the filter's view of the time before the stream started)
//! are skipped, so output sample `k` is the processed input sample `k`: the live output equals
//! the offline path (`resample` → model → `resample`) sample for sample, shifted only in time.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rtrb::{Consumer, Producer};

use super::control::Event;
use super::modes::Processor;
use super::ring::Counters;
use crate::audio::StreamingResampler;
use crate::Result;

/// Most device frames the worker takes from the input ring at once.
const BLOCK_FRAMES: usize = 1024;
/// Sleep between polls of an empty input ring (bounds the added latency from polling).
const POLL: Duration = Duration::from_micros(250);

/// How the worker is set up. Rates in Hz.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub in_rate: u32,
    pub model_rate: u32,
    pub out_rate: u32,
    /// Never drop: wait for room in the output ring and never skip input (for fake devices and
    /// files processed faster than real time). Live use drops instead, to bound latency.
    pub lossless: bool,
    /// Input frames (at `in_rate`) allowed to wait in the input ring; beyond it the oldest are
    /// skipped (drop-oldest) unless `lossless`.
    pub max_backlog_frames: usize,
    /// Output frames allowed to wait for the speaker (produced, not yet played); beyond it new
    /// output is dropped unless `lossless` (bounds latency when the output device consumes
    /// slower than the input device delivers, e.g. two clocks drifting apart).
    pub max_output_queue_frames: usize,
    /// Sinc taps of both resamplers: 256 equals the offline `resample` (10.6 ms of look-ahead
    /// for 48 ↔ 16 kHz); 64 cuts that to 2.6 ms.
    pub resampler_taps: usize,
    /// Ask for real-time (SCHED_FIFO) scheduling of the worker thread.
    pub realtime_priority: bool,
    /// Stop after this many input frames (`--seconds`); `None`: until stopped or the source ends.
    pub stop_after_frames: Option<u64>,
}

/// Where the worker's data goes besides the output ring.
pub struct WorkerIo {
    pub input: Consumer<f32>,
    pub output: Option<Producer<f32>>,
    /// Blocks of output samples (at `out_rate`) for `--record`.
    pub record: Option<Sender<Vec<f32>>>,
    /// Blocks of input samples (at `in_rate`) for `--record-input`.
    pub record_input: Option<Sender<Vec<f32>>>,
    pub events: Sender<Event>,
    pub counters: Arc<Counters>,
    /// Set by Ctrl-C or a device error: finish now.
    pub stop: Arc<AtomicBool>,
    /// Set by a file source when it has pushed its last sample.
    pub source_done: Arc<AtomicBool>,
}

/// What the worker did.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    /// Input frames processed (at `in_rate`).
    pub input_frames: u64,
    /// Output frames produced (at `out_rate`).
    pub output_frames: u64,
    /// Seconds spent processing (not waiting).
    pub busy_s: f64,
    /// Output samples skipped as resampler warm-up (model-rate in, output-rate out).
    pub warmup_skipped: (usize, usize),
    /// Whether the worker ran with real-time scheduling.
    pub realtime: bool,
}

/// The worker's resamplers, processor and pre-allocated buffers.
pub struct Worker {
    cfg: WorkerConfig,
    io: WorkerIo,
    processor: Box<dyn Processor>,
    rs_in: StreamingResampler,
    rs_out: StreamingResampler,
    skip_in: usize,
    skip_out: usize,
    buf_in: Vec<f32>,
    buf_model: Vec<f32>,
    buf_proc: Vec<f32>,
    buf_out: Vec<f32>,
    summary: WorkerSummary,
}

impl Worker {
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for unsupported rates.
    pub fn new(cfg: WorkerConfig, io: WorkerIo, processor: Box<dyn Processor>) -> Result<Worker> {
        // 1 ms chunks: each resampler adds at most 1 ms of buffering on top of its filter delay.
        let taps = cfg.resampler_taps;
        let rs_in =
            StreamingResampler::with_taps(cfg.in_rate, cfg.model_rate, chunk(cfg.in_rate), taps)?;
        let rs_out = StreamingResampler::with_taps(
            cfg.model_rate,
            cfg.out_rate,
            chunk(cfg.model_rate),
            taps,
        )?;
        let model_cap = BLOCK_FRAMES * cfg.model_rate as usize / cfg.in_rate as usize
            + 2 * rs_in.max_output_frames()
            + 16;
        let out_cap = model_cap * cfg.out_rate as usize / cfg.model_rate as usize
            + 2 * rs_out.max_output_frames()
            + 16;
        Ok(Worker {
            skip_in: rs_in.delay_samples(),
            skip_out: rs_out.delay_samples(),
            summary: WorkerSummary {
                warmup_skipped: (rs_in.delay_samples(), rs_out.delay_samples()),
                ..Default::default()
            },
            rs_in,
            rs_out,
            buf_in: Vec::with_capacity(BLOCK_FRAMES),
            buf_model: Vec::with_capacity(model_cap),
            buf_proc: Vec::with_capacity(model_cap),
            buf_out: Vec::with_capacity(out_cap),
            cfg,
            io,
            processor,
        })
    }

    /// Algorithmic delay of the two resamplers in ms (filter look-ahead, not counting the 1 ms
    /// chunks): the part of the pipeline latency that does not depend on scheduling.
    pub fn resampler_delay_ms(&self) -> f64 {
        self.rs_in.delay_ms() + self.rs_out.delay_ms()
    }

    /// Runs until stopped, the input limit is reached, or a file source is exhausted; then
    /// flushes the resamplers so the tail of the input reaches the output.
    ///
    /// # Errors
    /// Only a resampler's internal error.
    pub fn run(mut self) -> Result<WorkerSummary> {
        if self.cfg.realtime_priority {
            self.summary.realtime = set_thread_realtime(true);
        }
        let mut busy = Duration::ZERO;
        loop {
            if self.io.stop.load(Relaxed) {
                break;
            }
            let mut avail = self.io.input.slots();
            if !self.cfg.lossless && avail > self.cfg.max_backlog_frames {
                let skip = avail - self.cfg.max_backlog_frames;
                if let Ok(chunk) = self.io.input.read_chunk(skip) {
                    chunk.commit_all();
                }
                self.io
                    .counters
                    .dropped_oldest_frames
                    .fetch_add(skip as u64, Relaxed);
                avail -= skip;
            }
            if avail == 0 {
                if self.io.source_done.load(Relaxed) && self.io.input.slots() == 0 {
                    break;
                }
                std::thread::sleep(POLL);
                continue;
            }
            let mut n = avail.min(BLOCK_FRAMES);
            if let Some(limit) = self.cfg.stop_after_frames {
                n = n.min((limit - self.summary.input_frames) as usize);
            }
            let t0 = Instant::now();
            self.buf_in.clear();
            if let Ok(chunk) = self.io.input.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                self.buf_in.extend_from_slice(a);
                self.buf_in.extend_from_slice(b);
                chunk.commit_all();
            }
            if let Some(tx) = &self.io.record_input {
                let _ = tx.send(self.buf_in.clone());
            }
            self.buf_model.clear();
            self.rs_in.process(&self.buf_in, &mut self.buf_model)?;
            self.model_block()?;
            busy += t0.elapsed();
            self.summary.input_frames += n as u64;
            self.io
                .counters
                .worker_busy_ns
                .store(busy.as_nanos() as u64, Relaxed);
            self.io
                .counters
                .worker_frames
                .store(self.summary.input_frames, Relaxed);
            while let Some(p) = self.processor.take_phase_change() {
                let at_s = self.summary.input_frames as f64 / f64::from(self.cfg.in_rate);
                let echo_db = self.processor.echo_coupling_db();
                let _ = self.io.events.send(Event::Phase(p, at_s, echo_db));
            }
            if self.cfg.stop_after_frames == Some(self.summary.input_frames) {
                break;
            }
        }
        // The tail: what the filters still hold.
        let t0 = Instant::now();
        self.buf_model.clear();
        self.rs_in.flush(&mut self.buf_model)?;
        self.model_block_then(true)?;
        busy += t0.elapsed();
        self.io.counters.finished.store(true, Relaxed);
        self.summary.busy_s = busy.as_secs_f64();
        Ok(self.summary)
    }

    /// Runs `buf_model` (model-rate input) through the processor and the output resampler and
    /// emits the result.
    fn model_block(&mut self) -> Result<()> {
        self.model_block_then(false)
    }

    fn model_block_then(&mut self, flush_out: bool) -> Result<()> {
        let skip = self.skip_in.min(self.buf_model.len());
        self.skip_in -= skip;
        self.buf_proc.clear();
        for &x in &self.buf_model[skip..] {
            self.buf_proc.push(self.processor.process(x));
        }
        self.buf_out.clear();
        self.rs_out.process(&self.buf_proc, &mut self.buf_out)?;
        if flush_out {
            self.rs_out.flush(&mut self.buf_out)?;
        }
        let skip = self.skip_out.min(self.buf_out.len());
        self.skip_out -= skip;
        self.emit(skip);
        Ok(())
    }

    /// Sends `buf_out[from..]` to the recorder and the output ring.
    fn emit(&mut self, from: usize) {
        let out = &self.buf_out[from..];
        if out.is_empty() {
            return;
        }
        self.summary.output_frames += out.len() as u64;
        if let Some(tx) = &self.io.record {
            let _ = tx.send(out.to_vec());
        }
        let Some(p) = &mut self.io.output else {
            return;
        };
        let c = &self.io.counters;
        let mut rest = out;
        if !self.cfg.lossless {
            let queued = c
                .produced_frames
                .load(Relaxed)
                .saturating_sub(c.played_frames.load(Relaxed) + c.trimmed_frames.load(Relaxed))
                as usize;
            let excess = (queued + rest.len()).saturating_sub(self.cfg.max_output_queue_frames);
            if excess > 0 && c.playing.load(Relaxed) {
                let n = excess.min(rest.len());
                c.dropped_output_frames.fetch_add(n as u64, Relaxed);
                rest = &rest[n..];
            }
        }
        loop {
            let (pushed, left) = p.push_partial_slice(rest);
            c.produced_frames.fetch_add(pushed.len() as u64, Relaxed);
            rest = left;
            if rest.is_empty() {
                break;
            }
            if !self.cfg.lossless || self.io.stop.load(Relaxed) || p.is_abandoned() {
                c.dropped_output_frames
                    .fetch_add(rest.len() as u64, Relaxed);
                break;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Moves the calling thread to real-time scheduling (SCHED_FIFO, priority 10) or back to the
/// normal policy; false where not permitted. Threads inherit the policy of the thread that
/// creates them, which is how the device threads of cpal get it (see `session.rs`).
#[cfg(target_os = "linux")]
pub(crate) fn set_thread_realtime(on: bool) -> bool {
    let (policy, prio) = if on {
        (libc::SCHED_FIFO, 10)
    } else {
        (libc::SCHED_OTHER, 0)
    };
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: sets the scheduling policy of the calling thread with a valid parameter struct.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_thread_realtime(_on: bool) -> bool {
    false
}

/// Resampler chunk: 1 ms of input (at least 8 samples).
fn chunk(rate: u32) -> usize {
    (rate as usize / 1000).max(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::modes::Passthrough;
    use crate::pipeline::ring::ring;

    /// Input queued beyond the backlog is skipped oldest first; the newest is processed.
    #[test]
    fn drops_the_oldest_input_beyond_the_backlog() {
        let counters = Counters::new();
        let (mut p, c) = ring(20_000);
        for i in 0..10_000 {
            p.push(i as f32 / 1e4).unwrap();
        }
        let (events, _e) = crossbeam_channel::unbounded();
        let (rec_tx, rec_rx) = crossbeam_channel::unbounded();
        let cfg = WorkerConfig {
            in_rate: 16_000,
            model_rate: 16_000,
            out_rate: 16_000,
            lossless: false,
            max_backlog_frames: 1000,
            max_output_queue_frames: 1000,
            resampler_taps: 256,
            realtime_priority: false,
            stop_after_frames: None,
        };
        let io = WorkerIo {
            input: c,
            output: None,
            record: Some(rec_tx),
            record_input: None,
            events,
            counters: counters.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            source_done: Arc::new(AtomicBool::new(true)),
        };
        let s = Worker::new(cfg, io, Box::new(Passthrough))
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(counters.dropped_oldest_frames.load(Relaxed), 9000);
        assert_eq!(s.input_frames, 1000);
        let out: Vec<f32> = rec_rx.try_iter().flatten().collect();
        let want: Vec<f32> = (9000..10_000).map(|i| i as f32 / 1e4).collect();
        assert_eq!(out, want);
    }
}
