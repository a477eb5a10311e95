//! The command line's argument handling: negative numbers reach each option's own check, options
//! of the other task are refused, sizes too large for memory and unwritable paths are clear errors
//! (no panic, no libtorch backtrace).

use std::path::{Path, PathBuf};

use tch::Device;

mod common;

use common::{path_str as s, text, wavemamba, TempDir};
use wavemamba::audio::{write_wav, WavFormat};
use wavemamba::config::{AudioConfig, MambaConfig};
use wavemamba::data::Split;
use wavemamba::model::{checkpoint, WaveMamba};

/// Runs the binary, asserts that it failed cleanly, and returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = wavemamba(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(
        !err.contains("frame #0"),
        "{args:?}: a libtorch backtrace: {err}"
    );
    err
}

/// A 0.5 s tone (or noise) WAV at 16 kHz.
fn wav(path: &Path, noise: bool) {
    let x: Vec<f32> = (0..8000)
        .map(|i| {
            if noise {
                ((i as f32 * 12.9898).sin() * 43_758.547).fract() * 0.2
            } else {
                0.3 * (i as f32 * 0.11).sin()
            }
        })
        .collect();
    write_wav(path, &x, 16_000, WavFormat::Pcm16).unwrap();
}

fn tiny_model(dir: &TempDir) -> PathBuf {
    tch::manual_seed(3);
    let model = WaveMamba::new(
        MambaConfig::preset("tiny").unwrap(),
        AudioConfig::default(),
        Device::Cpu,
    )
    .unwrap();
    let path = dir.join("model");
    checkpoint::save(&model, &path).unwrap();
    path
}

#[test]
fn a_negative_number_reaches_the_options_own_check() {
    let err = fails(&["bench", "scan", "--batch", "-1", "--len", "64"]);
    assert!(err.contains("must be ≥ 1, got -1"), "{err}");
}

#[test]
fn bench_scan_sizes_beyond_memory_and_zero_reps_are_errors() {
    let err = fails(&["bench", "scan", "--reps", "0"]);
    assert!(err.contains("reps: must be ≥ 1"), "{err}");
    let err = fails(&[
        "bench", "scan", "--batch", "100000", "--dim", "100000", "--len", "100000",
    ]);
    assert!(err.contains("allocate"), "{err}");
}

#[test]
fn a_libtorch_allocation_failure_is_an_error_line() {
    // tch's panicking API (bench train's synthetic batch): the panic hook's one line, status 1.
    let err = fails(&[
        "bench", "train", "--config", "tiny", "--batch", "1000000", "--len", "1000000",
    ]);
    assert!(err.starts_with("error: libtorch: "), "{err}");
    assert!(err.contains("can't allocate memory"), "{err}");
}

#[test]
fn bench_step_and_prefill_bound_their_sizes() {
    let err = fails(&["bench", "step", "--streams", "100000000"]);
    assert!(
        err.contains("streams: must be between 1 and 65536"),
        "{err}"
    );
    let err = fails(&["bench", "prefill", "--seconds", "1e9"]);
    assert!(err.contains("seconds ≤ 3600"), "{err}");
}

#[test]
fn a_trace_path_that_cannot_be_written_is_an_error() {
    let dir = TempDir::new("cli-trace");
    let trace = dir.join("no/such/dir/t.json");
    let err = fails(&[
        "bench",
        "train",
        "--config",
        "tiny",
        "--batch",
        "1",
        "--len",
        "64",
        "--steps",
        "1",
        "--trace",
        s(&trace),
    ]);
    assert!(err.contains(s(&trace)), "{err}");
}

#[test]
fn eval_refuses_the_other_tasks_options() {
    let err = fails(&["eval", "--data", "x", "--snr", "5"]);
    assert!(err.contains("--snr: only with --task denoise"), "{err}");
    let err = fails(&[
        "eval", "--task", "denoise", "--speech", "a", "--noise", "b", "--data", "x",
    ]);
    assert!(err.contains("--data: only with --task lm"), "{err}");
}

#[test]
fn every_command_loading_a_model_names_a_missing_weights_file() {
    let dir = TempDir::new("cli-weights");
    let model = tiny_model(&dir);
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    let err = fails(&["eval", "--model", s(&model), "--data", s(dir.path())]);
    assert!(err.contains("model.safetensors is missing"), "{err}");
    assert!(!err.contains("IoError"), "{err}");
}

#[test]
fn eval_names_an_empty_split() {
    let dir = TempDir::new("cli-split");
    let model = tiny_model(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Three files, none of which hashes into the test split.
    let names: Vec<String> = (0..)
        .map(|i| format!("clip-{i}.wav"))
        .filter(|n| Split::of_key(n) != Split::Test)
        .take(3)
        .collect();
    for n in &names {
        wav(&data.join(n), false);
    }
    let err = fails(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--split",
        "test",
    ]);
    assert!(
        err.contains("the test split has no files (3 usable files in all)"),
        "{err}"
    );
}

#[test]
fn eval_denoise_takes_single_files_and_bounds_the_snr() {
    let dir = TempDir::new("cli-denoise");
    let (speech, noise) = (dir.join("speech.wav"), dir.join("noise.wav"));
    wav(&speech, false);
    wav(&noise, true);
    let denoiser = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/denoiser");
    let base = [
        "eval",
        "--task",
        "denoise",
        "--model",
        s(&denoiser),
        "--speech",
        s(&speech),
        "--noise",
        s(&noise),
        "--no-baseline",
    ];
    let out = wavemamba(&[&base[..], &["--snr", "5", "--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["speech_files"], 1);
    assert_eq!(v["noise_files"], 1);
    assert!(v["model_si_sdri_db"].as_f64().unwrap().is_finite());
    let err = fails(&[&base[..], &["--snr", "1000"]].concat());
    assert!(err.contains("between −60 and 60"), "{err}");
}

#[test]
fn selecting_manifest_rows_needs_a_manifest() {
    let dir = TempDir::new("cli-select");
    wav(&dir.join("a.wav"), false);
    let err = fails(&[
        "bench",
        "loader",
        "--data",
        s(dir.path()),
        "--select",
        "kind=speech",
    ]);
    assert!(err.contains("needs a manifest, not a directory"), "{err}");
}
