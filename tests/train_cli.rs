//! `wavemamba train` from the command line: a dataset without validation files, `--resume`
//! against the run's saved settings, nonsense values, failed runs leaving nothing behind, and a
//! graceful stop on SIGINT that `--resume` continues exactly.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tch::Device;

mod common;
use common::{audio_gen, ok, text, wavemamba_bin, TempDir};
use wavemamba::model::checkpoint;
use wavemamba::train::corpus::{TokenCorpus, TokenFile};
use wavemamba::train::settings::FREE_ON_RESUME;

/// A token pack of `train` files of 20 000 samples and `valid` validation files.
fn pack(path: &Path, train: u32, valid: u32) {
    let file = |i: u32| TokenFile {
        name: format!("f{i}.wav"),
        tokens: (0..20_000u32)
            .map(|t| (128.0 + 100.0 * ((t * (i + 3)) as f32 * 0.01).sin()) as u8)
            .collect(),
    };
    let valid = (100..100 + valid).map(file).collect();
    TokenCorpus::new(16_000, (0..train).map(file).collect(), valid, 0)
        .save_pack(path)
        .unwrap();
}

/// `wavemamba train` of the tiny preset, one thread, quiet, on `data` into `out`, then `extra`.
/// The dataset cache goes into `cache` (never the user's).
fn train(data: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(wavemamba_bin());
    c.args(["train", "--data", &s(data), "--out", &s(out)])
        .args(["--threads", "1", "--quiet"])
        .args(extra)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null());
    c
}

/// The first flags of a fresh tiny run.
const TINY: [&str; 6] = ["--config", "tiny", "--batch", "2", "--len", "512"];

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

/// The stderr of a run that must fail.
fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "should fail; stdout: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// (step, loss_bits) lines of a run's metrics.jsonl.
fn losses(run: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["step"].as_u64()?, v["loss_bits"].as_f64()?.to_bits()))
        })
        .collect()
}

fn trainer_json(ckpt: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer.json")).unwrap()).unwrap()
}

#[test]
fn without_validation_files_best_is_the_latest_checkpoint_and_says_so() {
    let dir = TempDir::new("train-novalid");
    // One WAV file: the hash split leaves no validation file (as in the audit).
    let wavs = dir.join("one");
    std::fs::create_dir_all(&wavs).unwrap();
    let tone = audio_gen::sine(440.0, 16_000, 1.0, 0.5);
    audio_gen::write_wav_int(
        &wavs.join("a.wav"),
        &audio_gen::to_int(&tone, 16),
        1,
        16,
        16_000,
    );
    let out = dir.join("runs/b");
    let args = [&TINY[..], &["--steps", "3", "--ckpt-every", "2"]].concat();
    let o = ok(run(train(&wavs, &out, &dir.join("cache"), &args)));
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(stderr.contains("warning: no validation files"), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "best model: {} (no validation data: the model of the latest checkpoint, step 3)",
            out.join("best").display()
        )),
        "{stdout}"
    );
    // best/ exists, loads, and holds exactly the weights of the last checkpoint.
    checkpoint::load(&out.join("best"), Device::Cpu).unwrap();
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(
        weights(&out.join("best")),
        weights(&out.join("checkpoints/step-000003"))
    );
    assert!(out.join("loss.png").is_file(), "loss.png is drawn too");
}

#[test]
fn a_run_that_does_no_step_prints_no_loss_and_no_model() {
    let dir = TempDir::new("train-nostep");
    let data = dir.join("d.wmtok");
    pack(&data, 2, 0);
    let cache = dir.join("cache");
    let out = dir.join("run");
    let err = fails(run(train(&data, &out, &cache, &["--stop-after", "0"])));
    assert!(err.contains("--stop-after"), "{err}");
    let packed = dir.join("copy.wmtok");
    let o = ok(run(train(
        &data,
        &out,
        &cache,
        &["--steps", "0", "--save-pack", &s(&packed)],
    )));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("no training steps") && !stdout.contains("NaN"),
        "{stdout}"
    );
    assert!(!stdout.contains("best model"), "{stdout}");
    assert!(packed.is_file() && !out.exists());
}

#[test]
fn resume_keeps_the_saved_settings_and_refuses_contradictions() {
    let dir = TempDir::new("train-resume-flags");
    let (data, cache, out) = (dir.join("d.wmtok"), dir.join("cache"), dir.join("run"));
    pack(&data, 3, 1);
    let first = [
        &TINY[..],
        &["--steps", "6", "--stop-after", "2", "--lr", "0.003"],
    ]
    .concat();
    ok(run(train(&data, &out, &cache, &first)));
    for (flag, value, saved) in [
        ("--config", "small", "tiny"),
        ("--batch", "4", "2"),
        ("--len", "1024", "512"),
        ("--lr", "0.1", "0.003"),
        ("--clip", "0.5", "1"),
        ("--seed", "5", "0"),
        ("--arch", "unet", "plain"),
    ] {
        let err = fails(run(train(&data, &out, &cache, &["--resume", flag, value])));
        let want = format!("trained with {flag} {saved}, got {flag} {value}");
        assert!(err.contains(&want), "{flag}: {err}");
    }
    // The refused resumes changed nothing.
    assert_eq!(losses(&out).last().map(|l| l.0), Some(2));
    // Other data than the run's is refused too (a copy of the same data would be fine).
    let other = dir.join("other.wmtok");
    pack(&other, 2, 1);
    let err = fails(run(train(&other, &out, &cache, &["--resume"])));
    assert!(
        err.contains("invalid value for --data") && err.contains("3 train files"),
        "{err}"
    );
    // Left out, the flags take the saved values; equal values and free flags are accepted.
    let again = [
        "--resume",
        "--config",
        "tiny",
        "--stop-after",
        "1",
        "--ckpt-every",
        "9",
    ];
    ok(run(train(&data, &out, &cache, &again)));
    let ckpt = out.join("checkpoints/step-000003");
    let saved = trainer_json(&ckpt)["settings"].clone();
    assert_eq!(
        (
            &saved["batch"],
            &saved["len"],
            &saved["lr"],
            &saved["steps"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(512),
            &serde_json::json!(0.003),
            &serde_json::json!(6)
        )
    );
    assert_eq!(saved["ckpt_every"], serde_json::json!(9));
    // --steps may grow to extend the run.
    ok(run(train(
        &data,
        &out,
        &cache,
        &["--resume", "--steps", "8"],
    )));
    assert_eq!(losses(&out).last().map(|l| l.0), Some(8));
}

#[test]
fn resume_help_lists_the_flags_that_may_change() {
    let o = ok(common::wavemamba(&["train", "--help"]));
    let help = text(&o.stdout);
    let resume = &help[help.find("--resume").unwrap()..help.find("--init").unwrap()];
    let resume = resume.split_whitespace().collect::<Vec<_>>().join(" ");
    for flag in FREE_ON_RESUME {
        assert!(
            resume.contains(flag),
            "--resume help should name {flag}: {resume}"
        );
    }
}

#[test]
fn nonsense_values_are_refused_before_anything_is_written() {
    let dir = TempDir::new("train-nonsense");
    let (data, cache, out) = (dir.join("d.wmtok"), dir.join("cache"), dir.join("run"));
    pack(&data, 2, 1);
    for (flag, value, want) in [
        (
            "--clip",
            "NaN",
            "invalid value for --clip: must be a number ≥ 0",
        ),
        ("--clip", "-1", "invalid value for --clip"),
        ("--min-lr-ratio", "5", "must be between 0 and 1, got 5"),
        ("--min-lr-ratio", "-0.5", "must be between 0 and 1"),
        ("--lr", "NaN", "invalid value for --lr"),
    ] {
        let args = [&TINY[..], &["--steps", "3", flag, value]].concat();
        let err = fails(run(train(&data, &out, &cache, &args)));
        assert!(err.contains(want), "{flag} {value}: {err}");
        assert!(!out.exists(), "{flag} {value} left {}", out.display());
    }
    let args = [&TINY[..], &["--steps", "3", "--warmup", "100000"]].concat();
    let o = ok(run(train(&data, &out, &cache, &args)));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning: --warmup 100000 is not below --steps 3"),
        "{err}"
    );
}

#[test]
fn failed_runs_leave_nothing_behind_and_never_remove_what_existed() {
    let dir = TempDir::new("train-failed");
    let (data, cache) = (dir.join("d.wmtok"), dir.join("cache"));
    pack(&data, 2, 1);
    let nested = dir.join("a/b/run");
    let fresh = |extra: &[&str]| {
        let args = [&TINY[..], &["--steps", "3"], extra].concat();
        run(train(&data, &nested, &cache, &args))
    };
    let err = fails(fresh(&["--lr", "1e10", "--clip", "0", "--warmup", "1"]));
    assert!(
        err.contains("no checkpoint had been written yet") && !err.contains("kept"),
        "{err}"
    );
    let err = fails(fresh(&["--init", &s(&dir.join("no-model"))]));
    assert!(err.contains("no-model"), "{err}");
    let err = fails(fresh(&["--arch", "unet", "--pooling", "0"]));
    assert!(err.contains("pooling"), "{err}");
    let err = fails(run(train(&data, &nested, &cache, &["--resume"])));
    assert!(err.contains("no checkpoint to resume from"), "{err}");
    assert!(
        !dir.join("a").exists(),
        "failed runs must not leave {}",
        dir.join("a").display()
    );
    // Into a directory that already exists: only what this run created goes.
    let existing = dir.join("mine");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("notes.txt"), "keep me").unwrap();
    let args = [&TINY[..], &["--steps", "3", "--lr", "1e10", "--clip", "0"]].concat();
    fails(run(train(&data, &existing, &cache, &args)));
    let left: Vec<_> = std::fs::read_dir(&existing)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
}

/// Waits until the run has logged at least `steps` steps (it logs every step).
fn wait_for_steps(out: &Path, steps: usize, child: &mut std::process::Child) {
    let start = Instant::now();
    while losses(out).len() < steps {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("training exited early: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child's output once it exits; kills it and fails if that takes over a minute.
fn finish(mut child: std::process::Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("training did not stop within a minute of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn sigint(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
}

#[test]
fn sigint_checkpoints_the_current_step_and_resume_continues_exactly() {
    let dir = TempDir::new("train-sigint");
    let (data, cache) = (dir.join("d.wmtok"), dir.join("cache"));
    pack(&data, 3, 1);
    let (out, straight) = (dir.join("run"), dir.join("straight"));
    let long = [
        &TINY[..],
        &[
            "--steps",
            "100000",
            "--log-every",
            "1",
            "--ckpt-every",
            "1000",
        ],
    ]
    .concat();
    let mut c = train(&data, &out, &cache, &long);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_steps(&out, 3, &mut child);
    sigint(&child);
    let o = finish(child);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    let logged = losses(&out);
    let n = logged.last().unwrap().0;
    assert!(n >= 3 && !n.is_multiple_of(1000), "stopped at step {n}");
    let latest = std::fs::read_to_string(out.join("latest")).unwrap();
    assert_eq!(latest, format!("step-{n:06}"));
    assert_eq!(
        trainer_json(&out.join("checkpoints").join(&latest))["step"],
        n
    );
    assert!(
        stderr.contains(&format!("interrupted after step {n}"))
            && stderr.contains(&format!("wavemamba train --resume --data {}", s(&data))),
        "{stderr}"
    );

    // --resume continues from that checkpoint, and the losses equal an uninterrupted run's.
    ok(run(train(
        &data,
        &out,
        &cache,
        &["--resume", "--stop-after", "2"],
    )));
    let until = (n + 2).to_string();
    let straight_args = [&long[..], &["--stop-after", &until]].concat();
    ok(run(train(&data, &straight, &cache, &straight_args)));
    assert_eq!(losses(&out), losses(&straight));
}

#[test]
fn a_second_sigint_stops_at_once_keeping_the_last_checkpoint() {
    let dir = TempDir::new("train-sigint2");
    let (data, cache, out) = (dir.join("d.wmtok"), dir.join("cache"), dir.join("run"));
    pack(&data, 3, 1);
    // Long steps (0.5 s or more), so that both signals land inside one.
    let args = [
        "--config",
        "tiny",
        "--batch",
        "16",
        "--len",
        "16384",
        "--steps",
        "1000",
        "--log-every",
        "1",
        "--ckpt-every",
        "1",
    ];
    let mut c = train(&data, &out, &cache, &args);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_steps(&out, 2, &mut child); // step 1's checkpoint is complete
    sigint(&child);
    std::thread::sleep(Duration::from_millis(50));
    sigint(&child);
    let o = finish(child);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped at once"), "{stderr}");
    // Every checkpoint left is complete and the run resumes.
    let latest = std::fs::read_to_string(out.join("latest")).unwrap();
    checkpoint::load(&out.join("checkpoints").join(latest), Device::Cpu).unwrap();
    ok(run(train(
        &data,
        &out,
        &cache,
        &["--resume", "--stop-after", "1"],
    )));
}
