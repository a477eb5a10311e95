//! What the worker does with each sample at the model's rate: the [`Processor`]s of the live
//! modes (`denoise`, `continue`, and `passthrough` for measuring the pipeline itself).

use super::voice::VoiceDetector;
use crate::audio::mulaw;
use crate::model::{WaveMamba, START_TOKEN};
use crate::sample::Sampler;
use crate::stream::StepEngine;
use crate::{Error, Result};

/// One sample in, one sample out, at the model's sample rate, without allocating.
pub trait Processor: Send {
    /// Processes one input sample (in [-1, 1]) and returns the output sample.
    fn process(&mut self, x: f32) -> f32;
    /// A phase change since the last call (continue mode), for the control thread.
    fn take_phase_change(&mut self) -> Option<Phase> {
        None
    }
    /// The echo coupling the voice detector has learned (dB), once output has played.
    fn echo_coupling_db(&self) -> Option<f64> {
        None
    }
}

/// The identity: the pipeline without a model (resamplers, rings and devices only).
#[derive(Debug, Default)]
pub struct Passthrough;

impl Processor for Passthrough {
    fn process(&mut self, x: f32) -> f32 {
        x
    }
}

impl Processor for crate::stream::DenoiseEngine {
    fn process(&mut self, x: f32) -> f32 {
        crate::stream::DenoiseEngine::process(self, x)
    }
}

/// What continue mode is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Feeding the heard samples to the model (teacher forcing); the output is silent.
    Listen,
    /// Sampling the model's own continuation and playing it.
    Continue,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Listen => "listen",
            Phase::Continue => "continue",
        }
    }
}

/// Settings of continue mode. Durations are in milliseconds of audio.
#[derive(Debug, Clone)]
pub struct ContinueOptions {
    /// Silence (after voice) before the model speaks.
    pub silence_ms: f64,
    /// A 10 ms window is voiced when its RMS level reaches this (dBFS).
    pub threshold_db: f64,
    /// While the model's output plays (and 250 ms after), a window is voice only if it is also
    /// this many dB above the output's learned echo (see [`super::voice`]); `None`: no echo guard
    /// (the input cannot hear the output: a file, or nothing played).
    pub echo_margin_db: Option<f64>,
    /// Longest continuation before listening again.
    pub max_continue_ms: f64,
    /// A fixed cycle of phases replacing the voice detector (for reproducible tests).
    pub schedule: Option<Vec<(Phase, f64)>>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for ContinueOptions {
    fn default() -> Self {
        ContinueOptions {
            silence_ms: 600.0,
            threshold_db: -40.0,
            echo_margin_db: Some(6.0),
            max_continue_ms: 3000.0,
            schedule: None,
            temperature: 1.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl ContinueOptions {
    /// Checks the values a user can get wrong, naming the CLI option of a bad one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`].
    pub fn check(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidArgument { name, reason });
        if !(self.silence_ms >= 0.0 && self.silence_ms.is_finite()) {
            return bad(
                "--silence-ms",
                format!("must be ≥ 0, got {}", self.silence_ms),
            );
        }
        if !(self.max_continue_ms > 0.0 && self.max_continue_ms.is_finite()) {
            return bad(
                "--max-continue-ms",
                format!("must be > 0, got {}", self.max_continue_ms),
            );
        }
        if !self.threshold_db.is_finite() {
            return bad(
                "--threshold-db",
                format!("must be finite, got {}", self.threshold_db),
            );
        }
        if let Some(m) = self.echo_margin_db.filter(|m| !m.is_finite()) {
            return bad("--echo-margin-db", format!("must be finite, got {m}"));
        }
        crate::sample::check_sampling(self.temperature, self.top_p)
    }
}

/// Parses `listen:MS,continue:MS[,…]` (a cycle, repeated).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the bad item.
pub fn parse_schedule(s: &str) -> Result<Vec<(Phase, f64)>> {
    let bad = |reason: String| Error::InvalidArgument {
        name: "--schedule",
        reason,
    };
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, ms) = item
            .split_once(':')
            .ok_or_else(|| bad(format!("'{item}' is not PHASE:MS")))?;
        let phase = match name.trim() {
            "listen" => Phase::Listen,
            "continue" => Phase::Continue,
            other => return Err(bad(format!("unknown phase '{other}' (listen, continue)"))),
        };
        let ms: f64 = ms
            .trim()
            .parse()
            .ok()
            .filter(|m: &f64| *m > 0.0 && m.is_finite())
            .ok_or_else(|| bad(format!("'{item}': the duration must be a number of ms > 0")))?;
        out.push((phase, ms));
    }
    if out.is_empty() {
        return Err(bad("empty schedule".into()));
    }
    Ok(out)
}

/// Continue mode: while the input is voiced the model reads the heard samples (its state follows
/// them); after `silence_ms` of silence it samples its own continuation, one mu-law token per
/// sample, until voice returns or `max_continue_ms` passes (or as a fixed schedule says).
pub struct ContinueProcessor {
    engine: StepEngine,
    sampler: Sampler,
    /// The token the model reads next (the previous sample, heard or generated).
    prev: u8,
    phase: Phase,
    changed: Option<Phase>,
    detector: VoiceDetector,
    /// The sample returned last (what plays while the next one is heard).
    played: f32,
    silence_samples: u64,
    max_continue_samples: u64,
    /// Samples of silence so far while listening / spoken so far while continuing.
    count: u64,
    heard_voice: bool,
    /// (phase, samples) cycle and the position in it.
    schedule: Vec<(Phase, u64)>,
    at: usize,
    left: u64,
}

impl ContinueProcessor {
    /// A continue-mode processor on `model` (a language model, task `lm`), from a zero state.
    ///
    /// # Errors
    /// [`Error::Config`] for a model the fused engine cannot run or that is not a language
    /// model; [`Error::InvalidArgument`] for bad options.
    pub fn new(model: &WaveMamba, o: &ContinueOptions) -> Result<ContinueProcessor> {
        model.check_task(crate::config::Task::Lm)?;
        o.check()?;
        let rate = f64::from(model.audio.sample_rate);
        let samples = |ms: f64| (ms * rate / 1e3).round().max(1.0) as u64;
        let schedule: Vec<(Phase, u64)> = o
            .schedule
            .iter()
            .flatten()
            .map(|&(p, ms)| (p, samples(ms)))
            .collect();
        let (phase, left) = schedule.first().copied().unwrap_or((Phase::Listen, 0));
        Ok(ContinueProcessor {
            engine: StepEngine::new(model, 1)?,
            sampler: Sampler::new(o.seed, o.temperature, o.top_p),
            prev: START_TOKEN as u8,
            phase,
            changed: None,
            detector: VoiceDetector::new(samples(10.0) as usize, o.threshold_db, o.echo_margin_db),
            played: 0.0,
            silence_samples: samples(o.silence_ms),
            max_continue_samples: samples(o.max_continue_ms),
            count: 0,
            heard_voice: false,
            schedule,
            at: 0,
            left,
        })
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn set_phase(&mut self, p: Phase) {
        if p != self.phase {
            self.phase = p;
            self.changed = Some(p);
            self.count = 0;
        }
    }

    /// Advances the phase by one sample whose voice verdict is `voiced`.
    fn update_phase(&mut self, voiced: bool) {
        if !self.schedule.is_empty() {
            if self.left == 0 {
                self.at = (self.at + 1) % self.schedule.len();
                let (p, n) = self.schedule[self.at];
                self.left = n;
                if p != self.phase {
                    self.phase = p;
                    self.changed = Some(p);
                }
            }
            self.left -= 1;
            return;
        }
        match self.phase {
            Phase::Listen => {
                if voiced {
                    self.heard_voice = true;
                    self.count = 0;
                } else {
                    self.count += 1;
                    if self.heard_voice && self.count >= self.silence_samples {
                        self.set_phase(Phase::Continue);
                    }
                }
            }
            Phase::Continue => {
                self.count += 1;
                if voiced || self.count >= self.max_continue_samples {
                    self.heard_voice = voiced;
                    self.set_phase(Phase::Listen);
                }
            }
        }
    }
}

impl Processor for ContinueProcessor {
    fn process(&mut self, x: f32) -> f32 {
        let voiced = self.detector.push(x, self.played);
        self.update_phase(voiced);
        // Tokens are u8 and the vocabulary is 256, so the step cannot fail on its input.
        let Ok(logits) = self.engine.step(&[self.prev]) else {
            return 0.0;
        };
        let (token, out) = match self.phase {
            Phase::Listen => (mulaw::encode(x), 0.0),
            Phase::Continue => {
                let t = self.sampler.sample(logits) as u8;
                (t, mulaw::decode(t))
            }
        };
        self.prev = token;
        self.played = out;
        out
    }

    fn take_phase_change(&mut self) -> Option<Phase> {
        self.changed.take()
    }

    fn echo_coupling_db(&self) -> Option<f64> {
        self.detector.coupling_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_reject() {
        assert_eq!(
            parse_schedule("listen:500, continue:250").unwrap(),
            vec![(Phase::Listen, 500.0), (Phase::Continue, 250.0)]
        );
        for bad in ["", "listen", "talk:5", "listen:-1", "listen:x"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }

    /// A random `tiny` model for `task`.
    fn tiny(task: crate::config::Task) -> WaveMamba {
        let audio = crate::config::AudioConfig {
            task,
            ..Default::default()
        };
        let config = crate::config::MambaConfig::preset("tiny").unwrap();
        WaveMamba::new(config, audio, tch::Device::Cpu).unwrap()
    }

    /// Voice, then silence: the model speaks after `silence_ms`, stops when voice returns, and
    /// never speaks longer than `max_continue_ms`.
    #[test]
    fn continue_mode_follows_the_voice() {
        let model = tiny(crate::config::Task::Lm);
        let o = ContinueOptions {
            silence_ms: 100.0,
            max_continue_ms: 300.0,
            ..ContinueOptions::default()
        };
        let mut p = ContinueProcessor::new(&model, &o).unwrap();
        let ms = |m: usize| m * 16; // samples at 16 kHz
        let voice = |i: usize| 0.3 * ((i as f32) * 0.2).sin();
        let mut phases = Vec::new();
        // 200 ms voice, 600 ms silence, 200 ms voice, 100 ms silence
        for i in 0..ms(1100) {
            let x = if i < ms(200) || (ms(800)..ms(1000)).contains(&i) {
                voice(i)
            } else {
                0.0
            };
            let y = p.process(x);
            phases.push((p.phase(), y));
        }
        let at = |m: usize| phases[ms(m)].0;
        assert_eq!(at(150), Phase::Listen); // voice
        assert_eq!(at(250), Phase::Listen); // silence shorter than silence_ms
        assert_eq!(at(350), Phase::Continue); // after 100 ms of silence
        assert_eq!(at(650), Phase::Listen); // max_continue_ms reached at ~610 ms
        assert_eq!(at(900), Phase::Listen); // voice again
        assert_eq!(at(1050), Phase::Listen); // 50 ms of silence only
        let speaking: Vec<f32> = phases[ms(320)..ms(600)].iter().map(|p| p.1).collect();
        assert!(speaking.iter().any(|&y| y != 0.0), "the model said nothing");
        assert!(
            phases[..ms(300)].iter().all(|p| p.1 == 0.0),
            "listening is silent"
        );
        // an LM is required
        let den = tiny(crate::config::Task::Denoise);
        assert!(ContinueProcessor::new(&den, &o).is_err());
    }

    /// On speakers: the microphone also hears the model's output (40 ms later, −10 dB). The
    /// model speaks after the silence and is not stopped by its own echo (only by
    /// `max_continue_ms`), but a person talking over it stops it.
    #[test]
    fn continue_mode_on_speakers_ignores_its_echo_but_not_a_barge_in() {
        let model = tiny(crate::config::Task::Lm);
        let o = ContinueOptions {
            silence_ms: 100.0,
            max_continue_ms: 1000.0,
            ..ContinueOptions::default()
        };
        let ms = |m: usize| m * 16;
        let person = |i: usize| {
            let amp = if i < ms(200) {
                0.3
            } else if (ms(900)..ms(1100)).contains(&i) {
                0.7
            } else {
                0.0
            };
            amp * ((i as f32) * 0.2).sin()
        };
        // 1.3 s in a room where the microphone hears the output 40 ms later at −10 dB.
        let room = |o: &ContinueOptions| {
            let mut p = ContinueProcessor::new(&model, o).unwrap();
            let (mut played, mut phases) = (Vec::new(), Vec::new());
            for i in 0..ms(1300) {
                let echo = if i >= ms(40) {
                    0.3 * played[i - ms(40)]
                } else {
                    0.0
                };
                played.push(p.process(person(i) + echo));
                phases.push(p.phase());
            }
            (played, phases)
        };
        let (played, phases) = room(&o);
        assert_eq!(phases[ms(290)], Phase::Listen);
        assert!(
            phases[ms(310)..ms(900)]
                .iter()
                .all(|&ph| ph == Phase::Continue),
            "the model stopped at its own echo"
        );
        assert!(played[ms(310)..ms(900)].iter().any(|&y| y.abs() > 0.1));
        assert_eq!(
            phases[ms(930)],
            Phase::Listen,
            "the barge-in did not stop it"
        );
        // Without the guard (as for a file input) the echo stops the model at once.
        let unguarded = ContinueOptions {
            echo_margin_db: None,
            ..o.clone()
        };
        let (_, phases) = room(&unguarded);
        assert!(
            phases[ms(400)..ms(900)].contains(&Phase::Listen),
            "the unguarded model was not stopped by its echo"
        );
        let bad = ContinueOptions {
            echo_margin_db: Some(f64::NAN),
            ..o
        };
        assert!(ContinueProcessor::new(&model, &bad).is_err());
    }
}
