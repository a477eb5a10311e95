//! `wavemamba live` end to end without sound hardware: ALSA's `file` plugin as a fake microphone
//! and speaker (tests/fixtures/asound-fake.conf, DESIGN.md §5), and file input; plus the
//! overload behaviour (drop-oldest keeps latency bounded) and Ctrl-C.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{text, wavemamba_bin, TempDir};
use wavemamba::audio::{read_audio, resample, write_wav, WavFormat};
use wavemamba::pipeline::{run_live_with, LiveOptions, Mode, Processor, Report};

const RATE: u32 = 48_000;

/// A hermetic ALSA config whose fake devices read/write files in a temp dir.
struct Fake {
    dir: TempDir,
    conf: PathBuf,
}

fn fake(tag: &str) -> Fake {
    let dir = TempDir::new(tag);
    let conf_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/asound-fake.conf"
    ))
    .expect("fixture")
    .replace("@DATA@", &dir.path().display().to_string());
    let conf = dir.join("asound.conf");
    std::fs::write(&conf, conf_text).expect("write conf");
    Fake { dir, conf }
}

/// `wavemamba live ARGS` with only the fake devices visible (no PulseAudio).
fn live_cmd(f: &Fake, args: &[&str]) -> Command {
    let mut c = Command::new(wavemamba_bin());
    c.arg("live")
        .args(args)
        .current_dir(f.dir.path())
        .env("ALSA_CONFIG_PATH", &f.conf)
        .env("XDG_RUNTIME_DIR", "")
        .env_remove("PULSE_SERVER")
        .env_remove("PULSE_RUNTIME_PATH");
    c
}

fn f32_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Feeds `mic` (48 kHz) to the fake microphone, padded with 1 s of silence (the plugin repeats
/// its last period at the end of the file), runs `live` losslessly for the padded length and
/// returns the process output and what the fake speaker received with every exact zero removed
/// (the free-running fake devices leave gaps of silence wherever the speaker outran the mic).
fn run_fake(f: &Fake, mic: &[f32], args: &[&str]) -> (Output, Vec<f32>) {
    let mut raw: Vec<u8> = mic.iter().flat_map(|x| x.to_le_bytes()).collect();
    raw.extend(std::iter::repeat_n(0u8, RATE as usize * 4));
    std::fs::write(f.dir.join("mic_in.raw"), raw).expect("mic file");
    let _ = std::fs::remove_file(f.dir.join("spk_out.raw"));
    let seconds = format!("{}", (mic.len() as f64 / f64::from(RATE)) + 0.5);
    let mut all = vec![
        "--host",
        "alsa",
        "--input-device",
        "fakemic",
        "--output-device",
        "fakespk",
        "--rate",
        "48000",
        "--buffer",
        "240",
        "--lossless",
        "--seconds",
        &seconds,
        "--quiet",
    ];
    all.extend_from_slice(args);
    let out = live_cmd(f, &all).output().expect("run live");
    let spk = std::fs::read(f.dir.join("spk_out.raw")).unwrap_or_default();
    let heard: Vec<f32> = f32_le(&spk).into_iter().filter(|&x| x != 0.0).collect();
    (out, heard)
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "live failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A test signal: two tones and a little noise, 1.5 s at 48 kHz.
fn signal() -> Vec<f32> {
    let mut noise = common::audio_gen::noise(RATE as usize * 3 / 2, 0.05, 7);
    for (i, x) in noise.iter_mut().enumerate() {
        let t = i as f64 / f64::from(RATE);
        *x += (0.3 * (2.0 * std::f64::consts::PI * 300.0 * t).sin()
            + 0.2 * (2.0 * std::f64::consts::PI * 1234.0 * t).sin()) as f32;
    }
    noise
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn list_devices_shows_the_fake_devices() {
    let f = fake("live-list");
    let out = live_cmd(&f, &["--list-devices"]).output().expect("run");
    assert_ok(&out);
    let s = text(&out.stdout);
    for name in ["host ALSA", "fakemic", "fakespk", "default", "f32"] {
        assert!(s.contains(name), "{name} missing from:\n{s}");
    }
}

#[test]
fn an_unknown_device_is_named_with_the_alternatives() {
    let f = fake("live-nodev");
    let out = live_cmd(
        &f,
        &[
            "--mode",
            "passthrough",
            "--host",
            "alsa",
            "--input-device",
            "nosuchmic",
            "--seconds",
            "1",
        ],
    )
    .output()
    .expect("run");
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("nosuchmic") && e.contains("fakemic"),
        "unclear error: {e}"
    );
    let out = live_cmd(
        &f,
        &["--mode", "passthrough", "--input", "/nonexistent/in.wav"],
    )
    .output()
    .expect("run");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/in.wav"));
}

/// The pipeline itself (no model): mic → 48→16 kHz → 16→48 kHz → speaker equals the two
/// whole-file resamplings, sample for sample (the worker skips both filters' warm-up).
#[test]
fn fake_devices_passthrough_equals_offline_resampling() {
    let f = fake("live-pass");
    let x = signal();
    let rec = f.dir.join("rec.wav");
    let (out, heard) = run_fake(
        &f,
        &x,
        &["--mode", "passthrough", "--record", rec.to_str().unwrap()],
    );
    assert_ok(&out);
    let offline = resample(&resample(&x, RATE, 16_000).unwrap(), 16_000, RATE).unwrap();
    assert!(heard.len() >= x.len(), "{} < {}", heard.len(), x.len());
    let n = x.len() - 200; // the last samples see the padding through the filter: same zeros
    let d = max_abs_diff(&heard[..n], &offline[..n]);
    assert!(d < 1e-4, "speaker vs offline: max diff {d}");
    // --record holds what was played, without the devices' gaps.
    let r = read_audio(&rec).unwrap();
    assert_eq!(r.sample_rate, RATE);
    assert!(max_abs_diff(&r.samples[..n], &offline[..n]) < 1e-4);
}

/// A randomly initialised denoiser (`tiny`, weights perturbed) saved to `dir`.
fn random_denoiser(dir: &std::path::Path) {
    use wavemamba::config::{AudioConfig, MambaConfig, Task};
    let audio = AudioConfig {
        task: Task::Denoise,
        ..AudioConfig::default()
    };
    let m = common::perturbed_model(MambaConfig::preset("tiny").unwrap(), audio, 11);
    wavemamba::model::checkpoint::save(&m, dir).unwrap();
}

/// Denoise mode: the fake speaker's capture equals offline denoising of the same input —
/// `wavemamba denoise` (16-bit output) and the float path it runs (resample → `denoise_samples`
/// → resample) — once the fake devices' gaps are stripped; the worker skips the resamplers'
/// known warm-up delay, so no shift remains.
#[test]
fn fake_devices_denoise_equals_offline_denoise() {
    let f = fake("live-denoise");
    let model_dir = f.dir.join("denoiser");
    random_denoiser(&model_dir);
    let x = signal();
    let (out, heard) = run_fake(
        &f,
        &x,
        &["--mode", "denoise", "--model", model_dir.to_str().unwrap()],
    );
    assert_ok(&out);
    let model = wavemamba::model::checkpoint::load(&model_dir, tch::Device::Cpu).unwrap();
    let y16 =
        wavemamba::denoise::denoise_samples(&model, &resample(&x, RATE, 16_000).unwrap()).unwrap();
    let offline = resample(&y16, 16_000, RATE).unwrap();
    assert!(heard.len() >= x.len(), "{} < {}", heard.len(), x.len());
    let n = x.len() - 200;
    let level = offline[..n].iter().map(|v| v.abs()).sum::<f32>() / n as f32;
    assert!(
        level > 1e-3,
        "a silent denoiser output proves nothing: {level}"
    );
    let d = max_abs_diff(&heard[..n], &offline[..n]);
    eprintln!("denoise: mean |y| {level:.4}, speaker vs offline max diff {d:.2e}");
    assert!(d < 1e-4, "speaker vs offline denoise: max diff {d}");
    // The CLI's offline denoise of the same file (16-bit WAV at the input rate).
    let input = f.dir.join("in.wav");
    let cli_out = f.dir.join("clean.wav");
    write_wav(&input, &x, RATE, WavFormat::Float32).unwrap();
    let o = Command::new(wavemamba_bin())
        .args(["denoise", "--model", model_dir.to_str().unwrap()])
        .arg(&input)
        .arg(&cli_out)
        .output()
        .unwrap();
    assert_ok(&o);
    let cli = read_audio(&cli_out).unwrap().samples;
    let d = max_abs_diff(&heard[..n], &cli[..n]);
    eprintln!("denoise: speaker vs `wavemamba denoise` max diff {d:.2e}");
    assert!(d < 1e-4, "speaker vs `wavemamba denoise`: max diff {d}");
    // A language model is refused by name of the task.
    let (out, _) = run_fake(
        &f,
        &x[..4800],
        &[
            "--mode",
            "denoise",
            "--model",
            concat!(env!("CARGO_MANIFEST_DIR"), "/models/default"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("denoise"),
        "{}",
        text(&out.stderr)
    );
}

/// Continue mode with a fixed schedule and seed: two runs give the same speaker output; the
/// listen phases are silent and the continue phases are not.
#[test]
fn fake_devices_continue_with_a_schedule_is_reproducible() {
    let f = fake("live-cont");
    let x = signal();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/default");
    let rec = f.dir.join("rec.wav");
    let args = |seed: &'static str| {
        vec![
            "--mode",
            "continue",
            "--model",
            model,
            "--schedule",
            "listen:400,continue:300",
            "--seed",
            seed,
        ]
    };
    let mut a1 = args("5");
    a1.extend(["--record", rec.to_str().unwrap()]);
    let (o1, h1) = run_fake(&f, &x, &a1);
    assert_ok(&o1);
    let (o2, h2) = run_fake(&f, &x, &args("5"));
    assert_ok(&o2);
    let (o3, h3) = run_fake(&f, &x, &args("6"));
    assert_ok(&o3);
    assert!(
        h1.len() > RATE as usize / 2,
        "too little output: {}",
        h1.len()
    );
    assert_eq!(h1, h2, "same seed and schedule, different output");
    assert_ne!(h1, h3, "another seed, same output");
    // The timeline: listen 0–400 ms, continue 400–700 ms, listen 700–1100 ms, …
    let r = read_audio(&rec).unwrap().samples;
    let ms = |m: usize| m * RATE as usize / 1000;
    let level = |a: usize, b: usize| {
        r[ms(a)..ms(b)].iter().map(|x| x.abs()).sum::<f32>() / (ms(b) - ms(a)) as f32
    };
    assert!(
        level(50, 350) < 1e-3,
        "listening is not silent: {}",
        level(50, 350)
    );
    assert!(level(750, 1050) < 1e-3);
    assert!(
        level(450, 650) > 1e-3,
        "no continuation: {}",
        level(450, 650)
    );
    assert!(level(1150, 1350) > 1e-3);
}

/// Deliberately slow processing (about 3× slower than real time) of a file played at its
/// real-time pace: the worker drops the oldest input, so the run ends soon after the file does
/// instead of falling further and further behind.
#[test]
fn an_overloaded_worker_drops_oldest_and_stays_bounded() {
    struct Slow;
    impl Processor for Slow {
        fn process(&mut self, x: f32) -> f32 {
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(190) {
                std::hint::spin_loop();
            }
            x
        }
    }
    let dir = TempDir::new("live-slow");
    let input = dir.join("in.wav");
    let x = common::audio_gen::sine(440.0, 16_000, 1.0, 0.3);
    write_wav(&input, &x, 16_000, WavFormat::Float32).unwrap();
    let mut o = LiveOptions::new(Mode::Passthrough, PathBuf::new());
    o.input_file = Some(input);
    o.no_playback = true;
    o.record = Some(dir.join("out.wav"));
    o.max_latency_ms = 50.0;
    o.buffer_frames = Some(160);
    let mut warnings = 0;
    let t = Instant::now();
    let r = run_live_with(
        &o,
        Box::new(Slow),
        16_000,
        Arc::new(AtomicBool::new(false)),
        &mut |rep| {
            if let Report::Warning(_) = rep {
                warnings += 1
            }
        },
    )
    .unwrap();
    let wall = t.elapsed().as_secs_f64();
    assert!(wall < 2.2, "fell behind: {wall:.2} s for 1 s of input");
    assert!(
        r.stats.dropped_input_frames > 4_000,
        "dropped only {}",
        r.stats.dropped_input_frames
    );
    assert_eq!(
        r.worker.input_frames + r.stats.dropped_input_frames,
        x.len() as u64
    );
    assert!(warnings >= 1, "no warning about dropped input");
    let out = read_audio(dir.join("out.wav").as_path()).unwrap();
    assert_eq!(out.samples.len() as u64, r.worker.output_frames);
}

/// Ctrl-C (SIGINT) during a real-time run stops cleanly and leaves a complete --record file.
#[test]
fn ctrl_c_stops_and_finalises_the_recording() {
    let dir = TempDir::new("live-int");
    let input = dir.join("in.wav");
    write_wav(
        &input,
        &common::audio_gen::sine(300.0, 16_000, 10.0, 0.3),
        16_000,
        WavFormat::Float32,
    )
    .unwrap();
    let rec = dir.join("rec.wav");
    let child = Command::new(wavemamba_bin())
        .args(["live", "--mode", "passthrough", "--no-playback", "--input"])
        .arg(&input)
        .arg("--record")
        .arg(&rec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: sends SIGINT to the child we spawned (still running: it reads a 10 s file).
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill failed");
    let t = Instant::now();
    let out =
        common::within(10, "live after SIGINT", move || child.wait_with_output()).expect("wait");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_ok(&out);
    let r = read_audio(&rec).expect("a finished WAV file");
    let secs = r.duration_s();
    assert!((1.0..8.0).contains(&secs), "recorded {secs} s");
}

/// Without any sound device the error says what to do instead.
#[test]
fn no_sound_device_says_what_to_do() {
    let dir = TempDir::new("live-nodevice");
    let conf = dir.join("empty.conf");
    std::fs::write(&conf, "").unwrap();
    let f = Fake { dir, conf };
    let out = live_cmd(
        &f,
        &["--mode", "passthrough", "--host", "alsa", "--seconds", "1"],
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(!err.contains("ALSA lib"), "alsa-lib's own lines: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("no audio input device available")
            && last.contains("--list-devices")
            && last.contains("--input FILE"),
        "{err}"
    );
}
