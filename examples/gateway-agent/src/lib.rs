//! A gateway and an agent service, both traced with the `traceway` crate.
//!
//! ```text
//! client ──POST /ask──► gateway (TraceLayer: new UUIDv7 trace, or the caller's traceparent)
//!                          │ component "route"
//!                          └─ traceway::client::send ──traceparent──► agent (TraceLayer)
//!                                                                      agent "support-agent"
//!                                                                        retrieval "search_policies"
//!                                                                        tool "get_order"
//!                                                                        llm "answer" (a fake model)
//! ```
//!
//! `POST /ask?return_trace=compact` returns the answer with `"trace"`: the steps of both
//! services, collected in-process (the gateway asks the agent for its steps and joins
//! them to its own).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use traceway::{SpanKind, TraceLayer, Tracer};

/// A question for the gateway and the agent.
#[derive(Debug, Deserialize)]
pub struct Question {
    /// The user's question.
    pub question: String,
}

#[derive(Clone)]
struct AgentState {
    tracer: Tracer,
    hold: Option<Arc<Semaphore>>,
}

/// The agent service: `POST /answer {"question"}` → `{"answer"}`.
///
/// `hold`, when given, makes the fake model wait for a permit before it answers (a demo
/// or a test can watch the steps arrive while the agent runs).
pub fn agent_app(tracer: Tracer, hold: Option<Arc<Semaphore>>) -> Router {
    Router::new()
        .route("/answer", post(answer))
        .with_state(AgentState {
            tracer: tracer.clone(),
            hold,
        })
        .layer(TraceLayer::new(tracer))
}

/// The policies the fake retrieval searches.
const POLICIES: [(&str, &str); 3] = [
    (
        "policy-refunds",
        "Refunds are accepted within 30 days of delivery.",
    ),
    ("policy-shipping", "Orders ship within two business days."),
    ("policy-returns", "Returns need the original packaging."),
];

fn score(question: &str, text: &str) -> f64 {
    let q: Vec<String> = question
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .collect();
    let hits = text
        .split_whitespace()
        .filter(|w| q.iter().any(|x| w.to_lowercase().starts_with(x.as_str())))
        .count();
    hits as f64 / text.split_whitespace().count() as f64
}

async fn answer(State(st): State<AgentState>, Json(q): Json<Question>) -> Json<Value> {
    let tracer = &st.tracer;
    let run = tracer
        .agent("support-agent")
        .input(q.question.clone())
        .start();
    let text = run
        .in_scope(async {
            let mut search = tracer
                .retrieval("search_policies")
                .query(q.question.clone())
                .start();
            let mut docs: Vec<(&str, &str, f64)> = POLICIES
                .iter()
                .map(|(id, text)| (*id, *text, score(&q.question, text)))
                .collect();
            docs.sort_by(|a, b| b.2.total_cmp(&a.2));
            for (id, text, s) in &docs {
                search.add_document(*id, *s, Some(text.to_string()));
            }
            search.end();

            let mut lookup = tracer
                .tool("get_order")
                .arguments(json!({"order_id": 42}))
                .start();
            let order = json!({"order_id": 42, "status": "shipped", "carrier": "DHL"});
            lookup.set_result(order.clone());
            lookup.end();

            let prompt = format!(
                "Policy: {}\nOrder: {order}\nQuestion: {}",
                docs[0].1, q.question
            );
            let mut llm = tracer
                .llm("answer")
                .provider("fake")
                .model("fake-llm-1")
                .message("system", "You answer customer questions.")
                .message("user", prompt.clone())
                .start();
            if let Some(hold) = &st.hold {
                if let Ok(p) = hold.acquire().await {
                    p.forget();
                }
            }
            // The fake model: a reply made of what it was given.
            let reply = format!(
                "Your order 42 has {} with {}. {}",
                order["status"].as_str().unwrap_or("?"),
                order["carrier"].as_str().unwrap_or("?"),
                docs[0].1
            );
            llm.set_tokens(
                prompt.split_whitespace().count() as u64,
                reply.split_whitespace().count() as u64,
            );
            llm.add_output_message("assistant", reply.clone());
            llm.end();
            reply
        })
        .await;
    let mut run = run;
    run.set_output(text.clone());
    run.end();
    Json(json!({ "answer": text }))
}

#[derive(Clone)]
struct GatewayState {
    agent_url: String,
    http: reqwest::Client,
    tracer: Tracer,
}

/// The gateway: `POST /ask {"question"}` routes to the agent at `agent_url` and returns
/// its answer.
pub fn gateway_app(tracer: Tracer, agent_url: String) -> Router {
    Router::new()
        .route("/ask", post(ask))
        .with_state(GatewayState {
            agent_url,
            http: reqwest::Client::new(),
            tracer: tracer.clone(),
        })
        .layer(TraceLayer::new(tracer).root_kind(SpanKind::Chain))
}

async fn ask(
    State(st): State<GatewayState>,
    Json(q): Json<Question>,
) -> Result<Json<Value>, (axum::http::StatusCode, Json<Value>)> {
    let mut route = st.tracer.component("route").start();
    route.set_attribute("agent", "support-agent");
    route.end();
    let failed = |e: String| {
        (
            axum::http::StatusCode::BAD_GATEWAY,
            Json(json!({"error": {"code": "agent_unavailable", "message": e}})),
        )
    };
    let resp = traceway::client::send(
        st.http
            .post(format!("{}/answer", st.agent_url))
            .json(&json!({"question": q.question})),
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    let body: Value = resp.json().await.map_err(|e| failed(e.to_string()))?;
    Ok(Json(body))
}

/// Runs `app` on `listen` until the process ends.
pub async fn run(app: Router, listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
