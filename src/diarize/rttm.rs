//! RTTM and UEM files: speaker turns and scored regions.
//!
//! RTTM (one turn per line): `SPEAKER <file> <chan> <start> <dur> <NA> <NA> <speaker> <NA> <NA>`.
//! UEM (one scored region per line): `<file> <chan> <start> <end>`.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One speaker turn, seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Turn {
    pub speaker: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Turns per file id, in file order.
pub fn parse_rttm(text: &str) -> Result<BTreeMap<String, Vec<Turn>>, ParseError> {
    let mut out: BTreeMap<String, Vec<Turn>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0].starts_with(';') || f[0].starts_with('#') {
            continue;
        }
        if f[0] != "SPEAKER" {
            continue;
        }
        if f.len() < 8 {
            return Err(ParseError {
                line: i + 1,
                message: format!("expected 10 fields, got {}", f.len()),
            });
        }
        let num = |s: &str| {
            s.parse::<f64>().map_err(|_| ParseError {
                line: i + 1,
                message: format!("not a number: {s}"),
            })
        };
        let start = num(f[3])?;
        let dur = num(f[4])?;
        out.entry(f[1].to_string()).or_default().push(Turn {
            speaker: f[7].to_string(),
            start,
            end: start + dur,
        });
    }
    Ok(out)
}

/// Scored regions per file id.
pub fn parse_uem(text: &str) -> Result<BTreeMap<String, Vec<(f64, f64)>>, ParseError> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0].starts_with(';') || f[0].starts_with('#') {
            continue;
        }
        if f.len() < 4 {
            return Err(ParseError {
                line: i + 1,
                message: format!("expected 4 fields, got {}", f.len()),
            });
        }
        let num = |s: &str| {
            s.parse::<f64>().map_err(|_| ParseError {
                line: i + 1,
                message: format!("not a number: {s}"),
            })
        };
        out.entry(f[0].to_string())
            .or_default()
            .push((num(f[2])?, num(f[3])?));
    }
    Ok(out)
}

/// Writes turns as RTTM lines for `file_id`.
pub fn write_rttm(file_id: &str, turns: &[Turn]) -> String {
    let mut s = String::new();
    for t in turns {
        let _ = writeln!(
            s,
            "SPEAKER {file_id} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>",
            t.start,
            t.end - t.start,
            t.speaker
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rttm_round_trip() {
        let turns = vec![
            Turn {
                speaker: "SPEAKER_00".into(),
                start: 0.5,
                end: 2.25,
            },
            Turn {
                speaker: "SPEAKER_01".into(),
                start: 2.0,
                end: 4.0,
            },
        ];
        let text = write_rttm("meeting", &turns);
        assert_eq!(
            text.lines().next().unwrap(),
            "SPEAKER meeting 1 0.500 1.750 <NA> <NA> SPEAKER_00 <NA> <NA>"
        );
        let back = parse_rttm(&text).unwrap();
        assert_eq!(back["meeting"], turns);
    }

    #[test]
    fn uem_and_errors() {
        let u = parse_uem("ami_dev00 1 0.000 30.000\n").unwrap();
        assert_eq!(u["ami_dev00"], vec![(0.0, 30.0)]);
        let err = parse_rttm("SPEAKER f 1 abc 1.0 <NA> <NA> A <NA> <NA>\n").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(parse_rttm("SPEAKER f 1 2.0\n").is_err());
    }
}
