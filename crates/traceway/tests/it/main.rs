//! The client crate's one integration-test binary: the tracer and exporter against the
//! real `traceway` server, faults (a closed port, a slow server, 429s), the middleware and
//! completion with trace over loopback, and the OpenTelemetry SDK in-process.

#[path = "../support/server.rs"]
mod server;

mod context;
mod exporter;
mod faults;
mod layer;
mod otel;
mod workflow;

use serde_json::Value;

/// Every span node of a `GET /api/v1/traces/{id}` answer, depth first.
pub fn all_spans(trace: &Value) -> Vec<Value> {
    fn walk(nodes: &Value, out: &mut Vec<Value>) {
        for n in nodes.as_array().into_iter().flatten() {
            out.push(n.clone());
            walk(&n["children"], out);
        }
    }
    let mut out = Vec::new();
    walk(&trace["spans"], &mut out);
    out
}

/// A loopback axum server on port 0; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}
