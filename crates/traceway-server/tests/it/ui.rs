//! The web page's routes: `/` and `/ui/*` serve the embedded files, open even with auth
//! on, under a policy that keeps the page on its own origin; unknown paths stay JSON 404s.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;
use traceway_core::Credentials;
use traceway_server::auth::BootstrapKey;
use traceway_server::config::AuthConfig;
use traceway_server::Config;

use crate::{test_app, test_app_with, TestApp};

async fn get(app: &TestApp, uri: &str) -> (StatusCode, header::HeaderMap, String) {
    let resp = app
        .router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn the_page_and_its_modules_are_served_from_the_binary_under_a_same_origin_policy() {
    let app = test_app();
    let (status, headers, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(body.contains(r#"<script type="module" src="/ui/app.js">"#));
    // Nothing the page loads comes from another origin.
    assert!(!body.contains("http://") && !body.contains("https://"));

    for name in traceway_server::ui::asset_names() {
        let (status, headers, body) = get(&app, &format!("/ui/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        let ct = headers[header::CONTENT_TYPE].to_str().expect("ascii");
        if name.ends_with(".js") {
            assert_eq!(ct, "text/javascript; charset=utf-8", "{name}");
            // Every import names another embedded module, by a relative path.
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit(" from ").next().expect("from");
                let target = from.trim_matches(|c| c == '\'' || c == ';' || c == '"');
                let target = target.strip_prefix("./").expect("a relative import");
                assert!(
                    traceway_server::ui::asset_names().any(|n| n == target),
                    "{name} imports {target}, which is not embedded"
                );
            }
        } else {
            assert_eq!(ct, "text/css; charset=utf-8", "{name}");
        }
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{name} names another origin"
        );
    }
}

#[tokio::test]
async fn unknown_files_and_unknown_api_paths_answer_the_json_404() {
    let app = test_app();
    for uri in [
        "/ui/nope.js",
        "/ui/../Cargo.toml",
        "/api/v1/nope",
        "/index.html",
    ] {
        let (status, headers, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["error"]["code"], "not_found", "{uri}");
    }
}

#[tokio::test]
async fn with_auth_on_the_page_loads_without_a_key_and_the_api_still_needs_one() {
    let app = test_app_with(Config {
        auth: AuthConfig {
            http: true,
            grpc: true,
            bootstrap: Some(BootstrapKey {
                credentials: Credentials::generate(),
                tenant: "acme".into(),
            }),
        },
        ..Config::default()
    });
    assert_eq!(get(&app, "/").await.0, StatusCode::OK);
    assert_eq!(get(&app, "/ui/app.js").await.0, StatusCode::OK);
    assert_eq!(
        get(&app, "/api/v1/traces").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/api/v1/stream").await.0,
        StatusCode::UNAUTHORIZED
    );
    // Paths outside the page's are not opened by it.
    assert_eq!(get(&app, "/uifoo").await.0, StatusCode::UNAUTHORIZED);
}
