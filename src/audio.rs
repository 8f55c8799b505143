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
    Open {
        path: String,
        source: std::io::Error,
    },
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

/// Decodes a whole file to mono (the mean of its channels), at its own rate.
pub fn decode_file(path: &Path) -> Result<MonoAudio, AudioError> {
    let mut samples: Vec<f32> = Vec::new();
    let mut sample_rate = 0;
    let channels = decode_path(path, &mut |chunk| {
        if samples.capacity() == 0 {
            reserve(&mut samples, chunk.announced);
        }
        sample_rate = chunk.rate;
        samples.extend_from_slice(chunk.samples);
        Ok(())
    })?;
    Ok(MonoAudio {
        samples,
        sample_rate,
        channels,
    })
}

/// Decodes `path` to 16 kHz mono (and the source's channel count),
/// resampling as it decodes: memory is the 16 kHz result and one packet,
/// whatever the source's rate and channels (a 3-hour 44.1 kHz stereo file is
/// never held at 44.1 kHz).
pub fn load_16k_mono(path: &Path) -> Result<MonoAudio, AudioError> {
    let mut samples: Vec<f32> = Vec::new();
    let mut resampler: Option<StreamResampler> = None;
    let changed = || AudioError::Corrupt("the sample rate changes within the file".into());
    let channels = decode_path(path, &mut |chunk| {
        let Chunk {
            rate,
            samples: chunk,
            announced,
        } = chunk;
        if samples.capacity() == 0 {
            reserve(
                &mut samples,
                announced.map(|n| n * TARGET_RATE as u64 / rate as u64 + 1),
            );
        }
        match &mut resampler {
            Some(r) if r.from == rate => r.push(chunk, &mut samples),
            Some(_) => Err(changed()),
            None if rate == TARGET_RATE => {
                samples.extend_from_slice(chunk);
                Ok(())
            }
            None if !samples.is_empty() => Err(changed()),
            None => {
                let mut r = StreamResampler::new(rate, TARGET_RATE)?;
                let pushed = r.push(chunk, &mut samples);
                resampler = Some(r);
                pushed
            }
        }
    })?;
    if let Some(r) = resampler {
        r.finish(&mut samples)?;
    }
    Ok(MonoAudio {
        samples,
        sample_rate: TARGET_RATE,
        channels,
    })
}

/// Room for the `frames` samples the container announces (no doubling as
/// the samples arrive: a Vec grown by doubling reaches up to twice the audio
/// and copies it at each step). An announcement past 24 hours is not trusted.
fn reserve(samples: &mut Vec<f32>, frames: Option<u64>) {
    const DAY: u64 = 24 * 3600 * 48_000;
    if let Some(n) = frames.filter(|&n| n <= DAY) {
        samples.reserve_exact(n as usize);
    }
}

/// One packet's decoded audio, down-mixed to mono.
struct Chunk<'a> {
    rate: u32,
    samples: &'a [f32],
    /// Frames (at `rate`) the container announces for the whole track, if it does.
    announced: Option<u64>,
}

fn decode_path(
    path: &Path,
    sink: &mut dyn FnMut(Chunk) -> Result<(), AudioError>,
) -> Result<usize, AudioError> {
    let file = File::open(path).map_err(|source| AudioError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    decode_source(
        MediaSourceStream::new(Box::new(file), Default::default()),
        &hint,
        sink,
    )
}

/// Decodes packet by packet, handing each packet's mono samples (the mean of
/// its channels) to `sink`; returns the source's channel count.
fn decode_source(
    mss: MediaSourceStream<'static>,
    hint: &Hint,
    sink: &mut dyn FnMut(Chunk) -> Result<(), AudioError>,
) -> Result<usize, AudioError> {
    let mut format = symphonia::default::get_probe()
        .probe(
            hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| AudioError::Unsupported(describe(&e)))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or(AudioError::NoAudioTrack)?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(AudioError::NoAudioTrack)?
        .clone();
    let track_id = track.id;
    let announced = track.num_frames;
    // gapless (on by default) trims encoder delay and padding, e.g. LAME's mp3 delay
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::Unsupported(describe(&e)))?;

    let mut channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    let mut interleaved: Vec<f32> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut decoded = 0usize;
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
                let rate = spec.rate();
                if rate == 0 {
                    return Err(AudioError::Corrupt("unknown sample rate".into()));
                }
                let ch = spec.channels().count().max(1);
                channels = ch;
                buf.copy_to_vec_interleaved(&mut interleaved);
                let scale = 1.0 / ch as f32;
                mono.clear();
                mono.extend(
                    interleaved
                        .chunks_exact(ch)
                        .map(|frame| frame.iter().sum::<f32>() * scale),
                );
                decoded += mono.len();
                sink(Chunk {
                    rate,
                    samples: &mono,
                    announced,
                })?;
            }
            // a damaged packet is skipped, as players do; a file of nothing but damage is corrupt
            Err(SymError::DecodeError(_)) => decode_errors += 1,
            Err(e) => return Err(AudioError::Corrupt(describe(&e))),
        }
    }
    if decoded == 0 {
        return Err(if decode_errors > 0 {
            AudioError::Corrupt(format!("{decode_errors} packets could not be decoded"))
        } else {
            AudioError::Empty
        });
    }
    Ok(channels)
}

/// Resamples mono audio as it arrives, chunk by chunk, exactly as
/// [`resample`] does in one go (rubato's FFT resampler, its start-up delay
/// trimmed, the output `ceil(ratio * input)` long).
struct StreamResampler {
    from: u32,
    inner: Fft<f32>,
    /// Input not yet processed (less than one chunk after each push).
    pending: Vec<f32>,
    /// One chunk's output.
    chunk_out: Vec<f32>,
    /// Output frames still to drop (the resampler's delay).
    to_trim: usize,
    input_len: usize,
}

impl StreamResampler {
    fn new(from: u32, to: u32) -> Result<StreamResampler, AudioError> {
        let inner = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        let to_trim = inner.output_delay();
        let chunk_out = vec![0.0f32; inner.output_frames_max()];
        Ok(StreamResampler {
            from,
            inner,
            pending: Vec::new(),
            chunk_out,
            to_trim,
            input_len: 0,
        })
    }

    /// Runs one chunk: `partial` Some(n) for a last chunk of n frames (0: zeros to flush).
    fn run(
        &mut self,
        input: &[f32],
        partial: Option<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), AudioError> {
        let err = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
        let n_in = self.inner.input_frames_next();
        let padded;
        let input = if input.len() < n_in {
            padded = [input, &vec![0.0; n_in - input.len()][..]].concat();
            &padded[..]
        } else {
            input
        };
        let adapter_in = InterleavedSlice::new(input, 1, input.len()).map_err(|e| err(&e))?;
        let cap = self.chunk_out.len();
        let mut adapter_out =
            InterleavedSlice::new_mut(&mut self.chunk_out, 1, cap).map_err(|e| err(&e))?;
        let indexing = rubato::Indexing {
            input_offset: 0,
            output_offset: 0,
            active_channels_mask: None,
            partial_len: partial,
        };
        let (_, produced) = self
            .inner
            .process_into_buffer(&adapter_in, &mut adapter_out, Some(&indexing))
            .map_err(|e| err(&e))?;
        let skip = self.to_trim.min(produced);
        self.to_trim -= skip;
        out.extend_from_slice(&self.chunk_out[skip..produced]);
        Ok(())
    }

    fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.input_len += samples.len();
        self.pending.extend_from_slice(samples);
        let n_in = self.inner.input_frames_next();
        // taken out while `run` borrows the resampler (no copy per chunk)
        let mut pending = std::mem::take(&mut self.pending);
        let mut used = 0;
        // as `process_all_into_buffer`: full chunks while more than one chunk is left
        while pending.len() - used > n_in {
            self.run(&pending[used..used + n_in], None, out)?;
            used += n_in;
        }
        pending.drain(..used);
        self.pending = pending;
        Ok(())
    }

    /// Processes what is left and pumps zeros until the output (all of
    /// `out`, which holds this stream's output only) has its full length.
    fn finish(mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let expected = (self.inner.resample_ratio() * self.input_len as f64).ceil() as usize;
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.run(&rest, Some(rest.len()), out)?;
        }
        while out.len() < expected {
            let before = out.len();
            self.run(&[], Some(0), out)?;
            if out.len() == before && self.to_trim == 0 {
                return Err(AudioError::Resample(
                    "the resampler stopped producing output".into(),
                ));
            }
        }
        out.truncate(expected);
        Ok(())
    }
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
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let capacity = resampler.process_all_needed_output_len(samples.len());
    let mut out = vec![0.0f32; capacity];
    let (_, produced) = {
        let mut output = InterleavedSlice::new_mut(&mut out, 1, capacity)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        resampler
            .process_all_into_buffer(&input, &mut output, samples.len(), None)
            .map_err(|e| AudioError::Resample(e.to_string()))?
    };
    out.truncate(produced);
    Ok(out)
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
        let frames: Vec<Vec<i16>> = (0..800)
            .map(|i| vec![(i % 100) as i16 * 100, 1000])
            .collect();
        let p = temp_file("stereo.wav", &wav_bytes(8000, 2, &frames));
        let a = decode_file(&p).unwrap();
        assert_eq!((a.sample_rate, a.channels, a.samples.len()), (8000, 2, 800));
        let expect = ((5 * 100) as f32 / 32768.0 + 1000.0 / 32768.0) / 2.0;
        assert!(
            (a.samples[5] - expect).abs() < 1e-6,
            "{} vs {expect}",
            a.samples[5]
        );
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn resampling_keeps_duration_and_pitch() {
        let rate = 44_100u32;
        let tone: Vec<f32> = (0..rate as usize)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin())
            .collect();
        let out = resample(&tone, rate, 16_000).unwrap();
        assert!((out.len() as i64 - 16_000).abs() <= 2, "{}", out.len());
        // zero crossings of a 440 Hz tone over the middle 0.5 s: about 440
        let mid = &out[4000..12000];
        let crossings = mid
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!((430..=450).contains(&crossings), "{crossings}");
        // delay compensated: the tone starts at the start
        let expect = (2.0 * std::f32::consts::PI * 440.0 * 100.0 / 16000.0).sin();
        assert!((out[100] - expect).abs() < 0.05, "{} vs {expect}", out[100]);
    }

    #[test]
    fn resampling_while_decoding_equals_resampling_the_whole() {
        // 2.3 s of a chirp at 44.1 kHz, stereo: many packets, a partial last chunk
        let rate = 44_100u32;
        let n = (rate as f64 * 2.3) as usize;
        let frames: Vec<Vec<i16>> = (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let v =
                    ((2.0 * std::f32::consts::PI * (200.0 + 900.0 * t) * t).sin() * 12000.0) as i16;
                vec![v, v / 2]
            })
            .collect();
        let p = temp_file("chirp.wav", &wav_bytes(rate, 2, &frames));
        let whole = decode_file(&p).unwrap();
        let expect = resample(&whole.samples, whole.sample_rate, TARGET_RATE).unwrap();
        let streamed = load_16k_mono(&p).unwrap();
        assert_eq!((streamed.sample_rate, streamed.channels), (TARGET_RATE, 2));
        assert_eq!(streamed.samples.len(), expect.len());
        let worst = streamed
            .samples
            .iter()
            .zip(&expect)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
        // 16 kHz input is taken as it is
        let same = temp_file(
            "16k.wav",
            &wav_bytes(
                16_000,
                1,
                &frames[..16_000]
                    .iter()
                    .map(|f| vec![f[0]])
                    .collect::<Vec<_>>(),
            ),
        );
        assert_eq!(
            load_16k_mono(&same).unwrap().samples,
            decode_file(&same).unwrap().samples
        );
        std::fs::remove_file(p).unwrap();
        std::fs::remove_file(same).unwrap();
    }

    #[test]
    fn garbage_is_rejected_with_a_clear_error() {
        let p = temp_file(
            "notes.wav",
            b"this is a text file, not audio at all........",
        );
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
        assert!(
            matches!(err, AudioError::Empty | AudioError::Corrupt(_)),
            "{err}"
        );
        std::fs::remove_file(p).unwrap();
    }
}
