//! The `wavemamba` binary end to end: info, bench scan, errors and pending subcommands.

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
