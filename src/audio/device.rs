//! Sound devices through `cpal` (ALSA, or PulseAudio's native protocol when a server is
//! reachable): listing, finding a device by name, choosing a stream configuration, and building
//! the input/output streams around the pipeline's real-time callback bodies
//! ([`crate::pipeline::ring`]).

use std::fmt::Write as _;

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{BufferSize, SampleFormat, StreamConfig, SupportedBufferSize};
use crossbeam_channel::Sender;

use crate::pipeline::control::Event;
use crate::pipeline::ring::{InputCallback, OutputCallback};
use crate::{Error, Result};

/// Which way a device is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// [`Error::NoAudioDevice`] for `dir`: `reason` says what failed; the hint what to do instead
/// (list the devices, or do without one).
fn no_device(dir: Direction, reason: String) -> Error {
    let instead = match dir {
        Direction::Input => "stream a file with --input FILE",
        Direction::Output => "run without playback: --no-playback (with --record FILE)",
    };
    Error::NoAudioDevice {
        direction: dir.name(),
        reason,
        hint: format!("list devices with --list-devices, or {instead}"),
    }
}

/// Drops alsa-lib's own stderr diagnostics ("ALSA lib pcm.c:…"), once per process, unless
/// `WM_ALSA_VERBOSE=1`: our errors say what failed in one line. The handler is C
/// (`csrc/alsa_errors.c`): alsa-lib calls it as a variadic function.
fn quiet_alsa() {
    #[cfg(target_os = "linux")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("WM_ALSA_VERBOSE").is_some_and(|v| v == "1") {
                return;
            }
            extern "C" {
                fn wm_alsa_quiet() -> std::ffi::c_int;
            }
            // SAFETY: installs a static function that ignores its arguments; no other state.
            unsafe {
                wm_alsa_quiet();
            }
        });
    }
}

fn dev_err(device: impl Into<String>, reason: impl std::fmt::Display) -> Error {
    Error::AudioDevice {
        device: device.into(),
        reason: reason.to_string(),
    }
}

/// The cpal host: `name` "alsa" or "pulseaudio" (case-insensitive), or `None` for cpal's
/// default (PulseAudio when a server is reachable, else ALSA).
///
/// # Errors
/// [`Error::AudioDevice`] for an unknown or unavailable host.
pub fn host(name: Option<&str>) -> Result<cpal::Host> {
    quiet_alsa();
    let Some(name) = name else {
        return Ok(cpal::default_host());
    };
    let ids = cpal::available_hosts();
    let id = ids
        .iter()
        .find(|id| id.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<_> = ids.iter().map(|i| i.name()).collect();
            dev_err(
                format!("host '{name}'"),
                format!("not available here (available: {})", names.join(", ")),
            )
        })?;
    cpal::host_from_id(*id).map_err(|e| dev_err(format!("host '{name}'"), e))
}

/// A device's short name: its id within the host (ALSA pcm name, PulseAudio sink/source name).
pub fn device_name(d: &cpal::Device) -> String {
    d.id()
        .map(|id| id.id().to_owned())
        .or_else(|_| d.description().map(|x| x.name().to_owned()))
        .unwrap_or_else(|_| "?".into())
}

/// Everything cpal sees: every available host, its devices (marking the defaults) and their
/// supported input/output configurations, as text.
///
/// # Errors
/// [`Error::AudioDevice`] when a host cannot be opened or enumerated.
pub fn list_devices() -> Result<String> {
    quiet_alsa();
    let mut s = String::new();
    for id in cpal::available_hosts() {
        let host = cpal::host_from_id(id).map_err(|e| dev_err(id.name(), e))?;
        let _ = writeln!(s, "host {}", id.name());
        let def_in = host.default_input_device().map(|d| device_name(&d));
        let def_out = host.default_output_device().map(|d| device_name(&d));
        let devices = host.devices().map_err(|e| dev_err(id.name(), e))?;
        for d in devices {
            let name = device_name(&d);
            let desc = d.description().map(|x| x.to_string()).unwrap_or_default();
            let mut marks = Vec::new();
            if def_in.as_deref() == Some(name.as_str()) {
                marks.push("default input");
            }
            if def_out.as_deref() == Some(name.as_str()) {
                marks.push("default output");
            }
            let marks = if marks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", marks.join(", "))
            };
            let _ = writeln!(s, "  {name}: {desc}{marks}");
            for (dir, configs) in [
                ("input", d.supported_input_configs().map(|c| c.collect())),
                ("output", d.supported_output_configs().map(|c| c.collect())),
            ] {
                let configs: Vec<cpal::SupportedStreamConfigRange> = configs.unwrap_or_default();
                for line in config_lines(&configs) {
                    let _ = writeln!(s, "    {dir}: {line}");
                }
            }
        }
    }
    Ok(s)
}

/// Supported configs, one line per (format, rate range) with the channel counts merged, e.g.
/// `f32, 1–64 ch, 1–4294967295 Hz, buffer 1–2147483647 frames` (buffer of the fewest channels).
fn config_lines(configs: &[cpal::SupportedStreamConfigRange]) -> Vec<String> {
    /// (format, min rate, max rate), fewest and most channels, buffer of the fewest.
    type Group = ((SampleFormat, u32, u32), u16, u16, SupportedBufferSize);
    let mut groups: Vec<Group> = Vec::new();
    for c in configs {
        let key = (c.sample_format(), c.min_sample_rate(), c.max_sample_rate());
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => {
                if c.channels() < g.1 {
                    g.3 = *c.buffer_size();
                }
                g.1 = g.1.min(c.channels());
                g.2 = g.2.max(c.channels());
            }
            None => groups.push((key, c.channels(), c.channels(), *c.buffer_size())),
        }
    }
    groups
        .into_iter()
        .map(|((f, lo, hi), cmin, cmax, b)| {
            let ch = if cmin == cmax {
                format!("{cmin} ch")
            } else {
                format!("{cmin}–{cmax} ch")
            };
            let rate = if lo == hi {
                format!("{lo} Hz")
            } else {
                format!("{lo}–{hi} Hz")
            };
            format!("{f}, {ch}, {rate}, buffer {}", buffer_text(&b))
        })
        .collect()
}

fn buffer_text(b: &SupportedBufferSize) -> String {
    match b {
        SupportedBufferSize::Range { min, max } => format!("{min}–{max} frames"),
        SupportedBufferSize::Unknown => "unknown".into(),
    }
}

/// Finds a device on `host`: `name` matches a device's id (`fakemic`, a PulseAudio source
/// name, …) or its description exactly, else as a case-insensitive substring; `None` is the
/// host's default device for `dir`.
///
/// # Errors
/// [`Error::AudioDevice`] naming the device and listing those available;
/// [`Error::NoAudioDevice`] when the host has no default device for `dir`.
pub fn find_device(host: &cpal::Host, name: Option<&str>, dir: Direction) -> Result<cpal::Device> {
    let Some(name) = name else {
        let d = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return d.ok_or_else(|| {
            no_device(
                dir,
                format!(
                    "host {} has no default {} device",
                    host.id().name(),
                    dir.name()
                ),
            )
        });
    };
    let devices: Vec<cpal::Device> = match dir {
        Direction::Input => host.input_devices().map(|d| d.collect()),
        Direction::Output => host.output_devices().map(|d| d.collect()),
    }
    .map_err(|e| dev_err(name, e))?;
    let desc = |d: &cpal::Device| {
        d.description()
            .map(|x| x.name().to_owned())
            .unwrap_or_default()
    };
    let lower = name.to_lowercase();
    let found = devices
        .iter()
        .position(|d| device_name(d) == name || desc(d) == name)
        .or_else(|| {
            devices.iter().position(|d| {
                device_name(d).to_lowercase().contains(&lower)
                    || desc(d).to_lowercase().contains(&lower)
            })
        });
    match found {
        Some(i) => Ok(devices[i].clone()),
        None => {
            let names: Vec<String> = devices.iter().map(device_name).collect();
            Err(dev_err(
                name,
                format!(
                    "no such {} device on host {} (available: {}; see --list-devices)",
                    dir.name(),
                    host.id().name(),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            ))
        }
    }
}

/// A chosen stream configuration.
#[derive(Debug, Clone, Copy)]
pub struct StreamSetup {
    pub config: StreamConfig,
    pub format: SampleFormat,
}

/// Sample formats the callbacks convert, best first.
const FORMATS: [SampleFormat; 5] = [
    SampleFormat::F32,
    SampleFormat::I16,
    SampleFormat::I32,
    SampleFormat::F64,
    SampleFormat::U16,
];

/// Chooses a configuration for `dir` on `device`: the rate `rate` if given (else 48 kHz when
/// supported, else the device's default rate), the fewest channels, f32 samples where offered,
/// and a fixed buffer of `buffer_frames` (default 10 ms) clamped to what the device allows.
///
/// # Errors
/// [`Error::NoAudioDevice`] when the device cannot be opened at all (no sound card or sound
/// server); [`Error::AudioDevice`] when it offers no usable configuration at that rate.
pub fn choose_config(
    device: &cpal::Device,
    dir: Direction,
    rate: Option<u32>,
    buffer_frames: Option<u32>,
) -> Result<StreamSetup> {
    let name = device_name(device);
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match dir {
        Direction::Input => device.supported_input_configs().map(|c| c.collect()),
        Direction::Output => device.supported_output_configs().map(|c| c.collect()),
    }
    .map_err(|e| match e.kind() {
        cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::HostUnavailable => no_device(
            dir,
            format!("no sound card or sound server: '{name}' cannot be opened"),
        ),
        _ => dev_err(
            &name,
            format!("cannot read its {} configs: {e}", dir.name()),
        ),
    })?;
    let default_rate = match dir {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    }
    .map(|c| c.sample_rate())
    .ok();
    let usable = |r: &&cpal::SupportedStreamConfigRange| FORMATS.contains(&r.sample_format());
    let rate = match rate {
        Some(r) => r,
        None if ranges
            .iter()
            .filter(usable)
            .any(|c| c.contains_rate(48_000)) =>
        {
            48_000
        }
        None => default_rate.unwrap_or(48_000),
    };
    let best = ranges
        .iter()
        .filter(usable)
        .filter(|c| c.contains_rate(rate))
        .min_by_key(|c| {
            let f = FORMATS.iter().position(|f| *f == c.sample_format());
            (c.channels(), f)
        })
        .ok_or_else(|| {
            dev_err(
                &name,
                format!(
                    "offers no {} configuration at {rate} Hz in a supported format",
                    dir.name()
                ),
            )
        })?;
    let want = buffer_frames.unwrap_or((rate / 100).max(64));
    let buffer = match best.buffer_size() {
        SupportedBufferSize::Range { min, max } => want.clamp(*min, (*max).max(*min)),
        SupportedBufferSize::Unknown => want,
    };
    Ok(StreamSetup {
        config: StreamConfig {
            channels: best.channels(),
            sample_rate: rate,
            buffer_size: BufferSize::Fixed(buffer),
        },
        format: best.sample_format(),
    })
}

/// An error callback: xruns are reported, anything else ends the run.
fn on_error(name: String, events: Sender<Event>) -> impl FnMut(cpal::Error) + Send + 'static {
    move |e: cpal::Error| {
        let fatal = e.kind() != cpal::ErrorKind::Xrun;
        let _ = events.send(Event::Device {
            device: name.clone(),
            message: e.to_string(),
            fatal,
        });
    }
}

macro_rules! for_format {
    ($format:expr, $name:expr, |$t:ident| $body:expr) => {
        match $format {
            SampleFormat::F32 => {
                type $t = f32;
                $body
            }
            SampleFormat::I16 => {
                type $t = i16;
                $body
            }
            SampleFormat::I32 => {
                type $t = i32;
                $body
            }
            SampleFormat::F64 => {
                type $t = f64;
                $body
            }
            SampleFormat::U16 => {
                type $t = u16;
                $body
            }
            other => Err(dev_err($name, format!("unsupported sample format {other}"))),
        }
    };
}

/// Builds (does not start) the input stream that runs `cb` on each device buffer.
///
/// # Errors
/// [`Error::AudioDevice`] naming the device when cpal cannot open it.
pub fn build_input(
    device: &cpal::Device,
    setup: StreamSetup,
    mut cb: InputCallback,
    events: Sender<Event>,
) -> Result<cpal::Stream> {
    let name = device_name(device);
    let err = on_error(name.clone(), events);
    for_format!(setup.format, &name, |T| device
        .build_input_stream::<T, _, _>(
            setup.config,
            move |data: &[T], _| cb.process(data),
            err,
            None
        )
        .map_err(|e| dev_err(&name, format!("cannot open for input: {e}"))))
}

/// Builds (does not start) the output stream that runs `cb` on each device buffer.
///
/// # Errors
/// [`Error::AudioDevice`] naming the device when cpal cannot open it.
pub fn build_output(
    device: &cpal::Device,
    setup: StreamSetup,
    mut cb: OutputCallback,
    events: Sender<Event>,
) -> Result<cpal::Stream> {
    let name = device_name(device);
    let err = on_error(name.clone(), events);
    for_format!(setup.format, &name, |T| device
        .build_output_stream::<T, _, _>(
            setup.config,
            move |data: &mut [T], _| cb.process(data),
            err,
            None
        )
        .map_err(|e| dev_err(&name, format!("cannot open for output: {e}"))))
}
