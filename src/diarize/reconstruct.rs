//! From per-window local speaker activity and the global cluster of each
//! local speaker to one timeline of speaker turns, keeping overlapping
//! speech (pyannote 3.1's reconstruction): per frame, the number of active
//! speakers is the rounded mean over the windows covering it, and that many
//! clusters with the highest mean activity are marked active.

use super::rttm::Turn;

/// Frame grid of the segmentation model, in samples.
#[derive(Debug, Clone, Copy)]
pub struct FrameGrid {
    pub step: usize,
    pub center_offset: usize,
    pub sample_rate: usize,
}

impl FrameGrid {
    /// Centre time (seconds) of global frame `g`.
    pub fn center(&self, g: usize) -> f64 {
        (self.center_offset + g * self.step) as f64 / self.sample_rate as f64
    }
}

/// One segmentation window: where it starts, its binarised `[frames][cols]`
/// activity, and the cluster of each column (None: not assigned). A column
/// is a local speaker, or a piece of one (each piece embedded on its own).
#[derive(Debug, Clone)]
pub struct WindowActivity {
    pub start_sample: usize,
    pub cols: usize,
    pub activity: Vec<f32>,
    pub clusters: Vec<Option<usize>>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReconstructOptions {
    /// Turns shorter than this (seconds) are dropped.
    pub min_duration_on: f64,
    /// Gaps shorter than this (seconds) within one speaker are filled.
    pub min_duration_off: f64,
}

/// Who is speaking, frame by frame, on the segmentation model's grid: what
/// the turns were cut from, kept for decisions finer than turn edges (which
/// speaker a word in overlapped speech belongs to).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeakerActivity {
    /// Seconds between frames.
    pub frame_step: f64,
    /// Centre time (seconds) of frame 0.
    pub first_center: f64,
    /// The label of each column, as in the turns.
    pub speakers: Vec<String>,
    /// `[frames × speakers]`: the share of the windows covering a frame in
    /// which that speaker is active there (0..1).
    pub scores: Vec<f32>,
    /// Speakers active at each frame, as the reconstruction decided.
    pub count: Vec<u8>,
}

impl SpeakerActivity {
    pub fn frames(&self) -> usize {
        self.count.len()
    }

    /// Frames whose centres fall in `[start, end)`; at least the nearest
    /// frame when the interval is shorter than a frame. Empty without frames.
    pub fn frame_range(&self, start: f64, end: f64) -> std::ops::Range<usize> {
        let n = self.frames();
        if n == 0 || self.frame_step <= 0.0 {
            return 0..0;
        }
        let idx = |t: f64| ((t - self.first_center) / self.frame_step).max(0.0);
        let a = (idx(start).ceil() as usize).min(n);
        let b = (idx(end).ceil() as usize).min(n);
        if b > a {
            a..b
        } else {
            let c = (idx(0.5 * (start + end)).round() as usize).min(n - 1);
            c..c + 1
        }
    }

    /// Mean score of each speaker over `[start, end)`, in column order.
    pub fn mean_scores(&self, start: f64, end: f64) -> Vec<f32> {
        let k = self.speakers.len();
        let r = self.frame_range(start, end);
        let mut out = vec![0.0f32; k];
        if r.is_empty() {
            return out;
        }
        for g in r.clone() {
            for (o, v) in out.iter_mut().zip(&self.scores[g * k..(g + 1) * k]) {
                *o += v;
            }
        }
        out.iter_mut().for_each(|v| *v /= r.len() as f32);
        out
    }

    /// Share of the frames in `[start, end)` where two or more people speak.
    pub fn overlap_share(&self, start: f64, end: f64) -> f32 {
        let r = self.frame_range(start, end);
        if r.is_empty() {
            return 0.0;
        }
        r.clone().filter(|&g| self.count[g] >= 2).count() as f32 / r.len() as f32
    }

    /// Shifts every time by `dt` seconds.
    pub fn shift(&mut self, dt: f64) {
        self.first_center += dt;
    }
}

/// The turns and the frame activity they were cut from.
#[derive(Debug, Clone, Default)]
pub struct Reconstruction {
    pub turns: Vec<Turn>,
    pub activity: SpeakerActivity,
    /// The cluster each output speaker came from: `SPEAKER_{i}` is cluster `clusters[i]`.
    pub clusters: Vec<usize>,
}

/// Speaker turns labelled `SPEAKER_00`, `SPEAKER_01`, ... in order of first appearance.
pub fn reconstruct(
    windows: &[WindowActivity],
    num_clusters: usize,
    grid: FrameGrid,
    total_samples: usize,
    opts: ReconstructOptions,
) -> Reconstruction {
    if windows.is_empty() || num_clusters == 0 {
        return Reconstruction::default();
    }
    let n_frames = total_samples.saturating_sub(grid.center_offset) / grid.step + 1;
    let mut score = vec![0.0f32; n_frames * num_clusters];
    let mut count_sum = vec![0.0f32; n_frames];
    let mut covered = vec![0u32; n_frames];
    for w in windows {
        let frames = w.activity.len() / w.cols.max(1);
        let offset = (w.start_sample as f64 / grid.step as f64).round() as usize;
        for i in 0..frames {
            let g = offset + i;
            if g >= n_frames {
                break;
            }
            let row = &w.activity[i * w.cols..(i + 1) * w.cols];
            covered[g] += 1;
            count_sum[g] += row.iter().sum::<f32>();
            let mut per_cluster = vec![0.0f32; num_clusters];
            for (s, &a) in row.iter().enumerate() {
                if let Some(k) = w.clusters[s] {
                    per_cluster[k] = per_cluster[k].max(a);
                }
            }
            for (k, v) in per_cluster.into_iter().enumerate() {
                score[g * num_clusters + k] += v;
            }
        }
    }
    // active[k][g]
    let mut active = vec![vec![false; n_frames]; num_clusters];
    let mut counts = vec![0u8; n_frames];
    for g in 0..n_frames {
        if covered[g] == 0 {
            continue;
        }
        let count = ((count_sum[g] / covered[g] as f32).round() as usize).min(num_clusters);
        counts[g] = count.min(u8::MAX as usize) as u8;
        if count == 0 {
            continue;
        }
        let mut order: Vec<usize> = (0..num_clusters).collect();
        order.sort_by(|&a, &b| {
            score[g * num_clusters + b]
                .total_cmp(&score[g * num_clusters + a])
                .then(a.cmp(&b))
        });
        for &k in order.iter().take(count) {
            if score[g * num_clusters + k] > 0.0 {
                active[k][g] = true;
            }
        }
    }
    let half = grid.step as f64 / 2.0 / grid.sample_rate as f64;
    let end_time = total_samples as f64 / grid.sample_rate as f64;
    let mut turns: Vec<(usize, f64, f64)> = Vec::new();
    for (k, frames) in active.iter().enumerate() {
        let mut spans: Vec<(f64, f64)> = Vec::new();
        let mut g = 0;
        while g < n_frames {
            if !frames[g] {
                g += 1;
                continue;
            }
            let s = g;
            while g < n_frames && frames[g] {
                g += 1;
            }
            let start = (grid.center(s) - half).max(0.0);
            let end = (grid.center(g - 1) + half).min(end_time);
            spans.push((start, end));
        }
        // fill short gaps, then drop short turns
        let mut merged: Vec<(f64, f64)> = Vec::new();
        for sp in spans {
            match merged.last_mut() {
                Some(last) if sp.0 - last.1 < opts.min_duration_off => last.1 = sp.1,
                _ => merged.push(sp),
            }
        }
        turns.extend(
            merged
                .into_iter()
                .filter(|(s, e)| e - s >= opts.min_duration_on)
                .map(|(s, e)| (k, s, e)),
        );
    }
    turns.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut names: Vec<usize> = Vec::new();
    let turns: Vec<Turn> = turns
        .into_iter()
        .map(|(k, start, end)| {
            let idx = names.iter().position(|&n| n == k).unwrap_or_else(|| {
                names.push(k);
                names.len() - 1
            });
            Turn {
                speaker: format!("SPEAKER_{idx:02}"),
                start,
                end,
            }
        })
        .collect();
    // activity columns: the speakers that have turns, in label order
    let k_out = names.len();
    let mut scores = vec![0.0f32; n_frames * k_out];
    for g in 0..n_frames {
        if covered[g] == 0 {
            continue;
        }
        for (col, &k) in names.iter().enumerate() {
            scores[g * k_out + col] = score[g * num_clusters + k] / covered[g] as f32;
        }
    }
    let activity = SpeakerActivity {
        frame_step: grid.step as f64 / grid.sample_rate as f64,
        first_center: grid.center(0),
        speakers: (0..k_out).map(|i| format!("SPEAKER_{i:02}")).collect(),
        scores,
        count: counts,
    };
    Reconstruction {
        turns,
        activity,
        clusters: names,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: FrameGrid = FrameGrid {
        step: 100,
        center_offset: 50,
        sample_rate: 1000,
    };
    const OPTS: ReconstructOptions = ReconstructOptions {
        min_duration_on: 0.0,
        min_duration_off: 0.0,
    };

    /// A window of `frames` frames where local speaker s is active on the given frame ranges.
    fn window(
        start_sample: usize,
        frames: usize,
        active: &[(usize, std::ops::Range<usize>)],
        clusters: [Option<usize>; 3],
    ) -> WindowActivity {
        let mut activity = vec![0.0; frames * 3];
        for (s, r) in active {
            for i in r.clone() {
                activity[i * 3 + s] = 1.0;
            }
        }
        WindowActivity {
            start_sample,
            cols: 3,
            activity,
            clusters: clusters.to_vec(),
        }
    }

    #[test]
    fn two_windows_agree_on_one_timeline() {
        // frames of 0.1 s; window 1 covers frames 0-9, window 2 frames 5-14
        // cluster 1 speaks frames 0-6, cluster 0 speaks frames 7-14
        let w1 = window(0, 10, &[(0, 0..7), (1, 7..10)], [Some(1), Some(0), None]);
        let w2 = window(500, 10, &[(2, 0..2), (0, 2..10)], [Some(0), None, Some(1)]);
        let turns = reconstruct(&[w1, w2], 2, GRID, 1500, OPTS).turns;
        assert_eq!(turns.len(), 2, "{turns:?}");
        assert_eq!(
            turns[0].speaker, "SPEAKER_00",
            "first to speak is SPEAKER_00"
        );
        assert!(
            (turns[0].start - 0.0).abs() < 1e-9 && (turns[0].end - 0.7).abs() < 1e-9,
            "{turns:?}"
        );
        assert_eq!(turns[1].speaker, "SPEAKER_01");
        assert!(
            (turns[1].start - 0.7).abs() < 1e-9 && (turns[1].end - 1.5).abs() < 1e-9,
            "{turns:?}"
        );
    }

    #[test]
    fn overlap_is_kept() {
        let w = window(0, 10, &[(0, 0..10), (1, 3..6)], [Some(0), Some(1), None]);
        let r = reconstruct(&[w], 2, GRID, 1000, OPTS);
        let turns = &r.turns;
        assert_eq!(turns.len(), 2);
        assert!(
            (turns[1].start - 0.3).abs() < 1e-9 && (turns[1].end - 0.6).abs() < 1e-9,
            "{turns:?}"
        );
        assert!((turns[0].end - 1.0).abs() < 1e-9);
        // the frame activity says who and how many, frame by frame
        let a = &r.activity;
        assert_eq!(a.speakers, vec!["SPEAKER_00", "SPEAKER_01"]);
        assert_eq!(a.count[..10], [1, 1, 1, 2, 2, 2, 1, 1, 1, 1]);
        assert_eq!(a.mean_scores(0.3, 0.6), vec![1.0, 1.0]);
        assert_eq!(a.mean_scores(0.0, 0.3), vec![1.0, 0.0]);
        assert!((a.overlap_share(0.0, 0.6) - 0.5).abs() < 1e-6);
        assert_eq!(
            a.frame_range(0.31, 0.32),
            3..4,
            "shorter than a frame: the nearest one"
        );
    }

    #[test]
    fn short_gaps_filled_and_blips_dropped() {
        let w = window(
            0,
            20,
            &[(0, 0..5), (0, 6..12), (1, 15..16)],
            [Some(0), Some(1), None],
        );
        let opts = ReconstructOptions {
            min_duration_on: 0.15,
            min_duration_off: 0.15,
        };
        let turns = reconstruct(&[w], 2, GRID, 2000, opts).turns;
        assert_eq!(turns.len(), 1, "{turns:?}");
        assert!((turns[0].end - 1.2).abs() < 1e-9);
    }
}
