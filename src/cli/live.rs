//! `wavemamba live`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use wavemamba::continuation::{bundled_model_dir, default_model_dir};
use wavemamba::pipeline::{
    self, parse_schedule, ContinueOptions, Event, LiveOptions, Mode, Phase, Report,
};
use wavemamba::rtf::real_time_text;

/// Run on a microphone in real time, one sample at a time: denoise (play back the cleaned voice)
/// or continue (listen; when the speaker stops, the model speaks until voice returns).
///
/// Threads: device input callback → lock-free ring → worker (resample → model → resample) →
/// ring → device output callback; once a second a line with latency, real-time factor,
/// under/overruns and dropped samples. Ctrl-C stops cleanly and finalises --record files.
/// Device errors are one line; alsa-lib's own messages are hidden (WM_ALSA_VERBOSE=1 shows them).
///
/// Examples:
///   wavemamba live --list-devices
///   wavemamba live --mode continue --seconds 30 --record out.wav
///   wavemamba live --mode denoise --input noisy.wav --output-device speaker
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// denoise, continue, or passthrough (no model: measures the pipeline)
    #[arg(long, default_value = "denoise")]
    mode: String,
    /// Model directory (default: models/denoiser for denoise, models/default for continue)
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print cpal's hosts and devices with their supported configs, then exit
    #[arg(long)]
    list_devices: bool,
    /// Audio host: alsa or pulseaudio (default: PulseAudio when a server runs, else ALSA)
    #[arg(long)]
    host: Option<String>,
    /// Microphone (a device name or part of it, see --list-devices; default: the host's)
    #[arg(long)]
    input_device: Option<String>,
    /// Speaker (default: the host's)
    #[arg(long)]
    output_device: Option<String>,
    /// Read this audio file instead of the microphone, at its real-time pace
    #[arg(long)]
    input: Option<PathBuf>,
    /// Write what is played to this WAV file (.wav; 32-bit float, at the output device's rate, or
    /// the input's without playback). Checked
    /// before the run; it appears when the run ends (also after a device failure mid-run)
    #[arg(long)]
    record: Option<PathBuf>,
    /// Write what was heard to this WAV file (.wav; 32-bit float, input rate)
    #[arg(long)]
    record_input: Option<PathBuf>,
    /// Do not play (with --record: the output only goes to the file)
    #[arg(long)]
    no_playback: bool,
    /// Device buffer in frames (default: 10 ms of the device rate, e.g. 480 at 48 kHz; 128 with
    /// --low-latency)
    #[arg(long)]
    buffer: Option<u32>,
    /// Device sample rate in Hz (default: 48000 where supported)
    #[arg(long)]
    rate: Option<u32>,
    /// Stop after this many seconds of input (default: until Ctrl-C or the end of --input)
    #[arg(long)]
    seconds: Option<f64>,
    /// Input (and output) allowed to queue before the oldest input (newest output) is dropped,
    /// in ms: bounds the latency
    #[arg(long, default_value_t = 100.0)]
    max_latency_ms: f64,
    /// Output queued before playback starts, in ms (default: one device buffer); each underrun
    /// raises it by the missing audio, up to 20 ms, and every 10 s without one gives back half
    /// of what was added (adaptive jitter margin)
    #[arg(long)]
    jitter_ms: Option<f64>,
    /// Sinc taps of the resamplers: 256 gives the offline path's numbers exactly (10.6 ms
    /// look-ahead for 48 <-> 16 kHz); 64 cuts the look-ahead to 2.6 ms [default: 256]
    #[arg(long)]
    resampler_taps: Option<usize>,
    /// Low-latency preset: --buffer 128 --resampler-taps 64 --jitter-ms 2 unless given
    /// (about 9 ms added latency instead of about 26 ms on a quiet machine; the margin grows
    /// after underruns; no longer bit-equal to offline)
    #[arg(long)]
    low_latency: bool,
    /// Run the worker and the device threads with real-time scheduling (SCHED_FIFO; needs root
    /// or CAP_SYS_NICE, else it runs normally)
    #[arg(long)]
    realtime_priority: bool,
    /// Never drop: wait instead (for files or fake devices running faster than real time;
    /// with a device as input it needs --seconds)
    #[arg(long)]
    lossless: bool,
    /// Continue mode: silence (ms) after voice before the model speaks
    #[arg(long, default_value_t = 600.0)]
    silence_ms: f64,
    /// Continue mode: a 10 ms window is voice when its RMS level reaches this (dBFS)
    #[arg(long, default_value_t = -40.0, allow_hyphen_values = true)]
    threshold_db: f64,
    /// Continue mode, on speakers: while the model's output plays, a window is voice only if it
    /// is also this many dB above the output's echo (learned as it plays), so the model does not
    /// take its own echo for a speaker; talking over it still stops it. Off with --input or
    /// --no-playback (nothing can echo)
    #[arg(long, default_value_t = 6.0, allow_hyphen_values = true)]
    echo_margin_db: f64,
    /// Continue mode: the longest continuation (ms)
    #[arg(long, default_value_t = 3000.0)]
    max_continue_ms: f64,
    /// Continue mode: a fixed cycle instead of the voice detector, e.g. listen:2000,continue:1000
    #[arg(long)]
    schedule: Option<String>,
    // --temperature, --top-p, --seed (live: used in continue mode)
    #[command(flatten)]
    sampling: super::sampling::SamplingArgs,
    /// Print only the summary, not the once-a-second lines
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.list_devices {
        print!("{}", wavemamba::audio::device::list_devices()?);
        return Ok(());
    }
    let mode: Mode = a.mode.parse()?;
    let model = a.model.unwrap_or_else(|| match mode {
        Mode::Denoise => bundled_model_dir("denoiser"),
        _ => default_model_dir(),
    });
    let mut o = LiveOptions::new(mode, model);
    o.host = a.host;
    o.input_device = a.input_device;
    o.output_device = a.output_device;
    o.input_file = a.input;
    o.no_playback = a.no_playback;
    o.record = a.record;
    o.record_input = a.record_input;
    o.buffer_frames = a.buffer.or(a.low_latency.then_some(128));
    o.rate = a.rate;
    o.seconds = a.seconds;
    o.lossless = a.lossless;
    o.max_latency_ms = a.max_latency_ms;
    o.jitter_ms = a.jitter_ms.or(a.low_latency.then_some(2.0));
    o.resampler_taps = match (a.low_latency, a.resampler_taps) {
        (true, None) => 64,
        (_, taps) => taps.unwrap_or(256),
    };
    o.realtime_priority = a.realtime_priority;
    o.continue_options = ContinueOptions {
        silence_ms: a.silence_ms,
        threshold_db: a.threshold_db,
        echo_margin_db: Some(a.echo_margin_db),
        max_continue_ms: a.max_continue_ms,
        schedule: a.schedule.as_deref().map(parse_schedule).transpose()?,
        temperature: a.sampling.temperature,
        top_p: a.sampling.top_p,
        seed: a.sampling.seed,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the Ctrl-C handler")?;
    }
    let quiet = a.quiet;
    let mut print = |r: Report| match r {
        Report::Started(d) => eprintln!("live: {d}"),
        Report::Stats(s) if !quiet => eprintln!("live: {}", s.line()),
        Report::Stats(_) => {}
        // The echo coupling once the model has spoken (what its voice detector allowed for).
        Report::Event(Event::Phase(p, t, echo_db)) => match echo_db {
            Some(db) if *p == Phase::Listen => {
                eprintln!("live: {t:.2} s: {} (echo coupling {db:.1} dB)", p.name())
            }
            _ => eprintln!("live: {t:.2} s: {}", p.name()),
        },
        Report::Event(Event::Device {
            device,
            message,
            fatal,
        }) => eprintln!(
            "live: {} from device {device}: {message}",
            if *fatal { "error" } else { "warning" }
        ),
        Report::Warning(w) => eprintln!("live: warning: {w}"),
    };
    let r = pipeline::run_live(&o, stop, &mut print).context("live failed")?;
    for (p, n) in &r.recorded {
        println!("wrote {} ({n} samples)", p.display());
    }
    let s = &r.stats;
    println!(
        "live: {:.2} s of input, added latency {} ms (min {}), worker {}{}, underruns {}, overruns {}, dropped input {} output {} frames; rates {} → {} → {} Hz, resampler delay {:.2} ms",
        r.worker.input_frames as f64 / f64::from(r.in_rate),
        s.latency_ms.map_or("-".into(), |l| format!("{l:.1}")),
        s.latency_min_ms.map_or("-".into(), |l| format!("{l:.1}")),
        real_time_text(r.real_time_factor),
        if r.worker.realtime { " (SCHED_FIFO)" } else { "" },
        s.underruns,
        s.overruns,
        s.dropped_input_frames,
        s.dropped_output_frames,
        r.in_rate,
        r.model_rate,
        r.out_rate,
        r.resampler_delay_ms,
    );
    Ok(())
}
