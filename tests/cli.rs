//! The `wavemamba` binary end to end: info, the benchmarks, errors and pending subcommands.

mod common;

use common::{text, wavemamba};

#[test]
fn info_reports_versions_kernels_and_threads() {
    let out = wavemamba(&["info", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["libtorch_version"], "2.11.0");
    assert_eq!(v["wavemamba_version"], env!("CARGO_PKG_VERSION"));
    let kernels: Vec<&str> = v["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kernels[0], "cpu");
    assert_eq!(kernels.contains(&"cuda"), cfg!(feature = "cuda"));
    assert!(v["cpu_threads"].as_i64().unwrap() >= 1);
    let human = text(&wavemamba(&["info"]).stdout);
    assert!(human.contains("libtorch         2.11.0"), "{human}");
}

#[test]
fn bench_scan_prints_the_promised_json() {
    let out = wavemamba(&[
        "bench",
        "scan",
        "--batch",
        "1",
        "--dim",
        "8",
        "--len",
        "300",
        "--state",
        "16",
        "--threads",
        "1",
        "--backward",
        "--reps",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for key in [
        "fwd_ms",
        "fwdbwd_ms",
        "fwd_state_updates_per_s",
        "speedup_vs_reference",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {v}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    }
    assert_eq!(v["threads"], 1);
    assert_eq!(v["len"], 300);
}

/// JSON number `key` of `v`, finite and positive.
fn positive(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"));
    assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    x
}

/// Whether a Chrome trace written by `--trace` holds libtorch operators.
fn trace_has_operators(path: &std::path::Path) -> bool {
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("trace written")).expect("json");
    t["traceEvents"].as_array().is_some_and(|ev| {
        ev.iter()
            .any(|e| e["name"].as_str().is_some_and(|n| n.starts_with("aten::")))
    })
}

#[test]
fn bench_step_prefill_and_train_print_json_and_traces() {
    let dir = common::TempDir::new("cli-bench");
    let out = wavemamba(&[
        "bench",
        "step",
        "--preset",
        "tiny",
        "--seconds",
        "0.1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for key in [
        "engine_us_per_sample",
        "engine_rtf",
        "tch_us_per_sample",
        "speedup_vs_tch",
    ] {
        positive(&v, key);
    }
    assert!(v["rel_err_vs_tch"].as_f64().unwrap() <= 1e-5, "{v}");

    let trace = dir.join("prefill.json");
    let out = wavemamba(&[
        "bench",
        "prefill",
        "--preset",
        "tiny",
        "--seconds",
        "0.05",
        "--reps",
        "1",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let (pre, gen) = (positive(&v, "prefill_s"), positive(&v, "generate_s"));
    let ratio = positive(&v, "prefill_over_generate");
    assert!((ratio - pre / gen).abs() <= 1e-9 * ratio, "{v}");
    assert_eq!(v["samples"], 800);
    assert!(
        trace_has_operators(&trace),
        "no aten operators in the prefill trace"
    );

    let trace = dir.join("train.json");
    let out = wavemamba(&[
        "bench",
        "train",
        "--config",
        "tiny",
        "--batch",
        "2",
        "--len",
        "256",
        "--steps",
        "2",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    positive(&v, "samples_per_s");
    positive(&v, "ms_per_step");
    assert_eq!(v["task"], "lm");
    assert!(
        trace_has_operators(&trace),
        "no aten operators in the training trace"
    );
    // A CPU-only trace does not print Kineto's failed GPU probe as an error.
    assert!(
        !text(&out.stderr).contains("gpuGetDeviceCount"),
        "{}",
        text(&out.stderr)
    );

    let out = wavemamba(&[
        "bench", "train", "--config", "tiny", "--task", "denoise", "--batch", "2", "--len", "1024",
        "--steps", "1", "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    positive(&v, "samples_per_s");
    assert_eq!(v["task"], "denoise");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = wavemamba(&["bench", "scan", "--device", "tpu"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("'tpu' is not one of cpu, cuda, cuda:N"),
        "{}",
        text(&out.stderr)
    );
    let out = wavemamba(&["bench", "scan", "--dim", "6", "--groups", "4", "--len", "8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("dim 6 is not divisible by 4"),
        "{}",
        text(&out.stderr)
    );
    // The denoiser's loss needs a whole STFT window: refused before any data is read.
    let dir = common::TempDir::new("cli-short");
    let out_dir = dir.join("run");
    for args in [
        vec![
            "bench", "train", "--config", "tiny", "--task", "denoise", "--len", "512",
        ],
        vec![
            "train",
            "--task",
            "denoise",
            "--data",
            "no-such-speech",
            "--noise",
            "no-such-noise",
            "--len",
            "512",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    ] {
        let out = wavemamba(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("at least 1024 samples"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out_dir.exists(), "a refused run created its directory");
}

#[test]
fn live_rejects_unknown_flags_and_modes() {
    let out = wavemamba(&["live", "--some-flag", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--some-flag"),
        "{}",
        text(&out.stderr)
    );
    let out = wavemamba(&["live", "--mode", "karaoke"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("karaoke"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_lists_every_subcommand() {
    let out = wavemamba(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "train", "generate", "denoise", "live", "eval", "bench", "info",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
}
