//! Live mode (DESIGN.md §1, §4): microphone (or a file at its real-time pace) → denoised voice
//! or a continuation → speaker, one sample at a time.
//!
//! ```text
//! cpal input callback ─▶ SPSC ring ─▶ worker thread ─▶ SPSC ring ─▶ cpal output callback
//!   (ring.rs)                          (worker.rs: resample ▶ Processor ▶ resample)
//!                                           │ blocks            │ atomics (ring.rs Counters)
//!                                      recorders (control.rs)   ▼
//!                              control thread (this file): stats once a second, events, stop
//! ```
//!
//! The callbacks only copy, convert and count (no allocation, lock or I/O). If the worker falls
//! behind, it skips the oldest input beyond `max_latency_ms` and counts it, so latency stays
//! bounded; `lossless` instead waits (for fake devices and files processed faster than real
//! time). A fatal device error, Ctrl-C (the `stop` flag) or the end of `--seconds`/the input
//! file ends the run; once running, the recordings are finalised in every case. Options and
//! recording paths are checked before anything is opened, and a run that fails to start leaves
//! no recording behind (not even a header-only file).

pub mod control;
pub mod modes;
pub mod ring;
mod session;
mod source;
pub mod voice;
pub mod worker;

pub use control::{Event, Stats};
pub use modes::{
    parse_schedule, ContinueOptions, ContinueProcessor, Passthrough, Phase, Processor,
};
pub use session::{run_live, run_live_with, LiveReport, Report};

use std::path::PathBuf;

use crate::{Error, Result};

/// What live mode does with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Play back the denoised input (a denoiser model, task `denoise`).
    Denoise,
    /// Listen, and continue what was heard when the speaker stops (a language model).
    Continue,
    /// Play the input unchanged (measures the pipeline and devices without a model).
    Passthrough,
}

impl std::str::FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> crate::Result<Mode> {
        match s {
            "denoise" => Ok(Mode::Denoise),
            "continue" => Ok(Mode::Continue),
            "passthrough" => Ok(Mode::Passthrough),
            other => Err(Error::InvalidArgument {
                name: "--mode",
                reason: format!("unknown mode '{other}' (denoise, continue, passthrough)"),
            }),
        }
    }
}

/// Everything `wavemamba live` needs.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub mode: Mode,
    /// Model directory (not read in passthrough mode).
    pub model: PathBuf,
    /// cpal host ("alsa", "pulseaudio"); `None`: cpal's default.
    pub host: Option<String>,
    /// Input device name; `None`: the host's default.
    pub input_device: Option<String>,
    /// Output device name; `None`: the host's default.
    pub output_device: Option<String>,
    /// Read this file instead of a microphone, at its real-time pace (as fast as the pipeline
    /// takes it when `lossless`).
    pub input_file: Option<PathBuf>,
    /// Do not open an output device (the output goes only to `record`).
    pub no_playback: bool,
    /// Write what is played (32-bit float WAV at the output rate).
    pub record: Option<PathBuf>,
    /// Write what was heard (32-bit float WAV at the input rate).
    pub record_input: Option<PathBuf>,
    /// Device buffer (frames); `None`: 10 ms.
    pub buffer_frames: Option<u32>,
    /// Device sample rate (Hz); `None`: 48 kHz where supported.
    pub rate: Option<u32>,
    /// Stop after this much input (seconds of audio).
    pub seconds: Option<f64>,
    /// Never drop input or output; wait instead (see the module doc).
    pub lossless: bool,
    /// Input allowed to queue before the oldest is dropped, and output allowed to queue beyond
    /// the jitter margin before new output is dropped (ms each).
    pub max_latency_ms: f64,
    /// Output queued before playback starts (ms), a margin against the jitter of block-wise
    /// processing; `None`: one output device buffer.
    pub jitter_ms: Option<f64>,
    /// Sinc taps of the streaming resamplers: 256 (default) gives exactly the offline path's
    /// numbers; fewer taps (a multiple of 8, ≥ 16) cut the filters' look-ahead.
    pub resampler_taps: usize,
    /// Run the worker thread with real-time (SCHED_FIFO) scheduling where permitted.
    pub realtime_priority: bool,
    pub continue_options: ContinueOptions,
}

impl LiveOptions {
    /// Defaults for `mode` with `model`: default devices, 10 ms buffers, 48 kHz, until stopped.
    pub fn new(mode: Mode, model: PathBuf) -> LiveOptions {
        LiveOptions {
            mode,
            model,
            host: None,
            input_device: None,
            output_device: None,
            input_file: None,
            no_playback: false,
            record: None,
            record_input: None,
            buffer_frames: None,
            rate: None,
            seconds: None,
            lossless: false,
            max_latency_ms: 100.0,
            jitter_ms: None,
            resampler_taps: 256,
            realtime_priority: false,
            continue_options: ContinueOptions::default(),
        }
    }

    /// Checks the values a user can get wrong, and the paths of the recordings (their names,
    /// directories and that they differ), before any device, model or file is opened or
    /// created.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the CLI option; [`Error::Io`] naming a recording's
    /// path that cannot be written.
    pub fn check(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidArgument { name, reason });
        if let Some(s) = self.seconds {
            if !(s > 0.0 && s.is_finite()) {
                return bad("--seconds", format!("must be > 0, got {s}"));
            }
        }
        if !(self.max_latency_ms > 0.0 && self.max_latency_ms.is_finite()) {
            return bad(
                "--max-latency-ms",
                format!("must be > 0, got {}", self.max_latency_ms),
            );
        }
        if let Some(j) = self.jitter_ms {
            if !(0.0..=1000.0).contains(&j) {
                return bad("--jitter-ms", format!("must be in 0..=1000, got {j}"));
            }
        }
        if self.buffer_frames == Some(0) {
            return bad("--buffer", "must be ≥ 1 frame".into());
        }
        crate::audio::check_taps("--resampler-taps", self.resampler_taps)?;
        if let Some(r) = self.rate {
            crate::audio::check_sample_rate("--rate", r)?;
            if self.input_file.is_some() && self.no_playback {
                return bad(
                    "--rate",
                    "sets the sound devices' rate, and with --input FILE and --no-playback no \
                     device is opened: the recordings keep the file's rate"
                        .into(),
                );
            }
        }
        if self.mode == Mode::Continue {
            self.continue_options.check()?;
        }
        self.check_recordings()?;
        if self.lossless && self.input_file.is_none() && self.seconds.is_none() {
            return bad(
                "--lossless",
                "with a device as input, --lossless needs --seconds (the input ring holds the run)"
                    .into(),
            );
        }
        if self.no_playback && self.input_file.is_none() && self.record.is_none() {
            return bad(
                "--no-playback",
                "without playback, give --record (or nothing is output)".into(),
            );
        }
        Ok(())
    }

    /// Checks `--record` and `--record-input` as output WAV files (creating nothing) and that
    /// they are not the same file.
    fn check_recordings(&self) -> Result<()> {
        use crate::audio::output::{check_output, OutputKind};
        let record = match &self.record {
            Some(p) => Some(check_output("--record", p, OutputKind::Wav)?),
            None => None,
        };
        if let Some(p) = &self.record_input {
            if record == Some(check_output("--record-input", p, OutputKind::Wav)?) {
                return Err(Error::InvalidArgument {
                    name: "--record-input",
                    reason: format!("{} is also the file of --record", p.display()),
                });
            }
        }
        Ok(())
    }
}
