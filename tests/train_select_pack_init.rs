//! `train` / `eval` flags from a user audit: `--select COLUMN=VALUE` keeps a manifest's rows (and
//! a resumed run must select the same audio), `--save-pack` is checked before any data is
//! decoded, and `--init` refuses a `--config` / `--arch` of another model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tch::Device;

mod common;
use common::{ok, path_str as s, text, wavemamba_bin, TempDir};
use wavemamba::audio::{write_wav, WavFormat};
use wavemamba::config::{AudioConfig, MambaConfig};
use wavemamba::data::Split;
use wavemamba::model::{checkpoint, WaveMamba};
use wavemamba::train::corpus::{TokenCorpus, TokenFile};

/// `wavemamba ARGS…` with the dataset cache in `cache` (never the user's), one thread.
fn wm(cache: &Path, args: &[&str]) -> Output {
    Command::new(wavemamba_bin())
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `wavemamba train` of the tiny preset (quiet, one thread) on `data` into `out`, then `extra`.
fn train(cache: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let base = ["train", "--data", s(data), "--out", s(out)];
    let tiny = ["--threads", "1", "--quiet", "--batch", "2", "--len", "512"];
    wm(cache, &[&base[..], &tiny, extra].concat())
}

/// The stderr of a run that must fail with `code`.
fn fails_with(code: i32, out: Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

/// A corpus like scripts/build-corpus.py's: three speech files `speech/s*.wav` (tones of 0.5–0.7
/// s; two whose path hashes into the training split, then one into the validation split) and
/// `noise/n{0,1}.wav` (0.4 s), listed by `manifest.tsv` with a `kind` column. Returns the
/// manifest.
fn corpus(root: &Path) -> PathBuf {
    let mut rows = String::from("path\tkind\n");
    let named = |want: Split| {
        (0..)
            .map(|i| format!("speech/s{i}.wav"))
            .filter(move |n| Split::of_key(n) == want)
    };
    let names: Vec<String> = named(Split::Train)
        .take(2)
        .chain(named(Split::Valid).take(1))
        .collect();
    for (i, rel) in names.into_iter().enumerate() {
        let n = 8000 + 1600 * i;
        let x: Vec<f32> = (0..n)
            .map(|t| 0.3 * (t as f32 * 0.02 * (i + 1) as f32).sin())
            .collect();
        wav(&root.join(&rel), &x);
        rows += &format!("{rel}\tspeech\n");
    }
    for i in 0..2u32 {
        let x: Vec<f32> = (0..6400u32)
            .map(|t| ((t * 7 + i) as f32 * 12.9898).sin().fract() * 0.2)
            .collect();
        let rel = format!("noise/n{i}.wav");
        wav(&root.join(&rel), &x);
        rows += &format!("{rel}\tnoise\n");
    }
    let manifest = root.join("manifest.tsv");
    std::fs::write(&manifest, rows).unwrap();
    manifest
}

fn wav(path: &Path, x: &[f32]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_wav(path, x, 16_000, WavFormat::Pcm16).unwrap();
}

/// The `settings` of a run's newest checkpoint.
fn saved_settings(run: &Path) -> serde_json::Value {
    let latest = std::fs::read_to_string(run.join("latest")).unwrap();
    let path = run.join("checkpoints").join(latest).join("trainer.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["settings"].clone()
}

#[test]
fn train_select_keeps_the_manifest_rows_and_resume_needs_the_same_selection() {
    let dir = TempDir::new("select-train");
    let (manifest, cache, out) = (corpus(dir.path()), dir.join("cache"), dir.join("run"));
    let first = ["--config", "tiny", "--steps", "4", "--stop-after", "2"];
    let o = ok(train(
        &cache,
        &manifest,
        &out,
        &[&first[..], &["--select", "kind=speech"]].concat(),
    ));
    // The three speech files only (one held out for validation), not the noise.
    let err = text(&o.stderr);
    assert!(err.contains("data: 2 train files"), "{err}");
    assert!(err.contains("1 validation files"), "{err}");
    let settings = saved_settings(&out);
    assert_eq!(settings["select"], serde_json::json!([["kind", "speech"]]));
    assert_eq!(settings["data_fingerprint"]["train_files"], 2);
    // The same selection resumes.
    let resume = ["--resume", "--stop-after", "1"];
    let again = [&resume[..], &["--select", "kind=speech"]].concat();
    ok(train(&cache, &manifest, &out, &again));
    assert_eq!(saved_settings(&out)["select"][0][1], "speech");
    // Another selection, or none, is other audio: refused, naming the run's selection.
    // A refused resume writes no --save-pack either.
    let pack = dir.join("refused.wmtok");
    for other in [&["--select", "kind=noise"][..], &[]] {
        let args = [&resume[..], other, &["--save-pack", s(&pack)]].concat();
        let err = fails_with(1, train(&cache, &manifest, &out, &args));
        assert!(!pack.exists(), "a refused resume wrote {}", pack.display());
        assert!(
            err.contains("invalid value for --data")
                && err.contains(&format!(
                    "it was trained on {} --select kind=speech (2 train files",
                    s(&manifest)
                )),
            "{other:?}: {err}"
        );
    }
    let latest = std::fs::read_to_string(out.join("latest")).unwrap();
    assert_eq!(latest, "step-000003", "the refused resumes trained nothing");
    // The best model records the selection with its data.
    let audio: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("best/wavemamba.json")).unwrap())
            .unwrap();
    assert_eq!(
        audio["provenance"]["select"],
        serde_json::json!(["kind=speech"])
    );
}

#[test]
fn select_needs_a_manifest_and_a_column_for_train_eval_and_bench() {
    let dir = TempDir::new("select-errors");
    let manifest = corpus(dir.path());
    let cache = dir.join("cache");
    let out = dir.join("run");
    // A directory has no columns: the data layer's error, and nothing left under --out.
    let speech = dir.join("speech");
    let err = fails_with(
        1,
        train(&cache, &speech, &out, &["--select", "kind=speech"]),
    );
    assert!(
        err.contains("selecting by the manifest column \"kind\" needs a manifest, not a directory"),
        "{err}"
    );
    assert!(!out.exists());
    // Neither has a token pack.
    let pack = dir.join("p.wmtok");
    let file = TokenFile {
        name: "a.wav".into(),
        tokens: vec![128; 4000],
    };
    TokenCorpus::new(16_000, vec![file], Vec::new(), 0)
        .save_pack(&pack)
        .unwrap();
    let err = fails_with(1, train(&cache, &pack, &out, &["--select", "kind=speech"]));
    assert!(err.contains("needs a manifest, not a token pack"), "{err}");
    // eval: a directory, or a single file.
    let model = tiny_model(&dir);
    for (data, want) in [
        (speech.clone(), "needs a manifest, not a directory"),
        (
            std::fs::read_dir(&speech)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
            "is one audio file; selecting rows (kind=speech) needs a manifest",
        ),
    ] {
        let args = [
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--select",
            "kind=speech",
        ];
        let err = fails_with(1, wm(&cache, &args));
        assert!(err.contains(want), "{err}");
    }
    let args = [
        "eval", "--task", "denoise", "--speech", "a", "--noise", "b", "--select", "k=v",
    ];
    let err = fails_with(1, wm(&cache, &args));
    assert!(err.contains("--select: only with --task lm"), "{err}");
    // One parser for COLUMN=VALUE: the same usage error from every command.
    let m = s(&manifest);
    for args in [
        &["train", "--data", m, "--out", s(&out), "--select", "kind"][..],
        &["eval", "--data", m, "--select", "=speech"],
        &["bench", "loader", "--data", m, "--select", "kind"],
    ] {
        let err = fails_with(2, wm(&cache, args));
        assert!(err.contains("expected COLUMN=VALUE"), "{args:?}: {err}");
    }
    // --noise-select belongs to a denoiser, and is refused before any decoding.
    let fresh = dir.join("fresh-cache");
    let args = ["--noise-select", "kind=noise", "--steps", "1"];
    let err = fails_with(1, train(&fresh, &manifest, &out, &args));
    assert!(err.contains("invalid value for --noise-select"), "{err}");
    // So is --noise for a language model (it was silently ignored).
    let args = ["--noise", m, "--steps", "1"];
    let err = fails_with(1, train(&fresh, &manifest, &out, &args));
    assert!(
        err.contains("invalid value for --noise: is the noise mixed into a denoiser's training"),
        "{err}"
    );
    assert!(
        !fresh.join("wavemamba").exists(),
        "decoded before refusing: {err}"
    );
}

/// A random `tiny` language model saved under `dir/model`.
fn tiny_model(dir: &TempDir) -> PathBuf {
    tch::manual_seed(5);
    let m = WaveMamba::new(
        MambaConfig::preset("tiny").unwrap(),
        AudioConfig::default(),
        Device::Cpu,
    )
    .unwrap();
    let path = dir.join("model");
    checkpoint::save(&m, &path).unwrap();
    path
}

#[test]
fn eval_select_scores_the_rows_a_selected_run_trained_and_held_out() {
    let dir = TempDir::new("select-eval");
    let (manifest, cache) = (corpus(dir.path()), dir.join("cache"));
    let model = tiny_model(&dir);
    let eval = |extra: &[&str]| {
        let base = [
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&manifest),
            "--json",
        ];
        let o = ok(wm(&cache, &[&base[..], extra].concat()));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    assert_eq!(eval(&[])["files"], 5);
    let speech = eval(&["--select", "kind=speech"]);
    assert_eq!(speech["files"], 3);
    assert!(speech["per_file"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["path"].as_str().unwrap().contains("speech")));
    // --split valid of the selection: the file a `train --select kind=speech` run holds out.
    let valid = eval(&["--select", "kind=speech", "--split", "valid"]);
    assert_eq!(valid["files"], 1);
}

#[test]
fn save_pack_is_checked_before_the_data_is_decoded_and_holds_the_selection() {
    let dir = TempDir::new("save-pack");
    let (manifest, cache) = (corpus(dir.path()), dir.join("cache"));
    let unused = dir.join("unused");
    let prepare = |pack: &Path, select: &[&str]| {
        let args = [&["--steps", "0", "--save-pack", s(pack)][..], select].concat();
        train(&cache, &manifest, &unused, &args)
    };
    let missing = dir.join("packs/speech.wmtok");
    for (pack, want) in [
        (&missing, "invalid value for --save-pack: "),
        (&missing, "output directory does not exist"),
        (&dir.join("speech.pack"), "give it a .wmtok name"),
        (&dir.join("speech"), "give it a .wmtok name"),
        (&dir.path().to_path_buf(), "invalid value for --save-pack"),
    ] {
        let err = fails_with(1, prepare(pack, &[]));
        assert!(err.contains(want), "{}: {err}", pack.display());
        assert!(
            !err.contains(".tmp") && !err.contains("training into") && !err.contains(s(&unused)),
            "{err}"
        );
    }
    assert!(
        !cache.join("wavemamba").exists(),
        "the data was decoded before the refusal"
    );
    std::fs::create_dir_all(dir.join("packs")).unwrap();
    let o = ok(prepare(&missing, &["--select", "kind=speech"]));
    assert!(
        text(&o.stdout).contains("token pack"),
        "{}",
        text(&o.stdout)
    );
    let packed = TokenCorpus::load_pack(&missing, 0).unwrap();
    assert_eq!((packed.train.len(), packed.valid.len()), (2, 1));
    assert!(packed.train.iter().all(|f| f.name.starts_with("speech/")));
    let left: Vec<_> = std::fs::read_dir(dir.join("packs")).unwrap().collect();
    assert_eq!(left.len(), 1, "only the pack, no temporary file");
    assert!(!unused.exists());
}

#[test]
fn init_refuses_a_config_or_arch_of_another_model() {
    let dir = TempDir::new("init-config");
    let (cache, out) = (dir.join("cache"), dir.join("run"));
    let pack = dir.join("d.wmtok");
    let file = |i: u8| TokenFile {
        name: format!("f{i}.wav"),
        tokens: (0..8000u32)
            .map(|t| (t * u32::from(i + 1) % 251) as u8)
            .collect(),
    };
    TokenCorpus::new(16_000, vec![file(0), file(1)], vec![file(2)], 0)
        .save_pack(&pack)
        .unwrap();
    let model = tiny_model(&dir);
    let init = ["--init", s(&model), "--steps", "1"];
    for (flag, value, want) in [
        ("--config", "small", "--config tiny, got --config small"),
        ("--arch", "unet", "--arch plain, got --arch unet"),
        ("--pooling", "2,2", "has the plain architecture"),
    ] {
        let err = fails_with(
            1,
            train(&cache, &pack, &out, &[&init[..], &[flag, value]].concat()),
        );
        assert!(
            err.contains(&format!("invalid value for {flag}"))
                && err.contains(&format!("--init {}", s(&model)))
                && err.contains(want),
            "{flag} {value}: {err}"
        );
        assert!(!out.exists());
    }
    // The model's own config (by preset name or its config.json) and arch are fine.
    let own = model.join("config.json");
    for same in [
        &["--config", "tiny"][..],
        &["--config", s(&own), "--arch", "plain"],
    ] {
        let run = dir.join(format!("ok{}", same.len()));
        ok(train(&cache, &pack, &run, &[&init[..], same].concat()));
        assert!(run.join("best/model.safetensors").is_file());
    }
}
