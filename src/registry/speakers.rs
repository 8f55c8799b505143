//! The registry's part in known speakers: a finished job's voice prints
//! (`results/{id}.voices.json`), and changes of the speaker library carried
//! into stored results (no transcription runs again).

use actix::prelude::*;
use uuid::Uuid;

use super::{JobRegistry, JobStatus, RegistryError};
use crate::diarize::engine::Voice;
use crate::speakers::recognise_among;

/// A finished job's speakers' voice prints (None: no such file, e.g. a
/// job from before they were kept).
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<Voice>>, RegistryError>")]
pub struct JobVoices(pub Uuid);

impl Handler<JobVoices> for JobRegistry {
    type Result = Result<Option<Vec<Voice>>, RegistryError>;
    fn handle(&mut self, msg: JobVoices, _: &mut Context<Self>) -> Self::Result {
        match std::fs::read(self.storage.voices_path(msg.0)) {
            Ok(v) => Ok(Some(serde_json::from_slice(&v)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A change of the speaker library, carried into stored results (no
/// transcription runs again).
#[derive(Debug, Clone)]
pub enum SpeakerChange {
    /// `label` of job `job` is the known speaker `speaker_id` (`name`).
    Named {
        job: Uuid,
        label: String,
        speaker_id: String,
        name: String,
    },
    /// Speaker `id` is now `new_id` called `name` (renamed: the same id; merged: another).
    Renamed {
        id: String,
        new_id: String,
        name: String,
    },
    /// Speaker `id` was deleted: its labels come back.
    Deleted { id: String },
    /// Look for `speaker` in every stored result (its voice prints against
    /// each job's): the best matching label at or above `threshold` that
    /// no known speaker holds takes the name, where the name is not there yet.
    Recognised {
        speaker: crate::speakers::Speaker,
        threshold: f32,
    },
}

/// Applies a [`SpeakerChange`] to the stored results of `owner`'s completed
/// jobs; replies with how many results changed.
#[derive(Message)]
#[rtype(result = "Result<usize, RegistryError>")]
pub struct ChangeSpeakers {
    pub owner: Option<String>,
    pub change: SpeakerChange,
}

impl Handler<ChangeSpeakers> for JobRegistry {
    type Result = Result<usize, RegistryError>;
    fn handle(&mut self, msg: ChangeSpeakers, _: &mut Context<Self>) -> Self::Result {
        let jobs: Vec<Uuid> = match &msg.change {
            SpeakerChange::Named { job, .. } => vec![*job],
            _ => self
                .all()?
                .into_iter()
                .filter(|j| j.status == JobStatus::Completed && j.owner == msg.owner)
                .map(|j| j.job_id)
                .collect(),
        };
        let mut changed = 0;
        for id in jobs {
            let path = self.storage.result_path(id);
            let body = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let mut result: crate::result::JobResult = serde_json::from_slice(&body)?;
            let did = match &msg.change {
                SpeakerChange::Named {
                    label,
                    speaker_id,
                    name,
                    ..
                } => result.name_speaker(label, speaker_id, name, 1.0),
                SpeakerChange::Renamed { id, new_id, name } => {
                    result.update_known(id, Some((new_id, name)))
                }
                SpeakerChange::Deleted { id } => result.update_known(id, None),
                SpeakerChange::Recognised { speaker, threshold } => {
                    if result
                        .known_speakers
                        .iter()
                        .any(|k| k.speaker_id == speaker.id)
                    {
                        continue;
                    }
                    let voices = match std::fs::read(self.storage.voices_path(id)) {
                        Ok(v) => serde_json::from_slice::<Vec<Voice>>(&v)?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let free: Vec<Voice> = voices
                        .into_iter()
                        .filter(|v| !result.known_speakers.iter().any(|k| k.label == v.speaker))
                        .collect();
                    let found = recognise_among(&free, std::slice::from_ref(speaker), *threshold);
                    found.first().is_some_and(|r| {
                        result.name_speaker(&r.label, &r.speaker_id, &r.name, r.confidence)
                    })
                }
            };
            if did {
                let body = serde_json::to_vec_pretty(&result)?;
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, &body)?;
                std::fs::rename(&tmp, &path)?;
                let _ = self.update(id, |j| j.result_bytes = Some(body.len() as u64));
                changed += 1;
            }
        }
        Ok(changed)
    }
}
