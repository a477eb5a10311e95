//! The fused CUDA layers (`ops::layers`: causal conv1d + SiLU, RMSNorm) against the ATen
//! composites the CPU runs, forward and every gradient, in float64 on the CPU as the reference;
//! and a whole model on CUDA against the CPU: training steps, and generation (GPU prefill, CPU
//! step engine). Run on a GPU machine (scripts/gpu-run.sh).
#![cfg(feature = "cuda")]

use tch::{Device, Kind, Tensor};
use wavemamba::config::MambaConfig;
use wavemamba::generate::{generate_tokens, GenerateOptions, ENGINE_MAX_STREAMS_OFF_CPU};
use wavemamba::model::loss::mean_nll_nats;
use wavemamba::model::RmsNorm;
use wavemamba::model::WaveMamba;
use wavemamba::ops::layers::{causal_conv1d_silu, rms_norm};
use wavemamba::stream::StepEngine;
use wavemamba::train::make_optimizer;

const GPU: Device = Device::Cuda(0);

/// max |a − b| / max(max |b|, 1e-6), both moved to the CPU in float64.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (
        a.to_device(Device::Cpu).to_kind(Kind::Double),
        b.to_device(Device::Cpu).to_kind(Kind::Double),
    );
    let scale = b.abs().max().double_value(&[]).max(1e-6);
    (a - b).abs().max().double_value(&[]) / scale
}

/// Reference: zero history, ATen conv1d, SiLU, in float64 on the CPU.
fn conv_reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let (bsz, d, k) = (x.size()[0], x.size()[1], w.size()[2]);
    let xc = Tensor::cat(
        &[
            &Tensor::zeros([bsz, d, k - 1], (Kind::Double, Device::Cpu)),
            x,
        ],
        2,
    );
    xc.conv1d(w, Some(b), [1], [0], [1], d).silu()
}

/// Leaves on the CPU in float64 (reference) and on the GPU (x in `io`, as a strided slice of a
/// wider tensor, as in_proj's output gives it), with the same values.
fn conv_case(seed: i64, bsz: i64, d: i64, len: i64, k: i64, io: Kind, tol: f64) {
    tch::manual_seed(seed);
    let wide = Tensor::randn([bsz, 2 * d, len], (Kind::Float, Device::Cpu)).to_kind(io);
    let w = Tensor::randn([d, 1, k], (Kind::Float, Device::Cpu)) * 0.5;
    let b = Tensor::randn([d], (Kind::Float, Device::Cpu)) * 0.3;
    let gy = Tensor::randn([bsz, d, len], (Kind::Float, Device::Cpu));
    let ctx = format!("(B, D, L, K) = ({bsz}, {d}, {len}, {k}), {io:?}");

    let xr = wide
        .narrow(1, 0, d)
        .to_kind(Kind::Double)
        .set_requires_grad(true);
    let (wr, br) = (
        w.to_kind(Kind::Double).set_requires_grad(true),
        b.to_kind(Kind::Double).set_requires_grad(true),
    );
    let yr = conv_reference(&xr, &wr, &br);
    (&yr * gy.to_kind(Kind::Double))
        .sum(Kind::Double)
        .backward();

    let wide_g = wide.to_device(GPU).set_requires_grad(true);
    let xg = wide_g.narrow(1, 0, d);
    assert_eq!(
        xg.stride()[0],
        2 * d * len,
        "the GPU input should be a strided slice"
    );
    let (wg, bg) = (
        w.to_device(GPU).set_requires_grad(true),
        b.to_device(GPU).set_requires_grad(true),
    );
    // Poison the allocator's cache so unwritten outputs show up as garbage.
    drop(Tensor::full(
        [bsz * d * len * 4],
        f64::NAN,
        (Kind::Float, GPU),
    ));
    let yg = causal_conv1d_silu(&xg, &wg, Some(&bg), false).unwrap().0;
    assert_eq!(yg.kind(), Kind::Float, "{ctx}");
    (&yg * gy.to_device(GPU)).sum(Kind::Float).backward();

    let e = rel_err(&yg, &yr);
    assert!(e <= tol, "out: rel err {e:.2e} ({ctx})");
    let gx = wide_g.grad().narrow(1, 0, d);
    assert_eq!(gx.kind(), io, "{ctx}");
    for (name, got, want) in [
        ("x", gx, xr.grad()),
        ("weight", wg.grad(), wr.grad()),
        ("bias", bg.grad(), br.grad()),
    ] {
        let e = rel_err(&got, &want);
        assert!(e <= tol, "grad of {name}: rel err {e:.2e} ({ctx})");
    }
    // The other half of the wide input gets no gradient.
    assert_eq!(
        wide_g.grad().narrow(1, d, d).abs().max().double_value(&[]),
        0.0,
        "{ctx}"
    );
}

#[test]
fn conv1d_silu_matches_aten_float32() {
    for (i, (bsz, d, len, k)) in [
        (2, 5, 1000, 4),
        (3, 7, 1, 4),
        (1, 3, 7, 4),
        (2, 4, 1024, 1),
        (2, 6, 1537, 8),
        (1, 128, 4096, 4),
    ]
    .into_iter()
    .enumerate()
    {
        conv_case(100 + i as i64, bsz, d, len, k, Kind::Float, 1e-5);
    }
}

#[test]
fn conv1d_silu_matches_aten_bfloat16_input() {
    // Inputs are exact in bf16; only gx is rounded to bf16 on the way out.
    conv_case(200, 2, 8, 3000, 4, Kind::BFloat16, 1e-2);
}

/// The bf16 twin output holds y rounded to bf16, and gradients through both outputs add up.
#[test]
fn conv1d_silu_bf16_twin_carries_value_and_gradient() {
    tch::manual_seed(17);
    let (bsz, d, len) = (2, 6, 2500);
    let x = Tensor::randn([bsz, d, len], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([d, 1, 4], (Kind::Float, Device::Cpu)) * 0.5;
    let b = Tensor::randn([d], (Kind::Float, Device::Cpu)) * 0.3;
    let g1 = Tensor::randn([bsz, d, len], (Kind::Float, Device::Cpu));
    let g2 = Tensor::randn([bsz, d, len], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    let xr = x.to_kind(Kind::Double).set_requires_grad(true);
    let (wr, br) = (
        w.to_kind(Kind::Double).set_requires_grad(true),
        b.to_kind(Kind::Double).set_requires_grad(true),
    );
    let yr = conv_reference(&xr, &wr, &br);
    (&yr * (&g1 + g2.to_kind(Kind::Float)).to_kind(Kind::Double))
        .sum(Kind::Double)
        .backward();

    let xg = x.to_device(GPU).set_requires_grad(true);
    let (wg, bg) = (
        w.to_device(GPU).set_requires_grad(true),
        b.to_device(GPU).set_requires_grad(true),
    );
    let (y, y16) = causal_conv1d_silu(&xg, &wg, Some(&bg), true).unwrap();
    let y16 = y16.expect("asked for the twin");
    assert_eq!(y16.kind(), Kind::BFloat16);
    assert!(
        y16.equal(&y.to_kind(Kind::BFloat16)),
        "the twin is y rounded to bf16"
    );
    ((&y * g1.to_device(GPU)).sum(Kind::Float) + (&y16 * g2.to_device(GPU)).sum(Kind::Float))
        .backward();
    for (name, got, want) in [
        ("x", xg.grad(), xr.grad()),
        ("weight", wg.grad(), wr.grad()),
        ("bias", bg.grad(), br.grad()),
    ] {
        let e = rel_err(&got, &want);
        assert!(e <= 1e-5, "grad of {name}: rel err {e:.2e}");
    }
}

#[test]
fn conv1d_silu_is_deterministic() {
    tch::manual_seed(7);
    let x = Tensor::randn([4, 64, 5000], (Kind::Float, GPU)).set_requires_grad(true);
    let w = (Tensor::randn([64, 1, 4], (Kind::Float, GPU)) * 0.5).set_requires_grad(true);
    let b = Tensor::randn([64], (Kind::Float, GPU)).set_requires_grad(true);
    let gy = Tensor::randn([4, 64, 5000], (Kind::Float, GPU));
    let run = || {
        let y = causal_conv1d_silu(&x, &w, Some(&b), false).unwrap().0;
        let g = Tensor::run_backward(&[(&y * &gy).sum(Kind::Float)], &[&x, &w, &b], false, false);
        (y, g)
    };
    let (y1, g1) = run();
    let (y2, g2) = run();
    assert!(y1.equal(&y2));
    for (a, b) in g1.iter().zip(&g2) {
        assert!(a.equal(b), "gradients differ between identical runs");
    }
}

#[test]
fn rms_norm_matches_aten() {
    for (i, (rows, c)) in [(1, 64), (999, 64), (77, 100), (4096, 1024), (33, 5)]
        .into_iter()
        .enumerate()
    {
        tch::manual_seed(300 + i as i64);
        let x = Tensor::randn([rows, c], (Kind::Float, Device::Cpu)) * 3.0;
        let w = Tensor::randn([c], (Kind::Float, Device::Cpu));
        let gy = Tensor::randn([rows, c], (Kind::Float, Device::Cpu));
        let ctx = format!("rows {rows}, C {c}");
        let (xr, wr) = (
            x.to_kind(Kind::Double).set_requires_grad(true),
            w.to_kind(Kind::Double).set_requires_grad(true),
        );
        let yr = RmsNorm::forward_composite(&xr, &wr);
        (&yr * gy.to_kind(Kind::Double))
            .sum(Kind::Double)
            .backward();
        let (xg, wg) = (
            x.to_device(GPU).set_requires_grad(true),
            w.to_device(GPU).set_requires_grad(true),
        );
        drop(Tensor::full([rows * c * 4], f64::NAN, (Kind::Float, GPU)));
        let yg = rms_norm(&xg, &wg, RmsNorm::EPS, false).unwrap();
        (&yg * gy.to_device(GPU)).sum(Kind::Float).backward();
        let e = rel_err(&yg, &yr);
        assert!(e <= 1e-5, "out: rel err {e:.2e} ({ctx})");
        let e = rel_err(&xg.grad(), &xr.grad());
        assert!(e <= 1e-5, "grad of x: rel err {e:.2e} ({ctx})");
        let e = rel_err(&wg.grad(), &wr.grad());
        assert!(e <= 1e-4, "grad of weight: rel err {e:.2e} ({ctx})");
    }
}

/// With bf16 output the norm equals the float32 one rounded to bf16, and its (bf16) gradient
/// flows back like the float32 path's.
#[test]
fn rms_norm_bf16_output_is_the_rounded_float32_one() {
    tch::manual_seed(400);
    let x = (Tensor::randn([300, 64], (Kind::Float, GPU)) * 2.0).set_requires_grad(true);
    let w = Tensor::randn([64], (Kind::Float, GPU)).set_requires_grad(true);
    let gy = Tensor::randn([300, 64], (Kind::Float, GPU)).to_kind(Kind::BFloat16);
    let y32 = rms_norm(&x, &w, RmsNorm::EPS, false).unwrap();
    let y16 = rms_norm(&x, &w, RmsNorm::EPS, true).unwrap();
    assert_eq!(y16.kind(), Kind::BFloat16);
    assert!(y16.equal(&y32.to_kind(Kind::BFloat16)));
    let g32 = Tensor::run_backward(
        &[(&y32 * gy.to_kind(Kind::Float)).sum(Kind::Float)],
        &[&x, &w],
        false,
        false,
    );
    let g16 = Tensor::run_backward(&[(&y16 * &gy).sum(Kind::Float)], &[&x, &w], false, false);
    for (name, a, b) in [("x", &g16[0], &g32[0]), ("weight", &g16[1], &g32[1])] {
        assert_eq!(a.kind(), Kind::Float, "{name}");
        let e = rel_err(a, b);
        assert!(e <= 1e-5, "grad of {name}: rel err {e:.2e}");
    }
}

#[test]
fn fused_layers_reject_bad_input_clearly() {
    let x = Tensor::randn([2, 4, 10], (Kind::Float, GPU));
    let w = Tensor::randn([3, 1, 4], (Kind::Float, GPU));
    let e = causal_conv1d_silu(&x, &w, None, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("weight") && e.contains("(4, 1, K)"), "{e}");
    let w4 = Tensor::randn([4, 1, 4], (Kind::Float, Device::Cpu));
    let e = causal_conv1d_silu(&x.to_device(Device::Cpu), &w4, None, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("CUDA tensor"), "{e}");
    let e = rms_norm(&x, &Tensor::ones([5], (Kind::Float, GPU)), 1e-5, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("weight"), "{e}");
}

/// The `small` preset with random weights (seeded), on the CPU and an identical copy on the GPU.
fn small_model_on_cpu_and_gpu(seed: i64) -> (WaveMamba, WaveMamba) {
    let config = MambaConfig::preset("small").unwrap();
    tch::manual_seed(seed);
    let cpu = WaveMamba::new(config.clone(), Default::default(), Device::Cpu).unwrap();
    let mut gpu = WaveMamba::new(config, Default::default(), GPU).unwrap();
    gpu.vs.copy(&cpu.vs).unwrap();
    (cpu, gpu)
}

/// The default model size trains the same on CUDA (fused layers, CUDA scan, fused AdamW) as on
/// the CPU for its first steps: same initial weights, same batches, fp32.
#[test]
fn cuda_training_steps_match_cpu() {
    let (cpu, gpu) = small_model_on_cpu_and_gpu(42);
    let (mut opt_c, mut opt_g) = (make_optimizer(&cpu), make_optimizer(&gpu));
    let mut losses = Vec::new();
    for step in 0..5 {
        let tokens =
            Tensor::randint_low(64 + step, 128 + step, [2, 4096], (Kind::Int64, Device::Cpu));
        let mut pair = Vec::new();
        for (model, opt) in [(&cpu, &mut opt_c), (&gpu, &mut opt_g)] {
            let loss = mean_nll_nats(model, &tokens.to_device(model.device())).unwrap();
            loss.backward();
            let norm = opt.clip_grad_norm(1.0).unwrap();
            opt.step(2e-3, Some(&norm)).unwrap();
            pair.push(loss.double_value(&[]));
        }
        let rel = (pair[0] - pair[1]).abs() / pair[0];
        assert!(
            rel < 1e-4,
            "step {step}: CPU loss {} vs CUDA {} (rel {rel:.2e})",
            pair[0],
            pair[1]
        );
        losses.push(pair[0]);
    }
    assert!(
        losses[4] < losses[0],
        "the loss should fall over 5 steps: {losses:?}"
    );
}

/// `generate` with a model on the GPU prefills there and, for up to ENGINE_MAX_STREAMS_OFF_CPU
/// streams, samples with the CPU step engine from the GPU's state. The GPU's prefill state, loaded
/// into the engine, gives the logits the CPU's own gives (sampled tokens are not compared: one
/// flipped draw diverges the rest), and generation takes that path, deterministically.
#[test]
fn cuda_generation_prefills_on_the_gpu_and_samples_on_the_cpu_engine() {
    let (cpu, gpu) = small_model_on_cpu_and_gpu(7);
    let prompt: Vec<u8> = (0..3000)
        .map(|i| (128.0 + 90.0 * (i as f64 * 0.07).sin()) as u8)
        .collect();
    let input: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let mut logits = Vec::new();
    for model in [&cpu, &gpu] {
        let mut state = model.zero_state(1);
        let x = Tensor::from_slice(&input)
            .unsqueeze(0)
            .to_device(model.device());
        let _logits = tch::no_grad(|| model.prefill_last(&x, &mut state)).unwrap();
        let mut engine = StepEngine::new(model, 1).unwrap();
        engine.load_state(&state).unwrap();
        logits.push(Tensor::from_slice(engine.step(&[77]).unwrap()));
    }
    let e = rel_err(&logits[1], &logits[0]);
    assert!(
        e < 1e-4,
        "engine logits after the GPU prefill: rel err {e:.2e}"
    );

    let opts = GenerateOptions {
        samples: 300,
        num: 3,
        temperature: 1.0,
        top_p: 0.95,
        seed: 11,
        progress: false,
        threads: 0,
    };
    assert!(opts.num <= ENGINE_MAX_STREAMS_OFF_CPU); // with any number of engine threads
    let a = generate_tokens(&gpu, &prompt, &opts).unwrap();
    assert_eq!(
        a.path, "engine",
        "a few streams on a GPU should sample on the CPU engine"
    );
    assert_eq!(a.tokens.len(), 3);
    assert!(a.tokens.iter().all(|t| t.len() == 300));
    let distinct: std::collections::BTreeSet<u8> = a.tokens[0].iter().copied().collect();
    assert!(
        distinct.len() > 10,
        "sampled tokens should vary: {distinct:?}"
    );
    assert_eq!(
        generate_tokens(&gpu, &prompt, &opts).unwrap().tokens,
        a.tokens
    );
}
