//! One live run: opens the source and sink, starts the worker, and acts as the control thread
//! until the run ends; then drains the output and finalises the recordings.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::StreamTrait;
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::control::{finish_all, Event, Recorder, Stats, StatsWindow};
use super::modes::{ContinueOptions, ContinueProcessor, Passthrough, Processor};
use super::ring::{ring, Counters, InputCallback, OutputCallback};
use super::source::feed_file;
use super::worker::{set_thread_realtime, Worker, WorkerConfig, WorkerIo, WorkerSummary};
use super::{LiveOptions, Mode};
use crate::audio::device::{self, Direction};
use crate::{Error, Result};

/// What the control thread reports while running (for the CLI to print).
#[derive(Debug)]
pub enum Report<'a> {
    /// The pipeline is set up: a description of source, sink, rates and buffers.
    Started(&'a str),
    /// Once a second.
    Stats(&'a Stats),
    /// A phase change or a device error.
    Event(&'a Event),
    /// Input is being dropped to keep latency bounded (once a second at most while it lasts).
    Warning(&'a str),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct LiveReport {
    pub in_rate: u32,
    pub model_rate: u32,
    pub out_rate: u32,
    /// The filters' look-ahead (ms), part of the latency.
    pub resampler_delay_ms: f64,
    pub worker: WorkerSummary,
    /// Worker time / audio time over the whole run.
    pub real_time_factor: f64,
    /// Totals at the end (latency: the mean of the once-a-second means, and the minimum).
    pub stats: Stats,
    /// Recorded files and their samples.
    pub recorded: Vec<(std::path::PathBuf, u64)>,
}

/// The input side: a device stream or a file-feeding thread.
enum Source {
    Device(cpal::Stream),
    File(JoinHandle<()>),
}

/// Runs live mode until `stop` is set (Ctrl-C), `seconds` of input were processed, the input
/// file ended, or a device failed. `on_report` sees the start, each second's stats and events.
///
/// # Errors
/// Bad options, a model or input file that cannot be loaded, a device that cannot be found or
/// opened ([`Error::AudioDevice`] naming it), or a device failure while running (after the
/// recordings were finalised).
pub fn run_live(
    o: &LiveOptions,
    stop: Arc<AtomicBool>,
    on_report: &mut dyn FnMut(Report),
) -> Result<LiveReport> {
    o.check()?;
    let (processor, model_rate) = make_processor(o)?;
    run_live_with(o, processor, model_rate, stop, on_report)
}

/// [`run_live`] with a given processor running at `model_rate` Hz (`o.mode` and `o.model` are
/// not read): e.g. a deliberately slow one to test the overload behaviour.
///
/// # Errors
/// As [`run_live`].
pub fn run_live_with(
    o: &LiveOptions,
    processor: Box<dyn Processor>,
    model_rate: u32,
    stop: Arc<AtomicBool>,
    on_report: &mut dyn FnMut(Report),
) -> Result<LiveReport> {
    o.check()?;
    crate::audio::check_sample_rate("model rate", model_rate)?;
    let (events_tx, events_rx) = crossbeam_channel::unbounded::<Event>();
    let counters = Counters::new();
    let epoch = Instant::now();
    let source_done = Arc::new(AtomicBool::new(false));

    // Input: a file (decoded now) or a device (configured now, started last).
    let file = match &o.input_file {
        Some(p) => Some(crate::audio::read_audio(p)?),
        None => None,
    };
    // With --realtime-priority the device threads that cpal creates from here on (PulseAudio's
    // client and stream threads, ALSA's stream threads) inherit real-time scheduling from this
    // thread, which goes back to normal once the streams are built.
    let rt_devices = RealtimeWhileBuilding(o.realtime_priority && set_thread_realtime(true));
    let host = if o.input_file.is_none() || !o.no_playback {
        Some(device::host(o.host.as_deref())?)
    } else {
        None
    };
    let input_dev = match (&file, &host) {
        (None, Some(h)) => {
            let d = device::find_device(h, o.input_device.as_deref(), Direction::Input)?;
            let setup = device::choose_config(&d, Direction::Input, o.rate, o.buffer_frames)?;
            Some((d, setup))
        }
        _ => None,
    };
    let output_dev = match (&host, o.no_playback) {
        (Some(h), false) => {
            let d = device::find_device(h, o.output_device.as_deref(), Direction::Output)?;
            let setup = device::choose_config(&d, Direction::Output, o.rate, o.buffer_frames)?;
            Some((d, setup))
        }
        _ => None,
    };
    let in_rate = match (&file, &input_dev) {
        (Some(a), _) => a.sample_rate,
        (None, Some((_, s))) => s.config.sample_rate,
        (None, None) => unreachable_source()?,
    };
    let out_rate = output_dev
        .as_ref()
        .map_or(in_rate, |(_, s)| s.config.sample_rate);
    let buffer_frames = |rate: u32, setup: Option<&device::StreamSetup>| match setup
        .map(|s| s.config.buffer_size)
    {
        Some(cpal::BufferSize::Fixed(n)) => n as usize,
        _ => o.buffer_frames.map_or(rate as usize / 100, |b| b as usize),
    };
    let in_buffer = buffer_frames(in_rate, input_dev.as_ref().map(|d| &d.1));
    let out_buffer = buffer_frames(out_rate, output_dev.as_ref().map(|d| &d.1));
    let out_start = o
        .jitter_ms
        .map_or(out_buffer, |ms| (ms * f64::from(out_rate) / 1e3) as usize)
        .min(out_rate as usize);
    let stop_after_frames = o.seconds.map(|s| (s * f64::from(in_rate)).round() as u64);

    // Rings: lossless input holds the whole run; live input holds 1 s (the worker keeps it
    // under max_latency_ms); the output holds 1 s (live use keeps far less queued).
    let in_cap = match (o.lossless, stop_after_frames, &file) {
        (true, Some(n), _) => n as usize + in_rate as usize,
        (true, None, Some(a)) => a.samples.len() + in_rate as usize,
        _ => in_rate as usize + 4 * in_buffer,
    };
    let (in_prod, in_cons) = ring(in_cap);
    let (out_prod, out_cons) = ring(out_rate as usize + 4 * out_buffer);

    let record = match &o.record {
        Some(p) => Some(Recorder::create(p, out_rate)?),
        None => None,
    };
    let record_input = match &o.record_input {
        Some(p) => Some(Recorder::create(p, in_rate)?),
        None => None,
    };

    // Streams (built, not started).
    let mut in_prod = Some(in_prod);
    let mut source_stream = None;
    let mut desc = String::new();
    if let Some((d, setup)) = &input_dev {
        let cb = InputCallback::new(
            in_prod.take().expect("producer"),
            setup.config.channels,
            counters.clone(),
            epoch,
        );
        source_stream = Some(device::build_input(d, *setup, cb, events_tx.clone())?);
        desc += &format!("input {}", stream_desc(d, setup, in_rate, in_buffer));
    } else if let Some(p) = &o.input_file {
        desc += &format!("input file {} ({in_rate} Hz)", p.display());
    }
    let mut sink_stream = None;
    let mut out_prod = Some(out_prod);
    if let Some((d, setup)) = &output_dev {
        let cb = OutputCallback::new(
            out_cons,
            setup.config.channels,
            out_start,
            counters.clone(),
            in_rate,
            out_rate,
            epoch,
        )
        .with_trimming(!o.lossless);
        sink_stream = Some(device::build_output(d, *setup, cb, events_tx.clone())?);
        desc += &format!(" → output {}", stream_desc(d, setup, out_rate, out_buffer));
    } else {
        out_prod = None;
        desc += " → no playback";
    }

    let worker = Worker::new(
        WorkerConfig {
            in_rate,
            model_rate,
            out_rate,
            lossless: o.lossless,
            max_backlog_frames: ((o.max_latency_ms * f64::from(in_rate) / 1e3) as usize)
                .max(in_buffer),
            max_output_queue_frames: (o.max_latency_ms * f64::from(out_rate) / 1e3) as usize
                + out_start
                + out_buffer,
            resampler_taps: o.resampler_taps,
            realtime_priority: o.realtime_priority,
            stop_after_frames,
        },
        WorkerIo {
            input: in_cons,
            output: out_prod,
            record: record.as_ref().and_then(Recorder::sender),
            record_input: record_input.as_ref().and_then(Recorder::sender),
            events: events_tx.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            source_done: source_done.clone(),
        },
        processor,
    )?;
    let resampler_delay_ms = worker.resampler_delay_ms();
    desc += &format!(
        "; model rate {model_rate} Hz, resampler delay {resampler_delay_ms:.2} ms, jitter margin {:.1} ms{}",
        out_start as f64 * 1e3 / f64::from(out_rate),
        if o.lossless { ", lossless" } else { "" }
    );
    on_report(Report::Started(&desc));

    drop(rt_devices);
    let worker = spawn("wavemamba-worker", move || worker.run())?;
    let source = match (file, in_prod.take()) {
        (Some(a), Some(p)) => {
            let (stop, done, counters) = (stop.clone(), source_done.clone(), counters.clone());
            let (lossless, block) = (o.lossless, in_buffer.max(1));
            Source::File(spawn("wavemamba-file", move || {
                feed_file(
                    &a.samples,
                    a.sample_rate,
                    block,
                    lossless,
                    p,
                    &counters,
                    &stop,
                    epoch,
                );
                done.store(true, Relaxed);
            })?)
        }
        _ => Source::Device(source_stream.take().ok_or_else(unreachable_err)?),
    };
    if let Some(s) = &sink_stream {
        s.play().map_err(|e| device_error(&output_dev, e))?;
    }
    if let Source::Device(s) = &source {
        s.play().map_err(|e| device_error(&input_dev, e))?;
    }

    let started = Instant::now();
    let mut window = StatsWindow::new(in_rate, out_rate);
    let device_failure = control_loop(
        &events_rx,
        &counters,
        &stop,
        &worker,
        &mut window,
        started,
        on_report,
    );

    // Let the worker finish (it flushes its filters), then let the speaker play what is queued.
    if device_failure.is_some() {
        stop.store(true, Relaxed);
    }
    let summary = match worker.join() {
        Ok(r) => r,
        Err(_) => Err(Error::Config {
            reason: "the live worker thread panicked".into(),
        }),
    };
    if sink_stream.is_some() && device_failure.is_none() {
        drain_output(&counters, out_rate, &stop);
    }
    stop.store(true, Relaxed);
    match source {
        Source::Device(s) => drop(s),
        Source::File(h) => {
            let _ = h.join();
        }
    }
    drop(sink_stream);
    let recorded = finish_all([record, record_input].into_iter().flatten().collect())?;
    let summary = summary?;
    if let Some((device, message)) = device_failure {
        return Err(Error::AudioDevice {
            device,
            reason: format!("{message} (the run was stopped; recordings were finalised)"),
        });
    }
    let mut stats = window.take(&counters, started.elapsed().as_secs_f64());
    stats.latency_ms = window.run_latency_ms().map(|l| l.0);
    stats.latency_min_ms = window.run_latency_ms().map(|l| l.1);
    let audio_s = summary.input_frames as f64 / f64::from(in_rate);
    Ok(LiveReport {
        in_rate,
        model_rate,
        out_rate,
        resampler_delay_ms,
        real_time_factor: if audio_s > 0.0 {
            summary.busy_s / audio_s
        } else {
            0.0
        },
        worker: summary,
        stats,
        recorded,
    })
}

/// Returns the building thread to normal scheduling when dropped (also on an early error).
struct RealtimeWhileBuilding(bool);

impl Drop for RealtimeWhileBuilding {
    fn drop(&mut self) {
        if self.0 {
            set_thread_realtime(false);
        }
    }
}

/// The processor for the mode and the model's sample rate (16 kHz for passthrough).
fn make_processor(o: &LiveOptions) -> Result<(Box<dyn Processor>, u32)> {
    match o.mode {
        Mode::Passthrough => Ok((Box::new(Passthrough), 16_000)),
        Mode::Continue => {
            let model = crate::model::checkpoint::load(&o.model, tch::Device::Cpu)?;
            // The microphone can hear the output only if there is both.
            let hears_output = o.input_file.is_none() && !o.no_playback;
            let options = ContinueOptions {
                echo_margin_db: o.continue_options.echo_margin_db.filter(|_| hears_output),
                ..o.continue_options.clone()
            };
            let p = ContinueProcessor::new(&model, &options)?;
            Ok((Box::new(p), model.audio.sample_rate))
        }
        Mode::Denoise => {
            let model = crate::model::checkpoint::load(&o.model, tch::Device::Cpu)?;
            let p = crate::stream::DenoiseEngine::new(&model)?;
            Ok((Box::new(p), model.audio.sample_rate))
        }
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| Error::Io {
            path: name.into(),
            source,
        })
}

fn unreachable_err() -> Error {
    Error::Config {
        reason: "live: no input (neither a device nor a file)".into(),
    }
}

fn unreachable_source() -> Result<u32> {
    Err(unreachable_err())
}

fn device_error(dev: &Option<(cpal::Device, device::StreamSetup)>, e: cpal::Error) -> Error {
    Error::AudioDevice {
        device: dev
            .as_ref()
            .map_or("?".into(), |d| device::device_name(&d.0)),
        reason: format!("cannot start: {e}"),
    }
}

/// The control thread's loop: stats once a second, events as they come. Returns the fatal
/// device error that ended the run, if any.
fn control_loop(
    events: &Receiver<Event>,
    counters: &Counters,
    stop: &AtomicBool,
    worker: &JoinHandle<Result<WorkerSummary>>,
    window: &mut StatsWindow,
    started: Instant,
    on_report: &mut dyn FnMut(Report),
) -> Option<(String, String)> {
    let mut next = started + Duration::from_secs(1);
    let mut dropped_before = 0u64;
    loop {
        if stop.load(Relaxed) || worker.is_finished() {
            return None;
        }
        match events.recv_timeout(Duration::from_millis(20)) {
            Ok(e) => {
                on_report(Report::Event(&e));
                if let Event::Device {
                    device,
                    message,
                    fatal: true,
                } = e
                {
                    return Some((device, message));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            let s = window.take(counters, started.elapsed().as_secs_f64());
            on_report(Report::Stats(&s));
            if s.dropped_input_frames > dropped_before {
                let msg = format!(
                    "the worker fell behind: dropped {} input frames (oldest first) to keep latency bounded",
                    s.dropped_input_frames - dropped_before
                );
                on_report(Report::Warning(&msg));
                dropped_before = s.dropped_input_frames;
            }
        }
    }
}

/// Waits until the speaker has played everything the worker produced (at most the queue's
/// duration plus one second, or until stopped again).
fn drain_output(counters: &Counters, out_rate: u32, stop: &AtomicBool) {
    let queued = counters.produced_frames.load(Relaxed).saturating_sub(
        counters.played_frames.load(Relaxed) + counters.trimmed_frames.load(Relaxed),
    );
    let deadline =
        Instant::now() + Duration::from_secs_f64(1.0 + queued as f64 / f64::from(out_rate));
    while Instant::now() < deadline && !stop.load(Relaxed) {
        let played = counters.played_frames.load(Relaxed) + counters.trimmed_frames.load(Relaxed);
        if played >= counters.produced_frames.load(Relaxed) && counters.playing.load(Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `NAME (CH ch, RATE Hz, FORMAT, buffer N frames)` for the start-up line.
fn stream_desc(d: &cpal::Device, setup: &device::StreamSetup, rate: u32, buffer: usize) -> String {
    format!(
        "{} ({} ch, {rate} Hz, {}, buffer {buffer} frames)",
        device::device_name(d),
        setup.config.channels,
        setup.format
    )
}
