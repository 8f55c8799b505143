//! `GET /metrics`: the service's counters in the Prometheus / OpenMetrics
//! text format, with the Prometheus project's own client
//! (`prometheus-client`).
//!
//! Two kinds of series:
//! - recorded as things happen ([`Metrics`], shared by the HTTP layer and
//!   the registry): HTTP requests by route, method and status, with their
//!   durations; jobs finished by outcome; job durations and real-time
//!   factors as histograms; audio seconds processed;
//! - read at scrape time ([`Scrape`]): jobs in the registry by status, the
//!   queue, and every stage's counters (jobs in/out/failed/dropped, queued
//!   and working jobs, workers alive, busy and blocked seconds).
//!
//! Names follow the Prometheus conventions: a `colloquy_` prefix, base
//! units in the names (`_seconds`), `_total` on counters.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::actors::stage::CountersSnapshot;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route's pattern (`/api/status/{id}`), `other` for no route:
    /// never a raw path, so the series stay few.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageOutcomeLabels {
    pub stage: String,
    pub outcome: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Series recorded as things happen.
#[derive(Clone)]
pub struct Metrics {
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_seconds: HistogramFamily<RouteLabels>,
    /// Jobs that ended, by outcome (`completed`, `failed`, `cancelled`).
    pub jobs_finished: Family<OutcomeLabels, Counter>,
    /// Seconds from admission to the stored result, per completed job.
    pub job_seconds: Histogram,
    /// Seconds of processing per second of audio, per completed job.
    pub job_real_time_factor: Histogram,
    pub audio_seconds: FloatCounter,
    /// Callback attempts, by outcome (`delivered`, `retry`, `refused`).
    pub callbacks: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(request_seconds),
            jobs_finished: Family::default(),
            // 1 s .. about 4.5 hours
            job_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            // 0.01 .. about 10 (above 1: slower than real time)
            job_real_time_factor: Histogram::new(exponential_buckets(0.01, 2.0, 11)),
            audio_seconds: FloatCounter::default(),
            callbacks: Family::default(),
        }
    }
}

/// What is read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Jobs in the registry by status.
    pub jobs: BTreeMap<String, usize>,
    pub queued_jobs: usize,
    pub active_jobs: usize,
    pub max_active_jobs: usize,
    pub stages: Vec<(&'static str, CountersSnapshot)>,
}

fn gauge_family<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    values: impl IntoIterator<Item = (L, i64)>,
) -> Family<L, Gauge> {
    let family = Family::<L, Gauge>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    family
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

impl Metrics {
    /// One HTTP request answered.
    pub fn http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.http_request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// A job ended with `outcome`.
    pub fn finished(&self, outcome: &str) {
        self.jobs_finished
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A job completed: `seconds` from admission, for `audio` seconds of audio.
    pub fn completed(&self, seconds: f64, audio: f64) {
        self.finished("completed");
        self.job_seconds.observe(seconds);
        if audio > 0.0 {
            self.job_real_time_factor.observe(seconds / audio);
            self.audio_seconds.inc_by(audio);
        }
    }

    pub fn callback(&self, outcome: &str) {
        self.callbacks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Every series, in the OpenMetrics text format.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut reg = Registry::with_prefix("colloquy");
        reg.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            self.http_requests.clone(),
        );
        reg.register_with_unit(
            "http_request_duration",
            "Seconds to answer an HTTP request (to the first byte of a streamed body), by route pattern",
            Unit::Seconds,
            self.http_request_seconds.clone(),
        );
        reg.register(
            "jobs_finished",
            "Jobs that ended since the server started, by outcome",
            self.jobs_finished.clone(),
        );
        reg.register_with_unit(
            "job_duration",
            "Seconds from admission into the pipeline to the stored result, per completed job",
            Unit::Seconds,
            self.job_seconds.clone(),
        );
        reg.register(
            "job_real_time_factor",
            "Seconds of processing per second of audio, per completed job (below 1: faster than real time)",
            self.job_real_time_factor.clone(),
        );
        reg.register_with_unit(
            "audio_processed",
            "Seconds of audio in completed jobs",
            Unit::Seconds,
            self.audio_seconds.clone(),
        );
        reg.register(
            "callbacks",
            "Job callback attempts, by outcome",
            self.callbacks.clone(),
        );
        reg.register(
            "jobs",
            "Jobs in the registry, by status",
            gauge_family(scrape.jobs.iter().map(|(status, n)| {
                (
                    StatusLabels {
                        status: status.clone(),
                    },
                    *n as i64,
                )
            })),
        );
        reg.register(
            "queue_depth",
            "Jobs waiting to be admitted into the pipeline",
            gauge(scrape.queued_jobs as i64),
        );
        reg.register(
            "active_jobs",
            "Jobs in the pipeline now",
            gauge(scrape.active_jobs as i64),
        );
        reg.register(
            "max_active_jobs",
            "Jobs the pipeline takes at once (pipeline.max_active_jobs)",
            gauge(scrape.max_active_jobs as i64),
        );
        let stage = |name: &str| StageLabels {
            stage: name.to_string(),
        };
        let stage_jobs = Family::<StageOutcomeLabels, Counter>::default();
        let (busy, blocked) = (
            Family::<StageLabels, FloatCounter>::default(),
            Family::<StageLabels, FloatCounter>::default(),
        );
        for (name, c) in &scrape.stages {
            for (outcome, n) in [
                ("in", c.jobs_in),
                ("out", c.jobs_out),
                ("failed", c.jobs_failed),
                ("dropped", c.jobs_dropped),
            ] {
                stage_jobs
                    .get_or_create(&StageOutcomeLabels {
                        stage: name.to_string(),
                        outcome: outcome.into(),
                    })
                    .inc_by(n);
            }
            busy.get_or_create(&stage(name)).inc_by(c.busy_seconds);
            blocked
                .get_or_create(&stage(name))
                .inc_by(c.blocked_seconds);
        }
        reg.register(
            "stage_jobs",
            "Jobs per stage: taken in, passed on, failed, dropped (cancelled)",
            stage_jobs,
        );
        reg.register_with_unit(
            "stage_busy",
            "Seconds a stage's workers spent working",
            Unit::Seconds,
            busy,
        );
        reg.register_with_unit(
            "stage_blocked",
            "Seconds a stage's workers waited for the next stage to take their output",
            Unit::Seconds,
            blocked,
        );
        let per_stage = |f: fn(&CountersSnapshot) -> i64| {
            gauge_family(scrape.stages.iter().map(|(n, c)| (stage(n), f(c))))
        };
        reg.register(
            "stage_queued_jobs",
            "Jobs in a stage's queue, not started",
            per_stage(|c| c.queued),
        );
        reg.register(
            "stage_working_jobs",
            "Jobs a stage is working on",
            per_stage(|c| c.working),
        );
        reg.register(
            "stage_workers_alive",
            "A stage's worker threads still running",
            per_stage(|c| c.workers_alive),
        );
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_units_and_counters_end_in_total() {
        let m = Metrics::default();
        m.http("/api/status/{id}", "GET", 200, 0.002);
        m.completed(12.0, 60.0);
        let scrape = Scrape {
            jobs: [("completed".to_string(), 3)].into(),
            queued_jobs: 2,
            active_jobs: 1,
            max_active_jobs: 2,
            stages: vec![(
                "transcription",
                CountersSnapshot {
                    jobs_in: 4,
                    jobs_out: 3,
                    busy_seconds: 1.5,
                    workers: 1,
                    workers_alive: 1,
                    ..Default::default()
                },
            )],
        };
        let text = m.render(&scrape);
        for line in [
            r#"colloquy_http_requests_total{route="/api/status/{id}",method="GET",status="200"} 1"#,
            "colloquy_jobs_finished_total{outcome=\"completed\"} 1",
            "colloquy_job_duration_seconds_count 1",
            "colloquy_job_real_time_factor_count 1",
            "colloquy_audio_processed_seconds_total 60.0",
            "colloquy_jobs{status=\"completed\"} 3",
            "colloquy_queue_depth 2",
            "colloquy_stage_jobs_total{stage=\"transcription\",outcome=\"out\"} 3",
            "colloquy_stage_busy_seconds_total{stage=\"transcription\"} 1.5",
            "colloquy_stage_workers_alive{stage=\"transcription\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
