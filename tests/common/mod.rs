//! Helpers shared by the integration tests (each test crate uses a part of them).
#![allow(dead_code)]

pub mod audio_gen;
pub mod scan_problem;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A CPU model of `config` and `audio` whose every weight is perturbed by N(0, 0.1²) away from the
/// (structured) init; variables are perturbed in name order. The seed goes to libtorch's global
/// generator, which parallel tests share: to compare two models with the same weights, copy the
/// weights (`vs.copy`) rather than building twice from one seed.
pub fn perturbed_model(
    config: wavemamba::config::MambaConfig,
    audio: wavemamba::config::AudioConfig,
    seed: i64,
) -> wavemamba::model::WaveMamba {
    tch::manual_seed(seed);
    let m = wavemamba::model::WaveMamba::new(config, audio, tch::Device::Cpu).expect("model");
    let vars: std::collections::BTreeMap<String, tch::Tensor> =
        m.vs.variables().into_iter().collect();
    tch::no_grad(|| {
        for (_, mut v) in vars {
            let noise = tch::Tensor::randn_like(&v) * 0.1;
            let _ = v.f_add_(&noise).expect("perturb");
        }
    });
    m
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wavemamba-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs` (a hang) or
/// panics.
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hung for over {secs} s"),
        Err(_) => panic!("{what}: panicked"),
    }
}

/// The `wavemamba` binary under test: cargo's, or `$WAVEMAMBA_BIN` where the test executable was
/// carried to another machine (scripts/gpu-run.sh).
pub fn wavemamba_bin() -> String {
    std::env::var("WAVEMAMBA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wavemamba").to_owned())
}

/// Runs `wavemamba ARGS…` to completion.
pub fn wavemamba(args: &[&str]) -> std::process::Output {
    std::process::Command::new(wavemamba_bin())
        .args(args)
        .output()
        .expect("run wavemamba")
}

/// Lossy UTF-8 of a command's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `out` when its command succeeded; else fails with its status, stdout and stderr.
pub fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A fresh directory `wavemamba-gen-PID-NAME` under the temp dir with a random `tiny` model
/// (`model/`, seed 11) and `prompt.wav` (0.5 s, two tones, 22.05 kHz): (directory, model).
pub fn model_and_prompt(name: &str) -> (PathBuf, PathBuf) {
    use wavemamba::audio::{write_wav, WavFormat};
    use wavemamba::config::{AudioConfig, MambaConfig};
    use wavemamba::model::{checkpoint, WaveMamba};
    let dir = std::env::temp_dir().join(format!("wavemamba-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    tch::manual_seed(11);
    let model = WaveMamba::new(
        MambaConfig::preset("tiny").unwrap(),
        AudioConfig::default(),
        tch::Device::Cpu,
    )
    .unwrap();
    checkpoint::save(&model, &dir.join("model")).unwrap();
    let rate = 22_050u32;
    let x: Vec<f32> = (0..rate / 2)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 0.1 * (2.0 * std::f32::consts::PI * 1250.0 * t).sin()
        })
        .collect();
    write_wav(&dir.join("prompt.wav"), &x, rate, WavFormat::Pcm16).unwrap();
    (dir.clone(), dir.join("model"))
}

/// A path as a command-line argument (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
