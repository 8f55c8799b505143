//! Whisper's byte-level BPE tokenizer (the model's own `tokenizer.json`,
//! read by Hugging Face `tokenizers`), and the text/timestamp split of token ids.

use std::path::Path;

use super::model::SpecialTokens;

#[derive(Debug, thiserror::Error)]
#[error("tokenizer: {0}")]
pub struct TokenizerError(String);

pub struct WhisperTokenizer {
    inner: tokenizers::Tokenizer,
    pub special: SpecialTokens,
}

impl WhisperTokenizer {
    pub fn from_file(path: &Path, special: SpecialTokens) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| TokenizerError(format!("{}: {e}", path.display())))?;
        Ok(Self { inner, special })
    }

    /// Text of the text tokens among `ids` (timestamps and other special tokens are dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text: Vec<u32> = ids.iter().copied().filter(|&t| self.is_text(t)).collect();
        self.inner
            .decode(&text, true)
            .map_err(|e| TokenizerError(e.to_string()))
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// A token of ordinary text (below end-of-text).
    pub fn is_text(&self, id: u32) -> bool {
        id < self.special.eot
    }

    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.special.timestamp_begin
    }

    /// Seconds of a timestamp token, relative to its window (0.02 s steps).
    pub fn timestamp_seconds(&self, id: u32) -> Option<f64> {
        self.is_timestamp(id)
            .then(|| (id - self.special.timestamp_begin) as f64 * TIME_PRECISION)
    }
}

/// Seconds per timestamp-token step.
pub const TIME_PRECISION: f64 = 0.02;
