//! Speaker diarization (who spoke when): plain synchronous code, no actors.
//! The Kaldi fbank front end of the speaker-embedding model, RTTM/UEM files
//! and the DER scorer are here; the segmentation and embedding models and
//! the clustering land with issue #3.

pub mod cluster;
pub mod der;
pub mod fbank;
pub mod powerset;
pub mod reconstruct;
pub mod rttm;
