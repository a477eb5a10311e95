//! Tests of the resamplers: reuse, delays and alignment pads against rubato.

use super::*;

/// The centre of mass (in samples) of a non-negative pulse.
fn centroid(y: &[f32]) -> f64 {
    let s: f64 = y.iter().map(|&v| f64::from(v)).sum();
    y.iter()
        .enumerate()
        .map(|(i, &v)| i as f64 * f64::from(v))
        .sum::<f64>()
        / s
}

#[test]
fn a_reused_resampler_gives_the_same_output() {
    let x: Vec<f32> = (0..5000)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let a = resample(&x, 44_100, 16_000).unwrap();
    let _ = resample(&x[..777], 44_100, 16_000).unwrap();
    assert_eq!(resample(&x, 44_100, 16_000).unwrap(), a);
}

/// A short filter's delay is right too: a streamed Gaussian, its delay skipped, is centred
/// where it belongs.
#[test]
fn short_filters_report_their_delay() {
    for (from, to) in [(48_000u32, 16_000u32), (16_000, 48_000), (44_100, 16_000)] {
        let mut r = StreamingResampler::with_taps(from, to, 48, 64).unwrap();
        let m = 1000.0f64;
        let x: Vec<f32> = (0..4096)
            .map(|i| (-((i as f64 - m) / 40.0).powi(2)).exp() as f32)
            .collect();
        let mut y = Vec::new();
        r.process(&x, &mut y).unwrap();
        r.flush(&mut y).unwrap();
        let y = &y[r.delay_samples()..];
        let c = centroid(y);
        let expect = m * f64::from(to) / f64::from(from);
        assert!((c - expect).abs() < 0.05, "{from}->{to}: {c} vs {expect}");
    }
    assert!(StreamingResampler::with_taps(48_000, 16_000, 48, 60).is_err());
}

#[test]
fn alignment_pads() {
    assert_eq!(align_pad(16_000, 48_000), 0);
    assert_eq!(align_pad(48_000, 16_000), 1); // 129 = 43·3
    assert_eq!(align_pad(16_000, 44_100), 32); // 160
    assert_eq!(align_pad(44_100, 16_000), 313); // 441
    for (f, t) in [
        (16_000, 44_100),
        (44_100, 16_000),
        (22_050, 16_000),
        (8_000, 11_025),
    ] {
        let p = align_pad(f, t);
        assert_eq!((p + HALF_TAPS) * u64::from(t) % u64::from(f), 0, "{f}->{t}");
    }
}

/// The delay formula matches rubato: the centroid of a resampled Gaussian lands where the
/// formula puts it (less rubato's offset of one oversampling step), to 0.002 samples.
#[test]
fn delay_matches_rubato() {
    for (from, to) in [
        (16_000u32, 44_100u32),
        (44_100, 16_000),
        (16_000, 48_000),
        (48_000, 16_000),
    ] {
        let m = 3000.0f64;
        let x: Vec<f32> = (0..8192)
            .map(|i| (-((i as f64 - m) / 40.0).powi(2)).exp() as f32)
            .collect();
        let y = resample(&x, from, to).unwrap();
        let c = centroid(&y);
        let expect = m * f64::from(to) / f64::from(from);
        // rubato's one-step table offset, in output samples (see `sinc_parameters`).
        let offset = f64::from(to) / f64::from(from) / OVERSAMPLING as f64;
        let err = c - (expect - offset);
        assert!(
            err.abs() < 0.002,
            "{from}->{to}: centroid {c}, expected {expect} - {offset}"
        );
    }
}
