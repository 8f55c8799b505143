//! Audio front end shared by every engine: decoding any container and codec
//! symphonia reads (wav, flac, mp3, m4a/aac, ogg/vorbis, ...), down-mixing to
//! mono, and resampling to 16 kHz with rubato. Plain synchronous code.

use std::fs::File;
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// The sample rate every model here takes.
pub const TARGET_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("not a supported audio file: {0}")]
    Unsupported(String),
    #[error("the file has no audio track")]
    NoAudioTrack,
    #[error("the audio data is corrupt: {0}")]
    Corrupt(String),
    #[error("the file contains no audio samples")]
    Empty,
    #[error("resampling failed: {0}")]
    Resample(String),
}

/// Decoded audio, down-mixed to mono, at its own sample rate.
#[derive(Debug, Clone)]
pub struct MonoAudio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channels in the source before the down-mix.
    pub channels: usize,
}

impl MonoAudio {
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Decodes a whole file to mono (the mean of its channels).
pub fn decode_file(path: &Path) -> Result<MonoAudio, AudioError> {
    let file = File::open(path).map_err(|source| AudioError::Open { path: path.display().to_string(), source })?;
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    decode_source(MediaSourceStream::new(Box::new(file), Default::default()), &hint)
}

fn decode_source(mss: MediaSourceStream<'static>, hint: &Hint) -> Result<MonoAudio, AudioError> {
    let mut format = symphonia::default::get_probe()
        .probe(hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| AudioError::Unsupported(describe(&e)))?;
    let track = format.default_track(TrackType::Audio).ok_or(AudioError::NoAudioTrack)?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(AudioError::NoAudioTrack)?
        .clone();
    let track_id = track.id;
    // gapless (on by default) trims encoder delay and padding, e.g. LAME's mp3 delay
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::Unsupported(describe(&e)))?;

    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    let mut mono: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut decode_errors = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(AudioError::Corrupt(describe(&e))),
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                let spec = buf.spec();
                sample_rate = spec.rate();
                let ch = spec.channels().count().max(1);
                channels = ch;
                buf.copy_to_vec_interleaved(&mut interleaved);
                let scale = 1.0 / ch as f32;
                mono.extend(interleaved.chunks_exact(ch).map(|frame| frame.iter().sum::<f32>() * scale));
            }
            // a damaged packet is skipped, as players do; a file of nothing but damage is corrupt
            Err(SymError::DecodeError(_)) => decode_errors += 1,
            Err(e) => return Err(AudioError::Corrupt(describe(&e))),
        }
    }
    if mono.is_empty() {
        return Err(if decode_errors > 0 {
            AudioError::Corrupt(format!("{decode_errors} packets could not be decoded"))
        } else {
            AudioError::Empty
        });
    }
    if sample_rate == 0 {
        return Err(AudioError::Corrupt("unknown sample rate".into()));
    }
    Ok(MonoAudio { samples: mono, sample_rate, channels })
}

fn describe(e: &SymError) -> String {
    match e {
        SymError::Unsupported(what) => format!("unsupported {what}"),
        SymError::IoError(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Resamples mono audio with rubato's FFT resampler (delay compensated, so
/// the output lines up with the input in time).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| AudioError::Resample(e.to_string()))?;
    let capacity = resampler.process_all_needed_output_len(samples.len());
    let mut out = vec![0.0f32; capacity];
    let (_, produced) = {
        let mut output =
            InterleavedSlice::new_mut(&mut out, 1, capacity).map_err(|e| AudioError::Resample(e.to_string()))?;
        resampler
            .process_all_into_buffer(&input, &mut output, samples.len(), None)
            .map_err(|e| AudioError::Resample(e.to_string()))?
    };
    out.truncate(produced);
    Ok(out)
}

/// Decodes `path` and returns 16 kHz mono samples and the source's facts.
pub fn load_16k_mono(path: &Path) -> Result<MonoAudio, AudioError> {
    let audio = decode_file(path)?;
    let samples = resample(&audio.samples, audio.sample_rate, TARGET_RATE)?;
    Ok(MonoAudio { samples, sample_rate: TARGET_RATE, channels: audio.channels })
}

/// Seconds rounded to the millisecond: how every timestamp is reported
/// (Whisper segments, aligned segments).
pub fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV file in memory.
    fn wav_bytes(rate: u32, channels: u16, frames: &[Vec<i16>]) -> Vec<u8> {
        let data_len = (frames.len() * channels as usize * 2) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
        b.extend_from_slice(&(channels * 2).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        for f in frames {
            for s in f {
                b.extend_from_slice(&s.to_le_bytes());
            }
        }
        b
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("colloquy-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn stereo_is_mixed_down_to_the_channel_mean() {
        let frames: Vec<Vec<i16>> = (0..800).map(|i| vec![(i % 100) as i16 * 100, 1000]).collect();
        let p = temp_file("stereo.wav", &wav_bytes(8000, 2, &frames));
        let a = decode_file(&p).unwrap();
        assert_eq!((a.sample_rate, a.channels, a.samples.len()), (8000, 2, 800));
        let expect = ((5 * 100) as f32 / 32768.0 + 1000.0 / 32768.0) / 2.0;
        assert!((a.samples[5] - expect).abs() < 1e-6, "{} vs {expect}", a.samples[5]);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn resampling_keeps_duration_and_pitch() {
        let rate = 44_100u32;
        let tone: Vec<f32> = (0..rate as usize).map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin()).collect();
        let out = resample(&tone, rate, 16_000).unwrap();
        assert!((out.len() as i64 - 16_000).abs() <= 2, "{}", out.len());
        // zero crossings of a 440 Hz tone over the middle 0.5 s: about 440
        let mid = &out[4000..12000];
        let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((430..=450).contains(&crossings), "{crossings}");
        // delay compensated: the tone starts at the start
        let expect = (2.0 * std::f32::consts::PI * 440.0 * 100.0 / 16000.0).sin();
        assert!((out[100] - expect).abs() < 0.05, "{} vs {expect}", out[100]);
    }

    #[test]
    fn garbage_is_rejected_with_a_clear_error() {
        let p = temp_file("notes.wav", b"this is a text file, not audio at all........");
        let err = decode_file(&p).unwrap_err();
        assert!(matches!(err, AudioError::Unsupported(_)), "{err}");
        std::fs::remove_file(p).unwrap();
        let missing = decode_file(Path::new("/nonexistent/x.wav")).unwrap_err();
        assert!(missing.to_string().contains("cannot open"), "{missing}");
    }

    #[test]
    fn a_header_without_samples_is_empty() {
        let p = temp_file("empty.wav", &wav_bytes(16000, 1, &[]));
        let err = decode_file(&p).unwrap_err();
        assert!(matches!(err, AudioError::Empty | AudioError::Corrupt(_)), "{err}");
        std::fs::remove_file(p).unwrap();
    }
}
