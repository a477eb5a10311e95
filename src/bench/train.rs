//! `wavemamba bench train`: training throughput (samples/s) of a model size on a device, for the
//! language model's loss or the denoiser's, on synthetic audio (data loading excluded).

use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::config::{AudioConfig, MambaConfig, Task};
use crate::denoise::loss::denoise_loss;
use crate::model::loss::mean_nll_nats;
use crate::model::WaveMamba;
use crate::train::make_optimizer;
use crate::{Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct TrainBench {
    pub config: MambaConfig,
    /// `audio.task` picks the loss: next-sample NLL (lm) or the denoiser's (`denoise_loss`).
    pub audio: AudioConfig,
    pub device: Device,
    pub batch: i64,
    pub len: i64,
    pub steps: usize,
    pub warmup: usize,
    /// bf16 autocast (CUDA only, as `train --precision bf16`).
    pub bf16: bool,
    /// Profile 2 more steps after the timed ones and write their Chrome trace here.
    pub trace: Option<std::path::PathBuf>,
}

/// Measured throughput.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    /// "lm" or "denoise".
    pub task: String,
    pub parameters: i64,
    pub device: String,
    pub threads: i32,
    pub batch: i64,
    pub len: i64,
    /// "bf16" (autocast) or "fp32".
    pub precision: String,
    pub ms_per_step: f64,
    pub samples_per_s: f64,
    /// Seconds of 16 kHz (model rate) audio trained per second of wall time.
    pub audio_seconds_per_s: f64,
}

/// Runs `warmup + steps` full training steps (forward, backward, AdamW) and times the last `steps`.
///
/// # Errors
/// Invalid sizes, kernel errors.
pub fn run(b: &TrainBench) -> Result<TrainReport> {
    if b.batch < 1 || b.len < 2 || b.steps < 1 {
        return Err(Error::InvalidArgument {
            name: "bench train",
            reason: "need batch ≥ 1, len ≥ 2, steps ≥ 1".into(),
        });
    }
    tch::manual_seed(0);
    let model = WaveMamba::new(b.config.clone(), b.audio.clone(), b.device)?;
    let mut opt = make_optimizer(&model);
    // A noisy tone: the LM's input; the denoiser's clean target, heard through white noise.
    let randn = || Tensor::randn([b.batch, b.len], (Kind::Float, Device::Cpu));
    let t = Tensor::arange(b.len, (Kind::Float, Device::Cpu)).unsqueeze(0) * 0.03;
    let clean = (t.sin() * 0.5 + randn() * 0.05).clamp(-1.0, 1.0);
    let mulaw = |x: &Tensor| -> Result<Tensor> {
        Ok(crate::ops::mulaw_encode(x, 255)?.to_device(b.device))
    };
    let batch = match b.audio.task {
        Task::Lm => vec![mulaw(&clean)?],
        Task::Denoise => {
            let noisy = (&clean + randn() * 0.2).clamp(-1.0, 1.0);
            vec![mulaw(&noisy)?, mulaw(&clean)?, clean.to_device(b.device)]
        }
    };
    let loss_of = || match b.audio.task {
        Task::Lm => mean_nll_nats(&model, &batch[0]),
        Task::Denoise => denoise_loss(&model, &batch[0], &batch[1], &batch[2]),
    };
    let bf16 = b.bf16 && b.device.is_cuda();
    let mut one_step = || -> Result<()> {
        let loss = if bf16 {
            crate::ops::autocast_bf16(loss_of)?.to_kind(Kind::Float)
        } else {
            loss_of()?
        };
        loss.backward();
        // As `train` does: the update guarded on the device, one host sync per step.
        let norm = opt.clip_grad_norm(1.0)?;
        opt.step(1e-3, Some(&(loss.detach().to_kind(Kind::Double) + &norm)))?;
        let _ = (loss.double_value(&[]), norm.double_value(&[]));
        Ok(())
    };
    for _ in 0..b.warmup {
        one_step()?;
    }
    let sync = || {
        if let Device::Cuda(i) = b.device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    sync();
    let start = Instant::now();
    for _ in 0..b.steps {
        one_step()?;
    }
    sync();
    let secs = start.elapsed().as_secs_f64() / b.steps as f64;
    if let Some(path) = &b.trace {
        crate::ops::profiler::profile(path, b.device.is_cuda(), || {
            for _ in 0..2 {
                one_step()?;
            }
            sync();
            Ok(())
        })?;
    }
    let samples = (b.batch * b.len) as f64 / secs;
    Ok(TrainReport {
        task: format!("{:?}", b.audio.task).to_lowercase(),
        parameters: model.num_parameters(),
        device: format!("{:?}", b.device).to_lowercase(),
        threads: tch::get_num_threads(),
        batch: b.batch,
        len: b.len,
        precision: if bf16 { "bf16" } else { "fp32" }.into(),
        ms_per_step: secs * 1e3,
        samples_per_s: samples,
        audio_seconds_per_s: samples / b.audio.sample_rate as f64,
    })
}

impl std::fmt::Display for TrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training {} ({} parameters) on {} ({} threads, {}), batch {} × {}: {:.1} ms/step, {:.0} samples/s ({})",
            self.task, self.parameters, self.device, self.threads, self.precision, self.batch, self.len, self.ms_per_step, self.samples_per_s,
            crate::rtf::speed_text(1.0 / self.audio_seconds_per_s)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::TrainReport;

    #[test]
    fn a_slow_training_speed_reads_slower_than_real_time() {
        let r = TrainReport {
            task: "lm".into(),
            parameters: 1,
            device: "cpu".into(),
            threads: 2,
            batch: 1,
            len: 512,
            precision: "fp32".into(),
            ms_per_step: 40.0,
            samples_per_s: 12_800.0,
            audio_seconds_per_s: 0.8,
        };
        let text = r.to_string();
        assert!(text.ends_with("(1.25× slower than real time)"), "{text}");
    }
}
