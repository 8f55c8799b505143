//! The server's boundary against other web sites, checked on every request
//! before any handler runs (with or without keys):
//! - the `Host` header must name this server (`server.allowed_hosts`; by
//!   default its loopback names and bind address), so a page that rebinds
//!   its own DNS name to 127.0.0.1 cannot read the API;
//! - a state-changing request (anything but GET, HEAD, OPTIONS) that a
//!   browser sends from another origin is refused unless that origin is in
//!   `server.cors_origins`, so another page cannot submit or delete jobs.
//!
//! CORS headers for the listed origins come from `actix-cors` (wired in
//! `mod.rs`); this module only refuses.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use super::error::ApiError;
use super::AppState;
use crate::config::ServerConfig;

/// Which Host names and foreign origins the server accepts.
#[derive(Debug, Clone)]
pub struct Boundary {
    /// Lower-case host names without port; None: any.
    hosts: Option<Vec<String>>,
    /// Origins (`scheme://host[:port]`) allowed besides the server's own.
    origins: Vec<String>,
}

impl Boundary {
    pub fn new(server: &ServerConfig) -> Boundary {
        let hosts = if server.allowed_hosts.iter().any(|h| h == "*") {
            None
        } else if server.allowed_hosts.is_empty() {
            let bind = server.bind.trim_start_matches('[').trim_end_matches(']');
            let unspecified = bind
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified());
            if unspecified {
                // bound to every interface (keys are required there): any name
                None
            } else {
                let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                    .into_iter()
                    .map(String::from)
                    .collect();
                hosts.push(bind.to_ascii_lowercase());
                Some(hosts)
            }
        } else {
            Some(
                server
                    .allowed_hosts
                    .iter()
                    .map(|h| host_name(h).to_ascii_lowercase())
                    .collect(),
            )
        };
        Boundary {
            hosts,
            origins: server
                .cors_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether `origin` is one of `server.cors_origins`.
    pub fn lists_origin(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Checks one request's Host and (for state-changing methods) Origin.
    pub fn check(&self, method: &Method, headers: &header::HeaderMap) -> Result<(), ApiError> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if let (Some(allowed), Some(host)) = (&self.hosts, host) {
            let name = host_name(host).to_ascii_lowercase();
            if !allowed.contains(&name) {
                return Err(ApiError::Forbidden(format!(
                    "this server does not answer to the host name '{name}' \
                     (server.allowed_hosts)"
                )));
            }
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
        let refused = match origin {
            Some(origin) => !(same_origin(origin, host) || self.lists_origin(origin)),
            None => cross_site,
        };
        if refused {
            return Err(ApiError::Forbidden(format!(
                "requests from another web site ({}) are refused (server.cors_origins)",
                origin.unwrap_or("cross-site")
            )));
        }
        Ok(())
    }
}

/// `example.org:8000` -> `example.org`; `[::1]:8000` -> `::1`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// An origin whose `host[:port]` is the request's Host header.
pub fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()))
}

/// The middleware: refuses before any handler (or body read) runs.
pub async fn check_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let verdict = match req.app_data::<web::Data<AppState>>() {
        Some(state) => state.boundary.check(req.method(), req.headers()),
        None => Ok(()),
    };
    if let Err(e) = verdict {
        tracing::info!(path = %req.path(), error = %e, "request refused at the boundary");
        let res = actix_web::HttpResponse::from_error(e);
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn server(bind: &str, hosts: &[&str], origins: &[&str]) -> ServerConfig {
        let mut c = crate::config::Config::load_with_env(None, Vec::new())
            .unwrap()
            .server;
        c.bind = bind.into();
        c.allowed_hosts = hosts.iter().map(|s| s.to_string()).collect();
        c.cors_origins = origins.iter().map(|s| s.to_string()).collect();
        c
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn foreign_host_names_are_refused_and_loopback_names_pass() {
        let b = Boundary::new(&server("127.0.0.1", &[], &[]));
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "LOCALHOST",
            "[::1]:8000",
        ] {
            assert!(
                b.check(&Method::GET, &headers(&[("host", ok)])).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "evil.example",
            "evil.example:8000",
            "127.0.0.1.evil.example",
        ] {
            assert!(matches!(
                b.check(&Method::GET, &headers(&[("host", bad)])),
                Err(ApiError::Forbidden(_))
            ));
        }
        let named = Boundary::new(&server("0.0.0.0", &["transcribe.clinic.lan"], &[]));
        assert!(named
            .check(
                &Method::GET,
                &headers(&[("host", "transcribe.clinic.lan:443")])
            )
            .is_ok());
        assert!(named
            .check(&Method::GET, &headers(&[("host", "localhost")]))
            .is_err());
        let any = Boundary::new(&server("0.0.0.0", &[], &[]));
        assert!(any
            .check(&Method::GET, &headers(&[("host", "x.y")]))
            .is_ok());
    }

    #[test]
    fn cross_origin_writes_are_refused_unless_listed() {
        let b = Boundary::new(&server("127.0.0.1", &[], &["https://intranet.example"]));
        let host = ("host", "127.0.0.1:8000");
        let post = |extra: &[(&str, &str)]| {
            let mut pairs = vec![host];
            pairs.extend_from_slice(extra);
            b.check(&Method::POST, &headers(&pairs))
        };
        assert!(post(&[]).is_ok(), "no Origin: not a browser");
        assert!(post(&[("origin", "http://127.0.0.1:8000")]).is_ok());
        assert!(post(&[("origin", "https://intranet.example")]).is_ok());
        for bad in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
            assert!(
                matches!(post(&[("origin", bad)]), Err(ApiError::Forbidden(_))),
                "{bad}"
            );
        }
        assert!(post(&[("sec-fetch-site", "cross-site")]).is_err());
        // reads from elsewhere are not refused here (the browser keeps their answers from the page)
        assert!(b
            .check(
                &Method::GET,
                &headers(&[host, ("origin", "http://evil.example")])
            )
            .is_ok());
    }
}
