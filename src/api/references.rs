//! Reference clips sent inline: the OpenAI-compatible route's
//! `known_speaker_names[]` + `known_speaker_references[]` (data URLs of
//! audio, as OpenAI's diarizing model takes them). Each clip is checked
//! here (decoded: 2 to 30 s of audio Colloquy reads), then stored beside
//! the job's audio; the diarizer makes its voice print when the job runs,
//! and the job's speakers take the names whose prints they match.

use base64::Engine as _;

use crate::audio::{load_16k_mono_from_bytes, AudioError, DecodeLimits};
use crate::registry::Reference;
use crate::speakers::CLIP_SECONDS;

/// At most this many named references (OpenAI's limit).
pub const MAX_REFERENCES: usize = 4;

/// A refusal: the message, and the form field it is about.
pub type Refusal = (String, &'static str);
/// A file to store beside the job's audio: its name and bytes.
pub type Attachment = (String, Vec<u8>);

/// The named references of a form: their options entries and the files
/// to store beside the audio (`reference-{i}.{ext}`). None given: empty.
pub fn parse(
    names: &[String],
    references: &[String],
) -> Result<(Vec<Reference>, Vec<Attachment>), Refusal> {
    const NAMES: &str = "known_speaker_names";
    const REFS: &str = "known_speaker_references";
    if names.is_empty() && references.is_empty() {
        return Ok((vec![], vec![]));
    }
    if names.len() != references.len() {
        // the field with the entries too many
        let field = if names.len() > references.len() {
            NAMES
        } else {
            REFS
        };
        return Err((
            format!(
                "{} known_speaker_names[] but {} known_speaker_references[]: one reference clip per name",
                names.len(),
                references.len()
            ),
            field,
        ));
    }
    if names.len() > MAX_REFERENCES {
        return Err((
            format!("at most {MAX_REFERENCES} known speakers per request"),
            NAMES,
        ));
    }
    let mut out = Vec::new();
    let mut files = Vec::new();
    for (i, (name, url)) in names.iter().zip(references).enumerate() {
        let name = crate::speakers::clean_name(name).map_err(|e| (e.to_string(), NAMES))?;
        if out.iter().any(|r: &Reference| r.name == name) {
            return Err((format!("the name '{name}' is given twice"), NAMES));
        }
        let (ext, bytes) = data_url(url.trim())
            .map_err(|e| (format!("known_speaker_references[{i}]: {e}"), REFS))?;
        let limits = DecodeLimits::max_seconds(CLIP_SECONDS.1.ceil() as u64);
        let length = |seconds: String| {
            (
                format!(
                    "known_speaker_references[{i}] is {seconds} s; a reference is {} to {} s of one voice",
                    CLIP_SECONDS.0, CLIP_SECONDS.1
                ),
                REFS,
            )
        };
        let audio = match load_16k_mono_from_bytes(bytes.clone(), ext, limits) {
            Ok(audio) => audio,
            Err(AudioError::TooLong { seconds_limit }) => {
                return Err(length(format!("over {seconds_limit}")))
            }
            Err(e) => {
                return Err((
                    format!("known_speaker_references[{i}] is not audio Colloquy reads: {e}"),
                    REFS,
                ))
            }
        };
        let seconds = audio.duration();
        if !(CLIP_SECONDS.0..=CLIP_SECONDS.1).contains(&seconds) {
            return Err(length(format!("{seconds:.1}")));
        }
        let file = format!("reference-{i}.{}", ext.unwrap_or("audio"));
        out.push(Reference {
            name,
            file: file.clone(),
        });
        files.push((file, bytes));
    }
    Ok((out, files))
}

/// The bytes of a base64 data URL (`data:audio/wav;base64,...`) and the
/// file extension its media type names (None: let the decoder find out).
fn data_url(url: &str) -> Result<(Option<&'static str>, Vec<u8>), String> {
    let rest = url
        .strip_prefix("data:")
        .ok_or("not a data URL (data:audio/...;base64,...)")?;
    let (head, data) = rest
        .split_once(',')
        .ok_or("a data URL has a comma before its data")?;
    let mut parts = head.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if !parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("only base64 data URLs are taken (data:audio/...;base64,...)".into());
    }
    let ext = match media.as_str() {
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => Some("wav"),
        "audio/mpeg" | "audio/mp3" => Some("mp3"),
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => Some("m4a"),
        "audio/flac" | "audio/x-flac" => Some("flac"),
        "audio/ogg" => Some("ogg"),
        "audio/opus" => Some("opus"),
        "audio/webm" | "video/webm" => Some("webm"),
        _ => None,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("its base64 does not decode ({e})"))?;
    if bytes.is_empty() {
        return Err("it is empty".into());
    }
    Ok((ext, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(seconds: f64) -> Vec<u8> {
        let n = (seconds * 16_000.0) as usize;
        let mut out = Vec::new();
        let data_len = (n * 2) as u32;
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&1u16.to_le_bytes()); // mono
        out.extend_from_slice(&16_000u32.to_le_bytes());
        out.extend_from_slice(&32_000u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        for i in 0..n {
            let v = ((i as f32 * 0.05).sin() * 8000.0) as i16;
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn url(media: &str, bytes: &[u8]) -> String {
        format!(
            "data:{media};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    #[test]
    fn names_and_clips_become_references_and_files() {
        let (refs, files) = parse(
            &["Dana".into(), " Eli ".into()],
            &[url("audio/wav", &wav(3.0)), url("", &wav(2.5))],
        )
        .unwrap();
        assert_eq!(
            refs,
            vec![
                Reference {
                    name: "Dana".into(),
                    file: "reference-0.wav".into()
                },
                Reference {
                    name: "Eli".into(),
                    file: "reference-1.audio".into()
                }
            ]
        );
        assert_eq!(files[0].1, wav(3.0));
        assert_eq!(parse(&[], &[]).unwrap().0, vec![]);
    }

    #[test]
    fn bad_references_are_refused_with_the_field_named() {
        let ok = url("audio/wav", &wav(3.0));
        let refuse = |names: &[&str], refs: &[String]| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            parse(&names, refs).unwrap_err()
        };
        let (m, f) = refuse(&["Dana"], &[]);
        assert!(
            m.contains("one reference clip per name") && f == "known_speaker_names",
            "{m}"
        );
        let (m, _) = refuse(&["Dana", "Dana"], &[ok.clone(), ok.clone()]);
        assert!(m.contains("given twice"), "{m}");
        let five = vec![ok.clone(); 5];
        let (m, _) = refuse(&["a", "b", "c", "d", "e"], &five);
        assert!(m.contains("at most 4"), "{m}");
        let (m, f) = refuse(&["Dana"], &["aGVsbG8=".into()]);
        assert!(
            m.contains("not a data URL") && f == "known_speaker_references",
            "{m}"
        );
        let (m, _) = refuse(&["Dana"], &["data:audio/wav;base64,@@@".into()]);
        assert!(m.contains("base64"), "{m}");
        let (m, _) = refuse(
            &["Dana"],
            &[url("audio/wav", b"not audio at all, just text")],
        );
        assert!(m.contains("not audio Colloquy reads"), "{m}");
        let (m, _) = refuse(&["Dana"], &[url("audio/wav", &wav(1.0))]);
        assert!(m.contains("1.0 s") && m.contains("2 to 30 s"), "{m}");
        let (m, _) = refuse(&["Dana"], &[url("audio/wav", &wav(31.0))]);
        assert!(m.contains("is over 30 s") || m.contains("31.0 s"), "{m}");
        let (m, _) = refuse(&[""], &[ok]);
        assert!(m.contains("1 to 80 characters"), "{m}");
    }
}
