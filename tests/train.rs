//! Training: the loss falls on generated audio, and an interrupted run resumed from its
//! checkpoint reproduces the uninterrupted run's losses exactly (CPU).

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};
use wavemamba::config::{AudioConfig, MambaConfig};
use wavemamba::model::{checkpoint, WaveMamba};
use wavemamba::ops::mulaw_encode;
use wavemamba::train::run_dir::RunDir;
use wavemamba::train::{train, Batches, Start, TrainOptions};
use wavemamba::Result;

/// Decaying sines with random pitch, phase and level plus a little noise: learnable structure.
/// Batch `index` depends only on (seed, index).
struct Tones {
    seed: u64,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Tones {
    fn make(&self, key: u64, batch: i64, len: i64) -> Tensor {
        let mut state = splitmix(self.seed ^ key.wrapping_mul(0x1234_5678_9ABC_DEF1));
        let mut uniform = move || {
            state = splitmix(state);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut x = Vec::with_capacity((batch * len) as usize);
        for _ in 0..batch {
            let (f, ph, amp) = (
                0.01 + 0.05 * uniform(),
                std::f64::consts::TAU * uniform(),
                0.2 + 0.6 * uniform(),
            );
            for t in 0..len {
                let noise = (uniform() - 0.5) * 0.02;
                x.push((amp * (f * t as f64 * std::f64::consts::TAU + ph).sin() + noise) as f32);
            }
        }
        mulaw_encode(&Tensor::from_slice(&x).view([batch, len]), 255).unwrap()
    }
}

impl Batches for Tones {
    fn train_batch(&mut self, index: u64, batch: i64, len: i64) -> Result<Tensor> {
        Ok(self.make(index, batch, len))
    }
    fn valid_set(&mut self) -> Result<Vec<Tensor>> {
        Ok(vec![self.make(u64::MAX, 4, 256)])
    }
}

fn options(steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        batch: 4,
        len: 256,
        lr: 3e-3,
        warmup: 5,
        min_lr_ratio: 0.1,
        clip: 1.0,
        seed: 7,
        device: Device::Cpu,
        bf16: false,
        log_every: 1,
        valid_every: 10,
        ckpt_every: 10,
        stop_after: None,
        progress: false,
    }
}

fn fresh_model(seed: i64) -> WaveMamba {
    // Seeding the global generator here is fine: init only has to be *some* random model, and
    // both runs of the resume test start from the same saved weights.
    tch::manual_seed(seed);
    WaveMamba::new(
        MambaConfig::preset("tiny").unwrap(),
        AudioConfig::default(),
        Device::Cpu,
    )
    .unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wavemamba-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v["step"].as_u64()?, v["loss_bits"].as_f64()?))
        })
        .collect()
}

#[test]
fn loss_falls_on_generated_audio() {
    let dir = tempdir("falls");
    let run = RunDir::create(&dir).unwrap();
    let summary = train(
        &run,
        Start::Fresh(fresh_model(1)),
        &mut Tones { seed: 1 },
        &options(60),
    )
    .unwrap();
    let l = losses(&dir);
    let first: f64 = l[..5].iter().map(|x| x.1).sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().map(|x| x.1).sum::<f64>() / 5.0;
    assert!(
        last < first - 1.0,
        "loss should fall clearly: first {first:.3} bits, last {last:.3} bits"
    );
    let valid = summary.valid.unwrap();
    assert!(valid < 7.0, "validation {valid:.3} bits/sample");
    // The best checkpoint and the step checkpoints are loadable model directories.
    checkpoint::load(&run.best_dir(), Device::Cpu).unwrap();
    let png = std::fs::read(dir.join("loss.png")).expect("loss curve written at validation");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        run.checkpoints().len(),
        2,
        "keeps the newest two step checkpoints"
    );
}

#[test]
fn resume_reproduces_the_uninterrupted_run_exactly() {
    // One initial model for both runs.
    let init_dir = tempdir("init");
    checkpoint::save(&fresh_model(2), &init_dir).unwrap();
    let init = || checkpoint::load(&init_dir, Device::Cpu).unwrap();

    let straight = tempdir("straight");
    train(
        &RunDir::create(&straight).unwrap(),
        Start::Fresh(init()),
        &mut Tones { seed: 3 },
        &options(30),
    )
    .unwrap();

    let split = tempdir("split");
    let run = RunDir::create(&split).unwrap();
    let first = TrainOptions {
        stop_after: Some(20),
        ..options(30)
    };
    train(&run, Start::Fresh(init()), &mut Tones { seed: 3 }, &first).unwrap();
    // Pretend the process died after logging step 23 but before its next checkpoint.
    run.log(&serde_json::json!({"step": 23, "loss_bits": 0.0}))
        .unwrap();
    train(&run, Start::Resume, &mut Tones { seed: 3 }, &options(30)).unwrap();
    // Resuming a finished run says so (it used to "train" 0 steps and report a NaN loss).
    let err = train(&run, Start::Resume, &mut Tones { seed: 3 }, &options(30)).unwrap_err();
    assert!(err.to_string().contains("already did 30 steps"), "{err}");

    let (a, b) = (losses(&straight), losses(&split));
    assert_eq!(a.len(), 30);
    assert_eq!(
        a, b,
        "resumed losses must equal the uninterrupted run's, bit for bit"
    );
}

#[test]
fn non_finite_loss_stops_without_touching_checkpoints() {
    let dir = tempdir("nan");
    let run = RunDir::create(&dir).unwrap();
    let model = fresh_model(4);
    train(
        &run,
        Start::Fresh(model),
        &mut Tones { seed: 5 },
        &TrainOptions {
            stop_after: Some(10),
            ..options(40)
        },
    )
    .unwrap();
    let saved = std::fs::read(dir.join("checkpoints/step-000010/model.safetensors")).unwrap();
    // Resume with a learning rate so large that the weights blow up.
    let err = train(
        &run,
        Start::Resume,
        &mut Tones { seed: 5 },
        &TrainOptions {
            lr: 1e12,
            clip: 0.0,
            ..options(40)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("training stopped at step")
            && (err.contains("loss is") || err.contains("gradient norm is")),
        "{err}"
    );
    // The message names the checkpoint that is kept (and only says so when there is one).
    assert!(
        err.contains("the last good checkpoint, step 10, is kept"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("checkpoints/step-000010/model.safetensors")).unwrap(),
        saved
    );
}

#[test]
fn unet_trains_too() {
    let dir = tempdir("unet");
    let run = RunDir::create(&dir).unwrap();
    tch::manual_seed(6);
    let audio = AudioConfig {
        architecture: wavemamba::config::Architecture::Unet,
        pooling: vec![4, 4],
        ..AudioConfig::default()
    };
    let model = WaveMamba::new(MambaConfig::preset("tiny").unwrap(), audio, Device::Cpu).unwrap();
    train(
        &run,
        Start::Fresh(model),
        &mut Tones { seed: 9 },
        &options(40),
    )
    .unwrap();
    let l = losses(&dir);
    let first: f64 = l[..5].iter().map(|x| x.1).sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().map(|x| x.1).sum::<f64>() / 5.0;
    assert!(
        last < first - 0.5,
        "U-Net loss should fall: first {first:.3}, last {last:.3}"
    );
    let best = checkpoint::load(&run.best_dir(), Device::Cpu).unwrap();
    assert_eq!(
        best.audio.architecture,
        wavemamba::config::Architecture::Unet
    );
}
