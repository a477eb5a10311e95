//! The denoiser (task `denoise`): the streaming engine equals the offline (parallel-scan) path
//! sample for sample; a short training run on synthetic speech + noise learns to denoise (SI-SDR
//! improvement rises above 0 dB); `wavemamba denoise` and `eval --task denoise` end to end, and
//! their bad inputs.

mod common;

use common::audio_gen::{noise, write_wav_f32, write_wav_int};
use common::{text, wavemamba, TempDir};
use indicatif::ProgressBar;
use tch::{Device, Tensor};
use wavemamba::config::{AudioConfig, MambaConfig, Task};
use wavemamba::denoise::mix::DenoiseData;
use wavemamba::denoise::{denoise_samples, denoise_samples_scan, sisdr::si_sdr};
use wavemamba::model::{checkpoint, WaveMamba};
use wavemamba::stream::DenoiseEngine;
use wavemamba::train::corpus::{TokenCorpus, TokenFile};
use wavemamba::train::run_dir::RunDir;
use wavemamba::train::{train_objective, Objective, Start, TrainOptions};

/// A denoiser of `preset` whose weights are perturbed away from the structured init.
fn random_denoiser(preset: &str, seed: i64) -> WaveMamba {
    let audio = AudioConfig {
        task: Task::Denoise,
        ..AudioConfig::default()
    };
    common::perturbed_model(MambaConfig::preset(preset).unwrap(), audio, seed)
}

/// "Speech": vowel-like harmonic tones with a syllable envelope and pauses, at 16 kHz.
fn speechlike(seconds: f64, seed: u64) -> Vec<f32> {
    let n = (seconds * 16_000.0) as usize;
    let f0 = 110.0 + 20.0 * (seed % 7) as f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let env = (t * 3.0 * std::f64::consts::PI).sin().max(0.0).powi(2);
            let v: f64 = (1..6)
                .map(|h| (t * f0 * h as f64 * std::f64::consts::TAU).sin() / h as f64)
                .sum();
            (0.3 * env * v) as f32
        })
        .collect()
}

#[test]
fn engine_equals_offline_denoise_sample_for_sample() {
    let model = random_denoiser("tiny", 3);
    let mut x = speechlike(0.2, 1);
    for (a, b) in x.iter_mut().zip(noise(3200, 0.2, 9)) {
        *a += b;
    }
    let offline = denoise_samples_scan(&model, &x, &ProgressBar::hidden()).unwrap();
    let mut engine = DenoiseEngine::new(&model).unwrap();
    let streamed: Vec<f32> = x.iter().map(|&v| engine.process(v)).collect();
    assert_eq!(offline.len(), x.len());
    let peak = offline.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(peak > 1e-3, "degenerate output");
    let worst = offline
        .iter()
        .zip(&streamed)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-5 * peak,
        "max |offline - engine| = {worst} (peak {peak})"
    );
    // Chunked offline processing carries the state: same result as one pass.
    let chunked: Vec<f32> = {
        let mut s = model.zero_state(1);
        let toks: Vec<i64> = x
            .iter()
            .map(|&v| wavemamba::audio::mulaw::encode(v) as i64)
            .collect();
        let mut out = Vec::new();
        for c in toks.chunks(777) {
            let logits =
                tch::no_grad(|| model.prefill(&Tensor::from_slice(c).view([1, -1]), &mut s))
                    .unwrap();
            let y = wavemamba::denoise::expected_value(&logits).reshape([-1]);
            out.extend(Vec::<f32>::try_from(&y).unwrap());
        }
        out
    };
    let worst = offline
        .iter()
        .zip(&chunked)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5 * peak, "chunked differs by {worst}");
}

#[test]
fn language_models_are_refused_with_the_reason() {
    let lm = WaveMamba::new(
        MambaConfig::preset("tiny").unwrap(),
        AudioConfig::default(),
        Device::Cpu,
    )
    .unwrap();
    let err = DenoiseEngine::new(&lm).unwrap_err().to_string();
    assert!(err.contains("not 'denoise'"), "{err}");
    assert!(denoise_samples(&lm, &[0.1; 10]).is_err());
    // and the other way round: bits per sample are not a denoiser's score
    let dir = TempDir::new("denoiser-as-lm");
    let wav = dir.join("a.wav");
    let q: Vec<i32> = speechlike(0.2, 1)
        .iter()
        .map(|v| (v * 32767.0) as i32)
        .collect();
    write_wav_int(&wav, &q, 1, 16, 16_000);
    let den = random_denoiser("tiny", 1);
    let err = wavemamba::eval::eval_lm(&den, &wav, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not 'lm'") && err.contains("eval --task denoise"),
        "{err}"
    );
    let model_dir = dir.join("denoiser");
    checkpoint::save(&den, &model_dir).unwrap();
    let out = dir.join("continued.wav");
    let o = wavemamba(&[
        "generate",
        "--model",
        model_dir.to_str().unwrap(),
        "--seconds",
        "0.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not 'lm'"), "{}", text(&o.stderr));
    assert!(!out.exists());
}

fn corpus(files: Vec<Vec<f32>>, seed: u64) -> TokenCorpus {
    let to_file = |(i, x): (usize, Vec<f32>)| TokenFile {
        name: format!("f{i}"),
        tokens: wavemamba::audio::mulaw::encode_slice(&x),
    };
    let mut all: Vec<TokenFile> = files.into_iter().enumerate().map(to_file).collect();
    let valid = all.split_off(all.len() - 1);
    TokenCorpus::new(16_000, all, valid, seed)
}

#[test]
fn training_learns_to_denoise_and_batches_are_reproducible() {
    let speech = corpus((0..5).map(|s| speechlike(1.5, s)).collect(), 1);
    let noises = corpus((0..3).map(|s| noise(24_000, 0.3, 100 + s)).collect(), 2);
    let mut data = DenoiseData::new(speech, noises, 5).unwrap();
    data.valid_crops = 8;
    data.valid_len = 4096;
    let a = data.train_batch(7, 2, 2048).unwrap();
    let b = data.train_batch(7, 2, 2048).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(x.equal(y), "batch 7 differs between calls");
    }
    // The mixture is the clean signal plus noise: not equal, but correlated.
    let noisy: Vec<i64> = Vec::try_from(&a[0].reshape([-1])).unwrap();
    let clean: Vec<i64> = Vec::try_from(&a[1].reshape([-1])).unwrap();
    assert_ne!(noisy, clean);

    let dir = TempDir::new("denoise-train");
    let run = RunDir::create(dir.path()).unwrap();
    tch::manual_seed(0);
    let audio = AudioConfig {
        task: Task::Denoise,
        ..AudioConfig::default()
    };
    let model = WaveMamba::new(MambaConfig::preset("tiny").unwrap(), audio, Device::Cpu).unwrap();
    let before = data.validate(&model).unwrap().unwrap();
    let opts = TrainOptions {
        steps: 60,
        batch: 4,
        len: 2048,
        lr: 5e-3,
        warmup: 10,
        min_lr_ratio: 0.1,
        clip: 1.0,
        seed: 5,
        device: Device::Cpu,
        bf16: false,
        log_every: 10,
        valid_every: 30,
        ckpt_every: 30,
        stop_after: None,
        progress: false,
    };
    let s = train_objective(&run, Start::Fresh(model), &mut data, &opts).unwrap();
    let best = s.best_valid.unwrap();
    assert!(
        best > before + 10.0,
        "SI-SDR improvement {before:.2} dB → {best:.2} dB"
    );
    let trained = checkpoint::load(&run.best_dir(), Device::Cpu).unwrap();
    assert_eq!(trained.audio.task, Task::Denoise);
    assert!(dir.join("valid.png").is_file() && dir.join("loss.png").is_file());
}

#[test]
fn denoise_cli_writes_input_rate_and_length_and_refuses_bad_input() {
    let dir = TempDir::new("denoise-cli");
    let model_dir = dir.join("model");
    checkpoint::save(&random_denoiser("tiny", 4), &model_dir).unwrap();
    let m = model_dir.to_str().unwrap();
    // Stereo 44.1 kHz float input → mono 44.1 kHz output of the same duration.
    let x = speechlike(0.5, 2);
    let stereo: Vec<f32> = x.iter().flat_map(|&v| [v, 0.5 * v]).collect();
    let input = dir.join("in.wav");
    write_wav_f32(&input, &stereo, 2, 44_100);
    let out = dir.join("out.wav");
    let png = dir.join("spec.png");
    let o = wavemamba(&[
        "denoise",
        "--model",
        m,
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--spectrogram",
        png.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    let r = hound::WavReader::open(&out).unwrap();
    assert_eq!((r.spec().sample_rate, r.spec().channels), (44_100, 1));
    assert_eq!(r.len() as usize, x.len());

    // Bad inputs: clear errors, no output file.
    let garbage = dir.join("garbage.wav");
    std::fs::write(&garbage, b"RIFF\x10\0\0\0WAVEjunk").unwrap();
    let lm_dir = dir.join("lm");
    let nope = dir.join("nope");
    checkpoint::save(
        &WaveMamba::new(
            MambaConfig::preset("tiny").unwrap(),
            AudioConfig::default(),
            Device::Cpu,
        )
        .unwrap(),
        &lm_dir,
    )
    .unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["denoise", "--model", m, garbage.to_str().unwrap()],
            "garbage.wav",
        ),
        (
            vec![
                "denoise",
                "--model",
                nope.to_str().unwrap(),
                input.to_str().unwrap(),
            ],
            "nope",
        ),
        (
            vec![
                "denoise",
                "--model",
                lm_dir.to_str().unwrap(),
                input.to_str().unwrap(),
            ],
            "not 'denoise'",
        ),
        (
            vec!["denoise", "--model", m, input.to_str().unwrap()],
            "output directory does not exist",
        ),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let target = if i == 3 {
            dir.join("missing/out.wav")
        } else {
            dir.join(format!("bad{i}.wav"))
        };
        let mut args = args.clone();
        let t = target.to_str().unwrap().to_owned();
        args.push(&t);
        let o = wavemamba(&args);
        assert!(!o.status.success(), "case {i} succeeded");
        let err = text(&o.stderr);
        assert!(err.contains(needle), "case {i}: {err}");
        assert!(!target.exists(), "case {i} left {}", target.display());
    }
}

#[test]
fn eval_denoise_reports_model_and_rnnoise_per_snr() {
    let dir = TempDir::new("denoise-eval");
    let model_dir = dir.join("model");
    checkpoint::save(&random_denoiser("tiny", 5), &model_dir).unwrap();
    // Noise: one ordinary file, one silent for 90% of its length (its stretches are redrawn
    // until audible) and one silent throughout (skipped): no mixture may come out noise-free.
    for (sub, files) in [("speech", 2u64), ("noise", 3)] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for i in 0..files {
            let x = match (sub, i) {
                ("speech", _) => speechlike(0.6, i),
                (_, 0) => noise(8000, 0.2, i),
                (_, 1) => {
                    let mut x = noise(40_000, 0.2, i);
                    x[..36_000].fill(0.0);
                    x
                }
                _ => vec![0.0; 8000],
            };
            let q: Vec<i32> = x.iter().map(|v| (v * 32767.0) as i32).collect();
            write_wav_int(&dir.join(format!("{sub}/{i}.wav")), &q, 1, 16, 16_000);
        }
    }
    let o = wavemamba(&[
        "eval",
        "--task",
        "denoise",
        "--model",
        model_dir.to_str().unwrap(),
        "--speech",
        dir.join("speech").to_str().unwrap(),
        "--noise",
        dir.join("noise").to_str().unwrap(),
        "--snr",
        "-5,0,10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let per = v["per_snr"].as_array().unwrap();
    assert_eq!(per.len(), 3);
    for (s, want) in per.iter().zip([-5.0, 0.0, 10.0]) {
        assert_eq!(s["snr_db"].as_f64().unwrap(), want);
        assert_eq!(s["files"].as_u64().unwrap(), 2);
        // The mixture's SI-SDR is close to the SNR it was made at (speech and noise uncorrelated).
        let noisy = s["noisy_si_sdr_db"].as_f64().unwrap();
        assert!(
            (noisy - want).abs() < 1.5,
            "noisy SI-SDR {noisy} at {want} dB"
        );
        for k in ["model_si_sdri_db", "rnnoise_si_sdri_db"] {
            assert!(s[k].as_f64().unwrap().is_finite(), "{k}");
        }
    }
    assert!(v["advantage_over_rnnoise_db"].as_f64().unwrap().is_finite());
    let skipped = v["skipped"].as_array().unwrap();
    assert!(
        skipped.len() == 1 && skipped[0].as_str().unwrap().contains("2.wav: silent"),
        "{skipped:?}"
    );
    // SI-SDR itself, against an independent formula on a clean case.
    let c = speechlike(0.3, 1);
    let y: Vec<f32> = c.iter().map(|v| 0.5 * v).collect();
    assert!(si_sdr(&y, &c) > 80.0);
}

#[test]
fn an_interrupted_denoiser_run_resumes_exactly() {
    let data = || {
        let speech = corpus((0..3).map(|s| speechlike(0.8, s)).collect(), 1);
        let noises = corpus((0..2).map(|s| noise(12_000, 0.3, 200 + s)).collect(), 2);
        let mut d = DenoiseData::new(speech, noises, 9).unwrap();
        d.valid_crops = 4;
        d.valid_len = 2048;
        d
    };
    let opts = |stop_after: Option<u64>| TrainOptions {
        steps: 12,
        batch: 2,
        len: 2048,
        lr: 3e-3,
        warmup: 2,
        min_lr_ratio: 0.1,
        clip: 1.0,
        seed: 9,
        device: Device::Cpu,
        bf16: false,
        log_every: 1,
        valid_every: 6,
        ckpt_every: 3,
        stop_after,
        progress: false,
    };
    // One initial model for every run (other tests share libtorch's global generator).
    let init = TempDir::new("dn-init");
    checkpoint::save(&random_denoiser("tiny", 1), init.path()).unwrap();
    let fresh = || Start::Fresh(checkpoint::load(init.path(), Device::Cpu).unwrap());
    let (a, b) = (TempDir::new("dn-straight"), TempDir::new("dn-resumed"));
    let straight = train_objective(
        &RunDir::create(a.path()).unwrap(),
        fresh(),
        &mut data(),
        &opts(None),
    )
    .unwrap();
    let run = RunDir::create(b.path()).unwrap();
    let first = train_objective(&run, fresh(), &mut data(), &opts(Some(7))).unwrap();
    assert_eq!(first.steps, 7);
    let resumed = train_objective(&run, Start::Resume, &mut data(), &opts(None)).unwrap();
    assert_eq!(resumed.steps, 12);
    assert_eq!(straight.final_loss.to_bits(), resumed.final_loss.to_bits());
    assert_eq!(straight.best_valid, resumed.best_valid);
}

/// `wavemamba denoise` refuses inputs without samples (also a WAV whose recorder never finalised
/// its data size) naming the file once; a spectrogram that cannot be written fails before the
/// work and leaves no WAV; a run prints the spectrogram it wrote and its speed unambiguously.
#[test]
fn denoise_cli_refuses_empty_input_and_leaves_nothing() {
    use common::audio_gen::{le16, to_int, RawWav};
    let dir = TempDir::new("denoise-empty");
    let model_dir = dir.join("model");
    checkpoint::save(&random_denoiser("tiny", 4), &model_dir).unwrap();
    let m = model_dir.to_str().unwrap();
    let zero = dir.join("zero.wav");
    std::fs::write(&zero, RawWav::pcm16(1, 16_000, Vec::new()).bytes()).unwrap();
    let unfinalised = dir.join("unfinalised.wav");
    let data = le16(&to_int(&speechlike(0.1, 1), 16));
    let raw = RawWav {
        declared: Some(0),
        ..RawWav::pcm16(1, 16_000, data)
    };
    std::fs::write(&unfinalised, raw.bytes()).unwrap();
    let out = dir.join("out.wav");
    for (input, needle) in [
        (&zero, "no audio samples"),
        (&unfinalised, "declares 0 bytes but 3200 bytes follow"),
    ] {
        let i = input.to_str().unwrap();
        let o = wavemamba(&["denoise", "--model", m, i, out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = text(&o.stderr);
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.matches(i).count(), 1, "the path is repeated: {err}");
        assert!(!out.exists());
    }
    let input = dir.join("in.wav");
    write_wav_f32(&input, &speechlike(0.3, 2), 1, 16_000);
    std::fs::create_dir_all(dir.join("taken.png")).unwrap();
    let run = |png: &str| {
        wavemamba(&[
            "denoise",
            "--model",
            m,
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--spectrogram",
            dir.join(png).to_str().unwrap(),
        ])
    };
    for (png, needle) in [
        ("taken.png", "is a directory"),
        ("s.gif", ".gif is not written"),
    ] {
        let o = run(png);
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o.stderr).contains(needle), "{}", text(&o.stderr));
        assert!(!out.exists(), "{png}: the WAV of a failed run was left");
    }
    let o = run("spec.png");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let png = dir.join("spec.png");
    assert!(
        stdout.contains(&format!("wrote {}", png.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("real-time factor") && stdout.contains("than real time)"),
        "{stdout}"
    );
    assert!(out.is_file() && png.is_file());
    // A model directory without its weights: the file named, no Debug text.
    std::fs::remove_file(model_dir.join("model.safetensors")).unwrap();
    let o = wavemamba(&["denoise", "--model", m, input.to_str().unwrap(), "x.wav"]);
    let err = text(&o.stderr);
    assert!(
        err.contains("model.safetensors is missing") && !err.contains("IoError"),
        "{err}"
    );
}
