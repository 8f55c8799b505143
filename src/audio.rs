//! Audio front end shared by every engine: decoding any container and codec
//! symphonia reads (wav, flac, mp3, m4a/aac, ogg/vorbis, mkv/webm, ...) plus
//! Opus (libopus, through symphonia-adapter-libopus), down-mixing to mono,
//! and resampling to 16 kHz with rubato. Plain synchronous code.
//!
//! Every public entry point stands alone against bad input: an error names
//! what is wrong with the file ([`AudioError::is_bad_input`] tells the
//! user's file from our own failure), a recording longer than
//! [`DecodeLimits::max_seconds`] is refused before it is decoded, and a panic
//! inside symphonia or the Opus adapter becomes [`AudioError::Corrupt`].

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{
    AudioCodecId, AudioCodecParameters, AudioDecoder, AudioDecoderOptions,
};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::TimeBase;

/// The sample rate every model here takes.
pub const TARGET_RATE: u32 = 16_000;

/// Sample rates taken (a header's 0 Hz or 3 GHz is bad input, not a
/// resampler failure).
const MIN_RATE: u32 = 1000;
const MAX_RATE: u32 = 768_000;

/// The codecs [`codecs`] decodes, for error messages.
pub const SUPPORTED_CODECS: &str = "MP3, AAC, FLAC, Vorbis, Opus, PCM/WAV, ADPCM, ALAC";

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// Our own file (an upload's temp file, a path given to the CLI) could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    /// Reading that file failed part way: the disk or file system, not the data.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// No container symphonia reads, or a feature of one it does not support.
    #[error("not a supported audio file: {0}")]
    Unsupported(String),
    /// The container is read, its codec is not decoded here (the codec's
    /// name when it is known: "WMA", "AC-3", ...).
    #[error(
        "the audio codec{} is not supported; supported: {}",
        codec.as_ref().map(|c| format!(" ({c})")).unwrap_or_default(),
        SUPPORTED_CODECS
    )]
    UnsupportedCodec { codec: Option<String> },
    #[error("the file has no audio track")]
    NoAudioTrack,
    #[error("the audio data is corrupt: {0}")]
    Corrupt(String),
    #[error("the file contains no audio samples")]
    Empty,
    /// Longer than `pipeline.max_audio_seconds`: refused before decoding
    /// when the packets say so, else as soon as decoding passes the limit.
    #[error(
        "the recording is longer than the {} limit (max_audio_seconds = {seconds_limit})",
        hours_minutes(*seconds_limit)
    )]
    TooLong { seconds_limit: u64 },
    #[error("resampling failed: {0}")]
    Resample(String),
}

impl AudioError {
    /// True when the user's file is at fault (unsupported, corrupt, empty,
    /// without audio, too long, or one that made the decoder panic); false
    /// for our own failures: opening or reading the file we stored, resampling.
    pub fn is_bad_input(&self) -> bool {
        match self {
            AudioError::Open { .. } | AudioError::Read { .. } | AudioError::Resample(_) => false,
            AudioError::Unsupported(_)
            | AudioError::UnsupportedCodec { .. }
            | AudioError::NoAudioTrack
            | AudioError::Corrupt(_)
            | AudioError::Empty
            | AudioError::TooLong { .. } => true,
        }
    }
}

/// "4 h 0 min", "25 min", "1 min 30 s", "45 s".
fn hours_minutes(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// What a decode accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeLimits {
    /// Longest recording accepted, in seconds; 0: no limit
    /// (`pipeline.max_audio_seconds`).
    pub max_seconds: u64,
}

impl DecodeLimits {
    /// No limit: tools and tests that decode files they chose.
    pub const NONE: DecodeLimits = DecodeLimits { max_seconds: 0 };

    pub fn max_seconds(max_seconds: u64) -> DecodeLimits {
        DecodeLimits { max_seconds }
    }

    /// `frames` at `rate` Hz are past the limit.
    fn exceeded(&self, frames: u64, rate: u32) -> bool {
        self.max_seconds > 0 && frames > self.max_seconds.saturating_mul(rate as u64)
    }

    fn too_long(&self) -> AudioError {
        AudioError::TooLong {
            seconds_limit: self.max_seconds,
        }
    }
}

/// Decoded audio, down-mixed to mono, at its own sample rate: f32 samples
/// (tools and tests), or [`Pcm16`] (the pipeline).
#[derive(Debug, Clone)]
pub struct MonoAudio<S = Vec<f32>> {
    pub samples: S,
    pub sample_rate: u32,
    /// Channels in the source before the down-mix.
    pub channels: usize,
}

impl<S: SampleSink> MonoAudio<S> {
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Where decoded samples go as they come: f32 as they are, or 16-bit.
pub trait SampleSink: Default {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn capacity(&self) -> usize;
    fn reserve_exact(&mut self, additional: usize);
    fn extend_from_f32(&mut self, samples: &[f32]);
    fn truncate(&mut self, len: usize);
}

impl SampleSink for Vec<f32> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
    fn reserve_exact(&mut self, additional: usize) {
        Vec::reserve_exact(self, additional)
    }
    fn extend_from_f32(&mut self, samples: &[f32]) {
        self.extend_from_slice(samples)
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len)
    }
}

/// Full scale of 16-bit samples.
const FULL_SCALE: f32 = 32768.0;

/// Mono samples kept as 16-bit integers: half the memory of f32. The
/// pipeline holds a job's audio so while its engines run (3 hours at
/// 16 kHz: 346 MB instead of 691 MB). A sample is rounded to the nearest of
/// the 65536 levels and clipped at full scale, as ffmpeg's `s16` output
/// (which openai-whisper reads its audio from) is; a 16-bit source's
/// samples come back exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pcm16(Vec<i16>);

fn to_i16(x: f32) -> i16 {
    (x * FULL_SCALE)
        .round()
        .clamp(-FULL_SCALE, FULL_SCALE - 1.0) as i16
}

fn from_i16(x: i16) -> f32 {
    x as f32 / FULL_SCALE
}

impl Pcm16 {
    pub fn from_f32(samples: &[f32]) -> Pcm16 {
        Pcm16(samples.iter().map(|&x| to_i16(x)).collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The samples as the engines read them.
    pub fn view(&self) -> Samples<'_> {
        Samples::I16(&self.0)
    }

    /// Only the samples of `range` kept.
    pub fn keep(&mut self, range: std::ops::Range<usize>) {
        self.0.truncate(range.end);
        self.0.drain(..range.start);
        self.0.shrink_to_fit();
    }

    /// Every sample multiplied by `gain` (clipped at full scale).
    pub fn amplify(&mut self, gain: f32) {
        for x in &mut self.0 {
            *x = to_i16(from_i16(*x) * gain);
        }
    }
}

impl SampleSink for Pcm16 {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn reserve_exact(&mut self, additional: usize) {
        self.0.reserve_exact(additional)
    }
    fn extend_from_f32(&mut self, samples: &[f32]) {
        self.0.extend(samples.iter().map(|&x| to_i16(x)))
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }
}

/// Mono samples as the engines read them (Whisper, the VAD, the
/// diarizer): f32, or 16-bit ([`Pcm16`]), each read as f32 in [-1, 1).
#[derive(Debug, Clone, Copy)]
pub enum Samples<'a> {
    F32(&'a [f32]),
    I16(&'a [i16]),
}

impl<'a> Samples<'a> {
    pub fn len(&self) -> usize {
        match self {
            Samples::F32(s) => s.len(),
            Samples::I16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i`, None past the end.
    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            Samples::F32(s) => s.get(i).copied(),
            Samples::I16(s) => s.get(i).map(|&x| from_i16(x)),
        }
    }

    /// The samples of `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Samples<'a> {
        match self {
            Samples::F32(s) => Samples::F32(&s[range]),
            Samples::I16(s) => Samples::I16(&s[range]),
        }
    }

    /// Copies the samples from `start` into `out` (all of it).
    pub fn copy_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Samples::F32(s) => out.copy_from_slice(&s[start..start + out.len()]),
            Samples::I16(s) => {
                let n = out.len();
                for (o, &x) in out.iter_mut().zip(&s[start..start + n]) {
                    *o = from_i16(x);
                }
            }
        }
    }

    /// Appends the samples of `range` to `out`.
    pub fn extend_into(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        match self {
            Samples::F32(s) => out.extend_from_slice(&s[range]),
            Samples::I16(s) => out.extend(s[range].iter().map(|&x| from_i16(x))),
        }
    }

    /// All the samples as f32.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.extend_into(0..self.len(), &mut out);
        out
    }

    /// The samples in order, as f32.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = f32> + 'a {
        let (f, i): (&'a [f32], &'a [i16]) = match *self {
            Samples::F32(s) => (s, &[]),
            Samples::I16(s) => (&[], s),
        };
        f.iter().copied().chain(i.iter().map(|&x| from_i16(x)))
    }
}

impl<'a> From<&'a [f32]> for Samples<'a> {
    fn from(s: &'a [f32]) -> Self {
        Samples::F32(s)
    }
}

impl<'a> From<&'a Vec<f32>> for Samples<'a> {
    fn from(s: &'a Vec<f32>) -> Self {
        Samples::F32(s)
    }
}

impl<'a, const N: usize> From<&'a [f32; N]> for Samples<'a> {
    fn from(s: &'a [f32; N]) -> Self {
        Samples::F32(s)
    }
}

impl<'a> From<&'a Pcm16> for Samples<'a> {
    fn from(s: &'a Pcm16) -> Self {
        s.view()
    }
}

/// symphonia's codecs (all of them: the `all` feature) and libopus for Opus,
/// registered once.
pub fn codecs() -> &'static CodecRegistry {
    static REGISTRY: OnceLock<CodecRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    })
}

/// Decodes a whole file to mono (the mean of its channels), at its own rate.
/// No length limit (tools and tests).
pub fn decode_file(path: &Path) -> Result<MonoAudio, AudioError> {
    let input = Input::file(path);
    guarded(&input, || {
        let mut samples: Vec<f32> = Vec::new();
        let mut sample_rate = 0;
        let channels = decode_input(&input, DecodeLimits::NONE, &mut |chunk| {
            if samples.capacity() == 0 {
                reserve(&mut samples, chunk.expected);
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
    })
}

/// Decodes `path` to 16 kHz mono (and the source's channel count),
/// resampling as it decodes: memory is the 16 kHz result and one packet,
/// whatever the source's rate and channels (a 3-hour 44.1 kHz stereo file is
/// never held at 44.1 kHz). A recording longer than `limits` allows is
/// refused before decoding (its packets are read, not decoded, to measure it).
pub fn load_16k_mono(path: &Path, limits: DecodeLimits) -> Result<MonoAudio, AudioError> {
    let input = Input::file(path);
    guarded(&input, || to_16k_mono(&input, limits))
}

/// As [`load_16k_mono`], the samples kept as 16-bit as they are decoded
/// (the pipeline's decoder: never an f32 copy of the whole recording).
pub fn load_16k_pcm16(path: &Path, limits: DecodeLimits) -> Result<MonoAudio<Pcm16>, AudioError> {
    let input = Input::file(path);
    guarded(&input, || to_16k_mono(&input, limits))
}

/// As [`load_16k_mono`], from a file's bytes in memory; `ext_hint` is its
/// extension ("opus", "mp3"), if known.
pub fn load_16k_mono_from_bytes(
    bytes: Vec<u8>,
    ext_hint: Option<&str>,
    limits: DecodeLimits,
) -> Result<MonoAudio, AudioError> {
    let input = Input::Bytes {
        bytes: SharedBytes(Arc::new(bytes)),
        ext: ext_hint,
    };
    guarded(&input, || to_16k_mono(&input, limits))
}

fn to_16k_mono<S: SampleSink>(
    input: &Input,
    limits: DecodeLimits,
) -> Result<MonoAudio<S>, AudioError> {
    let mut samples = S::default();
    let mut resampler: Option<StreamResampler> = None;
    let changed = || AudioError::Corrupt("the sample rate changes within the file".into());
    let channels = decode_input(input, limits, &mut |chunk| {
        let Chunk {
            rate,
            samples: chunk,
            expected,
        } = chunk;
        if samples.capacity() == 0 {
            reserve(
                &mut samples,
                expected.map(|n| n.saturating_mul(TARGET_RATE as u64) / rate as u64 + 1),
            );
        }
        match &mut resampler {
            Some(r) if r.from == rate => r.push(chunk, &mut samples),
            Some(_) => Err(changed()),
            None if rate == TARGET_RATE => {
                samples.extend_from_f32(chunk);
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

/// Runs `decode` so that nothing escapes it: a panic in symphonia or the
/// Opus adapter on malformed data becomes [`AudioError::Corrupt`], and an
/// error after a failed read of our own file becomes [`AudioError::Read`]
/// (symphonia reports both a damaged file and a failing disk as I/O errors).
fn guarded<T>(
    input: &Input,
    decode: impl FnOnce() -> Result<T, AudioError>,
) -> Result<T, AudioError> {
    let result = catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(AudioError::Corrupt(format!(
            "the decoder failed on this file: {what}"
        )))
    });
    match (result, input) {
        (Err(e), Input::File { path, failed }) => {
            let read_error = failed.lock().map(|mut f| f.take()).unwrap_or(None);
            Err(match read_error {
                Some(source) => AudioError::Read {
                    path: path.display().to_string(),
                    source,
                },
                None => e,
            })
        }
        (result, _) => result,
    }
}

/// Room for the `frames` samples the container announces (no doubling as
/// the samples arrive: a Vec grown by doubling reaches up to twice the audio
/// and copies it at each step). An announcement past 24 hours is not trusted.
fn reserve(samples: &mut impl SampleSink, frames: Option<u64>) {
    const DAY: u64 = 24 * 3600 * 48_000;
    if let Some(n) = frames.filter(|&n| n <= DAY) {
        samples.reserve_exact(n as usize);
    }
}

/// One packet's decoded audio, down-mixed to mono.
struct Chunk<'a> {
    rate: u32,
    samples: &'a [f32],
    /// Frames (at `rate`) expected for the whole track: measured by the
    /// length check, else as the container announces, if it does; never
    /// more than the length limit.
    expected: Option<u64>,
}

/// Bytes shared by the two reads of an in-memory file (measuring, decoding).
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What is decoded: a file (opened again for each read) or bytes in memory.
enum Input<'a> {
    File {
        path: &'a Path,
        /// The first failed read of the file, if any.
        failed: Arc<Mutex<Option<std::io::Error>>>,
    },
    Bytes {
        bytes: SharedBytes,
        ext: Option<&'a str>,
    },
}

impl Input<'_> {
    fn file(path: &Path) -> Input<'_> {
        Input::File {
            path,
            failed: Arc::default(),
        }
    }

    fn open(&self) -> Result<MediaSourceStream<'static>, AudioError> {
        let source: Box<dyn MediaSource> = match self {
            Input::File { path, failed } => Box::new(WatchedFile {
                file: File::open(path).map_err(|source| AudioError::Open {
                    path: path.display().to_string(),
                    source,
                })?,
                failed: failed.clone(),
            }),
            Input::Bytes { bytes, .. } => Box::new(Cursor::new(SharedBytes(bytes.0.clone()))),
        };
        Ok(MediaSourceStream::new(source, Default::default()))
    }

    fn extension(&self) -> Option<String> {
        match self {
            Input::File { path, .. } => path.extension().and_then(|e| e.to_str()),
            Input::Bytes { ext, .. } => *ext,
        }
        .map(|e| e.to_ascii_lowercase())
    }

    /// The first `n` bytes (fewer if the file is shorter), to name a codec
    /// symphonia does not read.
    fn head(&self, n: usize) -> Vec<u8> {
        match self {
            Input::File { path, .. } => {
                let mut head = Vec::with_capacity(n);
                if let Ok(f) = File::open(path) {
                    let _ = f.take(n as u64).read_to_end(&mut head);
                }
                head
            }
            Input::Bytes { bytes, .. } => bytes.0[..n.min(bytes.0.len())].to_vec(),
        }
    }
}

/// A file that remembers its first failed read.
struct WatchedFile {
    file: File,
    failed: Arc<Mutex<Option<std::io::Error>>>,
}

impl Read for WatchedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf).inspect_err(|e| {
            if e.kind() != std::io::ErrorKind::Interrupted {
                if let Ok(mut failed) = self.failed.lock() {
                    failed.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
                }
            }
        })
    }
}

impl Seek for WatchedFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

impl MediaSource for WatchedFile {
    fn is_seekable(&self) -> bool {
        self.file.is_seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        self.file.byte_len()
    }
}

/// The input's container, read up to its first packet.
fn probe(input: &Input) -> Result<Box<dyn FormatReader>, AudioError> {
    let mut hint = Hint::new();
    let ext = input.extension();
    if let Some(ext) = &ext {
        hint.with_extension(ext);
    }
    symphonia::default::get_probe()
        .probe(
            &hint,
            input.open()?,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            // nothing symphonia reads: name what it is, when the bytes or the name tell
            SymError::Unsupported(_) => match wav_codec(&input.head(64 * 1024))
                .or_else(|| ext.as_deref().and_then(unsupported_by_extension))
            {
                Some(codec) => AudioError::UnsupportedCodec { codec: Some(codec) },
                None if matches!(e, SymError::Unsupported(what) if what.contains("no suitable")) => {
                    AudioError::Unsupported(
                        "no audio format Colloquy reads was recognised (WAV, FLAC, MP3, \
                         M4A/AAC, Ogg Vorbis/Opus, WebM/MKV, AIFF, CAF)"
                            .into(),
                    )
                }
                None => AudioError::Unsupported(describe(&e)),
            },
            SymError::LimitError(_) => AudioError::Unsupported(describe(&e)),
            _ => AudioError::Corrupt(describe(&e)),
        })
}

/// The id, sample rate and time base of the default audio track.
struct TrackInfo {
    id: u32,
    params: AudioCodecParameters,
    rate: Option<u32>,
    time_base: Option<TimeBase>,
    /// Frames the container announces.
    num_frames: Option<u64>,
}

fn audio_track(format: &dyn FormatReader) -> Result<TrackInfo, AudioError> {
    let track = format
        .default_track(TrackType::Audio)
        .ok_or(AudioError::NoAudioTrack)?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(AudioError::NoAudioTrack)?;
    Ok(TrackInfo {
        id: track.id,
        params: params.clone(),
        rate: params.sample_rate.filter(|&r| r > 0),
        time_base: track.time_base,
        num_frames: track.num_frames,
    })
}

/// The track's length in seconds from its packets, read without decoding
/// (the sum of their durations; the span of their timestamps when they carry
/// none); stops with [`AudioError::TooLong`] as soon as it passes `limits`.
/// None when the track has no time base or sample rate to measure by, or
/// when a read fails before any packet (decoding then says what is wrong).
///
/// The container's announced length is not used: it is not trusted to
/// refuse (a WAV written as a stream announces 4 GB of data, whatever it
/// holds), nor to accept (a header may understate what follows).
fn measure_seconds(input: &Input, limits: DecodeLimits) -> Result<Option<f64>, AudioError> {
    let mut format = probe(input)?;
    let track = audio_track(format.as_ref())?;
    let seconds_per_unit = match (track.time_base, track.rate) {
        (Some(tb), _) => tb.numer.get() as f64 / tb.denom.get() as f64,
        (None, Some(rate)) => 1.0 / rate as f64,
        (None, None) => return Ok(None),
    };
    let (mut total, mut first, mut end) = (0u64, i64::MAX, i64::MIN);
    let mut packets = 0u64;
    let seconds = |total: u64, first: i64, end: i64| {
        let units = if total > 0 {
            total as f64
        } else {
            (end as f64 - first as f64).max(0.0)
        };
        units * seconds_per_unit
    };
    // a damaged packet ends the count: decoding reads on and judges the rest
    while let Ok(Some(packet)) = format.next_packet() {
        if packet.track_id != track.id {
            continue;
        }
        packets += 1;
        let (pts, dur) = (packet.pts.get(), packet.dur.get());
        total = total.saturating_add(dur);
        first = first.min(pts);
        end = end.max(pts.saturating_add(dur.min(i64::MAX as u64) as i64));
        if seconds(total, first, end) > limits.max_seconds as f64 {
            return Err(limits.too_long());
        }
    }
    Ok((packets > 0).then(|| seconds(total, first, end)))
}

/// Decodes packet by packet, handing each packet's mono samples (the mean of
/// its channels) to `sink`; returns the source's channel count. With a
/// length limit, the packets are first read without decoding to measure the
/// track ([`measure_seconds`]), and decoding stops as soon as the decoded
/// audio passes the limit all the same.
fn decode_input(
    input: &Input,
    limits: DecodeLimits,
    sink: &mut dyn FnMut(Chunk) -> Result<(), AudioError>,
) -> Result<usize, AudioError> {
    let mut format = probe(input)?;
    let track = audio_track(format.as_ref())?;
    let params = &track.params;
    // gapless (on by default) trims encoder delay and padding, e.g. LAME's mp3 delay
    let mut decoder = codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) if codecs().get_audio_decoder(params.codec).is_none() => {
                AudioError::UnsupportedCodec {
                    codec: Some(codec_name(params.codec)),
                }
            }
            SymError::Unsupported(_) | SymError::LimitError(_) => {
                AudioError::Unsupported(describe(&e))
            }
            _ => AudioError::Corrupt(describe(&e)),
        })?;
    let mut expected = track.num_frames;
    if limits.max_seconds > 0 {
        if let (Some(seconds), Some(rate)) = (measure_seconds(input, limits)?, track.rate) {
            expected = Some((seconds * rate as f64).ceil() as u64);
        }
        if let Some(rate) = track.rate {
            let most = limits
                .max_seconds
                .saturating_add(1)
                .saturating_mul(rate as u64);
            expected = expected.map(|n| n.min(most));
        }
    }
    decode_packets(
        format.as_mut(),
        decoder.as_mut(),
        &track,
        limits,
        expected,
        sink,
    )
}

/// The decoding loop of [`decode_input`]: stops with [`AudioError::TooLong`]
/// as soon as the decoded audio passes `limits`, whatever was measured.
fn decode_packets(
    format: &mut dyn FormatReader,
    decoder: &mut dyn AudioDecoder,
    track: &TrackInfo,
    limits: DecodeLimits,
    expected: Option<u64>,
    sink: &mut dyn FnMut(Chunk) -> Result<(), AudioError>,
) -> Result<usize, AudioError> {
    let params = &track.params;
    let mut channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    let mut interleaved: Vec<f32> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut decoded = 0u64;
    let mut decode_errors = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(AudioError::Corrupt(describe(&e))),
        };
        if packet.track_id != track.id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                let spec = buf.spec();
                let rate = spec.rate();
                if !(MIN_RATE..=MAX_RATE).contains(&rate) {
                    return Err(AudioError::Unsupported(format!(
                        "a sample rate of {rate} Hz (from {MIN_RATE} Hz to {} kHz are read)",
                        MAX_RATE / 1000
                    )));
                }
                let ch = spec.channels().count().max(1);
                channels = ch;
                buf.copy_to_vec_interleaved(&mut interleaved);
                let scale = 1.0 / ch as f32;
                mono.clear();
                // full scale is 1.0: a float file's samples past it are clipped,
                // as a decode to 16-bit PCM clips them (faster-whisper's PyAV
                // decode), and its NaN is silence; either made the resampler's
                // FFT fail (found by `make fuzz`: 1e36 in a float WAV overflows)
                mono.extend(interleaved.chunks_exact(ch).map(|frame| {
                    let v = frame.iter().sum::<f32>() * scale;
                    if v.is_nan() {
                        0.0
                    } else {
                        v.clamp(-1.0, 1.0)
                    }
                }));
                decoded += mono.len() as u64;
                if limits.exceeded(decoded, rate) {
                    return Err(limits.too_long());
                }
                sink(Chunk {
                    rate,
                    samples: &mono,
                    expected,
                })?;
            }
            // a damaged packet is skipped, as players do; a file of nothing but damage is corrupt
            Err(SymError::DecodeError(_)) => decode_errors += 1,
            Err(e @ SymError::Unsupported(_)) => return Err(AudioError::Unsupported(describe(&e))),
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

/// The name of a codec symphonia knows of but cannot decode.
fn codec_name(id: AudioCodecId) -> String {
    let name = match id {
        CODEC_ID_AC3 => "AC-3",
        CODEC_ID_EAC3 => "E-AC-3",
        CODEC_ID_AC4 => "AC-4",
        CODEC_ID_DCA => "DTS",
        CODEC_ID_TRUEHD => "TrueHD",
        CODEC_ID_WMA => "WMA",
        CODEC_ID_SPEEX => "Speex",
        CODEC_ID_MUSEPACK => "Musepack",
        CODEC_ID_WAVPACK => "WavPack",
        CODEC_ID_MONKEYS_AUDIO => "Monkey's Audio",
        CODEC_ID_TTA => "TTA",
        CODEC_ID_RALF => "RealAudio Lossless",
        CODEC_ID_ATRAC1 | CODEC_ID_ATRAC3 | CODEC_ID_ATRAC3PLUS | CODEC_ID_ATRAC9 => "ATRAC",
        CODEC_ID_RA10 | CODEC_ID_RA20 | CODEC_ID_SIPR | CODEC_ID_COOK => "RealAudio",
        CODEC_ID_SBC => "SBC",
        CODEC_ID_APTX | CODEC_ID_APTX_HD => "aptX",
        CODEC_ID_LDAC => "LDAC",
        CODEC_ID_BINK_AUDIO => "Bink Audio",
        CODEC_ID_SMACKER_AUDIO => "Smacker audio",
        CODEC_ID_ADPCM_G722 => "G.722",
        CODEC_ID_ADPCM_G726 | CODEC_ID_ADPCM_G726LE => "G.726",
        CODEC_ID_ADPCM_IMA_QT => "IMA ADPCM (QuickTime)",
        CODEC_ID_MP1 => "MP1",
        CODEC_ID_MP2 => "MP2",
        CODEC_ID_MP3 => "MP3",
        CODEC_ID_AAC => "AAC",
        CODEC_ID_OPUS => "Opus",
        CODEC_ID_VORBIS => "Vorbis",
        CODEC_ID_FLAC => "FLAC",
        CODEC_ID_ALAC => "ALAC",
        _ => return format!("codec id {id}"),
    };
    name.to_string()
}

/// The codec of a RIFF/WAVE file's `fmt ` chunk when it is one symphonia
/// does not read (its format tag, named when it is a common one), from the
/// file's first bytes.
fn wav_codec(head: &[u8]) -> Option<String> {
    if head.len() < 12 || &head[..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return None;
    }
    let u16_at = |i: usize| head.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let mut pos = 12usize;
    while pos + 8 <= head.len() {
        let len = u32::from_le_bytes(head[pos + 4..pos + 8].try_into().ok()?) as usize;
        if &head[pos..pos + 4] == b"fmt " {
            let mut tag = u16_at(pos + 8)?;
            if tag == 0xfffe {
                // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag
                tag = u16_at(pos + 8 + 24)?;
            }
            let name = match tag {
                // what symphonia reads: PCM, ADPCM, IEEE float, A-law, mu-law, IMA ADPCM
                0x0001 | 0x0002 | 0x0003 | 0x0006 | 0x0007 | 0x0011 => return None,
                0x0031 => "GSM 6.10",
                0x0045 | 0x0064 => "G.726",
                0x0050 => "MPEG audio",
                0x0055 => "MP3",
                0x00ff | 0x1600 | 0x1601 => "AAC",
                0x0160..=0x0163 => "WMA",
                0x2000 => "AC-3",
                0x2001 => "DTS",
                _ => return Some(format!("WAV format tag 0x{tag:04x}")),
            };
            return Some(format!("{name}, WAV format tag 0x{tag:04x}"));
        }
        pos = pos.checked_add(8 + len + (len & 1))?;
    }
    None
}

/// The codec or format a file extension stands for, among those symphonia
/// does not read (a file symphonia cannot probe is named after its extension).
fn unsupported_by_extension(ext: &str) -> Option<String> {
    let name = match ext {
        "wma" | "asf" => "WMA",
        "ac3" => "AC-3",
        "eac3" | "ec3" => "E-AC-3",
        "dts" => "DTS",
        "ape" => "Monkey's Audio",
        "wv" => "WavPack",
        "amr" | "3ga" => "AMR",
        "ra" | "rm" => "RealAudio",
        "mpc" => "Musepack",
        "tta" => "TTA",
        "spx" => "Speex",
        "gsm" => "GSM 6.10",
        "au" | "snd" => "Sun AU",
        "mid" | "midi" => "MIDI (not recorded audio)",
        _ => return None,
    };
    Some(name.to_string())
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

    /// Runs one chunk: `partial` Some(n) for a last chunk of n frames (0:
    /// zeros to flush); returns the frames the resampler produced (the
    /// trimmed delay included).
    fn run(
        &mut self,
        input: &[f32],
        partial: Option<usize>,
        out: &mut impl SampleSink,
    ) -> Result<usize, AudioError> {
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
        out.extend_from_f32(&self.chunk_out[skip..produced]);
        Ok(produced)
    }

    fn push(&mut self, samples: &[f32], out: &mut impl SampleSink) -> Result<(), AudioError> {
        self.input_len += samples.len();
        self.pending.extend_from_slice(samples);
        let n_in = self.inner.input_frames_next();
        // taken out while `run` borrows the resampler (no copy per chunk)
        let mut pending = std::mem::take(&mut self.pending);
        let mut used = 0;
        // as `process_all_into_buffer`: full chunks while more than one chunk is left
        while pending.len() - used > n_in {
            let _ = self.run(&pending[used..used + n_in], None, out)?;
            used += n_in;
        }
        pending.drain(..used);
        self.pending = pending;
        Ok(())
    }

    /// Processes what is left and pumps zeros until the output (all of
    /// `out`, which holds this stream's output only) has its full length.
    fn finish(mut self, out: &mut impl SampleSink) -> Result<(), AudioError> {
        let expected = (self.inner.resample_ratio() * self.input_len as f64).ceil() as usize;
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let _ = self.run(&rest, Some(rest.len()), out)?;
        }
        // A call may produce nothing: the FFT's block can span several input
        // chunks (at 270144 Hz, found by `make fuzz`, 4221 input frames give
        // 250 output frames, in chunks of 1024). Past a block's worth of
        // calls without output, the resampler has stopped.
        let ratio = self.inner.resample_ratio();
        let block_in = self.inner.output_frames_max() as f64 / ratio;
        let calls_per_block =
            (block_in / self.inner.input_frames_next().max(1) as f64).ceil() as usize + 1;
        let mut idle = 0;
        while out.len() < expected {
            if self.run(&[], Some(0), out)? > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle > calls_per_block {
                    return Err(AudioError::Resample(
                        "the resampler stopped producing output".into(),
                    ));
                }
            }
        }
        out.truncate(expected);
        Ok(())
    }
}

/// symphonia's error in words: what is unsupported or malformed.
fn describe(e: &SymError) -> String {
    match e {
        SymError::Unsupported(what) => format!("unsupported: {what}"),
        SymError::DecodeError(what) => format!("malformed: {what}"),
        SymError::LimitError(what) => format!("over a decoder limit: {what}"),
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends too early".into()
        }
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
        let streamed = load_16k_mono(&p, DecodeLimits::NONE).unwrap();
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
            load_16k_mono(&same, DecodeLimits::NONE).unwrap().samples,
            decode_file(&same).unwrap().samples
        );
        std::fs::remove_file(p).unwrap();
        std::fs::remove_file(same).unwrap();
    }

    /// The pipeline keeps a job's audio as 16-bit samples: a 16-bit 16 kHz
    /// file comes back exactly as f32 decoding reads it, full scale
    /// included; a resampled one within half a 16-bit step.
    #[test]
    fn sixteen_bit_keeping_gives_a_16_bit_file_back_exactly() {
        let mut frames: Vec<Vec<i16>> = (0..16_000)
            .map(|i| vec![((i as f32 * 0.031).sin() * 20_000.0) as i16])
            .collect();
        frames[10] = vec![i16::MIN];
        frames[11] = vec![i16::MAX];
        let p = temp_file("pcm16.wav", &wav_bytes(16_000, 1, &frames));
        let kept = load_16k_pcm16(&p, DecodeLimits::NONE).unwrap();
        let f32s = load_16k_mono(&p, DecodeLimits::NONE).unwrap();
        assert_eq!((kept.sample_rate, kept.channels), (TARGET_RATE, 1));
        assert_eq!(kept.samples.view().to_vec(), f32s.samples);
        assert_eq!(kept.duration(), 1.0);
        assert_eq!(kept.samples.view().get(10), Some(-1.0));
        let stereo: Vec<Vec<i16>> = (0..44_100)
            .map(|i| {
                let v = ((i as f32 * 0.02).sin() * 30_000.0) as i16;
                vec![v, -v / 3]
            })
            .collect();
        let q = temp_file("pcm16_44k.wav", &wav_bytes(44_100, 2, &stereo));
        let kept = load_16k_pcm16(&q, DecodeLimits::NONE).unwrap();
        let f32s = load_16k_mono(&q, DecodeLimits::NONE).unwrap();
        assert_eq!(kept.samples.len(), f32s.samples.len());
        let worst = kept
            .samples
            .view()
            .iter()
            .zip(&f32s.samples)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 0.5 / 32768.0 + 1e-9, "largest difference {worst}");
        std::fs::remove_file(p).unwrap();
        std::fs::remove_file(q).unwrap();
    }

    /// Every way an engine reads samples gives the same values from f32
    /// and from 16-bit storage; 16-bit storage rounds to the nearest step
    /// and clips at full scale.
    #[test]
    fn samples_read_alike_from_f32_and_16_bit() {
        let f32s: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 65536) as f32 / 32768.0 - 1.0)
            .collect();
        let pcm = Pcm16::from_f32(&f32s);
        let (a, b) = (Samples::from(&f32s), pcm.view());
        assert_eq!((a.len(), b.len()), (1000, 1000));
        assert_eq!(a.to_vec(), b.to_vec());
        assert_eq!(
            a.iter().rev().collect::<Vec<_>>(),
            b.iter().rev().collect::<Vec<_>>()
        );
        assert_eq!(
            (a.get(999), b.get(999), b.get(1000)),
            (Some(f32s[999]), Some(f32s[999]), None)
        );
        assert_eq!(a.slice(100..200).to_vec(), b.slice(100..200).to_vec());
        let (mut x, mut y) = (vec![0.0; 50], vec![0.0; 50]);
        a.copy_into(900, &mut x);
        b.copy_into(900, &mut y);
        assert_eq!(
            (x.clone(), y.clone()),
            (f32s[900..950].to_vec(), f32s[900..950].to_vec())
        );
        let (mut x, mut y) = (vec![9.0], vec![9.0]);
        a.extend_into(3..6, &mut x);
        b.extend_into(3..6, &mut y);
        assert_eq!(x, y);
        assert_eq!(x.len(), 4);

        let step = 1.0 / 32768.0;
        let mut pcm = Pcm16::from_f32(&[1.0, -1.5, 0.4 * step, 0.6 * step, -0.6 * step, 0.5]);
        assert_eq!(
            pcm.view().to_vec(),
            vec![32767.0 * step, -1.0, 0.0, step, -step, 0.5]
        );
        pcm.amplify(4.0);
        assert_eq!(pcm.view().get(5), Some(32767.0 * step), "clipped");
        assert_eq!(pcm.view().get(3), Some(4.0 * step));
        pcm.keep(2..4);
        assert_eq!(pcm.view().to_vec(), vec![0.0, 4.0 * step]);
    }

    /// Found by `make fuzz`: at 270144 Hz the resampler's FFT block spans
    /// five 1024-frame chunks, and the flush took a chunk without output
    /// for a resampler that had stopped.
    #[test]
    fn a_rate_whose_resampling_block_spans_several_chunks() {
        for (rate, n) in [
            (270_144u32, 4040usize),
            (270_144, 30_000),
            (44_100, 7),
            (7919, 5000),
        ] {
            let frames: Vec<Vec<i16>> = (0..n).map(|i| vec![((i * 37) % 2000) as i16]).collect();
            let bytes = wav_bytes(rate, 1, &frames);
            let whole =
                resample(&from_bytes_native(bytes.clone()).samples, rate, TARGET_RATE).unwrap();
            let streamed = from_bytes(bytes, "wav").unwrap();
            assert_eq!(streamed.samples.len(), whole.len(), "{rate} Hz, {n} frames");
            let worst = streamed
                .samples
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{rate} Hz: largest difference {worst}");
        }
    }

    /// `decode_file` of bytes (through a temporary file).
    fn from_bytes_native(bytes: Vec<u8>) -> MonoAudio {
        let p = temp_file("native.wav", &bytes);
        let a = decode_file(&p).unwrap();
        std::fs::remove_file(p).unwrap();
        a
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

    /// `wav_bytes` with its format tag (bytes 20-21) replaced.
    fn wav_with_format_tag(tag: u16) -> Vec<u8> {
        let mut b = wav_bytes(16_000, 1, &vec![vec![0i16]; 1600]);
        b[20..22].copy_from_slice(&tag.to_le_bytes());
        b
    }

    fn from_bytes(bytes: Vec<u8>, ext: &str) -> Result<MonoAudio, AudioError> {
        load_16k_mono_from_bytes(bytes, Some(ext), DecodeLimits::NONE)
    }

    #[test]
    fn a_codec_symphonia_cannot_decode_is_named_in_a_sentence() {
        for (tag, named) in [
            (
                0x0161,
                "the audio codec (WMA, WAV format tag 0x0161) is not supported",
            ),
            (
                0x2000,
                "the audio codec (AC-3, WAV format tag 0x2000) is not supported",
            ),
            (
                0x1234,
                "the audio codec (WAV format tag 0x1234) is not supported",
            ),
        ] {
            let err = from_bytes(wav_with_format_tag(tag), "wav").unwrap_err();
            assert!(
                matches!(err, AudioError::UnsupportedCodec { .. }),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("{named}; supported: {SUPPORTED_CODECS}")
            );
            assert!(err.is_bad_input());
        }
        // the same through a file on disk, and with the tag inside
        // WAVE_FORMAT_EXTENSIBLE's sub-format
        let mut ext = wav_bytes(16_000, 1, &vec![vec![0i16]; 1600]);
        let fmt: Vec<u8> = [
            &0xfffeu16.to_le_bytes()[..],
            &1u16.to_le_bytes(),
            &16_000u32.to_le_bytes(),
            &32_000u32.to_le_bytes(),
            &2u16.to_le_bytes(),
            &16u16.to_le_bytes(),
            &22u16.to_le_bytes(),
            &16u16.to_le_bytes(),
            &4u32.to_le_bytes(),
            &0x0161u16.to_le_bytes(),
            b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71",
        ]
        .concat();
        assert_eq!(fmt.len(), 40);
        ext.splice(16..36, [&40u32.to_le_bytes()[..], &fmt].concat());
        let p = temp_file("wma_ext.wav", &ext);
        let err = load_16k_mono(&p, DecodeLimits::NONE).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the audio codec (WMA, WAV format tag 0x0161)"),
            "{err}"
        );
        std::fs::remove_file(p).unwrap();
        // a container symphonia does not read: named after the extension
        for (ext, name) in [("wma", "WMA"), ("ac3", "AC-3")] {
            let err = from_bytes(
                b"0&\xb2\x75\x8e\x66\xcf\x11 not read by symphonia".to_vec(),
                ext,
            )
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the audio codec ({name}) is not supported; supported: {SUPPORTED_CODECS}")
            );
        }
        // what is not audio at all, under an extension of one that is
        let err = from_bytes(b"just some text, no audio in it at all".to_vec(), "mp4").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "not a supported audio file: no audio format Colloquy reads was recognised"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_panic_in_the_decoder_becomes_a_corrupt_file() {
        let input = Input::Bytes {
            bytes: SharedBytes(Arc::new(Vec::new())),
            ext: None,
        };
        let err = guarded(&input, || -> Result<(), AudioError> {
            panic!("index out of bounds: the len is 3 but the index is 7")
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the audio data is corrupt: the decoder failed on this file: \
             index out of bounds: the len is 3 but the index is 7"
        );
        assert!(err.is_bad_input());
    }

    #[test]
    fn our_own_failures_are_not_bad_input() {
        let missing =
            load_16k_mono(Path::new("/nonexistent/x.wav"), DecodeLimits::NONE).unwrap_err();
        assert!(matches!(missing, AudioError::Open { .. }), "{missing}");
        assert!(!missing.is_bad_input());
        assert!(!AudioError::Resample("x".into()).is_bad_input());
        // a directory opens, and its read fails: the disk, not the data
        let dir = std::env::temp_dir();
        let err = load_16k_mono(&dir, DecodeLimits::NONE).unwrap_err();
        assert!(matches!(err, AudioError::Read { .. }), "{err:?}");
        assert!(!err.is_bad_input());
    }

    #[test]
    fn the_length_is_measured_from_the_packets_before_decoding() {
        // 3 s at 8 kHz
        let frames: Vec<Vec<i16>> = (0..24_000).map(|i| vec![(i % 200) as i16]).collect();
        let input = Input::Bytes {
            bytes: SharedBytes(Arc::new(wav_bytes(8000, 1, &frames))),
            ext: Some("wav"),
        };
        let measured = measure_seconds(&input, DecodeLimits::max_seconds(5)).unwrap();
        assert_eq!(measured, Some(3.0));
        let err = measure_seconds(&input, DecodeLimits::max_seconds(2)).unwrap_err();
        assert!(
            matches!(err, AudioError::TooLong { seconds_limit: 2 }),
            "{err:?}"
        );
        // Opus in Ogg: 20 ms packets, the encoder's delay included
        let opus = Input::file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/jfk.opus"
        )));
        let s = measure_seconds(&opus, DecodeLimits::max_seconds(60))
            .unwrap()
            .unwrap();
        assert!((s - 11.0).abs() < 0.03, "{s}");
    }

    #[test]
    fn decoding_stops_as_soon_as_the_audio_passes_the_limit() {
        // 3 s at 8 kHz, decoded with a 2 s limit and no measuring first (the
        // guard for a container whose packets understate their length)
        let frames: Vec<Vec<i16>> = (0..24_000).map(|i| vec![(i % 200) as i16]).collect();
        let input = Input::Bytes {
            bytes: SharedBytes(Arc::new(wav_bytes(8000, 1, &frames))),
            ext: Some("wav"),
        };
        let mut format = probe(&input).unwrap();
        let track = audio_track(format.as_ref()).unwrap();
        let mut decoder = codecs()
            .make_audio_decoder(&track.params, &AudioDecoderOptions::default())
            .unwrap();
        let mut received = 0usize;
        let mut largest = 0usize;
        let err = decode_packets(
            format.as_mut(),
            decoder.as_mut(),
            &track,
            DecodeLimits::max_seconds(2),
            None,
            &mut |chunk| {
                received += chunk.samples.len();
                largest = largest.max(chunk.samples.len());
                Ok(())
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, AudioError::TooLong { seconds_limit: 2 }),
            "{err:?}"
        );
        assert!(
            received <= 16_000 && received + largest > 16_000,
            "{received} of 16000, packets of {largest}"
        );
        // without a limit, all of it
        let whole = from_bytes(wav_bytes(8000, 1, &frames), "wav").unwrap();
        assert_eq!(whole.samples.len(), 48_000);
    }

    #[test]
    fn a_sample_rate_no_resampler_takes_is_bad_input() {
        let frames = vec![vec![100i16]; 100];
        for rate in [1u32, 999, 4_000_000] {
            let err = from_bytes(wav_bytes(rate, 1, &frames), "wav").unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("a sample rate of {rate} Hz")),
                "{rate}: {err}"
            );
            assert!(err.is_bad_input(), "{rate}: {err:?}");
        }
    }

    /// A 32-bit float mono WAV file in memory.
    fn wav_f32_bytes(rate: u32, samples: &[f32]) -> Vec<u8> {
        let data_len = samples.len() as u32 * 4;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 4).to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&32u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        b.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        b
    }

    /// Found by `make fuzz`: NaN, infinity or 1e36 in a float WAV made
    /// rubato's FFT fail ("Imaginary part of first value was non-zero", a
    /// panic in rubato).
    #[test]
    fn a_float_file_is_clipped_at_full_scale_and_its_nan_is_silence() {
        let mut samples: Vec<f32> = (0..44_100).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        samples[1000] = f32::NAN;
        samples[2000] = f32::INFINITY;
        samples[3000] = f32::NEG_INFINITY;
        samples[4000..5000].fill(7.9e36);
        samples[5000] = -1.5;
        let audio = from_bytes(wav_f32_bytes(44_100, &samples), "wav").unwrap();
        assert_eq!(audio.samples.len(), 16_000);
        assert!(audio.samples.iter().all(|s| s.is_finite() && s.abs() < 1.2));
        let p = temp_file("nan.wav", &wav_f32_bytes(44_100, &samples));
        let whole = decode_file(&p).unwrap();
        assert_eq!(
            (
                whole.samples[1000],
                whole.samples[2000],
                whole.samples[3000]
            ),
            (0.0, 1.0, -1.0)
        );
        assert_eq!((whole.samples[4500], whole.samples[5000]), (1.0, -1.0));
        assert_eq!(whole.samples[999], samples[999]);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn the_limit_reads_in_hours_and_minutes() {
        assert_eq!(hours_minutes(14400), "4 h 0 min");
        assert_eq!(hours_minutes(5400), "1 h 30 min");
        assert_eq!(hours_minutes(1500), "25 min");
        assert_eq!(hours_minutes(90), "1 min 30 s");
        assert_eq!(hours_minutes(45), "45 s");
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
