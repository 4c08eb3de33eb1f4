//! The web page (ADR 035): plain ES modules and one stylesheet under `ui/`, embedded in
//! the binary at compile time and served as they are. No build step, no CDN, no web fonts;
//! the Content-Security-Policy lets the page reach only its own origin, so no request
//! leaves the machine even if a trace's data tried to make one.
//!
//! The page and its assets are open (no API key): they hold no data. Every API call the
//! page makes carries the user's key (see `auth::required_scope`).

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// What the browser may load and contact: this origin only, no inline script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";

/// The embedded files: name under `/ui/`, media type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    ("app.js", JS, include_str!("../ui/app.js")),
    ("api.js", JS, include_str!("../ui/api.js")),
    ("sse.js", JS, include_str!("../ui/sse.js")),
    ("dom.js", JS, include_str!("../ui/dom.js")),
    ("format.js", JS, include_str!("../ui/format.js")),
    ("list.js", JS, include_str!("../ui/list.js")),
    ("tree.js", JS, include_str!("../ui/tree.js")),
    ("trace.js", JS, include_str!("../ui/trace.js")),
    ("waterfall.js", JS, include_str!("../ui/waterfall.js")),
    ("detail.js", JS, include_str!("../ui/detail.js")),
    ("analysis.js", JS, include_str!("../ui/analysis.js")),
];

const INDEX: &str = include_str!("../ui/index.html");

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Not fingerprinted, so revalidate: a new binary's page is never mixed with an old one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /`: the page.
#[utoipa::path(
    get,
    path = "/",
    tag = "web page",
    operation_id = "webPage",
    summary = "The web page",
    description = "The single-page UI (ADR 035), embedded in the binary. Open: it holds no data; its API calls carry the user's key.",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
    ),
    security(()),
)]
pub async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{file}`: one of the page's files, or the JSON 404.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    tag = "web page",
    operation_id = "webPageAsset",
    summary = "A file of the web page",
    description = "One of the page's ES modules or its stylesheet, embedded in the binary. Open.",
    params(("file" = String, Path, description = "The file's name, e.g. `app.js`.")),
    responses(
        (status = 200, description = "The file (`text/javascript` or `text/css`).", body = String, content_type = "text/javascript"),
        (status = 404, response = crate::openapi::NotFound),
    ),
    security(()),
)]
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ct, body)) => respond(ct, body),
        None => {
            ApiError::not_found(format!("no such file of the web page: {file}")).into_response()
        }
    }
}

/// The names of the embedded files (for tests).
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(n, _, _)| *n)
}
