//! The real-time rule (DESIGN.md §4): the bodies of the cpal data callbacks never allocate.
//! Every call below runs under `assert_no_alloc`, whose global allocator aborts the test
//! process on any allocation or free inside it.

use assert_no_alloc::{assert_no_alloc, AllocDisabler};
use wavemamba::pipeline::ring::{ring, Counters, InputCallback, OutputCallback};

#[global_allocator]
static ALLOC: AllocDisabler = AllocDisabler;

#[test]
fn callback_bodies_do_not_allocate() {
    let counters = Counters::new();
    let (in_prod, mut in_cons) = ring(1000);
    let (mut out_prod, out_cons) = ring(1000);
    let epoch = std::time::Instant::now();
    let mut input = InputCallback::new(in_prod, 2, counters.clone(), epoch);
    let mut output = OutputCallback::new(out_cons, 2, 100, counters.clone(), 48_000, 48_000, epoch);
    let stereo_f32: Vec<f32> = (0..960).map(|i| (i as f32 / 960.0) - 0.5).collect();
    let stereo_i16: Vec<i16> = (0..960).map(|i| (i * 64 - 30_000) as i16).collect();
    let mut dev_f32 = vec![0.0f32; 960];
    let mut dev_i16 = vec![0i16; 960];
    for x in 0..700 {
        out_prod.push(x as f32 / 1000.0).unwrap();
    }
    assert_no_alloc(|| {
        // normal callbacks, both sample formats
        input.process(&stereo_f32);
        input.process(&stereo_i16);
        output.process(&mut dev_f32);
        output.process(&mut dev_i16);
        // a full input ring (overrun) and an empty output ring (underrun)
        for _ in 0..4 {
            input.process(&stereo_f32);
        }
        for _ in 0..4 {
            output.process(&mut dev_f32);
        }
    });
    use std::sync::atomic::Ordering::Relaxed;
    assert!(counters.overruns.load(Relaxed) > 0);
    assert!(counters.underruns.load(Relaxed) > 0);
    assert_eq!(counters.played_frames.load(Relaxed), 700);
    assert_eq!(in_cons.slots(), 1000);
    // the data went through: first frame of the f32 block, downmixed
    let first = in_cons.pop().unwrap();
    assert!((first - (stereo_f32[0] + stereo_f32[1]) / 2.0).abs() < 1e-6);
}
