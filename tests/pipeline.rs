//! The actor pipeline on fake engines: no models, no clock. What it checks
//! is the pipeline's own work: transcription and diarization run side by
//! side on the same samples, their halves meet again, and a failure in one
//! branch ends the job once, with the user's message, while later jobs go on.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colloquy::actors::pipeline::Engines;
use colloquy::config::Config;
use colloquy::local::LocalRunner;
use colloquy::registry::JobOptions;
use common::fakes::{self, FakeDiarizer, FakeWhisper};

/// How long a fake waits for the other branch to start before it says the
/// branches did not run side by side (a bound on a failure, not a sleep).
const OTHER_BRANCH: Duration = Duration::from_secs(60);

/// Each fake tells the other it has started, then waits to hear the other
/// has too: with branches one after the other, neither would ever hear.
struct Rendezvous {
    tell: mpsc::Sender<()>,
    hear: mpsc::Receiver<()>,
}

impl Rendezvous {
    fn pair() -> (Rendezvous, Rendezvous) {
        let (a_tx, a_rx) = mpsc::channel();
        let (b_tx, b_rx) = mpsc::channel();
        (
            Rendezvous {
                tell: a_tx,
                hear: b_rx,
            },
            Rendezvous {
                tell: b_tx,
                hear: a_rx,
            },
        )
    }

    fn meet(&self) -> bool {
        let _ = self.tell.send(());
        self.hear.recv_timeout(OTHER_BRANCH).is_ok()
    }
}

fn wav_file(dir: &std::path::Path, seconds: f64) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tone.wav");
    std::fs::write(&path, fakes::tone_wav(seconds)).unwrap();
    path
}

fn fake_config() -> Config {
    fakes::config(&[])
}

/// A hook that fails unless the other branch's fake also started.
fn meeting(r: Rendezvous) -> Option<fakes::Hook> {
    Some(Box::new(move || {
        if r.meet() {
            Ok(())
        } else {
            Err("diarization did not run beside transcription".into())
        }
    }))
}

#[actix_rt::test]
async fn transcription_and_diarization_run_side_by_side_and_meet_in_the_result() {
    let (a, b) = Rendezvous::pair();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engines = Engines {
        whisper: vec![Box::new(FakeWhisper {
            hook: meeting(a),
            samples_seen: seen.clone(),
        })],
        diarization: vec![Box::new(FakeDiarizer { hook: meeting(b) })],
        vad: vec![],
        voices: vec![],
        spare_cores: None,
        whisper_loader: None,
    };
    let dir = std::env::temp_dir().join(format!("colloquy-fork-{}", std::process::id()));
    let clip = wav_file(&dir, 2.0);
    let runner = LocalRunner::start(fake_config(), engines, 4).await.unwrap();
    let id = runner.submit(&clip, JobOptions::default()).await.unwrap();
    let done = runner.wait(id).await.expect("the job completes");
    let r = &done.result;
    // the transcriber saw the whole recording
    assert_eq!(*seen.lock().unwrap(), vec![32000]);
    // words carry the diarizer's speakers: the join gave the aligner both halves
    let words: Vec<(String, String)> = r["segments"][0]["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap().trim().to_string(),
                w["speaker"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        words,
        [
            ("Hello", "SPEAKER_00"),
            ("there.", "SPEAKER_00"),
            ("Hi!", "SPEAKER_01")
        ]
        .map(|(w, s)| (w.to_string(), s.to_string()))
    );
    assert_eq!(r["num_speakers"], 2);
    assert_eq!(r["provider"]["whisper_model"], "fake");
    // every stage's seconds are in the job's metrics, the branches' included
    let stages: Vec<&str> = r["performance_metrics"]["stages"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for stage in [
        "decoding",
        "preprocessing",
        "transcription",
        "diarization",
        "alignment",
    ] {
        assert!(stages.contains(&stage), "{stage} missing from {stages:?}");
    }
    let counters = runner.counters();
    // (jobs_in: a stage counts a job out only after the next one took it, which may follow the result)
    let taken = |name: &str| counters.iter().find(|(n, _)| *n == name).unwrap().1.jobs_in;
    assert_eq!(
        (
            taken("transcription"),
            taken("diarization"),
            taken("alignment")
        ),
        (1, 1, 1)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A speech detector that hears speech everywhere, once the diarizer has
/// started (`meet`), and counts the jobs it saw.
struct FakeVad {
    meet: Rendezvous,
    jobs: Arc<Mutex<usize>>,
}

impl colloquy::vad::SpeechDetector for FakeVad {
    fn speech(
        &mut self,
        samples: colloquy::audio::Samples<'_>,
    ) -> Result<colloquy::vad::Speech, colloquy::vad::VadError> {
        assert!(
            self.meet.meet(),
            "the diarizer did not start while the speech detector ran"
        );
        *self.jobs.lock().unwrap() += 1;
        let seconds = samples.len() as f64 / 16_000.0;
        Ok(colloquy::vad::Speech {
            regions: vec![colloquy::vad::SpeechRegion::new(0.0, seconds)],
            probs: vec![0.9; samples.len().div_ceil(512)],
        })
    }
}

/// The speech detector runs in the transcription branch, after the fork:
/// the diarizer starts on the samples while it runs (before, the
/// preprocessor ran it and the diarizer waited for it).
#[actix_rt::test]
async fn the_diarizer_starts_while_the_speech_detector_runs() {
    let (a, b) = Rendezvous::pair();
    let jobs = Arc::new(Mutex::new(0));
    let engines = Engines {
        whisper: vec![Box::new(FakeWhisper {
            hook: None,
            samples_seen: Arc::new(Mutex::new(Vec::new())),
        })],
        diarization: vec![Box::new(FakeDiarizer { hook: meeting(b) })],
        vad: vec![Box::new(FakeVad {
            meet: a,
            jobs: jobs.clone(),
        })],
        voices: vec![],
        spare_cores: None,
        whisper_loader: None,
    };
    let dir = std::env::temp_dir().join(format!("colloquy-fork-vad-{}", std::process::id()));
    let clip = wav_file(&dir, 2.0);
    let runner = LocalRunner::start(fake_config(), engines, 4).await.unwrap();
    let id = runner.submit(&clip, JobOptions::default()).await.unwrap();
    let done = runner.wait(id).await.expect("the job completes");
    assert_eq!(done.result["num_speakers"], 2);
    assert_eq!(*jobs.lock().unwrap(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_failing_branch_fails_the_job_once_and_the_next_job_completes() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engines = Engines {
        whisper: vec![Box::new(FakeWhisper {
            hook: None,
            samples_seen: seen.clone(),
        })],
        diarization: vec![Box::new(FakeDiarizer { hook: None })],
        vad: vec![],
        voices: vec![],
        spare_cores: None,
        whisper_loader: None,
    };
    let dir = std::env::temp_dir().join(format!("colloquy-fork-fail-{}", std::process::id()));
    let clip = wav_file(&dir, 1.0);
    let runner = LocalRunner::start(fake_config(), engines, 4).await.unwrap();
    let failing = runner
        .submit(
            &clip,
            JobOptions {
                num_speakers: Some(fakes::FAILING_SPEAKER_COUNT),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let fine = runner.submit(&clip, JobOptions::default()).await.unwrap();
    let err = runner
        .wait(failing)
        .await
        .expect_err("the diarizer's failure fails the job");
    assert!(
        err.to_string().contains("a fake failure"),
        "the engine's own words reach the user: {err}"
    );
    let done = runner
        .wait(fine)
        .await
        .expect("the next job is not held up by the failed one");
    assert_eq!(done.result["num_speakers"], 2);
    let counters = runner.counters();
    let get = |name: &str| counters.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(get("diarization").jobs_failed, 1);
    // the failed job's transcript never reached the aligner
    assert_eq!(get("alignment").jobs_in, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake Whisper that answers as the model `name`.
struct Named(FakeWhisper, String);

impl colloquy::whisper::SpeechToText for Named {
    fn transcribe_until(
        &mut self,
        samples: colloquy::audio::Samples<'_>,
        speech: Option<&colloquy::whisper::gate::SpeechMap>,
        stop: Option<colloquy::runtime::StopFlag>,
    ) -> Result<colloquy::whisper::Transcript, colloquy::whisper::WhisperError> {
        self.0.transcribe_until(samples, speech, stop)
    }
    fn model_name(&self) -> &str {
        &self.1
    }
    fn device(&self) -> colloquy::runtime::DeviceUsed {
        colloquy::runtime::DeviceUsed::Cpu
    }
}

#[actix_rt::test]
async fn a_job_that_names_another_model_gets_it_loaded_once_and_the_next_gets_the_served_one() {
    let loads = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = loads.clone();
    let loader: colloquy::whisper::ModelLoader = Arc::new(move |name: &str| {
        seen.lock().unwrap().push(name.to_string());
        if name == "base" {
            Ok(Box::new(Named(FakeWhisper::new(None), name.into())) as Box<_>)
        } else {
            Err(colloquy::whisper::WhisperError::Settings(format!(
                "'{name}' cannot take this request's settings"
            )))
        }
    });
    let engines = Engines {
        whisper: vec![Box::new(FakeWhisper::new(None))],
        whisper_loader: Some(loader),
        diarization: vec![Box::new(FakeDiarizer { hook: None })],
        vad: vec![],
        voices: vec![],
        spare_cores: None,
    };
    let dir = std::env::temp_dir().join(format!("colloquy-model-pick-{}", std::process::id()));
    let clip = wav_file(&dir, 1.0);
    let runner = LocalRunner::start(fake_config(), engines, 4).await.unwrap();
    let naming = |model: Option<&str>| JobOptions {
        whisper: colloquy::whisper::Overrides {
            model: model.map(String::from),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut models = Vec::new();
    for model in [Some("base"), Some("base"), None] {
        let id = runner.submit(&clip, naming(model)).await.unwrap();
        let done = runner.wait(id).await.expect("completed");
        models.push(
            done.result["provider"]["whisper_model"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(models, ["base", "base", "fake"]);
    assert_eq!(
        *loads.lock().unwrap(),
        ["base"],
        "loaded once, kept for the next job"
    );
    // a model that cannot take the settings fails the job as the request's
    let id = runner.submit(&clip, naming(Some("odd"))).await.unwrap();
    let err = runner.wait(id).await.expect_err("fails");
    assert!(err.to_string().contains("cannot take"), "{err}");
    let next = runner.submit(&clip, JobOptions::default()).await.unwrap();
    assert!(runner.wait(next).await.is_ok(), "the worker goes on");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whisper hearing one sentence of 4 s: "So I think we all agree."
struct OneSentence;

impl colloquy::whisper::SpeechToText for OneSentence {
    fn transcribe_until(
        &mut self,
        samples: colloquy::audio::Samples<'_>,
        _: Option<&colloquy::whisper::gate::SpeechMap>,
        _: Option<colloquy::runtime::StopFlag>,
    ) -> Result<colloquy::whisper::Transcript, colloquy::whisper::WhisperError> {
        Ok(fakes::transcript(
            &[
                (" So", 0.0, 0.5),
                (" I", 0.5, 1.0),
                (" think", 1.0, 1.6),
                (" we", 1.6, 2.4),
                (" all", 2.4, 3.2),
                (" agree.", 3.2, 4.0),
            ],
            samples.len(),
        ))
    }
    fn model_name(&self) -> &str {
        "fake"
    }
    fn device(&self) -> colloquy::runtime::DeviceUsed {
        colloquy::runtime::DeviceUsed::Cpu
    }
}

/// A diarization that hands over from SPEAKER_00 to SPEAKER_01 at 1.6 s,
/// inside the sentence.
struct HandsOverMidSentence;

impl colloquy::diarize::SpeakerDiarizer for HandsOverMidSentence {
    fn diarize_until(
        &mut self,
        _: colloquy::audio::Samples<'_>,
        _: colloquy::diarize::SpeakerBounds,
        _: Option<colloquy::runtime::StopFlag>,
    ) -> Result<colloquy::diarize::Diarization, colloquy::diarize::DiarizeError> {
        let turn = |s: &str, start, end| colloquy::diarize::rttm::Turn {
            speaker: s.into(),
            start,
            end,
        };
        Ok(colloquy::diarize::Diarization {
            turns: vec![turn("SPEAKER_00", 0.0, 1.6), turn("SPEAKER_01", 1.6, 4.0)],
            num_speakers: 2,
            voices: vec![fakes::voice("SPEAKER_00", 0), fakes::voice("SPEAKER_01", 1)],
            timings: Default::default(),
            activity: Default::default(),
        })
    }
    fn device(&self) -> colloquy::runtime::DeviceUsed {
        colloquy::runtime::DeviceUsed::Cpu
    }
}

/// Every stretch sounds like SPEAKER_00; records what it was asked (the
/// audio's sample count and the stretch).
#[derive(Clone, Default)]
struct AllSpeakerZero(Arc<Mutex<Vec<Asked>>>);
type Asked = (usize, (f64, f64));

impl colloquy::diarize::SpanEmbedder for AllSpeakerZero {
    fn embed_spans(
        &mut self,
        samples: colloquy::audio::Samples<'_>,
        spans: &[(f64, f64)],
    ) -> Result<Vec<Option<Vec<f32>>>, colloquy::diarize::DiarizeError> {
        let mut seen = self.0.lock().unwrap();
        seen.extend(spans.iter().map(|&s| (samples.len(), s)));
        Ok(spans
            .iter()
            .map(|_| Some(fakes::voice("SPEAKER_00", 0).embedding))
            .collect())
    }
}

#[actix_rt::test]
async fn the_aligner_checks_a_change_inside_a_sentence_against_the_voices_in_the_jobs_audio() {
    let asked = AllSpeakerZero::default();
    let engines = Engines {
        whisper: vec![Box::new(OneSentence)],
        diarization: vec![Box::new(HandsOverMidSentence)],
        vad: vec![],
        voices: vec![Box::new(asked.clone())],
        spare_cores: None,
        whisper_loader: None,
    };
    let dir = std::env::temp_dir().join(format!("colloquy-voices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1 s of digital silence, trimmed away: the aligner embeds stretches of
    // the trimmed audio, in the words' times before they are shifted back
    let mut samples = vec![0.0f32; 16000];
    samples.extend(fakes::tone(4.5));
    let clip = dir.join("late.wav");
    std::fs::write(&clip, common::wav_bytes(&samples, 16000)).unwrap();
    let config = fakes::config(&[("pipeline.trim_silence", "true")]);
    let runner = LocalRunner::start(config, engines, 4).await.unwrap();
    let id = runner.submit(&clip, JobOptions::default()).await.unwrap();
    let done = runner.wait(id).await.expect("the job completes");
    let r = &done.result;
    let aligned = r["aligned_segments"].as_array().unwrap();
    assert_eq!(aligned.len(), 1, "one speaker's sentence: {aligned:?}");
    assert_eq!(aligned[0]["speaker"], "SPEAKER_00");
    assert_eq!(aligned[0]["text"], " So I think we all agree.");
    let asked = asked.0.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "both sides of the change: {asked:?}");
    // the embedder got the trimmed audio (the silence cut, bar a little
    // padding), and the result's times are shifted back by what was cut
    let n = asked[0].0;
    let cut = 5.5 - n as f64 / 16000.0;
    assert!(cut > 0.5 && cut <= 1.0, "trimmed audio: {n} samples");
    let start = aligned[0]["start"].as_f64().unwrap();
    assert!(
        (start - cut).abs() < 0.01,
        "times shifted back: {start} against {cut}"
    );
    let (left, right) = (asked[0].1, asked[1].1);
    assert!(
        (left.0 - 0.0).abs() < 0.01 && (left.1 - 1.6).abs() < 0.01,
        "{left:?}"
    );
    assert!(
        (right.0 - 1.6).abs() < 0.01 && (right.1 - 4.0).abs() < 0.01,
        "{right:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
