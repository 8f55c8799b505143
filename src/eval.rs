//! `colloquy eval`: what to score and how. Plain functions: reading the
//! test set (a TSV manifest of recordings with reference text, RTTM files
//! with reference turns, UEM files with scored regions, STM files with who
//! said what), scoring one pipeline result (WER on normalised words, DER
//! with a collar, cpWER, word timing at reference turn edges), the totals
//! and the printed table. Running the jobs is `main.rs`'s (through
//! [`crate::local::LocalRunner`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::diarize::der::{der, DerBreakdown};
use crate::diarize::rttm::{parse_rttm, parse_uem, Turn};
use crate::text::{word_errors, WordErrors};

/// Collar (seconds) around reference turn boundaries left out of DER.
pub const DER_COLLAR: f64 = 0.25;

/// One recording to run and what to score it against.
#[derive(Debug, Clone, Default)]
pub struct EvalItem {
    pub id: String,
    pub audio: PathBuf,
    pub reference_text: Option<String>,
    pub reference_turns: Option<Vec<Turn>>,
    pub uem: Option<Vec<(f64, f64)>>,
    /// Who said what: (speaker, text) per reference turn, in time order (STM).
    pub reference_speaker_text: Option<Vec<(String, String)>>,
    /// (start, end) seconds of the STM turns, in the order of `reference_speaker_text`.
    pub reference_stm_times: Option<Vec<(f64, f64)>>,
}

impl EvalItem {
    /// The names reference files may give this recording: its id, then its
    /// audio file's stem (conv1.rttm names `conv1`, the manifest `synthetic_conv1`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.audio.file_stem().and_then(|s| s.to_str()))
    }

    /// The first of `by_name`'s entries under one of this item's names.
    fn lookup<'a, T>(&self, by_name: &'a BTreeMap<String, T>) -> Option<&'a T> {
        self.names().find_map(|n| by_name.get(n))
    }

    /// The reference turns' (start, end) seconds that word timing is scored
    /// against: the RTTM turns, or else the STM turns.
    pub fn timing_reference(&self) -> Option<Vec<(f64, f64)>> {
        match &self.reference_turns {
            Some(turns) => Some(turns.iter().map(|t| (t.start, t.end)).collect()),
            None => self.reference_stm_times.clone(),
        }
    }

    /// Distinct speakers of the reference turns.
    pub fn reference_speakers(&self) -> Option<usize> {
        self.reference_turns
            .as_ref()
            .map(|t| crate::align::count_speakers(t))
    }
}

/// Rows of a tab-separated manifest with a header naming at least `id`,
/// `path` (relative to the manifest's folder) and `reference`; with `group`,
/// only rows whose `group` column equals it.
pub fn read_manifest(path: &Path, group: Option<&str>) -> anyhow::Result<Vec<EvalItem>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(id), Some(audio), Some(reference)) = (col("id"), col("path"), col("reference"))
    else {
        bail!(
            "{}: the header must name the columns id, path and reference (tab-separated)",
            path.display()
        );
    };
    let group_col = col("group");
    if group.is_some() && group_col.is_none() {
        bail!(
            "{}: --group given but the manifest has no group column",
            path.display()
        );
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| {
            f.get(i).copied().with_context(|| {
                format!(
                    "{} line {}: fewer columns than the header",
                    path.display(),
                    n + 2
                )
            })
        };
        if let (Some(want), Some(g)) = (group, group_col) {
            if get(g)? != want {
                continue;
            }
        }
        items.push(EvalItem {
            id: get(id)?.to_string(),
            audio: dir.join(get(audio)?),
            reference_text: Some(get(reference)?.to_string()),
            ..Default::default()
        });
    }
    Ok(items)
}

/// Adds the reference turns of an RTTM file: to the items whose id or audio
/// file stem is the RTTM file id, and as new items (audio `<id>.wav`,
/// `.flac`, `.mp3` or `.ogg` beside the RTTM file) for ids no item has.
pub fn attach_rttm(items: &mut Vec<EvalItem>, rttm: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(rttm).with_context(|| format!("{}", rttm.display()))?;
    let refs = parse_rttm(&text).with_context(|| format!("{}", rttm.display()))?;
    let dir = rttm.parent().unwrap_or(Path::new("."));
    for (uri, turns) in refs {
        let mut found = false;
        for item in items.iter_mut() {
            if item.names().any(|n| n == uri) {
                item.reference_turns = Some(turns.clone());
                found = true;
            }
        }
        if found {
            continue;
        }
        let audio = ["wav", "flac", "mp3", "ogg"]
            .iter()
            .map(|ext| dir.join(format!("{uri}.{ext}")))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{}: no audio file {uri}.wav (.flac, .mp3, .ogg) beside it",
                    rttm.display()
                )
            })?;
        items.push(EvalItem {
            id: uri,
            audio,
            reference_turns: Some(turns),
            ..Default::default()
        });
    }
    Ok(())
}

/// Speaker-attributed reference text from an STM file (`<file> <channel>
/// <speaker> <start> <end> <text...>`, `;;` comments): to the items whose id
/// or audio file stem is the STM file id. It scores cpWER, gives WER's
/// reference text to items that have none, and its turn times score word
/// timing for items without RTTM turns.
pub fn attach_stm(items: &mut [EvalItem], stm: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(stm).with_context(|| format!("{}", stm.display()))?;
    let mut per_file: BTreeMap<String, Vec<(f64, f64, String, String)>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(";;") {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let time = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        let (Some(start), Some(end)) = (time(3), time(4)) else {
            bail!(
                "{} line {}: expected <file> <channel> <speaker> <start> <end> <text>",
                stm.display(),
                n + 1
            );
        };
        per_file.entry(f[0].to_string()).or_default().push((
            start,
            end,
            f[2].to_string(),
            f[5..].join(" "),
        ));
    }
    for item in items.iter_mut() {
        if let Some(turns) = item.lookup(&per_file) {
            let mut turns = turns.clone();
            turns.sort_by(|a, b| a.0.total_cmp(&b.0));
            if item.reference_text.is_none() {
                item.reference_text = Some(
                    turns
                        .iter()
                        .map(|t| t.3.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            item.reference_stm_times = Some(turns.iter().map(|t| (t.0, t.1)).collect());
            item.reference_speaker_text =
                Some(turns.into_iter().map(|(_, _, sp, t)| (sp, t)).collect());
        }
    }
    Ok(())
}

/// Who said what in a result (JSON): (speaker, text) of each of its
/// `aligned_segments`, in order, as cpWER takes it.
pub fn speaker_text(result: &serde_json::Value) -> Vec<(String, String)> {
    result["aligned_segments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["speaker"].as_str().unwrap_or_default().to_string(),
                s["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Concatenated minimum-permutation word errors (cpWER, as in CHiME-6):
/// each speaker's words joined in time order on both sides, speakers paired
/// one to one so that the total of word errors is least (a speaker without a
/// partner is compared with nothing). Wrong speakers cost as much as wrong
/// words: a sentence given to the other person counts as deleted on one side
/// and inserted on the other.
pub fn cp_word_errors(
    reference: &[(String, String)],
    hypothesis: &[(String, String)],
) -> WordErrors {
    fn by_speaker(pairs: &[(String, String)]) -> Vec<String> {
        let mut order: Vec<&str> = Vec::new();
        let mut text: BTreeMap<&str, String> = BTreeMap::new();
        for (sp, t) in pairs {
            if !text.contains_key(sp.as_str()) {
                order.push(sp);
            }
            let e = text.entry(sp).or_default();
            e.push(' ');
            e.push_str(t);
        }
        order.iter().map(|sp| text[sp].clone()).collect()
    }
    let r = by_speaker(reference);
    let h = by_speaker(hypothesis);
    let n = r.len().max(h.len());
    if n == 0 {
        return WordErrors::default();
    }
    let get = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_default();
    let errors: Vec<Vec<WordErrors>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| word_errors(&get(&r, i), &get(&h, j)))
                .collect()
        })
        .collect();
    let weights: Vec<Vec<i64>> = errors
        .iter()
        .map(|row| row.iter().map(|e| -(e.errors() as i64)).collect())
        .collect();
    let m = pathfinding::prelude::Matrix::from_rows(weights).expect("square matrix");
    let (_, assign) = pathfinding::prelude::kuhn_munkres(&m);
    let mut total = WordErrors::default();
    for (i, &j) in assign.iter().enumerate() {
        total.add(errors[i][j]);
    }
    total
}

/// Scored regions from a UEM file, for the items whose id or audio stem it names.
pub fn attach_uem(items: &mut [EvalItem], uem: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(uem).with_context(|| format!("{}", uem.display()))?;
    let regions = parse_uem(&text).with_context(|| format!("{}", uem.display()))?;
    for item in items.iter_mut() {
        if let Some(r) = item.lookup(&regions) {
            item.uem = Some(r.clone());
        }
    }
    Ok(())
}

/// (start, end) seconds of every word of a result (`segments[].words[]`,
/// each with `start` and `end`; words without both are left out). Empty
/// when the result has no words.
pub fn result_words(result: &Value) -> Vec<(f64, f64)> {
    result["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["words"].as_array())
        .flatten()
        .filter_map(|w| Some((w["start"].as_f64()?, w["end"].as_f64()?)))
        .collect()
}

/// Per reference turn, in reference order: seconds from the turn's start to
/// the nearest word start of the result, and from its end to the nearest word end.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EdgeDistances {
    pub start_seconds: Vec<f64>,
    pub end_seconds: Vec<f64>,
}

impl EdgeDistances {
    /// The distances of `turns` ((start, end) seconds) to `words`; None when
    /// there are no words (no timing score) or no turns.
    pub fn measure(turns: &[(f64, f64)], words: &[(f64, f64)]) -> Option<EdgeDistances> {
        if words.is_empty() || turns.is_empty() {
            return None;
        }
        let nearest = |t: f64, at: fn(&(f64, f64)) -> f64| {
            words
                .iter()
                .map(|w| (at(w) - t).abs())
                .fold(f64::INFINITY, f64::min)
        };
        Some(EdgeDistances {
            start_seconds: turns.iter().map(|t| nearest(t.0, |w| w.0)).collect(),
            end_seconds: turns.iter().map(|t| nearest(t.1, |w| w.1)).collect(),
        })
    }
}

/// Word timing at reference turn edges: the median distances (seconds) of
/// [`EdgeDistances`] over `turns` reference turns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WordTiming {
    pub turns: usize,
    pub median_start_seconds: f64,
    pub median_end_seconds: f64,
}

impl WordTiming {
    /// The medians of the distances of one file, or of several pooled (None without any).
    pub fn of<'a>(distances: impl IntoIterator<Item = &'a EdgeDistances>) -> Option<WordTiming> {
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for d in distances {
            starts.extend_from_slice(&d.start_seconds);
            ends.extend_from_slice(&d.end_seconds);
        }
        Some(WordTiming {
            turns: starts.len(),
            median_start_seconds: median(&mut starts)?,
            median_end_seconds: median(&mut ends)?,
        })
    }
}

/// The median (the mean of the middle two for an even count); None when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Accuracy: WER, DER and cpWER with the counts behind them (None without
/// the matching reference). Flattened into the report's JSON.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Scores {
    pub wer: Option<f64>,
    pub word_errors: Option<WordErrors>,
    pub der: Option<f64>,
    pub der_breakdown: Option<DerBreakdown>,
    /// cpWER: words with the right speaker (needs an STM reference).
    pub cp_wer: Option<f64>,
    pub cp_word_errors: Option<WordErrors>,
}

impl Scores {
    fn new(words: Option<WordErrors>, der: Option<DerBreakdown>, cp: Option<WordErrors>) -> Scores {
        Scores {
            wer: words.map(|e| e.wer()),
            word_errors: words,
            der: der.map(|b| b.der()),
            der_breakdown: der,
            cp_wer: cp.map(|e| e.wer()),
            cp_word_errors: cp,
        }
    }

    /// The scores of `self` and `o` together (errors over all reference words / speech).
    fn plus(&self, o: &Scores) -> Scores {
        fn sum<T: Copy + Default>(
            a: Option<T>,
            b: Option<T>,
            add: impl Fn(&mut T, T),
        ) -> Option<T> {
            match (a, b) {
                (None, None) => None,
                (a, b) => {
                    let mut t = a.unwrap_or_default();
                    if let Some(b) = b {
                        add(&mut t, b);
                    }
                    Some(t)
                }
            }
        }
        Scores::new(
            sum(self.word_errors, o.word_errors, |t, b| t.add(b)),
            sum(self.der_breakdown, o.der_breakdown, |t, b| t.add(b)),
            sum(self.cp_word_errors, o.cp_word_errors, |t, b| t.add(b)),
        )
    }
}

/// One recording's scores and costs.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub id: String,
    pub file: String,
    pub audio_seconds: f64,
    /// Submission to stored result (model loading excluded).
    pub wall_seconds: f64,
    /// Audio seconds per wall second.
    pub speed: f64,
    /// Highest resident memory of the process while this job ran (MB).
    pub peak_rss_mb: Option<f64>,
    #[serde(flatten)]
    pub scores: Scores,
    /// Word timing at the reference turns' edges (None without reference
    /// times or without words in the result).
    pub word_timing: Option<WordTiming>,
    /// The per-turn distances behind `word_timing`.
    pub word_timing_distances: Option<EdgeDistances>,
    pub speakers_found: usize,
    pub speakers_reference: Option<usize>,
    /// Hint given to the job (with --oracle-speakers).
    pub num_speakers_hint: Option<usize>,
    /// Seconds per stage, as the result's performance_metrics gives them.
    pub stage_seconds: Value,
    pub hypothesis: String,
}

/// Scores a job's result (the JSON of `GET /api/results/{id}`) against `item`.
pub fn score(
    item: &EvalItem,
    result: &Value,
    wall_seconds: f64,
    peak_rss_mb: Option<f64>,
) -> FileReport {
    let hypothesis = result["full_text"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string();
    let audio_seconds = result["duration"].as_f64().unwrap_or(0.0);
    let errors = item
        .reference_text
        .as_deref()
        .map(|r| word_errors(r, &hypothesis));
    let turns: Vec<Turn> =
        serde_json::from_value(result["speaker_turns"].clone()).unwrap_or_default();
    let breakdown = item
        .reference_turns
        .as_deref()
        .map(|r| der(r, &turns, item.uem.as_deref(), DER_COLLAR));
    let said = speaker_text(result);
    let cp = item
        .reference_speaker_text
        .as_deref()
        .map(|r| cp_word_errors(r, &said));
    let distances = item
        .timing_reference()
        .and_then(|r| EdgeDistances::measure(&r, &result_words(result)));
    FileReport {
        id: item.id.clone(),
        file: item.audio.display().to_string(),
        audio_seconds,
        wall_seconds,
        speed: if wall_seconds > 0.0 {
            audio_seconds / wall_seconds
        } else {
            0.0
        },
        peak_rss_mb,
        scores: Scores::new(errors, breakdown, cp),
        word_timing: WordTiming::of(&distances),
        word_timing_distances: distances,
        speakers_found: crate::align::count_speakers(&turns),
        speakers_reference: item.reference_speakers(),
        num_speakers_hint: None,
        stage_seconds: result["performance_metrics"].clone(),
        hypothesis,
    }
}

/// Sums over all files: WER over all reference words, DER over all scored speech.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub files: usize,
    pub audio_seconds: f64,
    /// Sum of the files' wall seconds (jobs one at a time), or first
    /// submission to last result (jobs at once).
    pub wall_seconds: f64,
    pub speed: f64,
    #[serde(flatten)]
    pub scores: Scores,
    /// Word timing over all scored turns of all files pooled.
    pub word_timing: Option<WordTiming>,
    pub peak_rss_mb: Option<f64>,
    /// Seconds per pipeline stage, summed over the files.
    pub stage_seconds: BTreeMap<String, f64>,
}

pub fn totals(files: &[FileReport], wall_seconds: f64) -> Totals {
    let mut t = Totals {
        files: files.len(),
        wall_seconds,
        ..Default::default()
    };
    for f in files {
        t.audio_seconds += f.audio_seconds;
        t.scores = t.scores.plus(&f.scores);
        if let Some(m) = f.peak_rss_mb {
            t.peak_rss_mb = Some(t.peak_rss_mb.map_or(m, |p: f64| p.max(m)));
        }
        for (stage, v) in f.stage_seconds["stages"].as_object().into_iter().flatten() {
            *t.stage_seconds.entry(stage.clone()).or_default() += v.as_f64().unwrap_or(0.0);
        }
    }
    t.word_timing = WordTiming::of(
        files
            .iter()
            .filter_map(|f| f.word_timing_distances.as_ref()),
    );
    t.speed = if wall_seconds > 0.0 {
        t.audio_seconds / wall_seconds
    } else {
        0.0
    };
    t
}

/// The report `colloquy eval --report` writes.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub whisper_model: String,
    pub whisper_precision: String,
    pub device: String,
    /// Jobs in the pipeline at once (1: one after another).
    pub jobs_at_once: usize,
    pub der_collar: f64,
    pub files: Vec<FileReport>,
    pub totals: Totals,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

/// The human-readable table of a report.
pub fn table(report: &EvalReport) -> String {
    let w = report
        .files
        .iter()
        .map(|f| f.id.len())
        .max()
        .unwrap_or(4)
        .max(5);
    let mut out = String::new();
    let mut row = |cells: [String; 12]| {
        let [id, audio, wall, speed, wer, der, cp, start, end, turns, spk, mb] = cells;
        let _ = writeln!(
            out,
            "{id:<w$}  {audio:>7}  {wall:>7}  {speed:>6}  {wer:>6}  {der:>6}  {cp:>6}  {start:>7}  {end:>7}  {turns:>5}  {spk:>9}  {mb:>7}"
        );
    };
    row([
        "file", "audio s", "wall s", "speed", "WER", "DER", "cpWER", "start s", "end s", "turns",
        "speakers", "peak MB",
    ]
    .map(String::from));
    let mb = |m: Option<f64>| m.map_or("-".into(), |m| format!("{m:.0}"));
    let timing = |t: Option<WordTiming>| match t {
        Some(t) => [
            format!("{:.2}", t.median_start_seconds),
            format!("{:.2}", t.median_end_seconds),
            t.turns.to_string(),
        ],
        None => ["-".into(), "-".into(), "-".into()],
    };
    let t = &report.totals;
    let lines = report
        .files
        .iter()
        .map(|f| {
            let spk = match f.speakers_reference {
                Some(r) => format!("{} ({r})", f.speakers_found),
                None => f.speakers_found.to_string(),
            };
            (
                f.id.clone(),
                f.audio_seconds,
                f.wall_seconds,
                f.speed,
                f.scores,
                f.word_timing,
                spk,
                f.peak_rss_mb,
            )
        })
        .chain(std::iter::once((
            "TOTAL".to_string(),
            t.audio_seconds,
            t.wall_seconds,
            t.speed,
            t.scores,
            t.word_timing,
            String::new(),
            t.peak_rss_mb,
        )));
    for (id, audio, wall, speed, sc, wt, spk, peak) in lines {
        let [start, end, turns] = timing(wt);
        row([
            id,
            format!("{audio:.2}"),
            format!("{wall:.2}"),
            format!("{speed:.1}x"),
            pct(sc.wer),
            pct(sc.der),
            pct(sc.cp_wer),
            start,
            end,
            turns,
            spk,
            mb(peak),
        ]);
    }
    if !t.stage_seconds.is_empty() {
        let stages: Vec<String> = t
            .stage_seconds
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        let _ = writeln!(out, "seconds per stage, all files: {}", stages.join(", "));
    }
    let _ = writeln!(
        out,
        "whisper {} {} on {}; {} job(s) at once; WER on normalised words (case, punctuation, numbers); DER collar {} s; cpWER: words with the right speaker; speakers: found (reference)",
        report.whisper_model, report.whisper_precision, report.device, report.jobs_at_once, report.der_collar
    );
    let _ = writeln!(
        out,
        "start s / end s: word timing, the median over the reference turns (RTTM, else STM; `turns` of them) of the seconds \
         from a turn's start to the nearest word start in the result (its end to the nearest word end); - without reference times or words"
    );
    out
}

/// Resets the process's peak resident memory (Linux: /proc/self/clear_refs),
/// so that [`peak_rss_mb`] then reports the peak from now on.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process in MB (Linux: VmHWM), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Items per id, to report ids given twice.
pub fn duplicate_ids(items: &[EvalItem]) -> Vec<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items {
        *seen.entry(&i.id).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "colloquy-eval-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn manifest_rttm_and_uem_come_together() {
        let d = dir();
        std::fs::write(
            d.join("m.tsv"),
            "id\tpath\tgroup\treference\na\tx/a.wav\tsingle\tHello there.\nb\tconv.wav\tconversation\tOne two.\n",
        )
        .unwrap();
        std::fs::write(d.join("r.rttm"), "SPEAKER conv 1 0.0 1.0 <NA> <NA> s1 <NA> <NA>\nSPEAKER other 1 0.0 2.0 <NA> <NA> s2 <NA> <NA>\nSPEAKER other 1 2.0 1.0 <NA> <NA> s3 <NA> <NA>\n").unwrap();
        std::fs::write(d.join("other.flac"), b"").unwrap();
        std::fs::write(d.join("u.uem"), "other NA 0.5 2.5\n").unwrap();
        let mut items = read_manifest(&d.join("m.tsv"), None).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].audio, d.join("x/a.wav"));
        assert_eq!(
            read_manifest(&d.join("m.tsv"), Some("single"))
                .unwrap()
                .len(),
            1
        );
        attach_rttm(&mut items, &d.join("r.rttm")).unwrap();
        attach_uem(&mut items, &d.join("u.uem")).unwrap();
        assert_eq!(items.len(), 3);
        // conv matched by the audio's file stem
        assert_eq!(items[1].reference_speakers(), Some(1));
        assert_eq!(items[2].id, "other");
        assert_eq!(items[2].audio, d.join("other.flac"));
        assert_eq!(items[2].reference_speakers(), Some(2));
        assert_eq!(items[2].uem.as_deref(), Some(&[(0.5, 2.5)][..]));
        assert!(items[2].reference_text.is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_manifest_without_the_needed_columns_is_refused() {
        let d = dir();
        std::fs::write(d.join("m.tsv"), "name\tfile\na\tb.wav\n").unwrap();
        let e = read_manifest(&d.join("m.tsv"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("id, path and reference"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn scores_and_totals() {
        let item = EvalItem {
            id: "c".into(),
            audio: "c.wav".into(),
            reference_text: Some("Travel costs went up by ten percent.".into()),
            reference_turns: Some(vec![
                Turn {
                    speaker: "a".into(),
                    start: 0.0,
                    end: 4.0,
                },
                Turn {
                    speaker: "b".into(),
                    start: 4.0,
                    end: 8.0,
                },
            ]),
            uem: None,
            reference_speaker_text: None,
            reference_stm_times: None,
        };
        let result = serde_json::json!({
            "full_text": " Travel costs went up by 10%.",
            "duration": 8.0,
            "speaker_turns": [
                {"speaker": "SPEAKER_00", "start": 0.0, "end": 5.0},
                {"speaker": "SPEAKER_01", "start": 5.0, "end": 8.0}
            ],
            "performance_metrics": {"total_seconds": 0.5, "stages": {"transcription": 0.3, "diarization": 0.2}}
        });
        let r = score(&item, &result, 0.5, Some(100.0));
        assert_eq!(r.scores.wer, Some(0.0));
        assert_eq!(r.speakers_found, 2);
        assert_eq!(r.speakers_reference, Some(2));
        assert_eq!(r.speed, 16.0);
        // collars take 0-0.25, 3.75-4.25 and 7.75-8 out: 7 s scored; 4.25-5 s confused
        let b = r.scores.der_breakdown.unwrap();
        assert!((b.total - 7.0).abs() < 1e-9, "{b:?}");
        assert!((b.confusion - 0.75).abs() < 1e-9, "{b:?}");
        let t = totals(&[r.clone(), r], 2.0);
        assert_eq!(t.files, 2);
        assert_eq!(t.speed, 8.0);
        assert_eq!(t.scores.wer, Some(0.0));
        assert!((t.scores.der.unwrap() - 0.75 / 7.0).abs() < 1e-9);
        assert_eq!(t.scores.cp_wer, None, "no STM");
        assert_eq!(t.peak_rss_mb, Some(100.0));
        assert_eq!(t.stage_seconds["transcription"], 0.6);
        assert_eq!(t.stage_seconds["diarization"], 0.4);
    }

    #[test]
    fn cp_wer_charges_words_given_to_the_wrong_speaker() {
        let p = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        let reference = p(&[
            ("alice", "Good morning."),
            ("bob", "No problem at all."),
            ("alice", "Thanks."),
        ]);
        // perfect, whatever the labels
        let h = p(&[
            ("S1", "Good morning."),
            ("S0", "No problem at all."),
            ("S1", "Thanks."),
        ]);
        let e = cp_word_errors(&reference, &h);
        assert_eq!((e.errors(), e.reference_words), (0, 7));
        // "Thanks." given to bob: deleted from alice's words, inserted in bob's
        let h = p(&[
            ("S1", "Good morning."),
            ("S0", "No problem at all. Thanks."),
        ]);
        let e = cp_word_errors(&reference, &h);
        assert_eq!((e.deletions, e.insertions, e.substitutions), (1, 1, 0));
        // one speaker for everything: it pairs with bob (alice's 3 words inserted there),
        // and alice's words are missing from her side
        let h = p(&[("S0", "Good morning. No problem at all. Thanks.")]);
        let e = cp_word_errors(&reference, &h);
        assert_eq!(
            (e.deletions, e.insertions, e.substitutions),
            (3, 3, 0),
            "{e:?}"
        );
        assert_eq!(cp_word_errors(&[], &[]).reference_words, 0);
    }

    #[test]
    fn stm_gives_speaker_text_and_reference_text() {
        let d = dir();
        std::fs::write(
            d.join("c.stm"),
            ";; comment\nconv 1 bob 3.5 8.2 No problem.\nconv 1 alice 0.0 2.9 Good morning.\n",
        )
        .unwrap();
        let mut items = vec![EvalItem {
            id: "x".into(),
            audio: d.join("conv.wav"),
            reference_text: None,
            reference_turns: None,
            uem: None,
            reference_speaker_text: None,
            reference_stm_times: None,
        }];
        attach_stm(&mut items, &d.join("c.stm")).unwrap();
        assert_eq!(
            items[0].reference_text.as_deref(),
            Some("Good morning. No problem.")
        );
        assert_eq!(
            items[0].reference_speaker_text.as_ref().unwrap()[0],
            ("alice".to_string(), "Good morning.".to_string())
        );
        std::fs::write(d.join("bad.stm"), "conv 1 bob\n").unwrap();
        assert!(attach_stm(&mut items, &d.join("bad.stm"))
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        std::fs::remove_dir_all(d).unwrap();
    }

    /// A result with `segments[].words` as the pipeline writes them (times in seconds).
    fn result_with_words(segments: &[&[(&str, f64, f64)]]) -> Value {
        let segments: Vec<Value> = segments
            .iter()
            .map(|words| {
                let words: Vec<Value> = words
                    .iter()
                    .map(|(w, s, e)| {
                        serde_json::json!({"word": w, "start": s, "end": e, "probability": 0.9, "speaker": "SPEAKER_00", "overlapped": false})
                    })
                    .collect();
                let text: String = words.iter().map(|w| w["word"].as_str().unwrap()).collect();
                serde_json::json!({"start": words[0]["start"], "end": words[words.len() - 1]["end"], "text": text, "words": words})
            })
            .collect();
        serde_json::json!({"segments": segments, "aligned_segments": [], "full_text": "", "duration": 8.0, "speaker_turns": []})
    }

    #[test]
    fn word_timing_at_turn_edges() {
        let turn = |speaker: &str, start, end| Turn {
            speaker: speaker.into(),
            start,
            end,
        };
        let rttm = EvalItem {
            id: "r".into(),
            reference_turns: Some(vec![
                turn("a", 0.0, 2.0),
                turn("b", 2.5, 5.0),
                turn("a", 6.0, 8.0),
            ]),
            ..Default::default()
        };
        let result = result_with_words(&[
            &[(" Hello,", 0.25, 0.75), (" there.", 1.0, 1.75)],
            &[(" Fine,", 3.0, 4.5), (" thanks.", 4.5, 5.5)],
            &[(" Bye.", 6.0, 7.5)],
        ]);
        assert_eq!(result_words(&result).len(), 5);
        let r = score(&rttm, &result, 1.0, None);
        // starts: 0 -> 0.25 (0.25), 2.5 -> 3.0 (0.5), 6.0 -> 6.0 (0); ends: 2.0 -> 1.75, 5.0 -> 4.5 or 5.5, 8.0 -> 7.5
        let d = r.word_timing_distances.clone().unwrap();
        assert_eq!(d.start_seconds, vec![0.25, 0.5, 0.0]);
        assert_eq!(d.end_seconds, vec![0.25, 0.5, 0.5]);
        assert_eq!(
            r.word_timing,
            Some(WordTiming {
                turns: 3,
                median_start_seconds: 0.25,
                median_end_seconds: 0.5
            })
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["word_timing"],
            serde_json::json!({"turns": 3, "median_start_seconds": 0.25, "median_end_seconds": 0.5})
        );
        assert_eq!(
            json["word_timing_distances"]["end_seconds"],
            serde_json::json!([0.25, 0.5, 0.5])
        );

        // STM times when there is no RTTM; a word without an end is left out
        let stm = EvalItem {
            id: "s".into(),
            reference_stm_times: Some(vec![(1.0, 2.0)]),
            ..Default::default()
        };
        let mut result = result_with_words(&[&[(" Yes.", 1.5, 2.0), (" No.", 0.0, 0.5)]]);
        result["segments"][0]["words"][1]["end"] = Value::Null;
        assert_eq!(result_words(&result), vec![(1.5, 2.0)]);
        let s = score(&stm, &result, 1.0, None);
        assert_eq!(
            s.word_timing,
            Some(WordTiming {
                turns: 1,
                median_start_seconds: 0.5,
                median_end_seconds: 0.0
            })
        );

        // no words in the result (segments without `words`, or none at all): no timing score
        let no_words = serde_json::json!({"segments": [{"start": 0.0, "end": 2.0, "text": " Hello there."}], "full_text": "Hello there."});
        let n = score(&rttm, &no_words, 1.0, None);
        assert_eq!(
            (n.word_timing, n.word_timing_distances.is_none()),
            (None, true)
        );
        assert_eq!(
            score(&rttm, &serde_json::json!({}), 1.0, None).word_timing,
            None
        );
        // no reference times: no timing score either
        let text_only = EvalItem {
            id: "t".into(),
            reference_text: Some("Hello there.".into()),
            ..Default::default()
        };
        assert_eq!(score(&text_only, &result, 1.0, None).word_timing, None);

        // totals: the median over all turns pooled (starts 0, 0.25, 0.5, 0.5; ends 0, 0.25, 0.5, 0.5)
        let t = totals(&[r.clone(), s, n], 3.0);
        assert_eq!(
            t.word_timing,
            Some(WordTiming {
                turns: 4,
                median_start_seconds: 0.375,
                median_end_seconds: 0.375
            })
        );
        assert_eq!(totals(&[], 1.0).word_timing, None);
        let report = EvalReport {
            whisper_model: "tiny.en".into(),
            whisper_precision: "fp32".into(),
            device: "cpu".into(),
            jobs_at_once: 1,
            der_collar: DER_COLLAR,
            files: vec![r],
            totals: t,
        };
        let table = table(&report);
        let line = table.lines().find(|l| l.starts_with("r ")).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[7..10], &["0.25", "0.50", "3"], "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("TOTAL") && l.contains(" 4 ")),
            "{table}"
        );
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert!(
            header
                .windows(5)
                .any(|w| w == ["start", "s", "end", "s", "turns"]),
            "{table}"
        );
    }

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn stm_turn_times_score_timing_and_a_new_rttm_item_finds_its_audio() {
        // the realmix1 layout: mix/realmix1.{wav,rttm,stm}, no manifest row
        let d = dir();
        std::fs::write(d.join("realmix1.wav"), b"").unwrap();
        std::fs::write(d.join("realmix1.rttm"), "SPEAKER realmix1 1 0.000 7.048 <NA> <NA> reader <NA> <NA>\nSPEAKER realmix1 1 7.348 10.927 <NA> <NA> jfk <NA> <NA>\n").unwrap();
        std::fs::write(
            d.join("realmix1.stm"),
            "realmix1 1 jfk 7.348 18.275 And so\nrealmix1 1 reader 0.000 7.048 and mister\n",
        )
        .unwrap();
        let mut items = vec![EvalItem {
            id: "other".into(),
            audio: d.join("other.wav"),
            ..Default::default()
        }];
        attach_rttm(&mut items, &d.join("realmix1.rttm")).unwrap();
        attach_stm(&mut items, &d.join("realmix1.stm")).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[1].id.as_str(), &items[1].audio),
            ("realmix1", &d.join("realmix1.wav"))
        );
        assert_eq!(
            items[1].reference_text.as_deref(),
            Some("and mister And so")
        );
        assert_eq!(
            items[1].reference_stm_times,
            Some(vec![(0.0, 7.048), (7.348, 18.275)])
        );
        let rttm_times = items[1].timing_reference().unwrap();
        assert_eq!(rttm_times.len(), 2);
        assert!((rttm_times[1].1 - 18.275).abs() < 1e-9, "{rttm_times:?}");
        // without the RTTM turns, the STM's
        items[1].reference_turns = None;
        assert_eq!(
            items[1].timing_reference(),
            Some(vec![(0.0, 7.048), (7.348, 18.275)])
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn shared_realmix1_is_found_beside_its_rttm() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mix");
        if !dir.join("realmix1.rttm").is_file() {
            eprintln!(
                "skipped: {} not present (shared speech data)",
                dir.display()
            );
            return;
        }
        let mut items = Vec::new();
        attach_rttm(&mut items, &dir.join("realmix1.rttm")).unwrap();
        attach_stm(&mut items, &dir.join("realmix1.stm")).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].audio, dir.join("realmix1.wav"));
        assert_eq!(items[0].reference_speakers(), Some(6));
        let (rttm, stm) = (
            items[0].timing_reference().unwrap(),
            items[0].reference_stm_times.clone().unwrap(),
        );
        assert_eq!(rttm.len(), 10);
        for (a, b) in rttm.iter().zip(&stm) {
            assert!(
                (a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 2e-3,
                "RTTM {a:?} against STM {b:?}"
            );
        }
    }

    #[test]
    fn peak_rss_is_read() {
        reset_peak_rss();
        let m = peak_rss_mb().expect("VmHWM on Linux");
        assert!(m > 1.0, "{m}");
    }
}
