//! Fake engines: the pipeline, registry and API tested without models.
//! Each fake answers a fixed two-speaker exchange ("Hello there." by
//! SPEAKER_00, "Hi!" by SPEAKER_01 in 2 s) and runs an optional hook first,
//! which a test uses to hold a job in a stage (a channel it releases) or to
//! meet the other branch.

use std::sync::{Arc, Mutex};

use colloquy::actors::pipeline::Engines;
use colloquy::config::Config;
use colloquy::diarize::rttm::Turn;
use colloquy::diarize::{Diarization, DiarizeError, SpeakerBounds, SpeakerDiarizer};
use colloquy::runtime::{DeviceUsed, StopFlag};
use colloquy::whisper::gate::SpeechMap;
use colloquy::whisper::{Segment, SpeechToText, Transcript, WhisperError, Word};

/// Runs before a fake's answer; Err(message) fails the engine call.
pub type Hook = Box<dyn FnMut() -> Result<(), String> + Send>;

/// A transcriber hook that holds each job until the test sends on the
/// returned channel (bounded: it gives up after 60 s).
pub fn held() -> (std::sync::mpsc::Sender<()>, Hook) {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let hook: Hook = Box::new(move || {
        gate.lock()
            .unwrap()
            .recv_timeout(std::time::Duration::from_secs(60))
            .map_err(|e| e.to_string())
    });
    (release, hook)
}

/// The number of speakers that makes [`FakeDiarizer`] fail (a test's way to
/// fail one job on purpose).
pub const FAILING_SPEAKER_COUNT: usize = 7;

fn word(w: &str, start: f64, end: f64) -> Word {
    Word {
        word: w.into(),
        start,
        end,
        probability: 0.9,
    }
}

/// A transcript of one segment holding `words` (text, start, end), for
/// `samples` 16 kHz samples of audio.
pub fn transcript(words: &[(&str, f64, f64)], samples: usize) -> Transcript {
    let segment = Segment {
        id: 1,
        start: words.first().map_or(0.0, |w| w.1),
        end: words.last().map_or(0.0, |w| w.2),
        text: words.iter().map(|w| w.0).collect(),
        tokens: vec![],
        avg_logprob: -0.1,
        no_speech_prob: 0.0,
        temperature: 0.0,
        compression_ratio: 1.0,
        words: words.iter().map(|&(w, a, b)| word(w, a, b)).collect(),
    };
    Transcript {
        language: "en".into(),
        duration: samples as f64 / 16000.0,
        segments: vec![segment],
        timings: Default::default(),
    }
}

pub struct FakeWhisper {
    pub hook: Option<Hook>,
    /// Sample counts of every call.
    pub samples_seen: Arc<Mutex<Vec<usize>>>,
}

impl FakeWhisper {
    pub fn new(hook: Option<Hook>) -> FakeWhisper {
        FakeWhisper {
            hook,
            samples_seen: Default::default(),
        }
    }
}

impl SpeechToText for FakeWhisper {
    fn transcribe_until(
        &mut self,
        samples: colloquy::audio::Samples<'_>,
        _: Option<&SpeechMap>,
        _: Option<StopFlag>,
    ) -> Result<Transcript, WhisperError> {
        self.samples_seen.lock().unwrap().push(samples.len());
        if let Some(hook) = &mut self.hook {
            hook().map_err(WhisperError::Settings)?;
        }
        Ok(transcript(
            &[
                (" Hello", 0.2, 0.6),
                (" there.", 0.6, 1.0),
                (" Hi!", 1.4, 1.8),
            ],
            samples.len(),
        ))
    }
    fn model_name(&self) -> &str {
        "fake"
    }
    fn device(&self) -> DeviceUsed {
        DeviceUsed::Cpu
    }
}

pub struct FakeDiarizer {
    pub hook: Option<Hook>,
}

impl SpeakerDiarizer for FakeDiarizer {
    fn diarize_until(
        &mut self,
        _: colloquy::audio::Samples<'_>,
        bounds: SpeakerBounds,
        _: Option<StopFlag>,
    ) -> Result<Diarization, DiarizeError> {
        if bounds.num_speakers == Some(FAILING_SPEAKER_COUNT) {
            return Err(DiarizeError::BadFile {
                path: "fake.onnx".into(),
                reason: "a fake failure".into(),
            });
        }
        if let Some(hook) = &mut self.hook {
            hook().map_err(|_| DiarizeError::Cancelled)?;
        }
        let turn = |s: &str, start, end| Turn {
            speaker: s.into(),
            start,
            end,
        };
        Ok(Diarization {
            turns: vec![turn("SPEAKER_00", 0.1, 1.1), turn("SPEAKER_01", 1.3, 1.9)],
            num_speakers: 2,
            voices: vec![voice("SPEAKER_00", 0), voice("SPEAKER_01", 1)],
            timings: Default::default(),
            activity: Default::default(),
        })
    }
    fn device(&self) -> DeviceUsed {
        DeviceUsed::Cpu
    }
}

/// A voice print pointing along axis `axis` of 8 (the fakes' speakers are
/// orthogonal: cosine 0 between them, 1 with themselves).
pub fn voice(speaker: &str, axis: usize) -> colloquy::diarize::engine::Voice {
    let mut embedding = vec![0.0; 8];
    embedding[axis] = 1.0;
    colloquy::diarize::engine::Voice {
        speaker: speaker.into(),
        embedding,
        pieces: 3,
    }
}

/// One fake Whisper (with `hook`) and one fake diarizer, no VAD.
pub fn engines(hook: Option<Hook>) -> Engines {
    Engines {
        whisper: vec![Box::new(FakeWhisper::new(hook))],
        diarization: vec![Box::new(FakeDiarizer { hook: None })],
        vad: vec![],
        voices: vec![],
        spare_cores: None,
        whisper_loader: None,
    }
}

/// The default config with the VAD off (the fakes need no speech regions),
/// and `COLLOQUY__...`-style overrides given as `("server.auth", "keys")`.
pub fn config(overrides: &[(&str, &str)]) -> Config {
    let env: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| {
            (
                format!("COLLOQUY__{}", k.replace('.', "__").to_ascii_uppercase()),
                v.to_string(),
            )
        })
        .collect();
    let mut config = Config::load_with_env(None, env).expect("config");
    config.vad.enabled = false;
    config
}

/// A 16 kHz tone of `seconds`.
pub fn tone(seconds: f64) -> Vec<f32> {
    (0..(seconds * 16000.0) as usize)
        .map(|i| (i as f32 * 0.05).sin() * 0.25)
        .collect()
}

/// A 16 kHz tone of `seconds`, as WAV bytes.
pub fn tone_wav(seconds: f64) -> Vec<u8> {
    super::wav_bytes(&tone(seconds), 16000)
}
