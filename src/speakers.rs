//! Known speakers: a library of named voices, kept in the registry's sled
//! store (tree `speakers`), one library per owner (the API key's id; one
//! shared library without keys). Plain synchronous code, no actors.
//!
//! A speaker has a name and voice prints: unit CAM++ embeddings, each with
//! where it came from (a job's speaker, or a reference clip). No audio is
//! kept. After a job's clustering, [`SpeakerLibrary::recognise`] compares
//! each speaker's print in that recording with the library: a cluster takes
//! a known name when its best cosine with one of that person's prints
//! reaches the threshold (`speakers.match_threshold`, calibrated by
//! `benches/speakers.py`), best pairs first, so two clusters never take the
//! same name and a person is given to one cluster at most.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::diarize::cluster::cosine;
use crate::diarize::engine::Voice;

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("speaker library: {0}")]
    Db(#[from] sled::Error),
    #[error("speaker record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("no such speaker")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
}

/// Where a voice print came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrintSource {
    /// A speaker of a finished job.
    Job { job_id: Uuid, speaker: String },
    /// A reference clip uploaded for it.
    Clip { filename: String, seconds: f64 },
}

/// One voice print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Print {
    /// Unit length (never shown by the API).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub embedding: Vec<f32>,
    pub source: PrintSource,
    pub added_at: DateTime<Utc>,
}

/// A named voice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Speaker {
    /// `spk_` and 12 hex digits.
    pub id: String,
    pub name: String,
    /// The API key (its id) whose library it is; None without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub prints: Vec<Print>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Speaker {
    /// The record as the API shows it: prints without their embeddings.
    pub fn public(mut self) -> Speaker {
        for p in &mut self.prints {
            p.embedding.clear();
        }
        self
    }

    /// The best cosine between `embedding` and one of its prints.
    fn score(&self, embedding: &[f32]) -> f32 {
        self.prints
            .iter()
            .map(|p| cosine(&p.embedding, embedding))
            .fold(f32::MIN, f32::max)
    }
}

/// A recording's speaker recognised as a known one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recognised {
    /// The diarizer's label in that recording (`SPEAKER_00`).
    pub label: String,
    pub speaker_id: String,
    pub name: String,
    /// The cosine that matched.
    pub confidence: f32,
}

/// The library; cheap to clone (a sled tree).
#[derive(Clone)]
pub struct SpeakerLibrary {
    tree: sled::Tree,
}

/// A reference clip's length, seconds: long enough for a steady print,
/// short enough to be one voice (OpenAI asks for 2 to 10 s).
pub const CLIP_SECONDS: (f64, f64) = (2.0, 30.0);

/// Longest name kept.
pub const MAX_NAME_CHARS: usize = 80;

/// A name as given, checked: trimmed, 1 to 80 characters, no control characters.
pub fn clean_name(raw: &str) -> Result<String, LibraryError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(LibraryError::Invalid(format!(
            "a speaker's name has 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(LibraryError::Invalid(
            "a speaker's name has no control characters".into(),
        ));
    }
    Ok(name.to_string())
}

fn unit(mut v: Vec<f32>) -> Result<Vec<f32>, LibraryError> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(n.is_finite() && n > 0.0) {
        return Err(LibraryError::Invalid("an empty voice print".into()));
    }
    v.iter_mut().for_each(|x| *x /= n);
    Ok(v)
}

impl SpeakerLibrary {
    pub fn open(db: &sled::Db) -> Result<SpeakerLibrary, LibraryError> {
        Ok(SpeakerLibrary {
            tree: db.open_tree("speakers")?,
        })
    }

    fn store(&self, s: &Speaker) -> Result<(), LibraryError> {
        self.tree.insert(s.id.as_bytes(), serde_json::to_vec(s)?)?;
        self.tree.flush()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Speaker>, LibraryError> {
        match self.tree.get(id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// The owner's speakers (`owner` None: the keyless library), by name.
    pub fn list(&self, owner: Option<&str>) -> Result<Vec<Speaker>, LibraryError> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (_, v) = kv?;
            let s: Speaker = serde_json::from_slice(&v)?;
            if s.owner.as_deref() == owner {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()));
        Ok(out)
    }

    /// Adds a print to the owner's speaker called `name` (made when there
    /// is none): naming the same person again strengthens their voice.
    pub fn enrol(
        &self,
        owner: Option<&str>,
        name: &str,
        embedding: Vec<f32>,
        source: PrintSource,
    ) -> Result<Speaker, LibraryError> {
        let name = clean_name(name)?;
        let now = Utc::now();
        let print = Print {
            embedding: unit(embedding)?,
            source,
            added_at: now,
        };
        let existing = self
            .list(owner)?
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(&name));
        let mut speaker = existing.unwrap_or_else(|| Speaker {
            id: format!("spk_{}", &Uuid::new_v4().simple().to_string()[..12]),
            name,
            owner: owner.map(String::from),
            prints: Vec::new(),
            created_at: now,
            updated_at: now,
        });
        // the same job's speaker given again replaces its print
        speaker.prints.retain(|p| p.source != print.source);
        speaker.prints.push(print);
        speaker.updated_at = now;
        self.store(&speaker)?;
        Ok(speaker)
    }

    pub fn rename(&self, id: &str, name: &str) -> Result<Speaker, LibraryError> {
        let name = clean_name(name)?;
        let mut s = self.get(id)?.ok_or(LibraryError::NotFound)?;
        s.name = name;
        s.updated_at = Utc::now();
        self.store(&s)?;
        Ok(s)
    }

    /// Removes the speaker and every print of it.
    pub fn delete(&self, id: &str) -> Result<Option<Speaker>, LibraryError> {
        let gone = self.get(id)?;
        self.tree.remove(id.as_bytes())?;
        self.tree.flush()?;
        Ok(gone)
    }

    /// Moves every print of `from` into `into` and deletes `from`.
    pub fn merge(&self, into: &str, from: &str) -> Result<Speaker, LibraryError> {
        if into == from {
            return Err(LibraryError::Invalid(
                "a speaker cannot be merged into itself".into(),
            ));
        }
        let mut target = self.get(into)?.ok_or(LibraryError::NotFound)?;
        let source = self.get(from)?.ok_or(LibraryError::NotFound)?;
        if source.owner != target.owner {
            return Err(LibraryError::NotFound);
        }
        target.prints.extend(source.prints);
        target.updated_at = Utc::now();
        self.store(&target)?;
        self.delete(from)?;
        Ok(target)
    }

    /// The recording's speakers that are known: each `voices` entry against
    /// the owner's library (only the speakers in `only`, when given); pairs
    /// at or above `threshold`, best first, each label and each person used once.
    pub fn recognise(
        &self,
        owner: Option<&str>,
        voices: &[Voice],
        only: Option<&[String]>,
        threshold: f32,
    ) -> Result<Vec<Recognised>, LibraryError> {
        let people: Vec<Speaker> = self
            .list(owner)?
            .into_iter()
            .filter(|s| only.is_none_or(|ids| ids.iter().any(|i| i == &s.id)))
            .collect();
        Ok(recognise_among(voices, &people, threshold))
    }
}

/// The recording's speakers (`voices`) that are among `people`: pairs at or
/// above `threshold`, best first, each label and each person used once;
/// in label order.
pub fn recognise_among(voices: &[Voice], people: &[Speaker], threshold: f32) -> Vec<Recognised> {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (v, voice) in voices.iter().enumerate() {
        for (p, person) in people.iter().enumerate() {
            let score = person.score(&voice.embedding);
            if score >= threshold {
                pairs.push((score, v, p));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut voice_used, mut person_used) = (vec![false; voices.len()], vec![false; people.len()]);
    let mut out = Vec::new();
    for (score, v, p) in pairs {
        if voice_used[v] || person_used[p] {
            continue;
        }
        voice_used[v] = true;
        person_used[p] = true;
        out.push(Recognised {
            label: voices[v].speaker.clone(),
            speaker_id: people[p].id.clone(),
            name: people[p].name.clone(),
            confidence: (score * 1000.0).round() / 1000.0,
        });
    }
    out.sort_by(|a, b| a.label.cmp(&b.label));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(label: &str, v: &[f32]) -> Voice {
        Voice {
            speaker: label.into(),
            embedding: unit(v.to_vec()).unwrap(),
            pieces: 1,
        }
    }

    fn library(name: &str) -> (SpeakerLibrary, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("colloquy-speakers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::open(&dir).unwrap();
        (SpeakerLibrary::open(&db).unwrap(), dir)
    }

    #[test]
    fn best_pairs_first_no_name_twice_and_owners_apart() {
        let (lib, dir) = library("match");
        let job = |s: &str| PrintSource::Job {
            job_id: Uuid::nil(),
            speaker: s.into(),
        };
        let dana = lib
            .enrol(None, "Dana", vec![1.0, 0.0, 0.0], job("SPEAKER_00"))
            .unwrap();
        let eli = lib
            .enrol(None, " Eli ", vec![0.0, 1.0, 0.0], job("SPEAKER_01"))
            .unwrap();
        assert_eq!(eli.name, "Eli");
        // another key's Dana is not this library's
        lib.enrol(
            Some("key_b"),
            "Dana",
            vec![0.0, 0.0, 1.0],
            job("SPEAKER_00"),
        )
        .unwrap();
        let voices = [
            voice("SPEAKER_00", &[0.2, 0.9, 0.0]), // Eli, 0.98
            voice("SPEAKER_01", &[0.9, 0.3, 0.0]), // Dana 0.95 (and Eli 0.32)
            voice("SPEAKER_02", &[0.6, 0.7, 0.0]), // both, but both are taken
            voice("SPEAKER_03", &[0.0, 0.0, 1.0]), // key_b's Dana only
        ];
        let got = lib.recognise(None, &voices, None, 0.5).unwrap();
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|r| (r.label.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(names, vec![("SPEAKER_00", "Eli"), ("SPEAKER_01", "Dana")]);
        // restricted to Dana: Eli is not looked for
        let only = lib
            .recognise(None, &voices, Some(&[dana.id.clone()]), 0.5)
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(
            (only[0].label.as_str(), only[0].speaker_id.as_str()),
            ("SPEAKER_01", dana.id.as_str())
        );
        // enrolling the same name again adds a print; merging moves them; deleting removes them
        let again = lib
            .enrol(None, "dana", vec![0.9, 0.1, 0.0], job("SPEAKER_05"))
            .unwrap();
        assert_eq!(
            (again.id.as_str(), again.prints.len()),
            (dana.id.as_str(), 2)
        );
        let merged = lib.merge(&dana.id, &eli.id).unwrap();
        assert_eq!(merged.prints.len(), 3);
        assert!(lib.get(&eli.id).unwrap().is_none());
        lib.delete(&dana.id).unwrap();
        assert!(lib.list(None).unwrap().is_empty());
        assert_eq!(lib.list(Some("key_b")).unwrap().len(), 1);
        assert!(clean_name("\u{7}bell").is_err() && clean_name("  ").is_err());
        assert!(merged
            .public()
            .prints
            .iter()
            .all(|p| p.embedding.is_empty()));
        drop(lib);
        let _ = std::fs::remove_dir_all(dir);
    }
}
