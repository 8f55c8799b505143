//! The API described as OpenAPI 3.1, generated from the handlers' own
//! types and `#[utoipa::path]` attributes (nothing written by hand):
//! `GET /openapi.json` serves it and `GET /docs/` browses it (Swagger UI,
//! compiled in from `utoipa-swagger-ui`'s vendored copy: the page loads
//! nothing from elsewhere). Both stay open with keys on, like `/health`:
//! they describe the API and reveal no job or key.
//!
//! Every route of [`super::routes`] is listed in [`ApiDoc`]'s `paths`;
//! `tests/openapi.rs` fails when one is registered without being listed.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::error::ErrorBody;
use super::{events, handlers, keys, openai, speakers, ui, upload};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Colloquy",
        description = "Self-hosted speaker-attributed transcription. Uploads become jobs \
            (`/api`), answered when done by `/api/results/{id}` in any export format; \
            `/v1` is OpenAI-compatible. With `server.auth = keys` every `/api` and `/v1` \
            route needs `Authorization: Bearer <key>` (keys from `colloquy keys create`); \
            with `none` (loopback only) no key is needed. Every route answers 403 to a \
            foreign `Host` and to a cross-site write (`server.allowed_hosts`, `server.cors_origins`)."
    ),
    paths(
        upload::upload,
        handlers::status,
        handlers::results,
        handlers::jobs,
        handlers::delete,
        speakers::list,
        speakers::enrol,
        speakers::rename,
        speakers::delete,
        speakers::merge,
        speakers::relabel,
        keys::list,
        keys::create,
        keys::revoke,
        openai::transcriptions,
        openai::models,
        handlers::health,
        handlers::metrics,
        events::events,
        openapi_json,
        docs_redirect,
        docs_page,
        ui::index,
        ui::index_html,
        ui::app_js,
        ui::styles_css,
    ),
    // schemas named only by query parameters (IntoParams) are not collected by themselves
    components(schemas(crate::export::Format, crate::result::PartialSegment)),
    modifiers(&BearerKeys, &Boundary, &ServerFailure, &FilePart),
    tags(
        (name = "jobs", description = "Uploads, their jobs and results"),
        (name = "keys", description = "API keys (admin keys only)"),
        (name = "speakers", description = "Known speakers: named voices recognised in later jobs"),
        (name = "openai", description = "OpenAI-compatible transcription"),
        (name = "server", description = "Health and this description"),
        (name = "web UI", description = "The page's files"),
    ),
)]
pub struct ApiDoc;

/// The `api_key` security scheme the `/api` and `/v1` routes name.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, doc: &mut Document) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("cq_ and 64 hex digits".into());
        http.description = Some(
            "An API key from `colloquy keys create` or `POST /api/keys`; needed only when \
             the server runs with `server.auth = keys`"
                .into(),
        );
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_key", SecurityScheme::Http(http));
    }
}

/// The boundary (`guard.rs`) runs before every route: each may answer 403.
struct Boundary;

impl Modify for Boundary {
    fn modify(&self, doc: &mut Document) {
        let forbidden = utoipa::openapi::ResponseBuilder::new()
            .description(
                "A foreign Host name, or a write from another web site \
                 (server.allowed_hosts, server.cors_origins)",
            )
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(ErrorBody::schema_ref()))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("403".into())
                    .or_insert_with(|| RefOr::T(forbidden.clone()));
            }
        }
    }
}

/// Every route that checks a key reads the key store and the job registry:
/// when those fail the answer is 500 (`internal`; OpenAI's shape on `/v1`).
struct ServerFailure;

impl Modify for ServerFailure {
    fn modify(&self, doc: &mut Document) {
        let failure = |schema| {
            utoipa::openapi::ResponseBuilder::new()
                .description("The server failed (key store, job registry or storage)")
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(schema))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let schema = if path.starts_with("/v1/") {
                openai::OpenAiErrorBody::schema_ref()
            } else {
                ErrorBody::schema_ref()
            };
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
                .filter(|op| op.security.is_some())
            {
                op.responses
                    .responses
                    .entry("500".into())
                    .or_insert_with(|| RefOr::T(failure(schema.clone())));
            }
        }
    }
}

/// A form's `file` part: its file name needs one of the accepted
/// extensions (`upload::receive` refuses others with 400), which only the
/// part's `Content-Disposition` can say.
struct FilePart;

impl Modify for FilePart {
    fn modify(&self, doc: &mut Document) {
        let mut disposition = utoipa::openapi::header::Header::new(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .build(),
        );
        disposition.description = Some(
            "The part must carry a file name whose extension is one of \
             `server.allowed_extensions` (by default wav, flac, mp3, m4a, ogg, opus, webm and others)"
                .into(),
        );
        disposition.example = Some(r#"form-data; name="file"; filename="talk.wav""#.into());
        let mut encoding = utoipa::openapi::encoding::Encoding::default();
        encoding.content_type = Some("application/octet-stream".into());
        encoding
            .headers
            .insert("Content-Disposition".into(), RefOr::T(disposition));
        for item in doc.paths.paths.values_mut() {
            let Some(RefOr::T(body)) = item.post.as_mut().and_then(|op| op.request_body.as_mut())
            else {
                continue;
            };
            if let Some(RefOr::T(form)) = body.content.get_mut("multipart/form-data") {
                form.encoding.insert("file".into(), encoding.clone());
            }
        }
    }
}

trait SchemaRef {
    fn schema_ref() -> RefOr<utoipa::openapi::schema::Schema>;
}

impl<T: ToSchema> SchemaRef for T {
    fn schema_ref() -> RefOr<utoipa::openapi::schema::Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
    }
}

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(ApiDoc::openapi);
    &DOC
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "server",
    summary = "This description (OpenAPI 3.1; no key needed)",
    responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json")),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// `GET /docs`: to the page, whose files are relative to `/docs/`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "server",
    summary = "To /docs/",
    responses((status = 308, description = "Redirect to /docs/", headers(("location" = String)))),
)]
pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// `GET /docs/`: Swagger UI on `/openapi.json` (served by `SwaggerUi`;
/// this function only carries its description).
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "server",
    summary = "Browse this description (Swagger UI; no key needed)",
    responses((status = 200, description = "The page", body = String, content_type = "text/html")),
)]
#[allow(dead_code)]
async fn docs_page() {}

/// Registers `/openapi.json`, `/docs` and the page's files under `/docs/`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route("/docs", web::get().to(docs_redirect))
        .service(
            SwaggerUi::new("/docs/{_:.*}").config(
                Config::from("/openapi.json")
                    // no badge from validator.swagger.io: the page loads nothing from elsewhere
                    .validator_url("none")
                    .try_it_out_enabled(true),
            ),
        );
}
