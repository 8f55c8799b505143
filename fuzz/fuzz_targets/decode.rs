//! Fuzz target `decode`: any bytes through the decoder's in-memory entry
//! point (`audio::load_16k_mono_from_bytes`, the code path of uploads), with
//! a 20 s length limit so that each input stays fast. Fails (aborts, and
//! libFuzzer keeps the input) when:
//! - a panic escapes the entry point (audio.rs catches symphonia's and the
//!   Opus adapter's own: those become `AudioError::Corrupt`);
//! - a result is not 16 kHz or passes the limit;
//! - an error is not the user's bad input (`is_bad_input`): with bytes in
//!   memory there is no file of ours to fail, so every error must blame the input.
//!
//! Panics caught inside the decoder are not failures; with
//! `COLLOQUY_FUZZ_CAUGHT=DIR` the first input per panic location is kept
//! there (`make fuzz` reports how many).

#![no_main]

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

#[path = "../../src/audio.rs"]
#[allow(dead_code)]
mod audio;

const LIMIT_SECONDS: u64 = 20;

thread_local! {
    /// Where and why the last panic happened (set by the hook, read after the call).
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
    /// Inside the decoder's entry point, where a panic is expected to be caught.
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

fn quiet_panic_hook() {
    // libfuzzer-sys's hook aborts on every panic, even one that is caught
    // later; this one only notes a panic inside the decoder (the target
    // decides), and prints any other (a failed check of the target: it then
    // reaches libFuzzer, which keeps the input)
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if DECODING.with(Cell::get) {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((place, message)));
        } else {
            eprintln!("fuzz-target: check failed at {place}: {message}");
        }
    }));
}

/// Keeps `data` in $COLLOQUY_FUZZ_CAUGHT as the example of a panic caught at `place`.
fn keep_caught(place: &str, message: &str, data: &[u8]) {
    let Some(dir) = std::env::var_os("COLLOQUY_FUZZ_CAUGHT") else {
        return;
    };
    let name: String = place
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = std::path::Path::new(&dir).join(format!("caught-{name}"));
    if !path.exists() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(&path, data);
        let _ = std::fs::write(path.with_extension("txt"), format!("{place}\n{message}\n"));
    }
}

fuzz_target!(|data: &[u8]| {
    static HOOK: Once = Once::new();
    HOOK.call_once(quiet_panic_hook);
    LAST_PANIC.with(|p| p.borrow_mut().take());

    let limits = audio::DecodeLimits::max_seconds(LIMIT_SECONDS);
    DECODING.with(|d| d.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| {
        audio::load_16k_mono_from_bytes(data.to_vec(), None, limits)
    }));
    DECODING.with(|d| d.set(false));
    let result = match result {
        Ok(r) => r,
        Err(_) => {
            let (place, message) = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            eprintln!(
                "fuzz-target: a panic escaped audio::load_16k_mono_from_bytes at {place}: {message}"
            );
            std::process::abort();
        }
    };
    match result {
        Ok(a) => {
            assert_eq!(a.sample_rate, audio::TARGET_RATE);
            // decoding stops as soon as the audio passes the limit
            assert!(
                a.duration() <= LIMIT_SECONDS as f64 + 0.001,
                "{} s decoded with a {LIMIT_SECONDS} s limit",
                a.duration()
            );
        }
        Err(e) => {
            assert!(e.is_bad_input(), "an error that blames us: {e:?}");
            if let Some((place, message)) = LAST_PANIC.with(|p| p.borrow_mut().take()) {
                keep_caught(&place, &message, data);
            }
        }
    }
});
