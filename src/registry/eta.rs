//! Estimates of the seconds a job has left, from the length of its audio
//! and how fast each stage has run on this machine.
//!
//! Each finished job teaches [`Speeds`] the seconds of work each stage
//! spent per second of audio (an exponential moving average, so the
//! estimate follows the machine's load and the configured model). A job's
//! expected time is the sum over the stages that run one after the other
//! plus the longer of the two that run side by side (transcription and
//! diarization); what is left is that minus the time since the job was
//! admitted. The speeds are kept in the registry's database, so a restarted
//! server estimates from its first job on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Weight of the newest job in the moving average.
const ALPHA: f64 = 0.3;

/// Seconds of work per second of audio, per stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Speeds {
    pub per_stage: BTreeMap<String, f64>,
}

/// How the pipeline's stages follow each other: `side_by_side` run at the
/// same time (the job waits for the longer), every other stage in turn.
pub struct Shape {
    pub in_turn: &'static [&'static str],
    pub side_by_side: &'static [&'static str],
}

impl Speeds {
    /// Learns from a finished job: `timings` (stage, seconds of work) for
    /// `audio_seconds` of audio.
    pub fn learn(&mut self, timings: &[(&'static str, f64)], audio_seconds: f64) {
        if !(audio_seconds > 0.0) {
            return;
        }
        for (stage, seconds) in timings {
            let rate = seconds / audio_seconds;
            if !rate.is_finite() {
                continue;
            }
            self.per_stage
                .entry(stage.to_string())
                .and_modify(|r| *r = ALPHA * rate + (1.0 - ALPHA) * *r)
                .or_insert(rate);
        }
    }

    /// Seconds a job of `audio_seconds` is expected to take once admitted;
    /// None until every stage has been measured.
    pub fn expected(&self, shape: &Shape, audio_seconds: f64) -> Option<f64> {
        let rate = |s: &&str| self.per_stage.get(*s).copied();
        let in_turn: f64 = shape.in_turn.iter().map(rate).sum::<Option<f64>>()?;
        let side = shape
            .side_by_side
            .iter()
            .map(rate)
            .collect::<Option<Vec<f64>>>()?
            .into_iter()
            .fold(0.0, f64::max);
        Some((in_turn + side) * audio_seconds)
    }
}

/// Seconds left of a job expected to take `expected` seconds, `elapsed`
/// seconds after it was admitted, at `progress` percent. Past the
/// expectation, the time so far is extrapolated from the progress instead
/// (never a zero while the job still runs).
pub fn remaining(expected: f64, elapsed: f64, progress: u8) -> f64 {
    let left = expected - elapsed;
    if left >= 1.0 {
        return left;
    }
    let done = f64::from(progress.clamp(1, 99)) / 100.0;
    (elapsed * (1.0 - done) / done).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        in_turn: &["decoding", "alignment"],
        side_by_side: &["transcription", "diarization"],
    };

    #[test]
    fn the_longer_of_the_side_by_side_stages_counts_and_the_average_moves() {
        let mut speeds = Speeds::default();
        assert_eq!(speeds.expected(&SHAPE, 60.0), None, "nothing measured");
        speeds.learn(
            &[
                ("decoding", 1.0),
                ("transcription", 10.0),
                ("diarization", 5.0),
                ("alignment", 1.0),
            ],
            100.0,
        );
        // 0.01 + 0.01 in turn, max(0.1, 0.05) beside: 0.12 s per audio second
        let e = speeds.expected(&SHAPE, 60.0).unwrap();
        assert!((e - 7.2).abs() < 1e-9, "{e}");
        speeds.learn(&[("transcription", 20.0)], 100.0);
        let t = speeds.per_stage["transcription"];
        assert!((t - (0.3 * 0.2 + 0.7 * 0.1)).abs() < 1e-12, "{t}");
        speeds.learn(&[("decoding", 1.0)], 0.0);
        assert_eq!(
            speeds.per_stage["decoding"], 0.01,
            "no audio: nothing learnt"
        );
    }

    #[test]
    fn a_job_past_its_expected_time_is_extrapolated_from_its_progress() {
        assert_eq!(remaining(30.0, 10.0, 50), 20.0);
        assert!((remaining(30.0, 40.0, 80) - 10.0).abs() < 1e-9);
        assert_eq!(
            remaining(30.0, 40.0, 100),
            1.0,
            "at least a second while it runs"
        );
        assert!(remaining(30.0, 40.0, 0) >= 1.0);
    }
}
