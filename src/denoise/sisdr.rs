//! Scale-invariant signal-to-distortion ratio (Le Roux et al. 2019), the denoiser's score.

/// SI-SDR of `estimate` against `reference` in dB, both made zero-mean first:
/// `s = (⟨ŝ, s⟩ / ‖s‖²) s`, `SI-SDR = 10 log10(‖s‖² / ‖ŝ − s‖²)`, over the common length.
/// A silent reference gives −∞ (nothing to recover); a perfect estimate +∞.
pub fn si_sdr(estimate: &[f32], reference: &[f32]) -> f64 {
    let n = estimate.len().min(reference.len());
    if n == 0 {
        return f64::NEG_INFINITY;
    }
    let mean = |x: &[f32]| x[..n].iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let (me, mr) = (mean(estimate), mean(reference));
    let (mut dot, mut rr) = (0.0f64, 0.0f64);
    for i in 0..n {
        let (e, r) = (f64::from(estimate[i]) - me, f64::from(reference[i]) - mr);
        dot += e * r;
        rr += r * r;
    }
    if rr == 0.0 {
        return f64::NEG_INFINITY;
    }
    let alpha = dot / rr;
    let (mut target, mut noise) = (0.0f64, 0.0f64);
    for i in 0..n {
        let (e, r) = (f64::from(estimate[i]) - me, f64::from(reference[i]) - mr);
        let t = alpha * r;
        target += t * t;
        noise += (e - t) * (e - t);
    }
    10.0 * (target / noise).log10()
}

#[cfg(test)]
mod tests {
    use super::si_sdr;

    #[test]
    fn known_values() {
        let w = std::f32::consts::TAU / 100.0; // ten whole periods in 1000 samples
        let s: Vec<f32> = (0..1000).map(|i| (i as f32 * w).sin()).collect();
        // Scaling and an offset do not change it: infinite for a perfect estimate.
        let scaled: Vec<f32> = s.iter().map(|v| 3.0 * v + 0.5).collect();
        assert!(si_sdr(&scaled, &s) > 100.0);
        // An orthogonal disturbance of equal energy: 0 dB; a quarter of the energy: 6.02 dB.
        let c: Vec<f32> = (0..1000).map(|i| (i as f32 * w).cos()).collect();
        let half: Vec<f32> = s.iter().zip(&c).map(|(a, b)| a + 0.5 * b).collect();
        let db = si_sdr(&half, &s);
        assert!((db - 6.0206).abs() < 1e-3, "{db}");
        assert_eq!(si_sdr(&s, &vec![0.0; 1000]), f64::NEG_INFINITY);
    }
}
