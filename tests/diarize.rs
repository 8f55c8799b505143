//! Diarization end to end with the real converted models, scored by DER.

mod common;

use colloquy::audio::{load_16k_mono, DecodeLimits};
use colloquy::diarize::der::{der, DerBreakdown};
use colloquy::diarize::rttm::{parse_rttm, parse_uem};
use colloquy::diarize::{DiarizationEngine, SpeakerBounds};
use common::{config, shared_data};

fn engine() -> Option<DiarizationEngine> {
    Some(DiarizationEngine::load(&config()?).expect("load diarization"))
}

/// DER (collar 0.25 s, UEM) and speaker counts of AMI excerpts, no hint.
fn ami(
    engine: &mut DiarizationEngine,
    ids: &[&str],
) -> Option<(DerBreakdown, Vec<(usize, usize)>)> {
    let dir = shared_data("diarization")?;
    let refs = parse_rttm(&std::fs::read_to_string(dir.join("ami.rttm")).unwrap()).unwrap();
    let uem = parse_uem(&std::fs::read_to_string(dir.join("ami.uem")).unwrap()).unwrap();
    let mut total = DerBreakdown::default();
    let mut counts = Vec::new();
    for id in ids {
        let audio = load_16k_mono(&dir.join(format!("{id}.wav")), DecodeLimits::NONE).unwrap();
        let d = engine
            .diarize(&audio.samples, SpeakerBounds::default())
            .unwrap();
        let r = &refs[*id];
        let b = der(r, &d.turns, Some(&uem[*id]), 0.25);
        let mut spk: Vec<&str> = r.iter().map(|t| t.speaker.as_str()).collect();
        spk.sort();
        spk.dedup();
        eprintln!(
            "{id}: DER {:.1}% (missed {:.2}s, false alarm {:.2}s, confusion {:.2}s of {:.2}s); speakers {} found, {} in reference",
            100.0 * b.der(), b.missed, b.false_alarm, b.confusion, b.total, d.num_speakers, spk.len()
        );
        counts.push((d.num_speakers, spk.len()));
        total.add(b);
    }
    Some((total, counts))
}

#[test]
fn ami_dev_without_hint() {
    let Some(mut engine) = engine() else { return };
    let Some((b, counts)) = ami(&mut engine, &["ami_dev00", "ami_dev01"]) else {
        return;
    };
    eprintln!("AMI dev00+dev01: DER {:.1}%", 100.0 * b.der());
    assert!(b.der() <= 0.20, "DER {:.1}%", 100.0 * b.der());
    for (found, truth) in counts {
        assert_eq!(found, truth);
    }
}

#[test]
fn falcon_three_speakers_without_hint() {
    let Some(path) = shared_data("diarization/picovoice_falcon_test.wav") else {
        return;
    };
    let Some(mut engine) = engine() else { return };
    let audio = load_16k_mono(&path, DecodeLimits::NONE).unwrap();
    let d = engine
        .diarize(&audio.samples, SpeakerBounds::default())
        .unwrap();
    eprintln!("picovoice_falcon_test: {} speakers", d.num_speakers);
    assert_eq!(d.num_speakers, 3);
}

#[test]
fn conv1_with_two_speaker_hint() {
    let Some(dir) = shared_data("synthetic") else {
        return;
    };
    let Some(mut engine) = engine() else { return };
    let reference = parse_rttm(&std::fs::read_to_string(dir.join("conv1.rttm")).unwrap()).unwrap();
    let r = reference.values().next().unwrap();
    let audio = load_16k_mono(&dir.join("conv1.wav"), DecodeLimits::NONE).unwrap();
    let d = engine
        .diarize(
            &audio.samples,
            SpeakerBounds {
                num_speakers: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    let b = der(r, &d.turns, None, 0.25);
    eprintln!(
        "conv1 (num_speakers=2): DER {:.1}%, missed {:.2}s + false alarm {:.2}s of {:.2}s",
        100.0 * b.der(),
        b.missed,
        b.false_alarm,
        b.total
    );
    assert_eq!(d.num_speakers, 2);
    assert!(b.der() <= 0.10, "DER {:.1}%", 100.0 * b.der());
    assert!((b.missed + b.false_alarm) / b.total <= 0.05);
    let unhinted = engine
        .diarize(&audio.samples, SpeakerBounds::default())
        .unwrap();
    let u = der(r, &unhinted.turns, None, 0.25);
    eprintln!(
        "conv1 (no hint): {} speakers, DER {:.1}%",
        unhinted.num_speakers,
        100.0 * u.der()
    );
}

#[test]
fn ami_tst_reported() {
    let Some(mut engine) = engine() else { return };
    // four speakers with heavy overlap (tst00) and little speech (tst01): reported, not bounded
    let Some((b, _)) = ami(&mut engine, &["ami_tst00", "ami_tst01"]) else {
        return;
    };
    eprintln!("AMI tst00+tst01: DER {:.1}%", 100.0 * b.der());
    assert!(b.total > 0.0);
}

/// The project's own two-voice clip (tests/data, made by scripts/make_test_audio.sh).
fn two_voices() -> (Vec<f32>, Vec<colloquy::diarize::rttm::Turn>) {
    let audio = load_16k_mono(
        &common::repo_path("tests/data/two_voices.flac"),
        DecodeLimits::NONE,
    )
    .unwrap();
    let rttm = parse_rttm(
        &std::fs::read_to_string(common::repo_path("tests/data/two_voices.rttm")).unwrap(),
    )
    .unwrap();
    (audio.samples, rttm["two_voices"].clone())
}

#[test]
fn two_voices_with_hint() {
    let Some(mut engine) = engine() else { return };
    let (samples, reference) = two_voices();
    let d = engine
        .diarize(
            &samples,
            SpeakerBounds {
                num_speakers: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    let b = der(&reference, &d.turns, None, 0.25);
    eprintln!("two_voices (num_speakers=2): DER {:.1}% (missed {:.2}s, false alarm {:.2}s, confusion {:.2}s of {:.2}s)", 100.0 * b.der(), b.missed, b.false_alarm, b.confusion, b.total);
    assert_eq!(d.num_speakers, 2);
    // the reference marks whole utterances, pauses inside sentences included
    // (2.5 s of the 23.8 s): those count as missed speech, so speaker
    // discrimination is judged on confusion, and DER gets that allowance
    assert!(
        b.confusion <= 0.01 * b.total,
        "confusion {:.2}s: {:?}",
        b.confusion,
        d.turns
    );
    assert!(
        b.der() <= 0.12,
        "DER {:.1}%: {:?}",
        100.0 * b.der(),
        d.turns
    );
    assert_eq!(
        d.turns[0].speaker, "SPEAKER_00",
        "labels in order of first appearance"
    );
}

#[test]
fn two_voices_without_hint_and_bounds() {
    let Some(mut engine) = engine() else { return };
    let (samples, reference) = two_voices();
    let d = engine.diarize(&samples, SpeakerBounds::default()).unwrap();
    let b = der(&reference, &d.turns, None, 0.25);
    eprintln!(
        "two_voices (no hint): {} speakers, DER {:.1}%",
        d.num_speakers,
        100.0 * b.der()
    );
    assert_eq!(d.num_speakers, 2);
    // bounds clamp the count
    let one = engine
        .diarize(
            &samples,
            SpeakerBounds {
                max_speakers: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(one.num_speakers, 1);
    let three = engine
        .diarize(
            &samples,
            SpeakerBounds {
                min_speakers: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(three.num_speakers >= 2, "{}", three.num_speakers);
}

#[test]
fn silence_has_no_speakers() {
    let Some(mut engine) = engine() else { return };
    let d = engine
        .diarize(&vec![0.0f32; 16_000 * 12], SpeakerBounds::default())
        .unwrap();
    assert!(d.turns.is_empty(), "{:?}", d.turns);
    assert_eq!(d.num_speakers, 0);
}

#[test]
fn a_set_stop_flag_stops_diarization() {
    let Some(mut engine) = engine() else { return };
    let (audio, _) = two_voices();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let err = engine
        .diarize_until(&audio, SpeakerBounds::default(), Some(stop.clone()))
        .err()
        .expect("stopped");
    assert!(err.to_string().contains("cancelled"), "{err}");
    stop.store(false, std::sync::atomic::Ordering::SeqCst);
    let d = engine
        .diarize_until(&audio, SpeakerBounds::default(), Some(stop))
        .unwrap();
    assert_eq!(d.num_speakers, 2, "the engine works on afterwards");
}

#[test]
fn a_borrowed_core_changes_nothing_in_the_result() {
    let Some(cfg) = config() else { return };
    let (samples, _) = two_voices();
    let bounds = SpeakerBounds::default();
    let alone = DiarizationEngine::load(&cfg)
        .unwrap()
        .diarize(&samples, bounds)
        .unwrap();
    assert!(alone.timings.embedded > 1, "more than one piece embedded");
    assert!(alone.timings.windows > 1, "more than one window");
    assert_eq!(alone.timings.embedded_on_lent_core, 0);
    assert_eq!(alone.timings.segmented_on_lent_core, 0);
    // a core lent for the whole job: the second sessions take batches too
    let spare = std::sync::Arc::new(colloquy::cores::SpareCores::new());
    let lent = spare.lend();
    let mut helped = DiarizationEngine::load(&cfg)
        .unwrap()
        .borrowing_idle_cores(&cfg, spare.clone())
        .unwrap();
    // which thread takes which batch is up to the scheduler: until the
    // second sessions have taken some (on a busy machine they may find none
    // left), every result must be the same
    let (mut segmented, mut embedded) = (0, 0);
    for _ in 0..5 {
        let with_help = helped.diarize(&samples, bounds).unwrap();
        assert_eq!(spare.counts(), (1, 0), "the helper gave its core back");
        assert_eq!(with_help.turns, alone.turns);
        assert_eq!(with_help.num_speakers, alone.num_speakers);
        let t = &with_help.timings;
        assert_eq!(
            (t.windows, t.embedded),
            (alone.timings.windows, alone.timings.embedded)
        );
        eprintln!(
            "on the lent core: {} of {} windows segmented, {} of {} pieces embedded",
            t.segmented_on_lent_core, t.windows, t.embedded_on_lent_core, t.embedded
        );
        segmented = segmented.max(t.segmented_on_lent_core);
        embedded = embedded.max(t.embedded_on_lent_core);
        if segmented > 0 && embedded > 0 {
            break;
        }
    }
    drop(lent);
    assert!(
        segmented > 0,
        "the second segmentation session took no batch in 5 jobs"
    );
    assert!(embedded > 0, "the second embedder took no batch in 5 jobs");
}
