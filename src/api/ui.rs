//! The web UI (#5): `web/index.html`, `web/app.js` and `web/styles.css`,
//! compiled into the binary with `include_str!` so `colloquy serve` serves
//! the page from any working directory. The page only uses the REST API.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLES_CSS: &str = include_str!("../../web/styles.css");

/// Scripts and styles only from this server; audio from the page's own
/// `blob:` URLs (the local file the user picked); no third-party requests.
const CSP: &str = "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /`, `/index.html`, `/app.js`, `/styles.css`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/index.html", web::get().to(index_html))
        .route("/app.js", web::get().to(app_js))
        .route("/styles.css", web::get().to(styles_css));
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // the files change with the binary: revalidate rather than cache stale copies
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

#[utoipa::path(
    get,
    path = "/",
    tag = "web UI",
    summary = "The web page",
    responses((status = 200, description = "web/index.html", body = String, content_type = "text/html")),
)]
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

#[utoipa::path(
    get,
    path = "/index.html",
    tag = "web UI",
    summary = "The web page (as at /)",
    responses((status = 200, description = "web/index.html", body = String, content_type = "text/html")),
)]
pub async fn index_html() -> HttpResponse {
    index().await
}

#[utoipa::path(
    get,
    path = "/app.js",
    tag = "web UI",
    summary = "The page's script",
    responses((status = 200, description = "web/app.js", body = String, content_type = "text/javascript")),
)]
pub async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

#[utoipa::path(
    get,
    path = "/styles.css",
    tag = "web UI",
    summary = "The page's styles",
    responses((status = 200, description = "web/styles.css", body = String, content_type = "text/css")),
)]
pub async fn styles_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLES_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};

    #[actix_rt::test]
    async fn serves_the_three_files_with_their_types() {
        let app = test::init_service(App::new().configure(routes)).await;
        for (path, ty, needle) in [
            ("/", "text/html", "<script src=\"/app.js\""),
            ("/app.js", "text/javascript", "/api/upload"),
            ("/styles.css", "text/css", "color-scheme"),
        ] {
            let res =
                test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(res.status(), 200, "{path}");
            let ct = res
                .headers()
                .get(header::CONTENT_TYPE)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert!(ct.starts_with(ty), "{path}: {ct}");
            assert!(res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            let body = test::read_body(res).await;
            assert!(
                std::str::from_utf8(&body).unwrap().contains(needle),
                "{path} lacks {needle}"
            );
        }
    }
}
