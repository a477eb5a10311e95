//! CUDA kernels from csrc/ (built with `--features cuda`; run on a GPU machine, see
//! scripts/gpu-run.sh). Without a visible GPU these tests fail: a CUDA build is for a GPU host.
#![cfg(feature = "cuda")]

use tch::{Device, Kind, Tensor};
use wavemamba::ops::{mulaw_decode, mulaw_encode, MU_8BIT};

#[test]
fn libtorch_sees_cuda() {
    assert!(
        tch::Cuda::is_available(),
        "libtorch reports no CUDA: is libtorch_cuda linked? (see build.rs)"
    );
    let names = wavemamba::ops::build::cuda_device_names();
    assert!(!names.is_empty(), "the CUDA runtime sees no device");
}

#[test]
fn cuda_mulaw_equals_cpu() {
    let x = (Tensor::randn([4, 10_000], (Kind::Float, Device::Cpu)) * 0.4).clamp(-1.2, 1.2);
    let on_gpu = x.to_device(Device::Cuda(0));
    let q_cpu = mulaw_encode(&x, MU_8BIT).unwrap();
    let q_gpu = mulaw_encode(&on_gpu, MU_8BIT).unwrap();
    assert_eq!(q_gpu.device(), Device::Cuda(0));
    // float (GPU) vs double (CPU) arithmetic may differ at exact rounding boundaries only
    let differ = q_gpu
        .to_device(Device::Cpu)
        .ne_tensor(&q_cpu)
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!(differ <= 2, "{differ} tokens differ between CUDA and CPU");
    let x_gpu = mulaw_decode(&q_cpu.to_device(Device::Cuda(0)), MU_8BIT)
        .unwrap()
        .to_device(Device::Cpu);
    let x_cpu = mulaw_decode(&q_cpu, MU_8BIT).unwrap();
    let err = (x_gpu - x_cpu).abs().max().double_value(&[]);
    assert!(err < 1e-6, "decode of the same tokens differs by {err}");
}

/// `--precision bf16` computes in bfloat16: matmuls under `autocast_bf16` give bf16 results, while
/// `tch::autocast` alone gives float16 (libtorch's CUDA default; the cause of the bf16 training
/// divergence, BENCHMARKS.md), and the loss path stays float32.
#[test]
fn autocast_bf16_runs_cuda_matmuls_in_bfloat16() {
    let gpu = Device::Cuda(0);
    let a = Tensor::randn([8, 16], (Kind::Float, gpu));
    let b = Tensor::randn([16, 4], (Kind::Float, gpu));
    let ours = wavemamba::ops::autocast_bf16(|| a.matmul(&b));
    assert_eq!(ours.kind(), Kind::BFloat16);
    let theirs = tch::autocast(true, || a.matmul(&b));
    assert_eq!(theirs.kind(), Kind::Half);
    let ce = wavemamba::ops::autocast_bf16(|| {
        a.matmul(&b).log_softmax(-1, Kind::Float).sum(Kind::Float)
    });
    assert_eq!(ce.kind(), Kind::Float);
    assert_eq!(a.matmul(&b).kind(), Kind::Float, "autocast is off again");
}

/// The fused multi-tensor AdamW and gradient clipping give the same parameters on CUDA as on the
/// CPU (different kernels, same update).
#[test]
fn cuda_adamw_and_clipping_match_cpu() {
    use wavemamba::train::optim::{AdamW, AdamWConfig};
    tch::manual_seed(5);
    let shapes: [&[i64]; 3] = [&[33, 17], &[129], &[8, 16]];
    let names = ["a.weight", "b.bias", "c.A_log"];
    let init: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
        .collect();
    let run = |device: Device| -> Vec<Tensor> {
        let params: Vec<(String, Tensor)> = names
            .iter()
            .zip(&init)
            // A fresh leaf per run (on the CPU, `to_device` alone would hand back `t` itself).
            .map(|(n, t)| {
                (
                    n.to_string(),
                    t.copy().to_device(device).set_requires_grad(true),
                )
            })
            .collect();
        let mut opt = AdamW::new(&params, AdamWConfig::default());
        for step in 0..3 {
            // Quadratic, so gradients carry no transcendental rounding differences between devices
            // (Adam's m/√v turns any sign flip of a near-zero gradient into a full step).
            let scale = (step + 1) as f64;
            let loss: Tensor = params
                .iter()
                .zip(&init)
                .map(|((_, p), w)| {
                    ((p * w.to_device(device) - 1.0).square() * scale).sum(Kind::Float)
                })
                .sum();
            loss.backward();
            let norm = opt.clip_grad_norm(2.0).unwrap().double_value(&[]);
            assert!(norm > 2.0, "the test should clip (norm {norm})");
            opt.step(0.05, None).unwrap();
        }
        params
            .iter()
            .map(|(_, p)| p.detach().to_device(Device::Cpu))
            .collect()
    };
    let (cpu, gpu) = (run(Device::Cpu), run(Device::Cuda(0)));
    for (((name, a), b), w) in names.iter().zip(&cpu).zip(&gpu).zip(&init) {
        let moved = (a - w).abs().max().double_value(&[]);
        assert!(
            moved > 1e-2,
            "{name}: the updates should move the parameters (by {moved})"
        );
        let err = (a - b).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{name}: CUDA and CPU AdamW differ by {err}");
    }
}
