//! The waveform model: step == forward, prefill + step == forward, golden logits from an
//! independent PyTorch implementation, checkpoint round trips and checkpoint errors.

mod common;

use std::path::Path;

use tch::{Device, Kind, Tensor};
use wavemamba::config::{AudioConfig, MambaConfig};
use wavemamba::model::{checkpoint, WaveMamba};

fn rel_err(x: &Tensor, reference: &Tensor) -> f64 {
    let d = (x - reference).norm().double_value(&[]);
    let n = reference.norm().double_value(&[]);
    assert!(n.is_finite() && n > 0.0, "reference norm {n}");
    d / n
}

/// A tiny model whose every weight is perturbed away from the (structured) init.
fn random_model(seed: i64) -> WaveMamba {
    common::perturbed_model(
        MambaConfig::preset("tiny").unwrap(),
        AudioConfig::default(),
        seed,
    )
}

/// Random, non-constant tokens: a noisy sine in mu-law classes.
fn tokens(batch: i64, len: i64) -> Tensor {
    let t = Tensor::arange(len, (Kind::Float, Device::Cpu))
        .unsqueeze(0)
        .repeat([batch, 1]);
    let x = (t * 0.05).sin() * 0.5 + Tensor::randn([batch, len], (Kind::Float, Device::Cpu)) * 0.1;
    wavemamba::ops::mulaw_encode(&x, 255).unwrap()
}

#[test]
fn step_equals_forward_over_2000_samples() {
    let m = random_model(1);
    let x = tokens(2, 2000);
    let full = tch::no_grad(|| m.forward(&x)).unwrap(); // (B, L, V)
    let mut state = m.zero_state(2);
    let stepped: Vec<Tensor> = tch::no_grad(|| {
        (0..2000)
            .map(|t| m.step(&x.select(1, t), &mut state))
            .collect()
    });
    let stepped = Tensor::stack(&stepped, 1);
    let e = rel_err(&stepped, &full);
    assert!(e <= 1e-5, "step vs forward: rel err {e:.2e}");
}

#[test]
fn prefill_then_step_equals_forward() {
    let m = random_model(2);
    let len = 300;
    let x = tokens(3, len);
    let full = tch::no_grad(|| m.forward(&x)).unwrap();
    for k in [1, 3, 4, 5, 64, 177, 299] {
        let mut state = m.zero_state(3);
        let pre = tch::no_grad(|| m.prefill(&x.narrow(1, 0, k), &mut state)).unwrap();
        let mut parts = vec![pre];
        tch::no_grad(|| {
            for t in k..len {
                parts.push(m.step(&x.select(1, t), &mut state).unsqueeze(1));
            }
        });
        let e = rel_err(&Tensor::cat(&parts, 1), &full);
        assert!(e <= 1e-5, "prefill({k}) + step: rel err {e:.2e}");
        // prefill can also continue from a state: two prefills equal one.
        let mut s2 = m.zero_state(3);
        let a = tch::no_grad(|| m.prefill(&x.narrow(1, 0, k), &mut s2)).unwrap();
        let b = tch::no_grad(|| m.prefill(&x.narrow(1, k, len - k), &mut s2)).unwrap();
        let e = rel_err(&Tensor::cat(&[a, b], 1), &full);
        assert!(e <= 1e-5, "prefill({k}) + prefill(rest): rel err {e:.2e}");
    }
}

#[test]
fn golden_logits_from_the_official_math() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_tiny");
    let m = checkpoint::load(&dir, Device::Cpu).expect("load golden model");
    assert_eq!(
        m.audio,
        AudioConfig::default(),
        "no wavemamba.json means the documented defaults"
    );
    let io: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let logits = tch::no_grad(|| m.forward(&io["tokens"])).unwrap();
    let e = rel_err(&logits, &io["logits"]);
    assert!(e <= 1e-5, "golden logits: rel err {e:.2e}");
    // Key names and shapes equal the official MambaLMHeadModel's (the fixture file's).
    let file: std::collections::BTreeMap<String, Vec<i64>> =
        Tensor::read_safetensors(dir.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.size()))
            .collect();
    let mut ours: std::collections::BTreeMap<String, Vec<i64>> =
        m.vs.variables()
            .into_iter()
            .map(|(k, v)| (k, v.size()))
            .collect();
    ours.insert("lm_head.weight".into(), m.lm_head.size());
    assert_eq!(ours, file);
}

#[test]
fn save_load_round_trip_is_bit_exact() {
    let m = random_model(3);
    let dir = tempdir("roundtrip");
    checkpoint::save(&m, &dir).unwrap();
    let back = checkpoint::load(&dir, Device::Cpu).unwrap();
    assert_eq!(back.config, m.config);
    let a = m.vs.variables();
    for (k, v) in back.vs.variables() {
        assert!(v.equal(&a[&k]), "{k} differs after save/load");
    }
    let x = tokens(1, 50);
    assert!(tch::no_grad(|| m
        .forward(&x)
        .unwrap()
        .equal(&back.forward(&x).unwrap())));
    let names: Vec<String> = Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        names.contains(&"lm_head.weight".to_string()),
        "lm_head.weight must be written explicitly"
    );
}

#[test]
fn broken_checkpoints_give_clear_errors() {
    let m = random_model(4);
    let base = tempdir("broken");
    checkpoint::save(&m, &base).unwrap();
    let weights = base.join("model.safetensors");
    let all: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights).unwrap();

    // Unknown key in config.json.
    let dir = copy_dir(&base, "unknown-key");
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replacen('{', "{\n  \"flash_attn\": true,", 1);
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let err = checkpoint::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("unknown field `flash_attn`"), "{err}");

    // A missing tensor, an extra one and a misshapen one: all named.
    let dir = copy_dir(&base, "keys");
    let mut edited: Vec<(String, Tensor)> = all
        .iter()
        .filter(|(k, _)| k != "backbone.layers.1.mixer.D")
        .map(|(k, v)| {
            if k == "backbone.layers.0.mixer.A_log" {
                (k.clone(), v.narrow(1, 0, 3).contiguous())
            } else {
                (k.clone(), v.shallow_clone())
            }
        })
        .collect();
    edited.push((
        "backbone.layers.9.mixer.D".into(),
        Tensor::ones([4], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&edited, dir.join("model.safetensors")).unwrap();
    let err = checkpoint::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("missing: backbone.layers.1.mixer.D"), "{err}");
    assert!(
        err.contains("unexpected: backbone.layers.9.mixer.D"),
        "{err}"
    );
    assert!(
        err.contains("mismatched: backbone.layers.0.mixer.A_log [32, 3] (model [32, 8])"),
        "{err}"
    );

    // A truncated safetensors file.
    let dir = copy_dir(&base, "truncated");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("cannot read"),
        "{err}"
    );

    // Not a directory at all.
    let err = checkpoint::load(&base.join("nope"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a model directory"), "{err}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wavemamba-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, name: &str) -> std::path::PathBuf {
    let to = tempdir(name);
    for f in ["config.json", "wavemamba.json", "model.safetensors"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    to
}
