//! The ordinary-thread side of the live pipeline: events and once-a-second statistics for the
//! control thread, and the WAV recorders fed by the worker.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::modes::Phase;
use super::ring::Counters;
use crate::{Error, Result};

/// Something the control thread should report.
#[derive(Debug, Clone)]
pub enum Event {
    /// Continue mode changed phase, at this many seconds of input; the echo coupling learned so
    /// far (dB, heard / played energy) once output has played.
    Phase(Phase, f64, Option<f64>),
    /// A device reported an error (disconnect, xrun, …); the run ends unless it is an xrun.
    Device {
        device: String,
        message: String,
        fatal: bool,
    },
}

/// One second (or so) of the pipeline, as the control thread prints it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Seconds since start.
    pub elapsed_s: f64,
    /// Added latency measured at the output callbacks of this window (ms): a frame's arrival
    /// from the input device to the output callback that hands it to the speaker, i.e. beyond
    /// the two devices' own buffers.
    pub latency_ms: Option<f64>,
    pub latency_min_ms: Option<f64>,
    /// Worker processing time / audio time of this window.
    pub real_time_factor: Option<f64>,
    /// Totals since start.
    pub underruns: u64,
    pub overruns: u64,
    /// Input frames lost: dropped by a full input ring plus skipped as oldest by the worker.
    pub dropped_input_frames: u64,
    pub dropped_output_frames: u64,
    /// Output frames skipped to trim an over-long queue (latency trimming).
    pub trimmed_frames: u64,
    /// Fill of the output ring (ms of audio queued for the speaker).
    pub output_queue_ms: f64,
    /// The adaptive jitter margin now (ms).
    pub margin_ms: f64,
}

impl Stats {
    /// A one-line summary: `t 3.0 s | latency 12.1 ms (min 9.8) | real-time factor 0.21 (4.8×
    /// faster than real time) | …`.
    pub fn line(&self) -> String {
        let opt = |v: Option<f64>, prec: usize| {
            v.map_or("-".to_owned(), |v| format!("{v:.prec$}", prec = prec))
        };
        format!(
            "t {:5.1} s | latency {} ms (min {}, output queue {:.1}, margin {:.1}) | {} | underruns {} overruns {} | dropped in {} out {} trimmed {}",
            self.elapsed_s,
            opt(self.latency_ms, 1),
            opt(self.latency_min_ms, 1),
            self.output_queue_ms,
            self.margin_ms,
            self.real_time_factor
                .map_or("real-time factor -".to_owned(), crate::rtf::real_time_text),
            self.underruns,
            self.overruns,
            self.dropped_input_frames,
            self.dropped_output_frames,
            self.trimmed_frames,
        )
    }
}

/// Turns the shared counters into [`Stats`] windows.
#[derive(Debug)]
pub struct StatsWindow {
    in_rate: f64,
    out_rate: f64,
    last_busy_ns: u64,
    last_frames: u64,
    /// Latency over every window taken so far: sum of means × windows, windows, minimum (ms).
    run_latency: (f64, u64, f64),
}

impl StatsWindow {
    pub fn new(in_rate: u32, out_rate: u32) -> StatsWindow {
        StatsWindow {
            in_rate: f64::from(in_rate),
            out_rate: f64::from(out_rate),
            last_busy_ns: 0,
            last_frames: 0,
            run_latency: (0.0, 0, f64::INFINITY),
        }
    }

    /// Mean of the windows' mean latencies and the smallest latency seen (ms), over the run.
    pub fn run_latency_ms(&self) -> Option<(f64, f64)> {
        let (sum, n, min) = self.run_latency;
        (n > 0).then(|| (sum / n as f64, min))
    }

    /// Reads (and resets the windowed parts of) the counters.
    pub fn take(&mut self, c: &Counters, elapsed_s: f64) -> Stats {
        let latency = c.take_latency_ms();
        if let Some((mean, min)) = latency {
            let r = &mut self.run_latency;
            *r = (r.0 + mean, r.1 + 1, r.2.min(min));
        }
        let busy = c.worker_busy_ns.load(Relaxed);
        let frames = c.worker_frames.load(Relaxed);
        let audio_s = (frames - self.last_frames.min(frames)) as f64 / self.in_rate;
        let rtf =
            (audio_s > 0.0).then(|| (busy - self.last_busy_ns.min(busy)) as f64 * 1e-9 / audio_s);
        self.last_busy_ns = busy;
        self.last_frames = frames;
        let queued = c
            .produced_frames
            .load(Relaxed)
            .saturating_sub(c.played_frames.load(Relaxed) + c.trimmed_frames.load(Relaxed));
        Stats {
            elapsed_s,
            latency_ms: latency.map(|l| l.0),
            latency_min_ms: latency.map(|l| l.1),
            real_time_factor: rtf,
            underruns: c.underruns.load(Relaxed),
            overruns: c.overruns.load(Relaxed),
            dropped_input_frames: c.overrun_frames.load(Relaxed)
                + c.dropped_oldest_frames.load(Relaxed),
            dropped_output_frames: c.dropped_output_frames.load(Relaxed),
            trimmed_frames: c.trimmed_frames.load(Relaxed),
            output_queue_ms: queued as f64 * 1e3 / self.out_rate,
            margin_ms: c.margin_frames.load(Relaxed) as f64 * 1e3 / self.out_rate,
        }
    }
}

/// A WAV file written while the pipeline runs (32-bit float, mono), on its own thread so file
/// I/O never stalls the worker. The file appears under its name only when committed: it is
/// written as `.NAME.partial` beside its target (a symbolic link's target: the link is written
/// through), finalised by [`Recorder::finalize`] and renamed by [`Recorder::commit`]
/// ([`finish_all`] does both for several, renaming only once all are finalised). A recorder
/// dropped before its commit (a run that failed to start) removes its partial file.
pub struct Recorder {
    tx: Option<Sender<Vec<f32>>>,
    handle: Option<JoinHandle<Result<u64>>>,
    path: PathBuf,
    partial: PathBuf,
    target: PathBuf,
    /// Samples written, once finalised.
    samples: Option<u64>,
    committed: bool,
}

impl Recorder {
    /// Creates the partial file now (so a bad path fails before anything runs).
    ///
    /// # Errors
    /// [`Error::Io`]/[`Error::Audio`] naming the file.
    pub fn create(path: &Path, sample_rate: u32) -> Result<Recorder> {
        let target = crate::audio::output::resolve_link(path)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "record.wav".into());
        let partial = target.with_file_name(format!(".{name}.partial"));
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let file = std::fs::File::create(&partial).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        // From here on, an error removes the partial file (the Recorder's drop, or this).
        let writer = hound::WavWriter::new(BufWriter::new(file), spec).map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            Error::Audio {
                path: path.to_owned(),
                reason: format!("cannot start the WAV file: {e}"),
            }
        })?;
        let (tx, rx): (Sender<Vec<f32>>, Receiver<Vec<f32>>) = crossbeam_channel::unbounded();
        let handle = spawn_writer(path, writer, rx).inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })?;
        Ok(Recorder {
            tx: Some(tx),
            handle: Some(handle),
            path: path.to_owned(),
            partial,
            target,
            samples: None,
            committed: false,
        })
    }

    /// The sender the worker feeds.
    pub fn sender(&self) -> Option<Sender<Vec<f32>>> {
        self.tx.clone()
    }

    /// Closes the file once every sender is gone and finalises its WAV header (still under its
    /// partial name). Returns the samples written.
    ///
    /// # Errors
    /// [`Error::Audio`] naming the file when writing failed.
    pub fn finalize(&mut self) -> Result<u64> {
        if let Some(n) = self.samples {
            return Ok(n);
        }
        drop(self.tx.take());
        let n = match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            _ => {
                return Err(Error::Audio {
                    path: self.path.clone(),
                    reason: "the recorder thread panicked".into(),
                })
            }
        };
        self.samples = Some(n);
        Ok(n)
    }

    /// Finalises the file and renames it into place. Returns the path and the samples written.
    ///
    /// # Errors
    /// As [`Recorder::finalize`]; [`Error::Io`] when the rename fails.
    pub fn commit(mut self) -> Result<(PathBuf, u64)> {
        let n = self.finalize()?;
        std::fs::rename(&self.partial, &self.target).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        self.committed = true;
        Ok((self.path.clone(), n))
    }
}

impl Drop for Recorder {
    /// Removes the partial file of a recorder never committed. The writer thread is not waited
    /// for (a worker still running may hold a sender): it finishes on the unlinked file.
    fn drop(&mut self) {
        if !self.committed {
            drop(self.tx.take());
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Finalises every recorder, then renames them all into place: the files appear together, and
/// if one cannot be finalised none of them appears. Returns each path and its samples.
///
/// # Errors
/// As [`Recorder::commit`].
pub fn finish_all(mut recorders: Vec<Recorder>) -> Result<Vec<(PathBuf, u64)>> {
    for r in &mut recorders {
        r.finalize()?;
    }
    recorders.into_iter().map(Recorder::commit).collect()
}

/// The thread that writes the blocks received on `rx` and finalises the file when the channel
/// closes; it returns the samples written.
fn spawn_writer(
    path: &Path,
    mut writer: hound::WavWriter<BufWriter<std::fs::File>>,
    rx: Receiver<Vec<f32>>,
) -> Result<JoinHandle<Result<u64>>> {
    let name = path.to_owned();
    std::thread::Builder::new()
        .name("wavemamba-record".into())
        .spawn(move || -> Result<u64> {
            // File I/O never runs at real-time priority (see session.rs).
            super::worker::set_thread_realtime(false);
            let err = |e: hound::Error| Error::Audio {
                path: name.clone(),
                reason: format!("writing failed: {e}"),
            };
            let mut n = 0u64;
            for block in rx {
                for x in block {
                    writer.write_sample(x).map_err(err)?;
                    n += 1;
                }
            }
            writer.finalize().map_err(err)?;
            Ok(n)
        })
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
}
