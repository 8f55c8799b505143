//! pyannote segmentation-3.0's powerset output: each frame's log-probs over
//! 7 classes (no speaker, one of 3 local speakers, or one of their 3 pairs)
//! decoded to per-speaker activity.

/// Local speakers active in each powerset class, in the model's class order.
pub const CLASSES: [&[usize]; 7] = [&[], &[0], &[1], &[2], &[0, 1], &[0, 2], &[1, 2]];
pub const LOCAL_SPEAKERS: usize = 3;

/// Hard decoding: for each frame the most probable class, as a 0/1 activity
/// per local speaker. `log_probs` is `[frames][7]` flattened; the result is
/// `[frames][3]` flattened.
pub fn decode(log_probs: &[f32]) -> Vec<f32> {
    let frames = log_probs.len() / CLASSES.len();
    let mut out = vec![0.0f32; frames * LOCAL_SPEAKERS];
    for (t, row) in log_probs.chunks_exact(CLASSES.len()).enumerate() {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        for &s in CLASSES[best] {
            out[t * LOCAL_SPEAKERS + s] = 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_speaker_sets() {
        let mut lp = vec![-10.0f32; 7 * 4];
        lp[0] = 0.0; // frame 0: nobody
        lp[7 + 2] = 0.0; // frame 1: speaker 1
        lp[14 + 5] = 0.0; // frame 2: speakers 0 and 2
        lp[21 + 6] = -0.1; // frame 3: speakers 1 and 2 (best by a margin)
        lp[21 + 1] = -0.2;
        let a = decode(&lp);
        assert_eq!(&a[0..3], &[0.0, 0.0, 0.0]);
        assert_eq!(&a[3..6], &[0.0, 1.0, 0.0]);
        assert_eq!(&a[6..9], &[1.0, 0.0, 1.0]);
        assert_eq!(&a[9..12], &[0.0, 1.0, 1.0]);
    }
}
