//! The diarization engine (pyannote 3.1's recipe on ONNX Runtime):
//! 10 s windows slide over the audio through the segmentation model
//! (segmentation-3.0, powerset output -> up to 3 local speakers per window);
//! each local speaker of each window gets a CAM++ embedding from its own
//! frames; the embeddings are clustered into global speakers; local speakers
//! are mapped to clusters (at most one per cluster within a window) and the
//! global timeline is rebuilt with overlapping speech kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use super::cluster::{cluster, ClusterOptions, SpeakerBounds};
use super::embedder::{model_session, samples_in, VoiceEmbedder};
use super::powerset::{self, LOCAL_SPEAKERS};
use super::reconstruct::{
    reconstruct, FrameGrid, ReconstructOptions, Reconstruction, SpeakerActivity, WindowActivity,
};
use super::rttm::Turn;
use crate::audio::Samples;
use crate::config::{Config, DiarizationConfig};
use crate::cores::{run_batches, SpareCores};
use crate::runtime::{self, DeviceUsed, RuntimeError};

/// `diarization.json`, written by `scripts/convert_diarization.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct DiarizationModelInfo {
    pub segmentation: SegmentationInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SegmentationInfo {
    pub sample_rate: usize,
    pub window_samples: usize,
    pub frames_per_window: usize,
    pub frame_step_samples: usize,
    pub frame_center_offset_samples: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DiarizeError {
    #[error("diarization models not found in {0}: run `make setup`")]
    NotInstalled(PathBuf),
    #[error("diarization model file {path} is unreadable: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("diarization stopped: the job was cancelled")]
    Cancelled,
}

impl From<ort::Error> for DiarizeError {
    fn from(e: ort::Error) -> Self {
        DiarizeError::Runtime(RuntimeError::Ort(e.to_string()))
    }
}

/// Who spoke when.
#[derive(Debug, Clone, Serialize)]
pub struct Diarization {
    pub turns: Vec<Turn>,
    pub num_speakers: usize,
    /// One voice print per speaker of `turns`: the mean of its unit CAM++
    /// embeddings (what known speakers are matched against). Not serialised:
    /// prints are kept apart from results.
    #[serde(skip)]
    pub voices: Vec<Voice>,
    pub timings: DiarizeTimings,
    /// Frame-level speaker activity behind the turns (not serialised: large).
    #[serde(skip)]
    pub activity: SpeakerActivity,
}

/// A speaker's voice print in one recording.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Voice {
    /// The speaker's label in the turns (`SPEAKER_00`, ...).
    pub speaker: String,
    /// Unit length.
    pub embedding: Vec<f32>,
    /// Embedded pieces of speech behind it.
    pub pieces: usize,
}

/// Seconds spent per part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DiarizeTimings {
    pub segmentation: f64,
    pub embeddings: f64,
    pub clustering: f64,
    pub windows: usize,
    /// Of `windows`, those segmented on a core an idle engine lent.
    pub segmented_on_lent_core: usize,
    pub embedded: usize,
    /// Of `embedded`, the pieces embedded on a core an idle engine lent.
    pub embedded_on_lent_core: usize,
}

/// What the pipeline's diarization stage needs from a diarizer:
/// [`DiarizationEngine`] in service, a fake in the pipeline's own tests.
pub trait SpeakerDiarizer: Send {
    /// Who spoke when in 16 kHz mono samples; stops (error) soon after `stop` is set.
    fn diarize_until(
        &mut self,
        samples: Samples<'_>,
        bounds: SpeakerBounds,
        stop: Option<runtime::StopFlag>,
    ) -> Result<Diarization, DiarizeError>;
    /// Where the models really run.
    fn device(&self) -> DeviceUsed;
}

impl SpeakerDiarizer for DiarizationEngine {
    fn diarize_until(
        &mut self,
        samples: Samples<'_>,
        bounds: SpeakerBounds,
        stop: Option<runtime::StopFlag>,
    ) -> Result<Diarization, DiarizeError> {
        DiarizationEngine::diarize_until(self, samples, bounds, stop)
    }
    fn device(&self) -> DeviceUsed {
        self.device
    }
}

/// The models again, for a borrowed core, and where cores are lent.
struct Helper {
    segmentation: Session,
    embedder: VoiceEmbedder,
    spare: Arc<SpareCores>,
}

pub struct DiarizationEngine {
    segmentation: Session,
    embedder: VoiceEmbedder,
    /// Second sessions that run segmentation and embedding batches on a
    /// core an idle engine lends ([`DiarizationEngine::borrowing_idle_cores`]).
    helper: Option<Helper>,
    info: SegmentationInfo,
    cfg: DiarizationConfig,
    pub device: DeviceUsed,
}

/// The segmentation session (and the device it runs on) and the embedder,
/// from the models in `dir`.
fn load_sessions(
    config: &Config,
    dir: &Path,
) -> Result<(Session, DeviceUsed, VoiceEmbedder), DiarizeError> {
    let (segmentation, device) = model_session(config, dir, "segmentation.onnx")?;
    Ok((segmentation, device, VoiceEmbedder::load(config, dir)?))
}

/// Ok while `stop` is not set, else [`DiarizeError::Cancelled`]: asked
/// between batches.
pub(crate) fn go_on(stop: Option<&runtime::StopFlag>) -> Result<(), DiarizeError> {
    if runtime::stopped(stop) {
        Err(DiarizeError::Cancelled)
    } else {
        Ok(())
    }
}

/// The segmentation of the windows of `win` samples at `starts` (one
/// batch through `session`): each window's `[frames][3]` binary activity.
fn segment_batch(
    session: &mut Session,
    samples: Samples,
    starts: &[usize],
    win: usize,
    frames: usize,
) -> Result<Vec<Vec<f32>>, DiarizeError> {
    let mut input = vec![0.0f32; starts.len() * win];
    for (b, &s) in starts.iter().enumerate() {
        let end = (s + win).min(samples.len());
        if s < end {
            samples.copy_into(s, &mut input[b * win..b * win + (end - s)]);
        }
    }
    let t = TensorRef::from_array_view(([starts.len(), 1, win], &input[..]))?;
    let res = session.run(ort::inputs!["waveform" => t])?;
    let (_, lp) = res["log_probs"].try_extract_tensor::<f32>()?;
    let per = lp.len() / starts.len();
    Ok((0..starts.len())
        .map(|b| {
            let a = powerset::decode(&lp[b * per..(b + 1) * per]);
            debug_assert_eq!(a.len(), frames * LOCAL_SPEAKERS);
            a
        })
        .collect())
}

/// `<root>/models/diarization`.
pub fn model_dir(root: &Path) -> PathBuf {
    root.join("models").join("diarization")
}

impl DiarizationEngine {
    pub fn load(config: &Config) -> Result<DiarizationEngine, DiarizeError> {
        let dir = model_dir(&config.models_root());
        if !dir.join("manifest.json").exists() {
            return Err(DiarizeError::NotInstalled(dir));
        }
        let info_path = dir.join("diarization.json");
        let text = std::fs::read_to_string(&info_path).map_err(|e| DiarizeError::BadFile {
            path: info_path.clone(),
            reason: e.to_string(),
        })?;
        let info: DiarizationModelInfo =
            serde_json::from_str(&text).map_err(|e| DiarizeError::BadFile {
                path: info_path,
                reason: e.to_string(),
            })?;
        let (segmentation, d1, embedder) = load_sessions(config, &dir)?;
        let device = if d1 == DeviceUsed::Cuda && embedder.device == DeviceUsed::Cuda {
            DeviceUsed::Cuda
        } else {
            DeviceUsed::Cpu
        };
        Ok(DiarizationEngine {
            segmentation,
            embedder,
            helper: None,
            info: info.segmentation,
            cfg: config.diarization.clone(),
            device,
        })
    }

    /// Loads the segmentation and embedding models a second time (with
    /// `config`'s threads), to run batches beside the first sessions
    /// whenever a core is lent in `spare`: the pipeline's transcriber lends
    /// its core while it has no job, so a job's diarization uses both cores
    /// once its transcription is done. The results are the same with or
    /// without it.
    pub fn borrowing_idle_cores(
        mut self,
        config: &Config,
        spare: Arc<SpareCores>,
    ) -> Result<DiarizationEngine, DiarizeError> {
        let (segmentation, _, embedder) = load_sessions(config, &model_dir(&config.models_root()))?;
        self.helper = Some(Helper {
            segmentation,
            embedder,
            spare,
        });
        Ok(self)
    }

    fn grid(&self) -> FrameGrid {
        FrameGrid {
            step: self.info.frame_step_samples,
            center_offset: self.info.frame_center_offset_samples,
            sample_rate: self.info.sample_rate,
        }
    }

    /// Window start positions (samples): a whole number of frames apart, the
    /// last window reaching the end of the audio.
    fn window_starts(&self, n: usize) -> Vec<usize> {
        let win = self.info.window_samples;
        let fstep = self.info.frame_step_samples;
        let step = (((self.cfg.window_step * self.info.sample_rate as f64) / fstep as f64).round()
            as usize)
            .max(1)
            * fstep;
        let mut starts = vec![0];
        while starts.last().unwrap() + win < n {
            starts.push(starts.last().unwrap() + step);
        }
        starts
    }

    /// Segmentation of every window: `[frames][3]` binary activity each;
    /// batches run beside on a lent core too (the helper's session), and
    /// how many windows did.
    fn segment(
        &mut self,
        samples: Samples,
        starts: &[usize],
        stop: Option<&runtime::StopFlag>,
    ) -> Result<(Vec<Vec<f32>>, usize), DiarizeError> {
        let (win, frames) = (self.info.window_samples, self.info.frames_per_window);
        let batches: Vec<&[usize]> = starts.chunks(self.cfg.segmentation_batch.max(1)).collect();
        let segmentation = &mut self.segmentation;
        let (results, helped) = run_batches(
            batches.len(),
            |b| segment_batch(segmentation, samples, batches[b], win, frames),
            self.helper.as_mut().map(|h| {
                (
                    |b: usize| segment_batch(&mut h.segmentation, samples, batches[b], win, frames),
                    &*h.spare,
                )
            }),
            || go_on(stop),
        )?;
        let windows_helped = helped.iter().map(|&b| batches[b].len()).sum();
        Ok((results.into_iter().flatten().collect(), windows_helped))
    }

    /// The pieces of local speaker `s` of a window: its frames (alone, when
    /// that is long enough) cut into runs of at most `embedding_piece`
    /// seconds, each embedded on its own so that a local speaker the
    /// segmentation merged from two people does not blur one embedding.
    fn speaker_pieces(&self, activity: &[f32], s: usize, first_frame: usize) -> Vec<Vec<usize>> {
        let frames = activity.len() / LOCAL_SPEAKERS;
        let grid = self.grid();
        let pick = |exclusive: bool| -> Vec<usize> {
            (0..frames)
                .filter(|&i| {
                    let row = &activity[i * LOCAL_SPEAKERS..(i + 1) * LOCAL_SPEAKERS];
                    row[s] > 0.0 && (!exclusive || row.iter().sum::<f32>() <= 1.0)
                })
                .collect()
        };
        let per_frame = grid.step as f64 / grid.sample_rate as f64;
        let min_frames = (self.cfg.min_embedding_duration / per_frame).ceil() as usize;
        let piece_frames = ((self.cfg.embedding_piece / per_frame).round() as usize)
            .max(min_frames)
            .max(1);
        let mut chosen = pick(true);
        if chosen.len() < min_frames {
            chosen = pick(false);
        }
        // runs of speech split at pauses (a pause often is a change of speaker
        // the segmentation missed), then cut to at most piece_frames
        let max_gap = ((self.cfg.piece_split_pause / per_frame).round() as usize).max(1);
        let mut runs: Vec<Vec<usize>> = Vec::new();
        for &i in &chosen {
            match runs.last_mut() {
                Some(run) if i - *run.last().unwrap() <= max_gap => run.push(i),
                _ => runs.push(vec![i]),
            }
        }
        // Where a run is cut: windows overlap, so the same stretch of speech
        // is seen by several windows. A run that fills the whole window (both
        // edges truncate it) is cut on a grid of whole pieces counted from
        // the start of the audio, so that the windows' pieces of it coincide
        // and the later windows reuse the first one's embeddings; any other
        // run is cut forward from its start.
        let mut pieces: Vec<Vec<usize>> = Vec::new();
        for run in runs {
            let whole_window = run[0] == 0 && *run.last().unwrap() == frames - 1;
            let mut cut: Vec<Vec<usize>> = if whole_window {
                let mut v: Vec<Vec<usize>> = Vec::new();
                for &i in &run {
                    if v.is_empty() || (first_frame + i) % piece_frames == 0 {
                        v.push(Vec::new());
                    }
                    v.last_mut().unwrap().push(i);
                }
                v
            } else {
                run.chunks(piece_frames).map(|c| c.to_vec()).collect()
            };
            // a short piece at the window's start (or a short tail) joins its neighbour
            if cut.len() >= 2 && cut[0].len() < min_frames {
                let head = cut.remove(0);
                cut[0].splice(0..0, head);
            }
            if cut.len() >= 2 && cut.last().unwrap().len() < min_frames {
                let tail = cut.pop().unwrap();
                cut.last_mut().unwrap().extend(tail);
            }
            pieces.extend(cut);
        }
        pieces
    }

    /// The stretches of the samples behind `frames` of the window that
    /// starts at sample `start` (touching stretches merged): a piece is kept
    /// as these ranges, and its audio is gathered only when its batch is
    /// embedded, so a long recording never holds a copy of every piece.
    fn frames_ranges(
        &self,
        n_samples: usize,
        start: usize,
        frames: &[usize],
    ) -> Vec<(usize, usize)> {
        let grid = self.grid();
        let half = grid.step / 2;
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut last_end = 0usize;
        for &i in frames {
            let centre = start + grid.center_offset + i * grid.step;
            let a = centre.saturating_sub(half).max(last_end);
            let b = (centre + half).min(n_samples);
            if a < b {
                match ranges.last_mut() {
                    Some(r) if r.1 == a => r.1 = b,
                    _ => ranges.push((a, b)),
                }
                last_end = b;
            }
        }
        ranges
    }

    /// Diarizes 16 kHz mono samples.
    pub fn diarize<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
        bounds: SpeakerBounds,
    ) -> Result<Diarization, DiarizeError> {
        self.diarize_until(samples, bounds, None)
    }

    /// Diarizes 16 kHz mono samples; stops early (error `Cancelled`) once
    /// `stop` is set, checked before each batch of windows or embeddings.
    pub fn diarize_until<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
        bounds: SpeakerBounds,
        stop: Option<runtime::StopFlag>,
    ) -> Result<Diarization, DiarizeError> {
        let samples: Samples = samples.into();
        let stop = stop.as_ref();
        let mut timings = DiarizeTimings::default();
        let t0 = Instant::now();
        let starts = self.window_starts(samples.len());
        let (activity, segmented_on_lent_core) = self.segment(samples, &starts, stop)?;
        timings.segmentation = t0.elapsed().as_secs_f64();
        timings.segmented_on_lent_core = segmented_on_lent_core;
        timings.windows = starts.len();

        // embeddings of pieces of each (window, local speaker); each piece
        // becomes a column of its window with its own cluster
        let t1 = Instant::now();
        let min_samples = self.embedder.min_samples();
        let frames_per_window = self.info.frames_per_window;
        // the sample ranges of every piece to embed; its index is its embedding's
        let mut pending: Vec<Vec<(usize, usize)>> = Vec::new();
        // (start sample, end sample, embedding index) of every embedded piece
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        let grid = self.grid();
        // per window: (column frames, embedding index if any)
        let mut columns: Vec<Vec<(Vec<usize>, Option<usize>)>> = Vec::with_capacity(starts.len());
        for (&start, act) in starts.iter().zip(&activity) {
            let frames = act.len() / LOCAL_SPEAKERS;
            let mut cols: Vec<(Vec<usize>, Option<usize>)> = Vec::new();
            for s in 0..LOCAL_SPEAKERS {
                let active: Vec<usize> = (0..frames)
                    .filter(|&i| act[i * LOCAL_SPEAKERS + s] > 0.0)
                    .collect();
                if active.is_empty() {
                    continue;
                }
                let pieces = self.speaker_pieces(act, s, start / grid.step);
                let mut piece_cols: Vec<(Vec<usize>, Option<usize>, f64)> = Vec::new();
                for piece in &pieces {
                    // overlapping windows see the same speech: a piece spanning
                    // (nearly) the same time as one already embedded shares its
                    // embedding, so each stretch of speech counts once in
                    // clustering (and is embedded once)
                    let span = (
                        start + grid.center_offset + piece[0] * grid.step,
                        start + grid.center_offset + piece[piece.len() - 1] * grid.step + grid.step,
                    );
                    let known = spans.iter().find(|&&(a, b, _)| {
                        let inter = span.1.min(b).saturating_sub(span.0.max(a)) as f64;
                        let union = (span.1.max(b) - span.0.min(a)) as f64;
                        inter >= self.cfg.piece_reuse_overlap * union
                    });
                    let emb = if let Some(&(_, _, idx)) = known {
                        Some(idx)
                    } else {
                        let ranges = self.frames_ranges(samples.len(), start, piece);
                        if samples_in(&ranges) >= min_samples {
                            // embedded below, all together
                            pending.push(ranges);
                            spans.push((span.0, span.1, pending.len() - 1));
                            Some(pending.len() - 1)
                        } else {
                            None
                        }
                    };
                    let centre = piece.iter().sum::<usize>() as f64 / piece.len().max(1) as f64;
                    piece_cols.push((Vec::new(), emb, centre));
                }
                if piece_cols.is_empty() {
                    cols.push((active, None));
                    continue;
                }
                // every active frame of the speaker goes to the nearest piece
                for &i in &active {
                    let k = piece_cols
                        .iter()
                        .enumerate()
                        .min_by(|a, b| {
                            (a.1 .2 - i as f64)
                                .abs()
                                .total_cmp(&(b.1 .2 - i as f64).abs())
                        })
                        .map(|(k, _)| k)
                        .unwrap();
                    piece_cols[k].0.push(i);
                }
                // a piece too short to embed borrows the embedding of the
                // nearest piece in time that has one
                let nearest = |c: f64| -> Option<usize> {
                    piece_cols
                        .iter()
                        .filter_map(|p| p.1.map(|e| (e, (p.2 - c).abs())))
                        .min_by(|a, b| a.1.total_cmp(&b.1))
                        .map(|(e, _)| e)
                };
                let borrowed: Vec<Option<usize>> = piece_cols
                    .iter()
                    .map(|p| p.1.or_else(|| nearest(p.2)))
                    .collect();
                for ((f, _, _), e) in piece_cols.into_iter().zip(borrowed) {
                    cols.push((f, e));
                }
            }
            debug_assert!(cols
                .iter()
                .all(|c| c.0.iter().all(|&i| i < frames_per_window)));
            columns.push(cols);
        }
        let helper = self.helper.as_mut().map(|h| (&mut h.embedder, &*h.spare));
        let (embeddings, on_lent_core) = self
            .embedder
            .embed_pieces_with(samples, &pending, stop, helper)?;
        timings.embedded_on_lent_core = on_lent_core;
        drop(pending);
        if tracing::enabled!(tracing::Level::TRACE) {
            let t = |x: usize| x as f64 / grid.sample_rate as f64;
            for &(a, b, index) in &spans {
                tracing::trace!(index, from = t(a), to = t(b), e = ?embeddings[index], "piece");
            }
        }
        timings.embeddings = t1.elapsed().as_secs_f64();
        timings.embedded = embeddings.len();

        let t2 = Instant::now();
        let opts = ClusterOptions {
            threshold: self.cfg.cluster_threshold,
            min_cluster_size: self.cfg.min_cluster_size,
        };
        let labels = cluster(&embeddings, &opts, bounds);
        let k = labels.iter().max().map_or(0, |m| m + 1);
        tracing::trace!(labels = ?labels, "cluster labels");
        let windows: Vec<WindowActivity> = starts
            .iter()
            .zip(&columns)
            .map(|(&start_sample, cols)| {
                let n = cols.len();
                let mut activity = vec![0.0f32; frames_per_window * n];
                for (c, (frames, _)) in cols.iter().enumerate() {
                    for &i in frames {
                        activity[i * n + c] = 1.0;
                    }
                }
                let clusters = cols.iter().map(|(_, e)| e.map(|e| labels[e])).collect();
                WindowActivity {
                    start_sample,
                    cols: n,
                    activity,
                    clusters,
                }
            })
            .collect();
        let Reconstruction {
            turns,
            activity,
            clusters,
        } = reconstruct(
            &windows,
            k,
            self.grid(),
            samples.len(),
            ReconstructOptions {
                min_duration_on: self.cfg.min_duration_on,
                min_duration_off: self.cfg.min_duration_off,
            },
        );
        timings.clustering = t2.elapsed().as_secs_f64();
        let mut names: Vec<&str> = turns.iter().map(|t| t.speaker.as_str()).collect();
        names.sort();
        names.dedup();
        let num_speakers = names.len();
        let unit: Vec<Vec<f32>> = embeddings
            .iter()
            .map(|e| {
                let mut e = e.clone();
                crate::diarize::cluster::l2_normalise(&mut e);
                e
            })
            .collect();
        let cents = crate::diarize::cluster::centroids(&unit, &labels, k);
        let voices = clusters
            .iter()
            .enumerate()
            .map(|(i, &c)| Voice {
                speaker: format!("SPEAKER_{i:02}"),
                embedding: cents[c].clone(),
                pieces: labels.iter().filter(|&&l| l == c).count(),
            })
            .collect();
        Ok(Diarization {
            turns,
            num_speakers,
            voices,
            timings,
            activity,
        })
    }
}
