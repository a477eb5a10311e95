//! Voice activity for continue mode: the mean-square level of 10 ms windows against a threshold,
//! with an echo guard. On speakers the microphone hears the model's own continuation; without the
//! guard that echo counts as voice and the model interrupts itself at once. So while output plays
//! (and for [`TAIL`] windows after it, the device latency and the room's reverberation), a window
//! is voice only if it is also louder than the echo of that output can be: `margin` × the learned
//! echo coupling (heard / played energy, from the windows that are not voice) × the loudest
//! played window of the tail. A speaker who talks over the model (barge-in) still stops it.

/// Played windows the guard looks back over: 250 ms of 10 ms windows.
pub const TAIL: usize = 25;

/// Starting echo coupling (heard / played energy): 0 dB, until the windows teach a lower one.
const START_COUPLING: f64 = 1.0;
/// The coupling is the largest heard / played ratio of the last LEARNED non-voice windows heard
/// while output played (0.5 s of them): the loudest echo, forgotten after half a second of
/// playing and kept through the output's pauses (nothing is learned while it is silent). An
/// exponentially decaying estimate either stayed too high for seconds or sank in the pauses
/// until 0 dB echo stopped the model (PulseAudio loopbacks, BENCHMARKS.md).
const LEARNED: usize = 50;
/// A window is learned only if within this factor (+1.8 dB) of the coupling: louder ones that are
/// not voice yet may be a speaker starting to talk over the output (+3 dB per window and more),
/// whom learning them would lock out.
const RISE_SPAN: f64 = 1.5;

/// The voice verdict, updated at the end of each window of `window` samples.
#[derive(Debug, Clone)]
pub struct VoiceDetector {
    window: usize,
    /// Mean square a window needs to be voice.
    threshold: f64,
    /// Energy ratio over the expected echo that a window needs while output plays; `None`: no
    /// echo guard (the threshold alone decides).
    margin: Option<f64>,
    heard: f64,
    played: f64,
    n: usize,
    /// Played mean square of the last TAIL windows (a ring at `at`).
    recent: [f64; TAIL],
    at: usize,
    /// Heard / played ratios of the last LEARNED windows learned from (a ring at `next`).
    ratios: [f64; LEARNED],
    next: usize,
    voiced: bool,
}

impl VoiceDetector {
    /// Windows of `window` samples; voice from `threshold_db` dBFS (mean square); while output
    /// plays, `margin_db` dB above the expected echo too (`None`: no echo guard).
    pub fn new(window: usize, threshold_db: f64, margin_db: Option<f64>) -> VoiceDetector {
        VoiceDetector {
            window: window.max(1),
            threshold: 10f64.powf(threshold_db / 10.0),
            margin: margin_db.map(|db| 10f64.powf(db / 10.0)),
            heard: 0.0,
            played: 0.0,
            n: 0,
            recent: [0.0; TAIL],
            at: 0,
            ratios: [START_COUPLING; LEARNED],
            next: 0,
            voiced: false,
        }
    }

    /// Feeds one heard sample and the sample played at the same time; returns the verdict of the
    /// last complete window.
    pub fn push(&mut self, heard: f32, played: f32) -> bool {
        self.heard += f64::from(heard) * f64::from(heard);
        self.played += f64::from(played) * f64::from(played);
        self.n += 1;
        if self.n == self.window {
            let w = self.window as f64;
            let (heard, played) = (self.heard / w, self.played / w);
            (self.heard, self.played, self.n) = (0.0, 0.0, 0);
            self.recent[self.at] = played;
            self.at = (self.at + 1) % TAIL;
            self.voiced = self.judge(heard, played);
        }
        self.voiced
    }

    /// The verdict on a window heard at mean square `heard` while the last window played
    /// `played`; learns the coupling from the non-voice windows heard while output plays.
    fn judge(&mut self, heard: f64, played: f64) -> bool {
        let loud = heard >= self.threshold;
        let echo = self.recent.iter().copied().fold(0.0, f64::max);
        let Some(margin) = self.margin.filter(|_| echo > 0.0) else {
            return loud;
        };
        let coupling = self.coupling();
        let voiced = loud && heard > margin * coupling * echo;
        // Only while output still plays: in the tail after it, the heard echo fades while the
        // reference does not, which would teach a coupling far too low for the next output.
        let ratio = heard / echo;
        if !voiced && played >= 0.25 * echo && ratio <= RISE_SPAN * coupling {
            self.ratios[self.next] = ratio;
            self.next = (self.next + 1) % LEARNED;
        }
        voiced
    }

    /// The learned echo coupling (heard / played energy).
    pub fn coupling(&self) -> f64 {
        self.ratios.iter().copied().fold(0.0, f64::max)
    }

    /// [`VoiceDetector::coupling`] in dB, once a window has been learned.
    pub fn coupling_db(&self) -> Option<f64> {
        let learned = self.ratios.iter().any(|&r| r != START_COUPLING);
        learned.then(|| 10.0 * self.coupling().max(1e-12).log10())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIN: usize = 160; // 10 ms at 16 kHz

    /// A speech-like signal: a 180 Hz buzz with a 4 Hz syllable envelope, RMS about `rms`.
    fn talk(i: usize, rms: f32, seed: u32) -> f32 {
        let t = i as f32 / 16_000.0;
        let env = 0.6 + 0.4 * (t * 4.0 * std::f32::consts::TAU + seed as f32).sin();
        let buzz = (t * 180.0 * std::f32::consts::TAU).sin()
            + 0.5 * (t * 360.0 * std::f32::consts::TAU + seed as f32).sin();
        rms * 1.3 * env * buzz
    }

    /// What the microphone hears of `played`: 40 ms later at −12 dB, plus a reverberant tail
    /// (−20 dB at 70 ms, −26 dB at 110 ms).
    fn echo(played: &[f32], i: usize) -> f32 {
        let at = |d: usize| if i >= d { played[i - d] } else { 0.0 };
        0.25 * at(640) + 0.1 * at(1120) + 0.05 * at(1760)
    }

    #[test]
    fn without_output_the_threshold_decides_per_window() {
        let mut d = VoiceDetector::new(4, -40.0, Some(6.0));
        assert!(![0.1f32, 0.1, 0.1].iter().any(|&x| d.push(x, 0.0)));
        assert!(d.push(0.1, 0.0)); // end of a loud window (−20 dBFS)
        assert!([0.0f32; 3].iter().all(|&x| d.push(x, 0.0))); // the verdict holds in a window
        assert!(!d.push(0.0, 0.0));
        assert!(![0.005f32; 4].iter().any(|&x| d.push(x, 0.0))); // −46 dBFS: below
    }

    /// 2 s of output on speakers, its echo only, then a person talking over it at the output's
    /// level from 1.2 s: the echo is never voice (the old detector took it for voice from the
    /// first window: −32 dBFS > −40), the barge-in is voice within 20 ms, and so is speech
    /// after the output stopped, once the tail has passed.
    #[test]
    fn echo_of_the_output_is_not_voice_but_talking_over_it_is() {
        let mut d = VoiceDetector::new(WIN, -40.0, Some(6.0));
        assert_eq!(d.coupling_db(), None, "nothing learned yet");
        let n = 48_000; // 3 s
        let played: Vec<f32> = (0..n)
            .map(|i| if i < 32_000 { talk(i, 0.1, 7) } else { 0.0 })
            .collect();
        let person = |i: usize| match i {
            19_200..=25_600 | 40_000..=44_000 => talk(i, 0.1, 3),
            _ => 0.0,
        };
        let mut verdict = Vec::with_capacity(n);
        for i in 0..n {
            verdict.push(d.push(echo(&played, i) + person(i), played[i]));
        }
        let voiced = |from: usize, to: usize| verdict[from..to].iter().any(|&v| v);
        assert!(!voiced(0, 19_200), "own echo taken for voice");
        assert!(verdict[19_200 + 320], "barge-in missed");
        assert!(
            !voiced(26_400, 40_000),
            "echo (or its tail) taken for voice"
        );
        assert!(verdict[40_000 + 320], "speech after the output missed");
        assert!(
            (0.01..0.3).contains(&d.coupling()),
            "learned coupling {} (the echo's energy is ~0.07 of the output's)",
            d.coupling()
        );
        let db = d.coupling_db().unwrap();
        assert!((db - 10.0 * d.coupling().log10()).abs() < 1e-9, "{db} dB");
    }

    /// A speaker who starts softly (+3 dB per 10 ms window from the echo's level) over steady
    /// output is still heard once the coupling has been learned (2 s at −10 dB): the windows on
    /// the way up are not learned as echo.
    #[test]
    fn a_gradual_barge_in_is_not_learned_as_echo() {
        let mut d = VoiceDetector::new(WIN, -60.0, Some(6.0));
        let tone = |i: usize, a: f32| a * (i as f32 * 0.11).sin();
        let mut verdicts = Vec::new();
        for w in 0..250 {
            // the person: silent for 2 s, then from the echo's level up by 3 dB a window
            let gain = if w < 200 {
                0.0
            } else {
                0.3 * 2f32.sqrt().powi((w - 200).min(12) as i32)
            };
            let mut v = false;
            for k in 0..WIN {
                let i = w * WIN + k;
                let heard = 0.3 * tone(i, 1.0) + gain * (i as f32 * 0.37).sin();
                v = d.push(heard, tone(i, 0.1) * 10.0);
            }
            verdicts.push(v);
        }
        assert!(!verdicts[..200].iter().any(|&v| v), "echo taken for voice");
        let first = verdicts.iter().position(|&v| v);
        assert!(
            first.is_some_and(|w| w <= 206),
            "voice found at window {first:?} (onset at 200)"
        );
    }
}
