//! `wavemamba generate` and `wavemamba eval` end to end on a saved random model and generated
//! WAV files: determinism, output format, clear errors that leave no partial files.

use std::path::Path;

use tch::Device;

mod common;

use common::{model_and_prompt as setup, path_str as s, text, wavemamba};
use wavemamba::audio::{read_audio, write_wav, WavFormat};
use wavemamba::model::checkpoint;

#[test]
fn generate_is_deterministic_and_writes_prompt_plus_continuation() {
    let (dir, model) = setup("det");
    let run = |out: &Path| {
        let o = wavemamba(&[
            "generate",
            "--model",
            s(&model),
            "--prompt",
            s(&dir.join("prompt.wav")),
            "--seconds",
            "0.25",
            "--out",
            s(out),
            "--seed",
            "1",
            "--quiet",
            "--spectrogram",
            s(&dir.join("spec.png")),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    run(&dir.join("a.wav"));
    run(&dir.join("b.wav"));
    let a = std::fs::read(dir.join("a.wav")).unwrap();
    assert_eq!(
        a,
        std::fs::read(dir.join("b.wav")).unwrap(),
        "--seed 1 twice must give identical files"
    );
    let audio = read_audio(&dir.join("a.wav")).unwrap();
    assert_eq!(audio.sample_rate, 22_050, "output at the prompt's rate");
    let expected = 11_025 + (0.25f64 * 22_050.0).round() as usize;
    assert!(
        (audio.samples.len() as i64 - expected as i64).abs() <= 2,
        "{} samples, expected {expected}",
        audio.samples.len()
    );
    assert_eq!(
        &std::fs::read(dir.join("spec.png")).unwrap()[..4],
        b"\x89PNG"
    );
    // Several continuations at once, continuation only, at a requested rate.
    let o = wavemamba(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        s(&dir.join("prompt.wav")),
        "--seconds",
        "0.1",
        "--out",
        s(&dir.join("n.wav")),
        "--num",
        "2",
        "--continuation-only",
        "--rate",
        "16000",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for i in 1..=2 {
        let a = read_audio(&dir.join(format!("n-{i}.wav"))).unwrap();
        assert_eq!((a.sample_rate, a.samples.len()), (16_000, 1600));
    }
}

#[test]
fn bad_inputs_give_clear_errors_and_no_output() {
    let (dir, model) = setup("bad");
    std::fs::write(dir.join("garbage.wav"), b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec![
                "--model".into(),
                s(&model).into(),
                "--prompt".into(),
                s(&dir.join("garbage.wav")).into(),
            ],
            "garbage.wav",
        ),
        (
            vec![
                "--model".into(),
                s(&dir.join("no-model")).into(),
                "--prompt".into(),
                s(&dir.join("prompt.wav")).into(),
            ],
            "not a model directory",
        ),
        (
            vec![
                "--model".into(),
                s(&model).into(),
                "--prompt".into(),
                s(&dir.join("prompt.wav")).into(),
            ],
            "does not exist",
        ),
        (
            vec![
                "--model".into(),
                s(&model).into(),
                "--spectrogram".into(),
                s(&dir.join("missing-dir/spec.png")).into(),
            ],
            "does not exist",
        ),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let out = if i == 2 {
            dir.join("missing-dir/out.wav")
        } else {
            dir.join(format!("out{i}.wav"))
        };
        let mut all: Vec<&str> = vec!["generate", "--seconds", "0.1", "--quiet", "--out", s(&out)];
        all.extend(args.iter().map(String::as_str));
        let o = wavemamba(&all);
        assert_eq!(o.status.code(), Some(1), "case {i}");
        assert!(
            text(&o.stderr).contains(needle),
            "case {i}: {}",
            text(&o.stderr)
        );
        assert!(!out.exists(), "case {i}: no partial output");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn eval_reports_bits_per_sample_on_a_directory() {
    let (dir, model) = setup("eval");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::copy(dir.join("prompt.wav"), data.join("a.wav")).unwrap();
    std::fs::copy(dir.join("prompt.wav"), data.join("sub/b.wav")).unwrap();
    std::fs::write(data.join("broken.wav"), b"not audio at all").unwrap();
    let o = wavemamba(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["files"], 2);
    assert_eq!(
        v["samples"],
        2 * 8000,
        "0.5 s at the model's 16 kHz, per file"
    );
    let nll = v["nll_bits_per_sample"].as_f64().unwrap();
    // A random model is close to uniform over 256 classes (8 bits), never wildly off.
    assert!(nll > 4.0 && nll < 12.0, "{nll}");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);
    // Chunking with state carry-over equals one pass.
    let m = checkpoint::load(&model, Device::Cpu).unwrap();
    let tokens: Vec<u8> = (0..3000u32)
        .map(|i| ((i * 37 + i / 7) % 256) as u8)
        .collect();
    let (whole, n) = wavemamba::eval::sequence_bits(&m, &tokens, 1000).unwrap();
    let input: Vec<i64> = std::iter::once(128)
        .chain(tokens[..2999].iter().map(|&t| t as i64))
        .collect();
    let logits = tch::no_grad(|| {
        m.forward(&tch::Tensor::from_slice(&input).unsqueeze(0))
            .unwrap()
    });
    let target = tch::Tensor::from_slice(&tokens.iter().map(|&t| t as i64).collect::<Vec<_>>());
    let reference = logits
        .squeeze_dim(0)
        .cross_entropy_loss::<tch::Tensor>(&target, None, tch::Reduction::Sum, -100, 0.0)
        .double_value(&[])
        / std::f64::consts::LN_2;
    assert_eq!(n, 3000);
    assert!(
        (whole - reference).abs() / reference < 1e-5,
        "{whole} vs {reference}"
    );
}

#[test]
fn eval_split_scores_exactly_the_files_of_that_split() {
    let (dir, model) = setup("eval-split");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("clip-{i:02}.wav")).collect();
    for n in &names {
        std::fs::copy(dir.join("prompt.wav"), data.join(n)).unwrap();
    }
    let mut total = 0;
    for split in ["train", "valid", "test"] {
        let want = names
            .iter()
            .filter(|n| wavemamba::data::Split::of_key(n).name() == split)
            .count();
        let o = wavemamba(&[
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--split",
            split,
            "--json",
        ]);
        assert!(want > 0, "{split}: these 40 names populate every split");
        assert!(o.status.success(), "{split}: {}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["files"], want, "{split}");
        total += want;
    }
    assert_eq!(total, names.len(), "the splits partition the files");
    let o = wavemamba(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data.join(&names[0])),
        "--split",
        "valid",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("needs a directory or a manifest"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_clip_shorter_than_one_stft_window_still_gets_a_spectrogram() {
    let (dir, model) = setup("short-spec");
    let (out, png) = (dir.join("short.wav"), dir.join("short.png"));
    let o = wavemamba(&[
        "generate",
        "--model",
        s(&model),
        "--seconds",
        "0.01",
        "--quiet",
        "--out",
        s(&out),
        "--spectrogram",
        s(&png),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
}

/// Every check runs before any work: empty prompts, sizes below one sample or beyond a WAV file
/// or memory, unsupported names, directories, training runs and incomplete model directories
/// are one clear line each (no abort, no Debug text), and nothing is left in the output folder.
/// Decoding refuses files without samples; scanning a directory still lists them among the
/// skipped files and scores the rest.
#[test]
fn eval_lists_an_empty_file_among_the_skipped() {
    let (dir, model) = setup("eval-empty");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(dir.join("prompt.wav"), data.join("a.wav")).unwrap();
    write_wav(&data.join("empty.wav"), &[], 16_000, WavFormat::Pcm16).unwrap();
    let o = wavemamba(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["files"], 1);
    let skipped = v["skipped"].as_array().unwrap();
    assert!(
        skipped.len() == 1
            && skipped[0]
                .as_str()
                .unwrap()
                .contains("empty.wav: no audio samples"),
        "{skipped:?}"
    );
    let o = wavemamba(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data.join("empty.wav")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("empty.wav: no audio samples"),
        "{}",
        text(&o.stderr)
    );
}
