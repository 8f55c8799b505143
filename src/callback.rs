//! Callbacks: when a job that was uploaded with a `callback_url` ends, the
//! server POSTs its final record there. Plain synchronous code (one HTTP
//! request per call); the registry decides when to call (never on the
//! pipeline's threads), records each attempt on the job and retries with
//! back-off.
//!
//! What counts: a 2xx answer is delivered. A network error, a timeout, 408,
//! 429 or a 5xx is tried again later; any other answer (the receiver
//! refused it) ends the deliveries. Redirects are not followed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How callbacks are made (`server.callback_*` settings).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each later one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// For one whole request.
    pub timeout: Duration,
    /// Hosts a callback may go to; empty: any.
    pub allowed_hosts: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 8,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
        }
    }
}

impl Policy {
    /// The wait after failed attempt number `attempt` (1 = the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Checks a `callback_url` given at upload; the error is for the user.
    pub fn check_url(&self, raw: &str) -> Result<(), String> {
        let url = url::Url::parse(raw)
            .map_err(|e| format!("callback_url is not a valid URL ({e}): {raw:?}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "callback_url must be an http or https URL, not {}:",
                url.scheme()
            ));
        }
        let Some(host) = url.host_str() else {
            return Err("callback_url has no host".into());
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("callback_url must not carry a user name or password".into());
        }
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Err(format!(
                "callback_url's host {host} is not one this server calls back \
                 (server.callback_allowed_hosts)"
            ));
        }
        Ok(())
    }
}

/// Deliveries of one job's callback, as recorded on the job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Callback {
    pub url: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When a 2xx answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What went wrong with the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// No more attempts will be made (delivered, refused, or out of attempts).
    #[serde(default)]
    pub done: bool,
}

impl Callback {
    /// Records an attempt's outcome (`max`: attempts in all); the attempt
    /// number to back off from when another is worth making.
    pub fn record(&mut self, outcome: &Outcome, max: u32) -> Option<u32> {
        self.attempts += 1;
        match outcome {
            Outcome::Delivered => {
                self.delivered_at = Some(chrono::Utc::now());
                self.last_error = None;
                self.done = true;
            }
            Outcome::Refused(e) => {
                self.last_error = Some(e.clone());
                self.done = true;
            }
            Outcome::Retry(e) => {
                self.last_error = Some(e.clone());
                self.done = self.attempts >= max;
            }
        }
        (!self.done).then_some(self.attempts)
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Worth another try later.
    Retry(String),
    /// The receiver refused the callback: no more tries.
    Refused(String),
}

impl Outcome {
    /// Its name in `/metrics` (the `outcome` of `colloquy_callbacks`).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry(_) => "retry",
            Outcome::Refused(_) => "refused",
        }
    }
}

/// POSTs `body` (JSON) to `url`, once.
pub fn post(url: &str, body: &[u8], timeout: Duration) -> Outcome {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("colloquy/", env!("CARGO_PKG_VERSION")))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    match agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
    {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Outcome::Delivered,
                408 | 429 | 500..=599 => Outcome::Retry(format!("the receiver answered {status}")),
                _ => Outcome::Refused(format!("the receiver answered {status}")),
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_backoff_doubles_up_to_its_cap() {
        let policy = Policy::default();
        assert!(policy
            .check_url("https://hooks.example.org/colloquy?x=1")
            .is_ok());
        assert!(policy.check_url("http://10.0.0.5:8080/done").is_ok());
        for bad in [
            "ftp://example.org/",
            "file:///etc/passwd",
            "not a url",
            "http://user:pw@example.org/",
        ] {
            assert!(policy.check_url(bad).is_err(), "{bad}");
        }
        let only = Policy {
            allowed_hosts: vec!["hooks.example.org".into()],
            ..Policy::default()
        };
        assert!(only.check_url("https://HOOKS.example.org/x").is_ok());
        let err = only
            .check_url("https://169.254.169.254/latest")
            .unwrap_err();
        assert!(err.contains("callback_allowed_hosts"), "{err}");
        let secs: Vec<u64> = (1..=10).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 64, 128, 256, 512, 600]);
    }

    #[test]
    fn nothing_listening_is_worth_a_retry() {
        // a port that was free a moment ago: connection refused
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let outcome = post(
            &format!("http://127.0.0.1:{port}/"),
            b"{}",
            Duration::from_secs(5),
        );
        assert!(matches!(outcome, Outcome::Retry(_)), "{outcome:?}");
    }
}
