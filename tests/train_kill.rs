//! A training run killed with SIGKILL at random moments (checkpointing every step, so most kills
//! land while a checkpoint is being written) never leaves a checkpoint that fails to load, and
//! `--resume` always continues.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tch::Device;

mod common;
use wavemamba::model::checkpoint;
use wavemamba::train::corpus::{TokenCorpus, TokenFile};
use wavemamba::train::run_dir::RunDir;

fn pack(path: &Path) {
    let file = |i: u32| TokenFile {
        name: format!("f{i}.wav"),
        tokens: (0..20_000u32)
            .map(|t| (128.0 + 100.0 * ((t * (i + 3)) as f32 * 0.01).sin()) as u8)
            .collect(),
    };
    TokenCorpus::new(16_000, (0..4).map(file).collect(), vec![file(9)], 0)
        .save_pack(path)
        .unwrap();
}

/// `wavemamba train` of the tiny preset on `data` into `dir`, one thread, quiet, then `extra`.
fn train(dir: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(common::wavemamba_bin());
    c.args([
        "train",
        "--data",
        data.to_str().unwrap(),
        "--config",
        "tiny",
        "--out",
        dir.to_str().unwrap(),
        "--batch",
        "2",
        "--len",
        "512",
        "--threads",
        "1",
        "--quiet",
    ])
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// A long run that checkpoints every step (the kill test's target).
fn train_cmd(dir: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut c = train(
        dir,
        data,
        &[
            "--steps",
            "100000",
            "--ckpt-every",
            "1",
            "--valid-every",
            "3",
        ],
    );
    c.args(extra);
    c
}

#[test]
fn kill_dash_nine_never_corrupts_a_checkpoint() {
    let dir = std::env::temp_dir().join(format!("wavemamba-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.wmtok");
    pack(&data);
    let run_path = dir.join("run");
    let mut rng = 0x1234_5678u64;
    for round in 0..10 {
        let resume: &[&str] = if round == 0 { &[] } else { &["--resume"] };
        let mut child = train_cmd(&run_path, &data, resume).spawn().unwrap();
        // Let it get going (start-up, then a few checkpoints), then kill at a pseudo-random moment.
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait_ms = 700 + (rng >> 33) % 900;
        std::thread::sleep(Duration::from_millis(wait_ms));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("round {round}: training exited early ({status}): {err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let run = RunDir::create(&run_path).unwrap();
        let ckpts = run.checkpoints();
        assert!(
            !ckpts.is_empty(),
            "round {round}: no checkpoint after {wait_ms} ms"
        );
        for c in &ckpts {
            checkpoint::load(c, Device::Cpu)
                .unwrap_or_else(|e| panic!("round {round}: {} does not load: {e}", c.display()));
            let trainer = std::fs::read_to_string(c.join("trainer.json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&trainer).unwrap();
        }
        if run.best_dir().exists() {
            checkpoint::load(&run.best_dir(), Device::Cpu).unwrap();
        }
    }
    // And a final resume runs to completion of a few more steps.
    let out = train_cmd(&run_path, &data, &["--resume", "--stop-after", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn train_arch_unet_trains_and_saves_a_unet() {
    let dir = std::env::temp_dir().join(format!("wavemamba-unet-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.wmtok");
    pack(&data);
    let run = dir.join("run");
    let out = train(
        &run,
        &data,
        &[
            "--arch",
            "unet",
            "--pooling",
            "2,4",
            "--steps",
            "1",
            "--valid-every",
            "1",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let best = checkpoint::load(&RunDir::create(&run).unwrap().best_dir(), Device::Cpu).unwrap();
    assert_eq!(
        best.audio.architecture,
        wavemamba::config::Architecture::Unet
    );
    assert_eq!(best.audio.pooling, vec![2, 4]);
    let _ = std::fs::remove_dir_all(&dir);
}
