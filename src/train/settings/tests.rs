//! Tests of the saved settings: resume options and the model-flag checks.

use super::*;

fn given(flags: &[&str]) -> GivenFlags {
    GivenFlags(flags.iter().map(|f| f.to_string()).collect())
}

fn opts() -> TrainOptions {
    TrainOptions {
        steps: 100,
        batch: 4,
        len: 256,
        lr: 2e-3,
        warmup: 10,
        min_lr_ratio: 0.1,
        clip: 1.0,
        seed: 3,
        device: tch::Device::Cpu,
        bf16: false,
        log_every: 10,
        valid_every: 50,
        ckpt_every: 50,
        stop_after: None,
        progress: false,
    }
}

fn saved() -> RunSettings {
    let fp = DataFingerprint {
        train_files: 2,
        train_samples: 100,
        valid_files: 0,
        valid_samples: 0,
    };
    RunSettings::new(&opts(), ("data".into(), fp), None)
}

#[test]
fn flags_left_out_take_the_saved_values() {
    let cli = TrainOptions {
        steps: 2000,
        batch: 16,
        lr: 0.5,
        ckpt_every: 200,
        ..opts()
    };
    let o = resume_options(&saved(), 3, &cli, &given(&[])).unwrap();
    assert_eq!((o.steps, o.batch, o.lr, o.ckpt_every), (100, 4, 2e-3, 50));
}

#[test]
fn a_contradicting_flag_is_refused_by_name_with_both_values() {
    let cli = TrainOptions { lr: 0.1, ..opts() };
    let err = resume_options(&saved(), 3, &cli, &given(&["--lr"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--lr 0.002") && err.contains("--lr 0.1"),
        "{err}"
    );
    let cli = TrainOptions { seed: 4, ..opts() };
    let err = resume_options(&saved(), 3, &cli, &given(&["--seed"])).unwrap_err();
    assert!(err.to_string().contains("--seed 3, got --seed 4"), "{err}");
}

#[test]
fn free_flags_and_equal_values_are_accepted() {
    let cli = TrainOptions {
        steps: 500,
        ckpt_every: 7,
        ..opts()
    };
    let o = resume_options(
        &saved(),
        3,
        &cli,
        &given(&["--steps", "--ckpt-every", "--lr"]),
    )
    .unwrap();
    assert_eq!((o.steps, o.ckpt_every, o.lr), (500, 7, 2e-3));
}

#[test]
fn model_flags_are_checked_against_the_checkpoint() {
    let tiny = MambaConfig::preset("tiny").unwrap();
    let audio = AudioConfig::default();
    let small = MambaConfig::preset("small").unwrap();
    let flags = ModelFlags {
        config: Some(("small", small)),
        task: Task::Lm,
        architecture: &Architecture::Plain,
        pooling: &[],
        sample_rate: 16_000,
    };
    let err = check_model(
        &flags,
        &given(&["--config"]),
        &tiny,
        &audio,
        ModelOrigin::Resumed,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("trained with --config tiny, got --config small"),
        "{err}"
    );
    let same = ModelFlags {
        config: Some(("tiny", tiny.clone())),
        ..flags.clone()
    };
    check_model(
        &same,
        &given(&["--config"]),
        &tiny,
        &audio,
        ModelOrigin::Resumed,
    )
    .unwrap();
    let rate = ModelFlags {
        config: None,
        sample_rate: 8000,
        ..flags
    };
    let err = check_model(
        &rate,
        &given(&["--sample-rate"]),
        &tiny,
        &audio,
        ModelOrigin::Resumed,
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains("--sample-rate 16000, got --sample-rate 8000"));
}
