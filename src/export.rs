//! Every output format, rendered from a [`JobResult`] in one place: the API
//! (`GET /api/results/{id}?format=`), `colloquy transcribe --format` and the
//! web page's downloads (which ask the server) all use it.
//!
//! - `json`: the result as stored;
//! - `txt`: one paragraph per speaker turn, `[0:01 - 0:07] Name: text`;
//! - `srt`, `vtt`: subtitle cues that are each one speaker's words, cut at
//!   word boundaries into at most two lines of about 42 characters (the
//!   `Name: ` counted) and 7 s, times from the words (an utterance without
//!   word times shares its time among its words by length); VTT names the
//!   speaker with a `<v Name>` voice span;
//! - `tsv`: one row per word: start, end (seconds), speaker, word,
//!   probability, overlapped;
//! - `rttm`: the speaker turns (NIST RTTM, as pyannote writes).
//!
//! Speaker names: `SPEAKER_00` is shown as "Speaker 1" unless `names` maps
//! the label to a name (the page's renames).

use std::collections::HashMap;
use std::fmt::Write;

use crate::align::AlignedSegment;
use crate::result::JobResult;

/// Characters of one subtitle line, and seconds of one cue, at most (about).
pub const LINE: usize = 42;
pub const CUE_SECONDS: f64 = 7.0;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Txt,
    Srt,
    Vtt,
    Tsv,
    Rttm,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Txt => "text/plain; charset=utf-8",
            Format::Srt => "application/x-subrip; charset=utf-8",
            Format::Vtt => "text/vtt; charset=utf-8",
            Format::Tsv => "text/tab-separated-values; charset=utf-8",
            Format::Rttm => "text/plain; charset=utf-8",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Txt => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Tsv => "tsv",
            Format::Rttm => "rttm",
        }
    }
}

/// Speaker labels to the names shown.
#[derive(Debug, Clone, Default)]
pub struct Names(pub HashMap<String, String>);

impl Names {
    pub fn of(&self, label: &str) -> String {
        if let Some(name) = self.0.get(label).filter(|n| !n.trim().is_empty()) {
            return name.trim().to_string();
        }
        match label
            .strip_prefix("SPEAKER_")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => format!("Speaker {}", n + 1),
            None if label.is_empty() => "Unknown".into(),
            None => label.to_string(),
        }
    }
}

/// A recording's name without folder and extension (`call` of
/// `calls/call.mp3`): the file id of RTTM lines.
pub fn stem(name: &str) -> &str {
    std::path::Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audio")
}

/// Renders `result` as `format`; `file_id` names the recording in RTTM.
pub fn render(result: &JobResult, format: Format, names: &Names, file_id: &str) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(result).unwrap_or_default(),
        Format::Txt => txt(result, names),
        Format::Srt => srt(result, names),
        Format::Vtt => vtt(result, names),
        Format::Tsv => tsv(result, names),
        Format::Rttm => rttm(result, file_id),
    }
}

/// `1:05` or `1:02:05`.
pub fn clock(sec: f64) -> String {
    let s = sec.max(0.0).floor() as u64;
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// `00:01:02,345` (SRT, `sep` ',') or `00:01:02.345` (VTT, '.').
pub fn stamp(sec: f64, sep: char) -> String {
    let ms = (sec.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, r) = (
        ms / 3_600_000,
        ms % 3_600_000 / 60_000,
        ms % 60_000 / 1000,
        ms % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}{sep}{r:03}")
}

fn utterances(result: &JobResult) -> &[AlignedSegment] {
    &result.aligned_segments
}

fn txt(result: &JobResult, names: &Names) -> String {
    // consecutive utterances of one speaker make one paragraph
    let mut groups: Vec<(&str, f64, f64, Vec<&str>)> = Vec::new();
    for u in utterances(result) {
        let text = u.text.trim();
        match groups.last_mut() {
            Some(g) if g.0 == u.speaker => {
                g.2 = u.end;
                g.3.push(text);
            }
            _ => groups.push((&u.speaker, u.start, u.end, vec![text])),
        }
    }
    let mut out = String::new();
    for (i, (speaker, start, end, texts)) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "[{} - {}] {}: {}",
            clock(*start),
            clock(*end),
            names.of(speaker),
            texts.join(" ")
        );
    }
    out
}

/// A word of a cue: its text (leading space kept) and times.
#[derive(Debug, Clone)]
struct CueWord {
    text: String,
    start: f64,
    end: f64,
}

fn join_words(ws: &[CueWord]) -> String {
    let joined: String = ws.iter().map(|w| w.text.as_str()).collect();
    joined.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The utterance's words, or (without word times) its text's words with
/// the utterance's time shared among them by length.
fn cue_words(u: &AlignedSegment) -> Vec<CueWord> {
    let words: Vec<CueWord> = u
        .words
        .iter()
        .filter(|w| !w.word.word.trim().is_empty())
        .map(|w| CueWord {
            text: w.word.word.clone(),
            start: w.word.start,
            end: w.word.end,
        })
        .collect();
    if !words.is_empty() {
        return words;
    }
    let mut toks: Vec<String> = Vec::new();
    for (i, t) in u.text.split_whitespace().enumerate() {
        toks.push(if i == 0 && !u.text.starts_with(' ') {
            t.to_string()
        } else {
            format!(" {t}")
        });
    }
    let total = toks.iter().map(|t| t.len()).sum::<usize>().max(1) as f64;
    let span = u.end - u.start;
    let mut c = 0usize;
    toks.into_iter()
        .map(|text| {
            let start = u.start + span * c as f64 / total;
            c += text.len();
            CueWord {
                end: u.start + span * c as f64 / total,
                start,
                text,
            }
        })
        .collect()
}

/// Cuts `ws` into cues that fit `room` characters and [`CUE_SECONDS`],
/// preferring cuts after sentence ends, commas and pauses, never inside a
/// word Whisper split ("10" | "%.").
fn cut_cue(ws: &[CueWord], room: usize, out: &mut Vec<Vec<CueWord>>) {
    let fill = |a: usize, b: usize| {
        (join_words(&ws[a..b]).chars().count() as f64 / room as f64)
            .max((ws[b - 1].end - ws[a].start) / CUE_SECONDS)
    };
    if ws.len() < 2 || fill(0, ws.len()) <= 1.0 {
        out.push(ws.to_vec());
        return;
    }
    let mut best = 1;
    let mut best_score = f64::INFINITY;
    for k in 1..ws.len() {
        let mut score = fill(0, k).max(fill(k, ws.len()));
        let prev = ws[k - 1].text.trim_end_matches(['"', '\'', ')', ']']);
        if prev.ends_with(['.', '?', '!']) {
            score -= 0.25;
        } else if ws[k - 1].text.ends_with([',', ';', ':']) {
            score -= 0.1;
        }
        if ws[k].start - ws[k - 1].end > 0.3 {
            score -= 0.1;
        }
        if !ws[k].text.starts_with(char::is_whitespace) {
            score += 1.0;
        }
        if score < best_score {
            best_score = score;
            best = k;
        }
    }
    cut_cue(&ws[..best], room, out);
    cut_cue(&ws[best..], room, out);
}

/// `lead` + the words on one line, or two balanced lines broken at a space.
fn cue_lines(lead: &str, ws: &[CueWord]) -> String {
    let whole = format!("{lead}{}", join_words(ws));
    if whole.chars().count() <= LINE {
        return whole;
    }
    let mut best: Option<(usize, String)> = None;
    for k in 1..ws.len() {
        if !ws[k].text.starts_with(char::is_whitespace) {
            continue;
        }
        let a = format!("{lead}{}", join_words(&ws[..k]));
        let b = join_words(&ws[k..]);
        let w = a.chars().count().max(b.chars().count());
        if best.as_ref().is_none_or(|(bw, _)| w < *bw) {
            best = Some((w, format!("{a}\n{b}")));
        }
    }
    best.map(|(_, t)| t).unwrap_or(whole)
}

struct Cue {
    start: f64,
    end: f64,
    name: String,
    /// The words' lines without the name (VTT) and with it (SRT).
    lines: String,
    named: String,
}

fn cues(result: &JobResult, names: &Names) -> Vec<Cue> {
    let mut out = Vec::new();
    for u in utterances(result) {
        let name = names.of(&u.speaker);
        let room = LINE.max(2 * LINE - name.chars().count().min(LINE) - 2);
        let words = cue_words(u);
        if words.is_empty() {
            continue;
        }
        let mut parts = Vec::new();
        cut_cue(&words, room, &mut parts);
        for ws in parts {
            let start = ws[0].start;
            let end = ws[ws.len() - 1].end.max(start + 0.01);
            out.push(Cue {
                start,
                end,
                lines: cue_lines("", &ws),
                named: cue_lines(&format!("{name}: "), &ws),
                name: name.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.start.total_cmp(&b.start));
    out
}

fn srt(result: &JobResult, names: &Names) -> String {
    let mut out = String::new();
    for (k, c) in cues(result, names).iter().enumerate() {
        if k > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}\n{} --> {}\n{}",
            k + 1,
            stamp(c.start, ','),
            stamp(c.end, ','),
            c.named
        );
    }
    out
}

fn vtt(result: &JobResult, names: &Names) -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::from("WEBVTT\n");
    for c in cues(result, names) {
        let _ = write!(
            out,
            "\n{} --> {}\n<v {}>{}\n",
            stamp(c.start, '.'),
            stamp(c.end, '.'),
            esc(&c.name),
            esc(&c.lines)
        );
    }
    out
}

fn tsv(result: &JobResult, names: &Names) -> String {
    let clean = |t: &str| t.replace(['\t', '\n', '\r'], " ");
    let mut out = String::from("start\tend\tspeaker\tword\tprobability\toverlapped\n");
    for u in utterances(result) {
        for w in &u.words {
            let text = w.word.word.trim();
            if text.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "{:.3}\t{:.3}\t{}\t{}\t{:.3}\t{}",
                w.word.start,
                w.word.end,
                clean(&names.of(&w.speaker)),
                clean(text),
                w.word.probability,
                w.overlapped
            );
        }
    }
    out
}

fn rttm(result: &JobResult, file_id: &str) -> String {
    let id: String = file_id
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    let id = if id.is_empty() { "audio" } else { &id };
    crate::diarize::rttm::write_rttm(id, &result.speaker_turns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::SpeakerWord;
    use crate::diarize::rttm::{parse_rttm, Turn};
    use crate::result::Provider;
    use crate::runtime::DeviceUsed;
    use crate::whisper::Word;

    fn word(w: &str, start: f64, end: f64, speaker: &str) -> SpeakerWord {
        SpeakerWord {
            word: Word {
                word: w.into(),
                start,
                end,
                probability: 0.9,
            },
            speaker: speaker.into(),
            overlapped: false,
        }
    }

    fn utterance(speaker: &str, words: &[(&str, f64, f64)]) -> AlignedSegment {
        let words: Vec<SpeakerWord> = words
            .iter()
            .map(|(w, s, e)| word(w, *s, *e, speaker))
            .collect();
        AlignedSegment {
            start: words[0].word.start,
            end: words[words.len() - 1].word.end,
            text: words.iter().map(|w| w.word.word.as_str()).collect(),
            speaker: speaker.into(),
            words,
        }
    }

    /// Two speakers; the first speaks long enough to need three cues.
    fn result() -> JobResult {
        let long: Vec<(String, f64, f64)> = (0..30)
            .map(|i| {
                let w = if i % 10 == 9 { " budget." } else { " travel" };
                (w.to_string(), i as f64 * 0.5, i as f64 * 0.5 + 0.4)
            })
            .collect();
        let long: Vec<(&str, f64, f64)> =
            long.iter().map(|(w, s, e)| (w.as_str(), *s, *e)).collect();
        let a = utterance("SPEAKER_00", &long);
        let b = utterance(
            "SPEAKER_01",
            &[(" Yes,", 15.2, 15.5), (" <fine> & good.", 15.6, 16.4)],
        );
        JobResult {
            segments: vec![],
            aligned_segments: vec![a, b],
            full_text: String::new(),
            language: "en".into(),
            duration: 17.0,
            num_speakers: 2,
            speaker_turns: vec![
                Turn {
                    speaker: "SPEAKER_00".into(),
                    start: 0.0,
                    end: 14.9,
                },
                Turn {
                    speaker: "SPEAKER_01".into(),
                    start: 15.2,
                    end: 16.4,
                },
            ],
            provider: Provider {
                runtime: "onnxruntime".into(),
                device: "cpu".into(),
                transcriber_device: DeviceUsed::Cpu,
                diarizer_device: DeviceUsed::Cpu,
                whisper_model: "tiny.en".into(),
            },
            diarization_metrics: Default::default(),
            performance_metrics: None,
            known_speakers: vec![],
        }
    }

    #[test]
    fn srt_cues_are_one_speakers_words_within_two_lines_and_seven_seconds() {
        let names = Names([("SPEAKER_01".to_string(), "Dana".to_string())].into());
        let srt = render(&result(), Format::Srt, &names, "call");
        let blocks: Vec<&str> = srt.trim().split("\n\n").collect();
        assert!(blocks.len() >= 4, "{srt}");
        let mut words_seen = 0;
        for (k, b) in blocks.iter().enumerate() {
            let lines: Vec<&str> = b.lines().collect();
            assert_eq!(lines[0], (k + 1).to_string());
            let (start, end) = lines[1].split_once(" --> ").unwrap();
            let secs = |t: &str| {
                let (hms, ms) = t.split_once(',').unwrap();
                let p: Vec<f64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
                p[0] * 3600.0 + p[1] * 60.0 + p[2] + ms.parse::<f64>().unwrap() / 1000.0
            };
            assert!(
                secs(end) > secs(start) && secs(end) - secs(start) <= CUE_SECONDS + 0.5,
                "{b}"
            );
            let text = &lines[2..];
            assert!((1..=2).contains(&text.len()), "{b}");
            assert!(text.iter().all(|l| l.chars().count() <= 2 * LINE), "{b}");
            assert!(
                text[0].starts_with("Speaker 1: ") || text[0].starts_with("Dana: "),
                "{b}"
            );
            words_seen += text.join(" ").split_whitespace().count()
                - 1
                - usize::from(text[0].starts_with("Speaker 1"));
        }
        assert_eq!(words_seen, 30 + 4, "every word once ({srt})");
        // the cuts fall after "budget."
        assert!(blocks[0].trim_end().ends_with("budget."), "{}", blocks[0]);
    }

    #[test]
    fn an_utterance_without_word_times_is_cut_by_its_text_with_times_shared_by_length() {
        let mut r = result();
        for u in &mut r.aligned_segments {
            u.words.clear();
        }
        let srt = render(&r, Format::Srt, &Names::default(), "call");
        let blocks: Vec<&str> = srt.trim().split("\n\n").collect();
        assert!(blocks.len() >= 3, "the long utterance is still cut: {srt}");
        // the first cue starts with the utterance, the last of its cues ends with it
        assert!(blocks[0].contains("00:00:00,000 --> "), "{srt}");
        let last_of_first = blocks
            .iter()
            .rev()
            .find(|b| b.contains("Speaker 1"))
            .unwrap();
        assert!(
            last_of_first.contains(" --> 00:00:14,900"),
            "{last_of_first}"
        );
        for b in &blocks {
            assert!(
                b.lines().skip(2).all(|l| l.chars().count() <= 2 * LINE),
                "{b}"
            );
        }
    }

    #[test]
    fn vtt_names_voices_and_escapes_text() {
        let vtt = render(&result(), Format::Vtt, &Names::default(), "call");
        assert!(vtt.starts_with("WEBVTT\n\n"));
        assert!(
            vtt.contains("<v Speaker 2>Yes, &lt;fine&gt; &amp; good."),
            "{vtt}"
        );
        assert!(vtt.contains("00:00:15.200 --> 00:00:16.400"), "{vtt}");
    }

    #[test]
    fn txt_tsv_and_rttm_carry_every_word_and_turn() {
        let r = result();
        let txt = render(&r, Format::Txt, &Names::default(), "call");
        assert!(txt.starts_with("[0:00 - 0:14] Speaker 1: travel"), "{txt}");
        assert!(
            txt.contains("\n\n[0:15 - 0:16] Speaker 2: Yes, <fine> & good.\n"),
            "{txt}"
        );
        let tsv = render(&r, Format::Tsv, &Names::default(), "call");
        let rows: Vec<&str> = tsv.lines().collect();
        assert_eq!(
            rows[0],
            "start\tend\tspeaker\tword\tprobability\toverlapped"
        );
        assert_eq!(rows.len(), 1 + 32);
        assert_eq!(rows[31], "15.200\t15.500\tSpeaker 2\tYes,\t0.900\tfalse");
        let rttm = render(&r, Format::Rttm, &Names::default(), "my call");
        let parsed = parse_rttm(&rttm).unwrap();
        assert_eq!(
            parsed["my_call"], r.speaker_turns,
            "read back by the RTTM reader"
        );
        let json = render(&r, Format::Json, &Names::default(), "call");
        assert_eq!(serde_json::from_str::<JobResult>(&json).unwrap(), r);
    }
}
