//! The fused CPU step engine (`wavemamba::stream`) against the tch recurrent step
//! (`WaveMamba::step`): equal logits over 2000 samples with several streams, from a zero state
//! and from a prefill state, with the SIMD and the scalar kernels, for the plain model and the
//! U-Net (also from a prefill that ends inside a pooling group); state round trips; errors.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tch::{Device, Kind, Tensor};
use wavemamba::config::{Architecture, AudioConfig, MambaConfig};
use wavemamba::model::WaveMamba;
use wavemamba::stream::{Isa, StepEngine};

/// Counts this thread's Rust heap allocations (to check that `step` makes none).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// A model of `config` whose every weight is perturbed away from the (structured) init.
fn random_model(config: MambaConfig, seed: i64) -> WaveMamba {
    random_with(config, AudioConfig::default(), seed)
}

/// A U-Net of `config` with `pooling` and `blocks` per stage, weights perturbed.
fn random_unet(config: MambaConfig, pooling: &[i64], blocks: i64, seed: i64) -> WaveMamba {
    let audio = AudioConfig {
        architecture: Architecture::Unet,
        pooling: pooling.to_vec(),
        blocks_per_stage: blocks,
        ..AudioConfig::default()
    };
    random_with(config, audio, seed)
}

fn random_with(config: MambaConfig, audio: AudioConfig, seed: i64) -> WaveMamba {
    common::perturbed_model(config, audio, seed)
}

fn tiny(seed: i64) -> WaveMamba {
    random_model(MambaConfig::preset("tiny").unwrap(), seed)
}

/// Widths that are not multiples of 8, an odd state size, a short conv, padded vocabulary.
fn odd_config() -> MambaConfig {
    let mut c = MambaConfig::waveform(10, 3, 5);
    c.ssm_cfg.d_conv = 3;
    c.vocab_size = 250;
    c
}

/// Random, non-constant tokens: a noisy sine in mu-law classes, (B, L) int64.
fn tokens(batch: i64, len: i64, vocab: i64) -> Tensor {
    let t = Tensor::arange(len, (Kind::Float, Device::Cpu))
        .unsqueeze(0)
        .repeat([batch, 1]);
    let x = (t * 0.05).sin() * 0.5 + Tensor::randn([batch, len], (Kind::Float, Device::Cpu)) * 0.1;
    wavemamba::ops::mulaw_encode(&x, 255)
        .unwrap()
        .clamp(0, vocab - 1)
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    assert!(n.is_finite() && n > 0.0, "reference norm {n}");
    (d / n).sqrt()
}

fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|i| i.available())
        .collect()
}

/// Steps the engine over `x` (B, L); returns every logit, (L, B, vocab) flattened.
fn run_engine(e: &mut StepEngine, x: &Tensor) -> Vec<f32> {
    let (b, len) = (x.size()[0], x.size()[1]);
    let toks = Vec::<i64>::try_from(x.transpose(0, 1).contiguous().reshape([-1])).unwrap();
    let mut out = Vec::with_capacity((len * b) as usize * e.vocab());
    for t in toks.chunks(b as usize) {
        out.extend_from_slice(e.step(t).unwrap());
    }
    out
}

/// The tch step over `x` (B, L) from `state`; every logit, (L, B, vocab) flattened.
fn run_tch(m: &WaveMamba, x: &Tensor, state: &mut wavemamba::model::State) -> Vec<f32> {
    let len = x.size()[1];
    let logits: Vec<Tensor> =
        tch::no_grad(|| (0..len).map(|t| m.step(&x.select(1, t), state)).collect());
    Vec::<f32>::try_from(Tensor::stack(&logits, 0).reshape([-1])).unwrap()
}

#[test]
fn engine_equals_tch_step_from_zero_state_over_2000_samples() {
    let m = tiny(1);
    let x = tokens(3, 2000, 256);
    let reference = run_tch(&m, &x, &mut m.zero_state(3));
    for isa in isas() {
        let mut e = StepEngine::with_isa(&m, 3, isa).unwrap();
        let got = run_engine(&mut e, &x);
        let err = rel_err(&got, &reference);
        eprintln!("{isa}: engine vs tch step over 2000 samples: rel err {err:.2e}");
        assert!(err <= 1e-5, "{isa}: engine vs tch step: rel err {err:.2e}");
    }
}

#[test]
fn engine_equals_tch_step_after_prefill() {
    let m = tiny(2);
    let x = tokens(3, 2300, 256);
    let (prompt, rest) = (x.narrow(1, 0, 300), x.narrow(1, 300, 2000));
    let mut state = m.zero_state(3);
    let _ = tch::no_grad(|| m.prefill(&prompt, &mut state)).unwrap();
    let engine_start = state.copy();
    let reference = run_tch(&m, &rest, &mut state);
    for isa in isas() {
        let mut e = StepEngine::with_isa(&m, 3, isa).unwrap();
        e.step(&[1u8, 2, 3]).unwrap(); // some history that load_state must replace
        e.load_state(&engine_start).unwrap();
        let got = run_engine(&mut e, &rest);
        let err = rel_err(&got, &reference);
        eprintln!("{isa}: prefill + engine vs tch: rel err {err:.2e}");
        assert!(
            err <= 1e-5,
            "{isa}: prefill + engine vs tch: rel err {err:.2e}"
        );
    }
}

#[test]
fn simd_kernels_equal_scalar_kernels() {
    let simd: Vec<Isa> = isas().into_iter().filter(|&i| i != Isa::Scalar).collect();
    if simd.is_empty() {
        eprintln!("no AVX2+FMA on this CPU: only the scalar kernels run");
    }
    let m = random_model(MambaConfig::preset("small").unwrap(), 3);
    let x = tokens(5, 400, 256);
    let scalar = run_engine(&mut StepEngine::with_isa(&m, 5, Isa::Scalar).unwrap(), &x);
    for isa in simd {
        let got = run_engine(&mut StepEngine::with_isa(&m, 5, isa).unwrap(), &x);
        let err = rel_err(&got, &scalar);
        eprintln!("{isa} vs scalar: rel err {err:.2e}");
        assert!(err <= 2e-6, "{isa} vs scalar: rel err {err:.2e}");
    }
}

#[test]
fn small_preset_and_odd_sizes_equal_tch() {
    for (name, config, streams, len) in [
        ("small", MambaConfig::preset("small").unwrap(), 2, 300),
        ("odd", odd_config(), 4, 500),
        ("odd, 5 streams", odd_config(), 5, 200),
        ("odd, 1 stream", odd_config(), 1, 300),
    ] {
        let m = random_model(config, 4);
        let vocab = m.config.vocab_size;
        let x = tokens(streams, len, vocab);
        let reference = run_tch(&m, &x, &mut m.zero_state(streams));
        for isa in isas() {
            let mut e = StepEngine::with_isa(&m, streams as usize, isa).unwrap();
            assert_eq!(e.vocab(), vocab as usize);
            let err = rel_err(&run_engine(&mut e, &x), &reference);
            eprintln!("{name} {isa}: rel err {err:.2e}");
            assert!(err <= 1e-5, "{name} {isa}: rel err {err:.2e}");
        }
    }
}

#[test]
fn state_round_trips_through_tch() {
    let m = random_model(odd_config(), 5);
    let x = tokens(2, 150, 250);
    let mut tch_state = m.zero_state(2);
    run_tch(&m, &x.narrow(1, 0, 100), &mut tch_state);
    for isa in isas() {
        let mut e = StepEngine::with_isa(&m, 2, isa).unwrap();
        run_engine(&mut e, &x.narrow(1, 0, 100));
        let mine = e.state().unwrap();
        assert_eq!(mine.layers.len(), tch_state.layers.len());
        for (a, b) in mine.layers.iter().zip(&tch_state.layers) {
            assert_eq!(a.conv.size(), b.conv.size());
            assert_eq!(a.ssm.size(), b.ssm.size());
            let e1 = ((&a.conv - &b.conv).norm() / b.conv.norm()).double_value(&[]);
            let e2 = ((&a.ssm - &b.ssm).norm() / b.ssm.norm()).double_value(&[]);
            assert!(
                e1 <= 1e-5 && e2 <= 1e-5,
                "{isa}: conv {e1:.2e}, ssm {e2:.2e}"
            );
        }
        // state() then load_state() continues bit for bit
        let mut other = StepEngine::with_isa(&m, 2, isa).unwrap();
        other.load_state(&mine).unwrap();
        let rest = x.narrow(1, 100, 50);
        assert_eq!(run_engine(&mut other, &rest), run_engine(&mut e, &rest));
    }
}

#[test]
fn reset_and_reset_stream() {
    let m = tiny(6);
    let x = tokens(2, 60, 256);
    let mut e = StepEngine::new(&m, 2).unwrap();
    let first = run_engine(&mut e, &x);
    e.reset();
    assert_eq!(run_engine(&mut e, &x), first, "reset = a fresh engine");

    // Stream 1 reset mid-way equals a fresh single-stream run of its remaining tokens.
    let mut e = StepEngine::new(&m, 2).unwrap();
    run_engine(&mut e, &x.narrow(1, 0, 30));
    e.reset_stream(1).unwrap();
    let both = run_engine(&mut e, &x.narrow(1, 30, 30));
    let mut single = StepEngine::new(&m, 1).unwrap();
    let alone = run_engine(&mut single, &x.narrow(0, 1, 1).narrow(1, 30, 30));
    let v = e.vocab();
    let stream1: Vec<f32> = both
        .chunks(2 * v)
        .flat_map(|c| c[v..].iter().copied())
        .collect();
    // (1 and 2 streams take different accumulation orders: equal to rounding, not bit for bit)
    let err = rel_err(&stream1, &alone);
    assert!(
        err <= 1e-6,
        "reset stream vs fresh engine: rel err {err:.2e}"
    );
    assert!(e.reset_stream(2).is_err());
}

#[test]
fn step_does_not_allocate() {
    fn is_send<T: Send>() {}
    is_send::<StepEngine>(); // runs on a worker thread
    let before = ALLOCATIONS.with(Cell::get);
    drop(std::hint::black_box(vec![0u8; 10]));
    assert_eq!(
        ALLOCATIONS.with(Cell::get),
        before + 1,
        "the counter counts"
    );
    let plain = random_model(MambaConfig::preset("small").unwrap(), 8);
    let unet = random_unet(MambaConfig::preset("tiny").unwrap(), &[4, 4], 1, 8);
    for (m, isa) in [&plain, &unet]
        .into_iter()
        .flat_map(|m| isas().into_iter().map(move |i| (m, i)))
    {
        for streams in [1, 5] {
            let mut e = StepEngine::with_isa(m, streams, isa).unwrap();
            let toks: Vec<u8> = (0..streams as u8).collect();
            e.step(&toks).unwrap();
            let before = ALLOCATIONS.with(Cell::get);
            for _ in 0..100 {
                e.step(&toks).unwrap(); // 100 steps: every U-Net stage runs
            }
            let allocations = ALLOCATIONS.with(Cell::get) - before;
            assert_eq!(
                allocations, 0,
                "{isa}, {streams} streams: allocations in step"
            );
        }
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let m = tiny(7);
    let err = StepEngine::new(&m, 0).unwrap_err().to_string();
    assert!(err.contains("streams"), "{err}");

    let mut e = StepEngine::new(&m, 2).unwrap();
    let err = e.step(&[1u8]).unwrap_err().to_string();
    assert!(err.contains("1 tokens for 2 streams"), "{err}");
    let err = e.step(&[1i64, 256]).unwrap_err().to_string();
    assert!(err.contains("token 256 of stream 1"), "{err}");
    let err = e.step(&[-1i64, 0]).unwrap_err().to_string();
    assert!(err.contains("token -1 of stream 0"), "{err}");
    assert!(
        e.logits().iter().all(|&v| v == 0.0),
        "failed steps change nothing"
    );

    let err = e.load_state(&m.zero_state(3)).unwrap_err().to_string();
    assert!(
        err.contains("[2, 32, 4]") && err.contains("[3, 32, 4]"),
        "{err}"
    );
    let other = random_model(odd_config(), 1);
    let err = e.load_state(&other.zero_state(2)).unwrap_err().to_string();
    assert!(err.contains("3 layers"), "{err}");
}

#[test]
fn unet_engine_equals_tch_step_from_zero_state_over_2000_samples() {
    let m = random_unet(MambaConfig::preset("tiny").unwrap(), &[4, 4], 2, 21);
    let x = tokens(3, 2000, 256);
    let reference = run_tch(&m, &x, &mut m.zero_state(3));
    for isa in isas() {
        let mut e = StepEngine::with_isa(&m, 3, isa).unwrap();
        assert_eq!(e.pooling(), vec![4, 4]);
        let err = rel_err(&run_engine(&mut e, &x), &reference);
        eprintln!("U-Net [4, 4] {isa}: engine vs tch step over 2000 samples: rel err {err:.2e}");
        assert!(
            err <= 1e-5,
            "U-Net {isa}: engine vs tch step: rel err {err:.2e}"
        );
    }
}

#[test]
fn unet_engine_equals_tch_step_after_prefill_inside_a_group() {
    // [4, 4] with the 2000 samples after a 301-sample prefill (mid-group at both levels), and
    // uneven levels at widths that are not multiples of 8 (padded pool layouts).
    for (name, config, pooling, blocks, prompt_len, len) in [
        (
            "tiny [4, 4]",
            MambaConfig::preset("tiny").unwrap(),
            vec![4, 4],
            2,
            301,
            2000,
        ),
        ("odd [2, 3, 2]", odd_config(), vec![2, 3, 2], 1, 45, 500),
    ] {
        let m = random_unet(config, &pooling, blocks, 22);
        let vocab = m.config.vocab_size;
        let x = tokens(2, prompt_len + len, vocab);
        let (prompt, rest) = (x.narrow(1, 0, prompt_len), x.narrow(1, prompt_len, len));
        let mut state = m.zero_state(2);
        let _ = tch::no_grad(|| m.prefill(&prompt, &mut state)).unwrap();
        assert!(
            state.pools.iter().all(|p| p.filled() > 0),
            "{name}: mid-group"
        );
        let engine_start = state.copy();
        let reference = run_tch(&m, &rest, &mut state);
        for isa in isas() {
            let mut e = StepEngine::with_isa(&m, 2, isa).unwrap();
            e.step(&[1u8, 2]).unwrap(); // some history that load_state must replace
            e.load_state(&engine_start).unwrap();
            let err = rel_err(&run_engine(&mut e, &rest), &reference);
            eprintln!("{name} {isa}: prefill + engine vs tch: rel err {err:.2e}");
            assert!(
                err <= 1e-5,
                "{name} {isa}: prefill + engine vs tch: rel err {err:.2e}"
            );
        }
    }
}

#[test]
fn unet_state_round_trips_through_tch() {
    let m = random_unet(odd_config(), &[2, 3], 1, 23);
    let x = tokens(2, 150, 250);
    let mut tch_state = m.zero_state(2);
    run_tch(&m, &x.narrow(1, 0, 101), &mut tch_state); // 101 = mid-group at both levels
    for isa in isas() {
        let mut e = StepEngine::with_isa(&m, 2, isa).unwrap();
        run_engine(&mut e, &x.narrow(1, 0, 101));
        let mine = e.state().unwrap();
        assert_eq!(mine.pools.len(), tch_state.pools.len());
        let pairs = mine
            .layers
            .iter()
            .flat_map(|l| [&l.conv, &l.ssm])
            .zip(tch_state.layers.iter().flat_map(|l| [&l.conv, &l.ssm]));
        let pools = mine
            .pools
            .iter()
            .flat_map(|p| [&p.buffer, &p.pending])
            .zip(tch_state.pools.iter().flat_map(|p| [&p.buffer, &p.pending]));
        for (a, b) in pairs.chain(pools) {
            assert_eq!(a.size(), b.size());
            let e = ((a - b).norm() / b.norm()).double_value(&[]);
            assert!(e <= 1e-5, "{isa}: state rel err {e:.2e}");
        }
        let mut other = StepEngine::with_isa(&m, 2, isa).unwrap();
        other.load_state(&mine).unwrap();
        let rest = x.narrow(1, 101, 49);
        assert_eq!(run_engine(&mut other, &rest), run_engine(&mut e, &rest));
    }
}

#[test]
fn plain_and_unet_states_do_not_mix() {
    let unet = random_unet(MambaConfig::preset("tiny").unwrap(), &[4, 4], 1, 24);
    let plain = random_model(MambaConfig::preset("tiny").unwrap(), 24);
    let mut e = StepEngine::new(&unet, 1).unwrap();
    let err = e.load_state(&plain.zero_state(1)).unwrap_err().to_string();
    assert!(err.contains("pooling levels"), "{err}");
    let mut p = StepEngine::new(&plain, 1).unwrap();
    let err = p.load_state(&unet.zero_state(1)).unwrap_err().to_string();
    assert!(err.contains("pooling levels"), "{err}");
    // a pool buffer as long as the group is refused
    let mut st = unet.zero_state(1);
    st.pools[0].buffer = Tensor::zeros([1, 4, 16], (Kind::Float, Device::Cpu));
    let err = e.load_state(&st).unwrap_err().to_string();
    assert!(err.contains("c < pool 4"), "{err}");
}

#[test]
fn generate_runs_the_unet_on_the_engine_as_the_tch_step_would() {
    use wavemamba::generate::{generate_tokens, run_sampling, GenerateOptions, TchStepper};
    let m = random_unet(MambaConfig::preset("tiny").unwrap(), &[4, 4], 1, 25);
    let prompt: Vec<u8> = Vec::<i64>::try_from(tokens(1, 301, 256).reshape([-1]))
        .unwrap()
        .into_iter()
        .map(|t| t as u8)
        .collect();
    let opts = GenerateOptions {
        samples: 300,
        num: 2,
        temperature: 1.0,
        top_p: 1.0,
        seed: 9,
        progress: false,
        threads: 1,
    };
    let got = generate_tokens(&m, &prompt, &opts).unwrap();
    assert_eq!(got.path, "engine");
    // The same continuation through the tch step: prefill [START] + prompt[..300], step from
    // the last prompt sample.
    let mut input = vec![wavemamba::model::START_TOKEN];
    input.extend(prompt[..300].iter().map(|&t| t as i64));
    let mut state = m.zero_state(1);
    let x = Tensor::from_slice(&input).unsqueeze(0);
    let _ = tch::no_grad(|| m.prefill_last(&x, &mut state)).unwrap();
    let mut stepper = TchStepper::new(&m, state.repeat_batch(2));
    let (reference, _) = run_sampling(&mut stepper, prompt[300], &opts, 16_000).unwrap();
    assert_eq!(got.tokens, reference);
}

/// `generate` splits the streams over engine threads (contiguous ranges, samplers seeded by the
/// global stream index): the tokens are the same for 1, 2 or 5 threads, and streams differ.
#[test]
fn generate_tokens_do_not_depend_on_the_engine_threads() {
    use wavemamba::generate::{generate_tokens, GenerateOptions};
    let m = tiny(31);
    let prompt: Vec<u8> = Vec::<i64>::try_from(tokens(1, 200, 256).reshape([-1]))
        .unwrap()
        .into_iter()
        .map(|t| t as u8)
        .collect();
    let run = |threads: usize| {
        let opts = GenerateOptions {
            samples: 400,
            num: 5,
            temperature: 1.0,
            top_p: 0.95,
            seed: 3,
            progress: false,
            threads,
        };
        generate_tokens(&m, &prompt, &opts).unwrap()
    };
    let one = run(1);
    assert_eq!(one.path, "engine");
    assert_eq!(one.tokens.len(), 5);
    assert!(one.tokens.iter().all(|t| t.len() == 400));
    assert_ne!(one.tokens[0], one.tokens[1], "streams should differ");
    assert_eq!(run(2).tokens, one.tokens);
    assert_eq!(run(5).tokens, one.tokens);
}
