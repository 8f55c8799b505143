//! `/openapi.json` against the routes really registered: every `.route()`
//! in `src/api/` (found in the source, so a route added without
//! `#[utoipa::path]` and a place in `ApiDoc` fails here) is in the document
//! with its method, and every documented operation is registered and
//! answers a plain request with one of its documented statuses. The
//! document and the Swagger UI page at `/docs/` need no key with keys on,
//! and the page loads nothing from another host. The documented form of
//! `/v1/audio/transcriptions` is the one its parser checks. Fake engines;
//! no models.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::fakes;
use common::http::{raw_request, request};
use serde_json::Value;

fn serve(name: &str, overrides: &[(&str, &str)]) -> SocketAddr {
    let storage =
        std::env::temp_dir().join(format!("colloquy-openapi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&storage);
    let mut config = fakes::config(overrides);
    config.server.storage_dir = storage.display().to_string();
    config.server.port = 0;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new()
            .block_on(colloquy::api::serve(
                config,
                fakes::engines(None),
                move |addr| tx.send(addr).unwrap(),
            ))
            .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("server started")
}

/// The first string literal at or after `at` in `src`, and where it ends.
fn next_literal(src: &str, at: usize) -> Option<(String, usize)> {
    let open = at + src[at..].find('"')?;
    let close = open + 1 + src[open + 1..].find('"')?;
    Some((src[open + 1..close].to_string(), close + 1))
}

/// (METHOD, path) of every `.route("path", web::method()...)` in `src/api/`.
fn registered_routes() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        // only the code, not its tests (which build their own small apps)
        let src = src.split("#[cfg(test)]").next().unwrap();
        let mut at = 0;
        while let Some(i) = src[at..].find(".route(") {
            let start = at + i + ".route(".len();
            let (route, after) = next_literal(src, start).expect("a route's path literal");
            let rest = &src[after..];
            let method = rest
                .find("web::")
                .map(|m| &rest[m + "web::".len()..])
                .and_then(|r| r.split('(').next())
                .expect("web::<method>() after a route's path");
            routes.insert((method.to_ascii_uppercase(), route));
            at = after;
        }
        // services other than Swagger UI's are not scanned: refuse them
        for (i, _) in src.match_indices(".service(") {
            assert!(
                src[i..]
                    .trim_start_matches(".service(")
                    .trim_start()
                    .starts_with("SwaggerUi::new(\"/docs/{_:.*}\")"),
                "{}: a .service() this test cannot read; register routes with .route()",
                path.display()
            );
        }
    }
    // Swagger UI's files: the page itself is documented as /docs/
    routes.insert(("GET".into(), "/docs/".into()));
    routes
}

fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn every_registered_route_is_documented_and_every_documented_one_answers_as_documented() {
    let addr = serve("routes", &[]);
    let (code, spec) = request(addr, "GET", "/openapi.json", &[], b"");
    assert_eq!(code, 200);
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        spec["openapi"]
    );

    let registered = registered_routes();
    assert!(registered.len() >= 17, "{registered:?}");
    let ops = documented(&spec);
    let undocumented: Vec<_> = registered.difference(&ops).collect();
    assert!(undocumented.is_empty(), "registered but not in /openapi.json (add #[utoipa::path] and list it in api::openapi::ApiDoc): {undocumented:?}");
    let ghosts: Vec<_> = ops.difference(&registered).collect();
    assert!(
        ghosts.is_empty(),
        "documented but not registered: {ghosts:?}"
    );

    // every operation, asked plainly, answers one of its documented statuses
    let id = "0b0e4a9e-6a38-4d57-9a43-1d3c5f6e7a80";
    for (method, path) in &ops {
        let op = &spec["paths"][path][method.to_ascii_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        let uri = path.replace("{id}", id);
        let (code, head, _) = raw_request(addr, method, &uri, &[], b"");
        assert!(
            responses.contains_key(&code.to_string()),
            "{method} {path}: {code} is not among {:?}\n{head}",
            responses.keys().collect::<Vec<_>>()
        );
        let secured = op.get("security").is_some();
        assert_eq!(
            secured,
            path.starts_with("/api/") || path.starts_with("/v1/"),
            "{method} {path}: the key requirement is documented where keys are checked"
        );
    }

    // the API key scheme and the error shapes are in the document, and
    // every schema named is defined
    let components = &spec["components"];
    let text = spec.to_string();
    for (i, _) in text.match_indices("\"#/components/schemas/") {
        let name = text[i + 22..].split('"').next().unwrap();
        assert!(
            components["schemas"].get(name).is_some(),
            "{name} is named but not defined"
        );
    }
    assert_eq!(components["securitySchemes"]["api_key"]["scheme"], "bearer");
    for schema in [
        "ErrorBody",
        "Pending",
        "OpenAiErrorBody",
        "JobResult",
        "Job",
    ] {
        assert!(components["schemas"].get(schema).is_some(), "{schema}");
    }
    // /api/results documents every export format's content type
    let results = &spec["paths"]["/api/results/{id}"]["get"]["responses"]["200"]["content"];
    for ty in [
        "application/json",
        "text/plain",
        "application/x-subrip",
        "text/vtt",
        "text/tab-separated-values",
    ] {
        assert!(results.get(ty).is_some(), "/api/results 200 lacks {ty}");
    }
    let formats: Vec<&str> = components["schemas"]["Format"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(formats, ["json", "txt", "srt", "vtt", "tsv", "rttm"]);
}

#[test]
fn with_keys_the_document_and_the_page_need_none_and_the_page_loads_nothing_from_elsewhere() {
    let addr = serve("keys", &[("server.auth", "keys")]);
    let (code, _) = request(addr, "GET", "/api/jobs", &[], b"");
    assert_eq!(code, 401, "keys are on");
    let (code, spec) = request(addr, "GET", "/openapi.json", &[], b"");
    assert_eq!(code, 200);
    assert!(spec["paths"].get("/api/upload").is_some());

    let (code, head, _) = raw_request(addr, "GET", "/docs", &[], b"");
    assert_eq!(code, 308, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("location: /docs/"),
        "{head}"
    );
    let (code, head, page) = raw_request(addr, "GET", "/docs/", &[], b"");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    let (code, _, init) = raw_request(addr, "GET", "/docs/swagger-initializer.js", &[], b"");
    assert_eq!(code, 200);
    let init = String::from_utf8(init).unwrap();
    assert!(init.contains("\"url\": \"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    // every script and style the page names is served here
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let target = page[i + attr.len()..].split('"').next().unwrap();
            assert!(
                !target.contains("//"),
                "the page loads {target} from another host"
            );
            let (code, _, _) = raw_request(
                addr,
                "GET",
                &format!("/docs/{}", target.trim_start_matches("./")),
                &[],
                b"",
            );
            assert_eq!(code, 200, "/docs/ names {target}, which is not served");
        }
    }
}

/// The documented form of `/v1/audio/transcriptions` is the one its parser
/// reads: each checked field, given a bad value under its documented name,
/// is refused naming that field.
#[test]
fn the_documented_transcription_form_fields_are_the_ones_checked() {
    let addr = serve("form", &[]);
    let (_, spec) = request(addr, "GET", "/openapi.json", &[], b"");
    let form = &spec["components"]["schemas"]["TranscriptionForm"]["properties"];
    let bad = [
        ("response_format", "yaml"),
        ("timestamp_granularities[]", "paragraph"),
        ("temperature", "7"),
        ("language", "not a language"),
        ("num_speakers", "0"),
        ("min_speakers", "65"),
        ("max_speakers", "many"),
        ("known_speaker_names[]", "Dana"),
        ("known_speaker_references[]", "data:audio/wav;base64,AAAA"),
    ];
    let mut names: Vec<&str> = form
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    let mut expected: Vec<&str> = bad.iter().map(|(n, _)| *n).collect();
    // file: the audio; model: any label (another installed model is refused); prompt: not used
    expected.extend(["file", "model", "prompt"]);
    expected.sort();
    assert_eq!(names, expected, "the documented fields");
    let boundary = "openapi-form-boundary";
    for (name, value) in bad {
        let mut body = Vec::new();
        for (field, filename, data) in [
            ("file", Some("a.wav"), fakes::tone_wav(1.0)),
            (name, None, value.as_bytes().to_vec()),
        ] {
            let disposition = match filename {
                Some(f) => format!("form-data; name=\"{field}\"; filename=\"{f}\""),
                None => format!("form-data; name=\"{field}\""),
            };
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={boundary}");
        let (code, v) = request(
            addr,
            "POST",
            "/v1/audio/transcriptions",
            &[("Content-Type", &ct)],
            &body,
        );
        assert_eq!(code, 400, "{name}={value}: {v}");
        assert_eq!(
            v["error"]["param"].as_str(),
            Some(name.trim_end_matches("[]")),
            "{name}={value}: {v}"
        );
    }
}
