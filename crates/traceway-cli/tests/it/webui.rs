//! The web page in a real browser: the real `traceway` binary, Debian's Chromium headless,
//! driven over WebDriver (fantoccini) by its chromedriver on a loopback port of the
//! test's choosing, with a fresh profile each time. `scripts/test` installs both.
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR/webui/` (the README's is one of them).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use traceway_core::{Credentials, Timestamp};

use crate::e2e::{client, example, get, post, Server};

/// The trace of the OTLP fixture (an agent, an LLM call with messages, a tool call).
const OTLP_TRACE: &str = "5b8efff798038103d269b633813fc60c";
/// Generous: the machine may be busy; nothing here waits this long when things work.
const DEADLINE: Duration = Duration::from_secs(60);

fn program(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A chromedriver process and a session in a headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = program("TRACEWAY_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("TRACEWAY_CHROMEDRIVER", "/usr/bin/chromedriver");
        assert!(
            chromium.exists() && chromedriver.exists(),
            "the web page's tests need Debian's chromium and chromium-driver ({} and {}); \
             scripts/test installs them (apt-get install -y chromium chromium-driver)",
            chromium.display(),
            chromedriver.display()
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = client();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let caps = caps.as_object().expect("object").clone();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session in headless Chromium");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Runs `scenario`, then ends the session and chromedriver whether it passed or not
    /// (so no Chromium is left behind), and fails as the scenario did.
    async fn run<F, Fut>(mut self, scenario: F)
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = ()>,
    {
        let result = AssertUnwindSafe(scenario(self.client.clone()))
            .catch_unwind()
            .await;
        if result.is_err() {
            if let Ok(text) = self
                .client
                .execute("return document.body.innerText", vec![])
                .await
            {
                eprintln!(
                    "--- page text at the failure ---\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            let _ = screenshot(&self.client, "failure").await;
        }
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Polls `script` (its `return` value) until it is truthy; its value.
async fn wait_js(c: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = c.execute(script, vec![]).await.expect("script runs");
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webui");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    let path = dir.join(format!("{name}.png"));
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

/// A TCP relay between the browser and the server on a loopback port: `cut` drops every
/// connection through it (as a lost Wi-Fi or a restarted load balancer would) and refuses
/// new ones until `restore`. It keeps what the browser sent (request heads: the page only
/// sends GETs), so a test can read the headers of a reconnect.
struct Relay {
    url: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    sent: Arc<Mutex<Vec<u8>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: &str) -> Relay {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (up2, conns2, sent2) = (up.clone(), conns.clone(), sent.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut browser, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(browser);
                    continue;
                }
                let (target, sent) = (target.clone(), sent2.clone());
                let task = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut br, mut bw) = browser.split();
                    let (mut sr, mut sw) = server.split();
                    let upstream = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match br.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            {
                                let mut log = sent.lock().expect("log");
                                if log.len() < (8 << 20) {
                                    log.extend_from_slice(&buf[..n]);
                                }
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut sr, &mut bw).await;
                        let _ = bw.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
                let mut list = conns2.lock().expect("conns");
                list.retain(|t| !t.is_finished());
                list.push(task);
            }
        });
        Relay {
            url,
            up,
            conns,
            sent,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.conns.lock().expect("conns").drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// The `Last-Event-ID` of every request the browser sent for `path`, in order (`None`
    /// for a request without one).
    fn last_event_ids(&self, path: &str) -> Vec<Option<String>> {
        let sent = String::from_utf8_lossy(&self.sent.lock().expect("log")).into_owned();
        sent.split("\r\n\r\n")
            .filter_map(|head| {
                let start = head.find("GET ")?;
                let head = &head[start..];
                let target = head.split_whitespace().nth(1)?;
                (target.split('?').next() == Some(path)).then(|| {
                    head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.trim()
                            .eq_ignore_ascii_case("last-event-id")
                            .then(|| value.trim().to_string())
                    })
                })
            })
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn ingest_otlp_fixture(server: &Server, bearer: Option<&str>) {
    let path = format!(
        "{}/../traceway-core/tests/fixtures/otlp/genai_agent.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut req = client()
        .post(format!("{}/v1/traces", server.url))
        .header("content-type", "application/json")
        .body(std::fs::read(path).expect("fixture"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.expect("export");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

fn at(ms_ago: i64) -> String {
    Timestamp::from_unix_millis(Timestamp::now().unix_millis() - ms_ago).to_rfc3339()
}

async fn append(server: &Server, bearer: Option<&str>, trace: &str, events: Value) {
    let mut req = client()
        .post(format!("{}/api/v1/traces/{trace}/events", server.url))
        .json(&json!({ "events": events }));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.expect("append");
    assert_eq!(r.status(), reqwest::StatusCode::OK, "{:?}", r.text().await);
}

/// A running trace of agent `support` named `name`, with its root agent step started 3 s
/// ago; its id.
async fn running_trace(server: &Server, name: &str) -> String {
    let (status, t) = post(
        &client(),
        format!("{}/api/v1/traces", server.url),
        &json!({"name": name, "agent_id": "support"}),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    append(server, None, &id, json!([{"type": "span_started", "span": {
        "span_id": "a1a1a1a1a1a1a1a1", "kind": "agent", "name": "support-agent", "start_time": at(3000)}}])).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_otlp_trace_is_listed_and_opens_into_its_waterfall_and_step_details() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    ingest_otlp_fixture(&server, None).await;
    let browser = Browser::start().await;
    let base = server.url.clone();
    browser
        .run(|c| async move {
            let c = &c;
            c.goto(&format!("{base}/")).await.expect("open the page");
            let row = format!("tr.trace-row[data-id=\"{OTLP_TRACE}\"]");
            wait_js(c, "the trace in the list", &format!(
                "const r = document.querySelector('{row}'); return r && r.innerText"
            ))
            .await;
            let cells = c
                .execute(&format!("return [...document.querySelector('{row}').cells].map(td => td.innerText)"), vec![])
                .await
                .expect("cells");
            // name, agent, state, started, duration, spans, tokens, cost, errors
            assert_eq!(cells[1], "TravelPlanner", "{cells}");
            assert_eq!(cells[2], "COMPLETED", "{cells}");
            assert_eq!(cells[5], "3", "{cells}");
            assert_eq!(cells[8], "0", "{cells}");

            click(c, &format!("{row} td.name a")).await;
            let rows = wait_js(c, "the waterfall's three rows", "
                const rows = [...document.querySelectorAll('.wf-row:not([hidden])')];
                return rows.length === 3 && rows.map(r => [r.dataset.id, r.querySelector('.wf-name').textContent,
                    parseFloat(r.querySelector('.wf-label').firstChild.style.marginLeft) || 0,
                    r.querySelector('.wf-bar').className]);
            ").await;
            // Nested by parent: the agent first, its two steps under it; coloured by kind.
            assert_eq!(rows[0][0], "c000000000000001", "{rows}");
            assert_eq!(rows[0][2], 0.0, "{rows}");
            assert!(rows[1][2].as_f64() > Some(0.0), "{rows}");
            let bars: Vec<&str> = rows.as_array().expect("rows").iter().map(|r| r[3].as_str().expect("class")).collect();
            assert!(bars.iter().any(|b| b.contains("k-llm")) && bars.iter().any(|b| b.contains("k-tool")), "{bars:?}");
            assert!(c.current_url().await.expect("url").as_str().ends_with(&format!("#/trace/{OTLP_TRACE}")));

            // The LLM call: its messages by role, model and tokens.
            click(c, ".wf-row[data-id=\"c000000000000002\"] .wf-name").await;
            let msgs = wait_js(c, "the LLM call's messages", "
                const d = document.querySelector('.detail[data-span=\"c000000000000002\"]');
                return d && d.querySelector('.msgs.input') && [
                    [...d.querySelectorAll('.msgs.input .msg')].map(m => m.querySelector('.msg-role').innerText.toLowerCase()),
                    d.querySelector('.msgs.input').innerText, d.querySelector('.msgs.output').innerText, d.innerText];
            ").await;
            let roles: Vec<&str> = msgs[0].as_array().expect("roles").iter().map(|r| r.as_str().unwrap_or("")).collect();
            assert!(roles.iter().any(|r| r.starts_with("user")), "{roles:?}");
            assert!(roles.iter().any(|r| r.starts_with("system")), "{roles:?}");
            assert!(msgs[1].as_str().expect("input").contains("Weather in Paris?"), "{msgs}");
            assert!(msgs[2].as_str().expect("output").contains("It is rainy in Paris"), "{msgs}");
            assert!(msgs[3].as_str().expect("pane").contains("gpt-4.1"), "{msgs}");
            assert!(
                c.current_url().await.expect("url").as_str().ends_with(&format!("#/trace/{OTLP_TRACE}/span/c000000000000002")),
                "the step's permalink is the address"
            );
            wait_js(c, "the analysis", "return document.querySelector('.analysis .critical h3')?.innerText").await;
            wait_js(c, "the critical path on the waterfall", "return document.querySelectorAll('.wf-crit').length > 0").await;
            screenshot(c, "trace-view").await;

            // The tool call: its arguments as readable JSON.
            click(c, ".wf-row[data-id=\"c000000000000003\"] .wf-name").await;
            let args = wait_js(c, "the tool's arguments", "
                const d = document.querySelector('.detail[data-span=\"c000000000000003\"]');
                return d && d.querySelector('.tool-args') && d.querySelector('.tool-args').textContent;
            ").await;
            let parsed: Value = serde_json::from_str(args.as_str().expect("text")).expect("arguments shown as JSON");
            assert_eq!(parsed, json!({"location": "Paris"}));
            assert!(args.as_str().expect("text").contains('\n'), "pretty-printed: {args}");

            // Copy as JSON: what reaches the clipboard is the step (the browser's own
            // clipboard is stood in for, so that nothing depends on its permissions).
            c.execute("window.__copied = null; navigator.clipboard.writeText = async (t) => { window.__copied = t; }; return true", vec![])
                .await
                .expect("stand-in");
            click(c, ".detail[data-span=\"c000000000000003\"] .copy-json").await;
            let copied = wait_js(c, "the copied step", "return window.__copied").await;
            let step: Value = serde_json::from_str(copied.as_str().expect("text")).expect("JSON");
            assert_eq!(step["span_id"], "c000000000000003");
            assert_eq!(step["tool"]["arguments"], json!({"location": "Paris"}));
            assert!(step["events"].is_array() && step.get("_s").is_none(), "{step}");

            // A step's permalink opens the trace with that step selected.
            c.goto(&format!("{base}/#/")).await.expect("list");
            wait_js(c, "the list", &format!("return !!document.querySelector('{row}')")).await;
            c.goto(&format!("{base}/#/trace/{OTLP_TRACE}/span/c000000000000003")).await.expect("permalink");
            wait_js(c, "the permalinked step", "return !!document.querySelector('.detail[data-span=\"c000000000000003\"] .tool-args')").await;
            wait_js(c, "its row selected", "return !!document.querySelector('.wf-row.selected[data-id=\"c000000000000003\"]')").await;

            // Lookup by id from the header (the UUID form is accepted).
            c.goto(&format!("{base}/#/")).await.expect("list");
            let uuid = format!("{}-{}-{}-{}-{}", &OTLP_TRACE[..8], &OTLP_TRACE[8..12], &OTLP_TRACE[12..16], &OTLP_TRACE[16..20], &OTLP_TRACE[20..]);
            c.execute("document.getElementById('lookup-id').value = arguments[0]; document.getElementById('lookup').requestSubmit(); return true", vec![json!(uuid)])
                .await
                .expect("lookup");
            wait_js(c, "the trace opened by id", &format!("return !!document.querySelector('.trace-view[data-trace=\"{OTLP_TRACE}\"] .wf-row')")).await;

            // The walkthrough's trace (five kinds of step), for the README's screenshot.
            let (status, t) = post(&client(), format!("{base}/api/v1/traces"), &example("trace.json")).await;
            assert_eq!(status, 201, "{t}");
            let id = t["trace_id"].as_str().expect("id").to_string();
            let (status, r) = post(&client(), format!("{base}/api/v1/traces/{id}/events"), &example("steps.json")).await;
            assert_eq!(status, 200, "{r}");
            let r = client().patch(format!("{base}/api/v1/traces/{id}")).json(&json!({"state": "COMPLETED"})).send().await.expect("patch");
            assert!(r.status().is_success());
            c.goto(&format!("{base}/#/trace/{id}/span/e5e5e5e5e5e5e5e5")).await.expect("walkthrough");
            wait_js(c, "the walkthrough's LLM call", "return !!document.querySelector('.detail[data-span=\"e5e5e5e5e5e5e5e5\"] .msgs.output')").await;
            wait_js(c, "its analysis", "return document.querySelectorAll('.wf-crit').length > 0 && !!document.querySelector('.analysis .bottlenecks td')").await;
            let retr = c.execute("return [...document.querySelectorAll('.wf-row')].some(r => r.querySelector('.kind.k-retriever'))", vec![]).await.expect("kinds");
            assert_eq!(retr, true);
            let shot = screenshot(c, "walkthrough").await;
            assert!(std::fs::metadata(&shot).expect("the artefact").len() > 10_000, "a screenshot of a drawn page");
            // One screenshot goes in the README (a copy of an artefact of this test).
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
            let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
            let img = readme
                .split("](")
                .filter_map(|s| s.split(')').next())
                .find(|p| p.starts_with("docs/img/") && p.ends_with(".png"))
                .expect("the README shows a screenshot of the page");
            let png = std::fs::read(root.join(img)).expect("the README's screenshot");
            assert!(png.starts_with(b"\x89PNG"), "{img} is a PNG");

            // The retrieval: its query, and its documents with their scores, best first.
            click(c, ".wf-row[data-id=\"c3c3c3c3c3c3c3c3\"] .wf-name").await;
            let retrieval = wait_js(c, "the retrieval's query and documents", "
                const d = document.querySelector('.detail[data-span=\"c3c3c3c3c3c3c3c3\"]');
                return d && d.querySelector('.query') && [d.querySelector('.query').textContent,
                    [...d.querySelectorAll('table.docs tr')].slice(1).map(r => [...r.cells].map(c => c.innerText))];
            ").await;
            assert_eq!(retrieval[0], "refund policy for orders", "{retrieval}");
            assert_eq!(retrieval[1], json!([
                ["1", "policy-7#2", "0.910", "Orders can be refunded within 30 days of delivery."],
                ["2", "policy-7#3", "0.840", "Refunds go back to the original payment method."],
                ["3", "faq-12#1", "0.620", "Digital goods are not refundable once downloaded."],
            ]), "{retrieval}");
        })
        .await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_steps_appear_live_while_the_page_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c0 = client();
    let (status, t) = post(
        &c0,
        format!("{}/api/v1/traces", server.url),
        &json!({"name": "live-run", "agent_id": "support"}),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    let browser = Browser::start().await;
    let base = server.url.clone();
    let srv = &server;
    browser
        .run(|c| async move {
            let c = &c;
            c.goto(&format!("{base}/")).await.expect("open");
            wait_js(c, "the first trace", &format!("return !!document.querySelector('tr.trace-row[data-id=\"{id}\"]')")).await;
            wait_js(c, "the tenant stream", "return document.getElementById('live').textContent === 'live'").await;
            // A trace created while the list is open shows up on top, without a reload.
            let (_, t2) = post(&client(), format!("{base}/api/v1/traces"), &json!({"name": "second-run", "agent_id": "support"})).await;
            let id2 = t2["trace_id"].as_str().expect("id").to_string();
            let first = wait_js(c, "the new trace on top", &format!(
                "const r = document.querySelector('tr.trace-row'); return r && r.dataset.id === '{id2}' && r.innerText"
            )).await;
            assert!(first.as_str().expect("text").contains("second-run"), "{first}");
            // Its state change arrives too.
            let r = client().patch(format!("{base}/api/v1/traces/{id2}")).json(&json!({"state": "COMPLETED"})).send().await.expect("patch");
            assert!(r.status().is_success());
            wait_js(c, "the state change in the list", &format!(
                "return document.querySelector('tr.trace-row[data-id=\"{id2}\"] .state').textContent === 'COMPLETED'"
            )).await;

            click(c, &format!("tr.trace-row[data-id=\"{id}\"] td.name a")).await;
            wait_js(c, "the trace view, following its stream", &format!(
                "return !!document.querySelector('.trace-view[data-trace=\"{id}\"] .trace-id') && document.getElementById('live').textContent === 'live'"
            )).await;
            append(srv, None, &id, json!([{"type": "span_started", "span": {
                "span_id": "a1a1a1a1a1a1a1a1", "kind": "agent", "name": "support-agent", "start_time": at(2000)}}])).await;
            wait_js(c, "the running root, growing", "return !!document.querySelector('.wf-row[data-id=\"a1a1a1a1a1a1a1a1\"] .wf-bar.running')").await;
            let w1 = c.execute("return parseFloat(document.querySelector('.wf-row[data-id=\"a1a1a1a1a1a1a1a1\"] .wf-dur').textContent)", vec![]).await.expect("dur");
            append(srv, None, &id, json!([{"type": "span_started", "span": {
                "span_id": "b2b2b2b2b2b2b2b2", "parent_span_id": "a1a1a1a1a1a1a1a1", "kind": "tool", "name": "get_order", "start_time": at(500),
                "tool": {"name": "get_order", "arguments": {"order_id": "1234"}}}}])).await;
            wait_js(c, "the child step", "return !!document.querySelector('.wf-row[data-id=\"b2b2b2b2b2b2b2b2\"] .wf-bar.running')").await;
            // The running root's duration label grows while it runs.
            wait_js(c, "the running bar growing", &format!(
                "return parseFloat(document.querySelector('.wf-row[data-id=\"a1a1a1a1a1a1a1a1\"] .wf-dur').textContent) > {w1}"
            )).await;
            append(srv, None, &id, json!([{"type": "span_ended", "span": {
                "span_id": "b2b2b2b2b2b2b2b2", "end_time": at(0), "status": {"code": "error", "message": "order service down"}}}])).await;
            wait_js(c, "the child ended, marked as an error", "
                const r = document.querySelector('.wf-row[data-id=\"b2b2b2b2b2b2b2b2\"]');
                return r && !r.querySelector('.wf-bar.running') && r.querySelector('.wf-bar.error') && r.querySelector('.err-mark:not([hidden])');
            ").await;
            click(c, ".wf-row[data-id=\"b2b2b2b2b2b2b2b2\"] .wf-name").await;
            let pane = wait_js(c, "the child's details", "return document.querySelector('.detail[data-span=\"b2b2b2b2b2b2b2b2\"]')?.innerText").await;
            assert!(pane.as_str().expect("text").contains("order service down"), "{pane}");
            assert!(pane.as_str().expect("text").contains("\"order_id\": \"1234\""), "{pane}");
            let r = client().patch(format!("{base}/api/v1/traces/{id}")).json(&json!({"state": "ERRORED"})).send().await.expect("patch");
            assert!(r.status().is_success());
            wait_js(c, "the trace's end", "return document.querySelector('.trace-head .state').textContent === 'ERRORED'").await;
            let spans = get(&client(), format!("{base}/api/v1/traces/{id}")).await.1;
            assert_eq!(spans["trace"]["rollups"]["span_count"], 2);
        })
        .await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_of_10000_spans_opens_with_virtualised_rows() {
    const SPANS: usize = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c0 = client();
    let (status, t) = post(
        &c0,
        format!("{}/api/v1/traces", server.url),
        &json!({"name": "big"}),
    )
    .await;
    assert_eq!(status, 201);
    let id = t["trace_id"].as_str().expect("id").to_string();
    // A root, 99 steps under it, 100 leaves under each: 10,000 spans, 3 levels.
    let base_ms = Timestamp::now().unix_millis() - 60_000;
    let ts = |ms: i64| Timestamp::from_unix_millis(base_ms + ms).to_rfc3339();
    let mut spans = vec![
        json!({"span_id": format!("{:016x}", 1), "kind": "agent", "name": "root",
        "start_time": ts(0), "end_time": ts(50_000), "status": {"code": "ok"}}),
    ];
    for m in 0..99i64 {
        let mid = 2 + m * 101;
        spans.push(json!({"span_id": format!("{:016x}", mid), "parent_span_id": format!("{:016x}", 1), "kind": "chain",
            "name": format!("step-{m}"), "start_time": ts(m * 500), "end_time": ts(m * 500 + 490), "status": {"code": "ok"}}));
        for l in 0..100i64 {
            let kind = if l % 3 == 0 { "llm" } else { "tool" };
            spans.push(json!({"span_id": format!("{:016x}", mid + 1 + l), "parent_span_id": format!("{:016x}", mid), "kind": kind,
                "name": format!("leaf-{m}-{l}"), "start_time": ts(m * 500 + l * 4), "end_time": ts(m * 500 + l * 4 + 3),
                "status": {"code": if l == 99 { "error" } else { "ok" }}}));
        }
    }
    assert_eq!(spans.len(), SPANS);
    let last_leaf = spans.last().expect("last")["span_id"]
        .as_str()
        .expect("id")
        .to_string();
    for chunk in spans.chunks(1000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|s| json!({"type": "span_ended", "span": s}))
            .collect();
        append(&server, None, &id, Value::Array(events)).await;
    }
    let browser = Browser::start().await;
    let base = server.url.clone();
    browser
        .run(|c| async move {
            let c = &c;
            let started = Instant::now();
            c.goto(&format!("{base}/#/trace/{id}")).await.expect("open");
            wait_js(c, "10,000 spans in the header", "return document.querySelector('.span-count')?.textContent.startsWith('10,000 spans')").await;
            wait_js(c, "the first rows", "return document.querySelectorAll('.wf-row:not([hidden])').length > 0").await;
            wait_js(c, "the interactive mark, once every span is read", "
                const m = performance.getEntriesByName('tw:trace-interactive');
                return m.length === 1 && document.querySelector('.span-count').textContent.startsWith('10,000 spans');
            ").await;
            eprintln!("10,000-span trace shown after {:?} (page load included; not a benchmark)", started.elapsed());
            let shown = c.execute("return document.querySelectorAll('.wf-row').length", vec![]).await.expect("count");
            assert!(shown.as_u64().expect("n") < 200, "rows are virtualised: {shown} in the DOM");
            let height = c.execute("return document.querySelector('.wf-spacer').style.height", vec![]).await.expect("height");
            assert_eq!(height, format!("{}px", SPANS * 24), "the scroll area holds every row");
            // Scrolled to the end, the last leaf is drawn.
            c.execute("const v = document.querySelector('.wf-viewport'); v.scrollTop = v.scrollHeight; return true", vec![]).await.expect("scroll");
            let text = wait_js(c, "the last leaf after scrolling", &format!("
                const r = document.querySelector('.wf-row:not([hidden])[data-id=\"{last_leaf}\"]');
                const v = document.querySelector('.wf-viewport').getBoundingClientRect();
                return r && r.getBoundingClientRect().bottom <= v.bottom + 1 && r.querySelector('.wf-name').textContent;
            ")).await;
            assert_eq!(text, "leaf-98-99", "the last span, drawn at the bottom");
            let shown = c.execute("return document.querySelectorAll('.wf-row').length", vec![]).await.expect("count");
            assert!(shown.as_u64().expect("n") < 200, "still virtualised at the bottom: {shown} rows in the DOM");
            // Collapsing the root leaves one row.
            c.execute("const v = document.querySelector('.wf-viewport'); v.scrollTop = 0; return true", vec![]).await.expect("scroll");
            wait_js(c, "the root drawn again", "return !!document.querySelector('.wf-row:not([hidden])[data-id=\"0000000000000001\"]')").await;
            click(c, ".wf-row[data-id=\"0000000000000001\"] .wf-toggle").await;
            wait_js(c, "the collapsed root", "return document.querySelector('.wf-spacer').style.height === '24px'").await;

            // A permalink to a deep step, loaded afresh, opens that step and scrolls to it.
            c.goto(&format!("{base}/#/trace/{id}/span/{last_leaf}")).await.expect("permalink");
            c.refresh().await.expect("reload");
            let step = wait_js(c, "the permalinked step", &format!("
                const d = document.querySelector('.detail[data-span=\"{last_leaf}\"]');
                const r = document.querySelector('.wf-row.selected:not([hidden])[data-id=\"{last_leaf}\"]');
                const v = document.querySelector('.wf-viewport');
                return d && r && v.scrollTop > 0 && [d.querySelector('h2').textContent, r.querySelector('.wf-name').textContent];
            ")).await;
            assert_eq!(step, json!(["leaf-98-99", "leaf-98-99"]));
        })
        .await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_page_asks_for_a_key_then_lists_and_streams_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = Credentials::generate();
    let key = admin.token();
    let server = Server::start_with(
        dir.path(),
        &[
            "--auth",
            "on",
            "--admin-key",
            &key,
            "--admin-key-tenant",
            "acme",
        ],
    );
    ingest_otlp_fixture(&server, Some(&key)).await;
    let browser = Browser::start().await;
    let base = server.url.clone();
    let srv = &server;
    let k = key.clone();
    browser
        .run(|c| async move {
            let c = &c;
            c.goto(&format!("{base}/")).await.expect("open");
            let banner = wait_js(c, "the request for a key", "const b = document.getElementById('banner'); return !b.hidden && b.textContent").await;
            assert!(banner.as_str().expect("text").contains("API key"), "{banner}");
            c.execute("const k = document.getElementById('apikey'); k.value = arguments[0]; k.dispatchEvent(new Event('change')); return true", vec![json!(k)])
                .await
                .expect("enter the key");
            wait_js(c, "the key's tenant's trace", &format!("return !!document.querySelector('tr.trace-row[data-id=\"{OTLP_TRACE}\"]')")).await;
            click(c, &format!("tr.trace-row[data-id=\"{OTLP_TRACE}\"] td.name a")).await;
            wait_js(c, "the stream, opened with the key", "return document.querySelectorAll('.wf-row:not([hidden])').length === 3").await;
            // A late span of the ended trace (within the stream's grace) arrives over SSE.
            append(srv, Some(&k), OTLP_TRACE, json!([{"type": "log", "span_id": "c000000000000003", "message": "late note", "severity": "warn"}])).await;
            click(c, ".wf-row[data-id=\"c000000000000003\"] .wf-name").await;
            wait_js(c, "the log event in the step's events", "return document.querySelector('.detail[data-span=\"c000000000000003\"] .events')?.innerText.includes('late note')").await;
            let stored = c.execute("return localStorage.getItem('traceway.apiKey')", vec![]).await.expect("storage");
            assert_eq!(stored, json!(k), "the key is kept in this browser");
        })
        .await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_through_the_cursor_as_it_scrolls_draws_only_the_rows_in_view_and_filters_by_agent(
) {
    const TRACES: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c0 = client();
    let mut ids = Vec::new();
    for i in 0..TRACES {
        let agent = if i % 2 == 0 { "even" } else { "odd" };
        let (status, t) = post(
            &c0,
            format!("{}/api/v1/traces", server.url),
            &json!({"name": format!("run-{i}"), "agent_id": agent}),
        )
        .await;
        assert_eq!(status, 201, "{t}");
        ids.push(t["trace_id"].as_str().expect("id").to_string());
    }
    let browser = Browser::start().await;
    let base = server.url.clone();
    let oldest = ids[0].clone();
    browser
        .run(|c| async move {
            let c = &c;
            c.goto(&format!("{base}/")).await.expect("open");
            let first = wait_js(c, "the first page", "
                const rows = document.querySelectorAll('tr.trace-row');
                return rows.length > 0 && [rows[0].cells[0].innerText, document.querySelector('.list-status').innerText];
            ")
            .await;
            // Newest first; one page of 100 until the end of the table is scrolled to.
            assert_eq!(first, json!(["run-999", "100 traces, scroll for more"]));
            // The marks the benchmark reads (ADR 041), set once.
            wait_js(c, "the first-render marks", "
                return performance.getEntriesByName('tw:list-rows').length === 1 && performance.getEntriesByName('tw:list-drawn').length === 1;
            ").await;
            screenshot(c, "list").await;
            // Scrolled to the end again and again: page after page through the cursor,
            // down to the oldest, with only the rows in view (and a margin) in the DOM.
            let end = wait_js(c, "the last page", "
                window.scrollTo(0, document.body.scrollHeight);
                const rows = document.querySelectorAll('tr.trace-row');
                const last = rows[rows.length - 1];
                return document.querySelector('.list-status').innerText === '1,000 traces' && last
                    && last.getBoundingClientRect().bottom <= window.innerHeight && last.cells[0].innerText === 'run-0'
                    && [rows.length, last.dataset.id];
            ")
            .await;
            let drawn = end[0].as_u64().expect("n");
            assert!(drawn < 150, "{drawn} of {TRACES} rows in the DOM");
            assert_eq!(end[1], json!(oldest));
            // A row drawn in a reused element opens its own trace.
            c.execute("document.querySelector(`tr.trace-row[data-id=\"${arguments[0]}\"]`).cells[2].click(); return true", vec![json!(oldest)])
                .await
                .expect("click");
            wait_js(c, "the oldest trace opened", &format!("return location.hash === '#/trace/{oldest}' && document.querySelector('.trace-head h1')?.innerText.startsWith('run-0')")).await;
            c.back().await.expect("back");
            wait_js(c, "the list again, newest on top", "
                window.scrollTo(0, 0);
                const r = document.querySelector('tr.trace-row'); return r && r.cells[0].innerText === 'run-999';
            ").await;

            // The agent filter, typed in and applied, goes into the address and the query.
            c.execute("document.querySelector('.filters [name=agent_id]').value = 'odd'; document.querySelector('.filters').requestSubmit(); return true", vec![])
                .await
                .expect("filter");
            let agents = wait_js(c, "the filtered list", "
                const rows = [...document.querySelectorAll('tr.trace-row')];
                return location.hash === '#/?agent_id=odd' && rows.length > 0 && rows[0].cells[0].innerText === 'run-999'
                    && rows.map(r => r.cells[1].innerText);
            ")
            .await;
            assert!(agents.as_array().expect("agents").iter().all(|a| a == "odd"), "{agents}");
            wait_js(c, "every odd trace", &format!("
                window.scrollTo(0, document.body.scrollHeight);
                return document.querySelector('.list-status').innerText === '{} traces';
            ", TRACES / 2))
            .await;
            c.goto(&format!("{base}/#/?agent_id=nobody")).await.expect("no match");
            wait_js(c, "the empty list", "return document.querySelector('.list-status')?.innerText.startsWith('No traces')").await;
        })
        .await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_resumed_with_last_event_id_and_misses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let id = running_trace(&server, "flaky-network-run").await;
    // The browser reaches the server through a relay the test can cut.
    let relay = Relay::start(&server.url).await;
    let browser = Browser::start().await;
    let (page, api) = (relay.url.clone(), server.url.clone());
    let (srv, relay) = (&server, &relay);
    let stream_path = format!("/api/v1/traces/{id}/stream");
    browser
        .run(|c| async move {
            let c = &c;
            c.goto(&format!("{page}/#/trace/{id}")).await.expect("open");
            wait_js(c, "the trace, following its stream", "
                return !!document.querySelector('.wf-row[data-id=\"a1a1a1a1a1a1a1a1\"]') && document.getElementById('live').textContent === 'live'
            ").await;
            append(srv, None, &id, json!([{"type": "span_started", "span": {
                "span_id": "b2b2b2b2b2b2b2b2", "parent_span_id": "a1a1a1a1a1a1a1a1", "kind": "llm", "name": "plan", "start_time": at(1000)}}])).await;
            wait_js(c, "a step over the stream", "return !!document.querySelector('.wf-row[data-id=\"b2b2b2b2b2b2b2b2\"]')").await;
            let seen = get(&client(), format!("{api}/api/v1/traces/{id}")).await.1["trace"]["last_seq"].as_u64().expect("last_seq");
            wait_js(c, "every event so far applied", &format!("return document.querySelector('.trace-head').dataset.lastSeq === '{seen}'")).await;

            relay.cut();
            wait_js(c, "the page noticing the dropped connection", "return document.getElementById('live').textContent === 'reconnecting'").await;
            // Steps that happen while the page is cut off.
            append(srv, None, &id, json!([
                {"type": "span_ended", "span": {"span_id": "b2b2b2b2b2b2b2b2", "end_time": at(500), "status": {"code": "ok"}}},
                {"type": "span_started", "span": {"span_id": "c3c3c3c3c3c3c3c3", "parent_span_id": "a1a1a1a1a1a1a1a1",
                    "kind": "tool", "name": "lookup_order", "start_time": at(400), "tool": {"name": "lookup_order", "arguments": {"order_id": "77"}}}},
                {"type": "log", "span_id": "c3c3c3c3c3c3c3c3", "message": "sent while the page was offline", "severity": "warn"},
            ])).await;
            let during = c.execute("return !!document.querySelector('.wf-row[data-id=\"c3c3c3c3c3c3c3c3\"]')", vec![]).await.expect("probe");
            assert_eq!(during, false, "nothing reaches the page while it is cut off");

            relay.restore();
            wait_js(c, "the stream open again", "return document.getElementById('live').textContent === 'live'").await;
            wait_js(c, "the steps of the outage, replayed", "
                const b = document.querySelector('.wf-row[data-id=\"b2b2b2b2b2b2b2b2\"]');
                return b && !b.querySelector('.wf-bar.running') && !!document.querySelector('.wf-row[data-id=\"c3c3c3c3c3c3c3c3\"] .wf-bar.running');
            ").await;
            click(c, ".wf-row[data-id=\"c3c3c3c3c3c3c3c3\"] .wf-name").await;
            let events = wait_js(c, "the log of the outage in the step's events", "
                const d = document.querySelector('.detail[data-span=\"c3c3c3c3c3c3c3c3\"]');
                const ev = d && d.querySelector('.events');
                return ev && [...ev.querySelectorAll('li')].map(li => li.innerText);
            ").await;
            let events: Vec<&str> = events.as_array().expect("list").iter().map(|e| e.as_str().unwrap_or("")).collect();
            assert_eq!(events.len(), 1, "exactly once: {events:?}");
            assert!(events[0].contains("sent while the page was offline"), "{events:?}");
            let rows = c.execute("return [...document.querySelectorAll('.wf-row[data-id]')].map(r => r.dataset.id)", vec![]).await.expect("rows");
            let mut rows: Vec<&str> = rows.as_array().expect("rows").iter().map(|r| r.as_str().unwrap_or("")).collect();
            rows.sort_unstable();
            assert_eq!(rows, ["a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2", "c3c3c3c3c3c3c3c3"], "each step once");
            let header = c.execute("return document.querySelector('.span-count').textContent", vec![]).await.expect("count");
            assert!(header.as_str().expect("text").starts_with("3 spans"), "{header}");

            // What the page asked for: the stream from the trace's seq when it opened, then,
            // after the cut, from the last event it had applied.
            let ids = relay.last_event_ids(&stream_path);
            assert!(ids.len() >= 2, "a reconnect: {ids:?}");
            assert!(ids[0].is_some(), "the first request resumes from the trace read: {ids:?}");
            assert_eq!(ids[1].as_deref(), Some(seen.to_string().as_str()), "{ids:?}");
        })
        .await;
    server.stop();
}

/// The server's count of live stream subscribers (`traceway_live_subscribers` on
/// `/metrics`), polled until it is `want`.
async fn wait_subscribers(server: &Server, want: f64, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = crate::e2e::metrics(&client(), server).await;
        let n = m.get("traceway_live_subscribers").copied();
        if n == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {n:?} live subscribers, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A page navigated away from goes into Chromium's back-forward cache. With its stream
/// open it would keep one of the six HTTP/1.1 connections to the server for about a
/// minute (the 7th page load then waits: the stall the web bench showed, ADR 041), so the
/// page closes its streams on `pagehide` and, shown again (`pageshow`, `persisted`),
/// resumes the trace's from the last event it applied and re-reads the list's newest page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_left_for_another_gives_back_its_stream_and_resumes_it_when_shown_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let id = running_trace(&server, "left-and-back-run").await;
    // Through a relay that keeps the requests' heads, to read the resumed stream's.
    let relay = Relay::start(&server.url).await;
    let browser = Browser::start().await;
    let (page, api) = (relay.url.clone(), server.url.clone());
    let (srv, relay) = (&server, &relay);
    let stream_path = format!("/api/v1/traces/{id}/stream");
    browser
        .run(|c| async move {
            let c = &c;
            c.goto(&format!("{page}/#/trace/{id}")).await.expect("open");
            wait_js(c, "the trace, following its stream", "
                return !!document.querySelector('.wf-row[data-id=\"a1a1a1a1a1a1a1a1\"]') && document.getElementById('live').textContent === 'live'
            ").await;
            wait_subscribers(srv, 1.0, "the trace's stream").await;
            let seen = get(&client(), format!("{api}/api/v1/traces/{id}")).await.1["trace"]["last_seq"].as_u64().expect("last_seq");
            wait_js(c, "every event so far applied", &format!("return document.querySelector('.trace-head').dataset.lastSeq === '{seen}'")).await;
            // Kept only if this very page (its scripts' memory) is shown again, not reloaded.
            c.execute("window.twKept = 'trace'; return true", vec![]).await.expect("mark");

            c.goto("about:blank").await.expect("away");
            wait_subscribers(srv, 0.0, "the stream given back by the page left").await;
            // Steps while the page is away.
            append(srv, None, &id, json!([
                {"type": "span_started", "span": {"span_id": "b2b2b2b2b2b2b2b2", "parent_span_id": "a1a1a1a1a1a1a1a1",
                    "kind": "tool", "name": "lookup_order", "start_time": at(400), "tool": {"name": "lookup_order", "arguments": {"order_id": "77"}}}},
                {"type": "log", "span_id": "b2b2b2b2b2b2b2b2", "message": "sent while the page was away", "severity": "info"},
            ])).await;
            let after = get(&client(), format!("{api}/api/v1/traces/{id}")).await.1["trace"]["last_seq"].as_u64().expect("last_seq");
            assert!(after > seen);

            c.back().await.expect("back");
            wait_js(c, "the trace view shown again", &format!("return !!document.querySelector('.trace-view[data-trace=\"{id}\"]')")).await;
            let kept = c.execute("return window.twKept || null", vec![]).await.expect("probe");
            assert_eq!(kept, json!("trace"), "the page came back from the back-forward cache, not reloaded");
            wait_js(c, "the step of the absence", "return !!document.querySelector('.wf-row[data-id=\"b2b2b2b2b2b2b2b2\"] .wf-bar.running')").await;
            wait_js(c, "every event applied", &format!("return document.querySelector('.trace-head').dataset.lastSeq === '{after}'")).await;
            wait_subscribers(srv, 1.0, "the trace's stream, open again").await;
            click(c, ".wf-row[data-id=\"b2b2b2b2b2b2b2b2\"] .wf-name").await;
            let events = wait_js(c, "the log of the absence in the step's events", "
                const d = document.querySelector('.detail[data-span=\"b2b2b2b2b2b2b2b2\"]');
                const ev = d && d.querySelector('.events');
                return ev && [...ev.querySelectorAll('li')].map(li => li.innerText);
            ").await;
            let events: Vec<&str> = events.as_array().expect("list").iter().map(|e| e.as_str().unwrap_or("")).collect();
            assert_eq!(events.len(), 1, "exactly once: {events:?}");
            assert!(events[0].contains("sent while the page was away"), "{events:?}");
            let rows = c.execute("return [...document.querySelectorAll('.wf-row[data-id]')].map(r => r.dataset.id)", vec![]).await.expect("rows");
            let mut rows: Vec<&str> = rows.as_array().expect("rows").iter().map(|r| r.as_str().unwrap_or("")).collect();
            rows.sort_unstable();
            assert_eq!(rows, ["a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"], "each step once");
            let header = c.execute("return document.querySelector('.span-count').textContent", vec![]).await.expect("count");
            assert!(header.as_str().expect("text").starts_with("2 spans"), "{header}");
            // The stream asked for twice: when the trace opened, then from the last event
            // applied before the page was left.
            let ids = relay.last_event_ids(&stream_path);
            assert_eq!(ids.len(), 2, "{ids:?}");
            assert_eq!(ids[1].as_deref(), Some(seen.to_string().as_str()), "{ids:?}");

            // The list: its tenant stream given back too and, shown again, what started
            // meanwhile read from the newest page (the tenant stream resumes nothing).
            c.goto(&format!("{page}/#/")).await.expect("list");
            wait_js(c, "the list, following the tenant stream", &format!(
                "return !!document.querySelector('tr.trace-row[data-id=\"{id}\"]') && document.getElementById('live').textContent === 'live'"
            )).await;
            wait_subscribers(srv, 1.0, "the tenant stream").await;
            c.execute("window.twKept = 'list'; return true", vec![]).await.expect("mark");
            c.goto("about:blank").await.expect("away");
            wait_subscribers(srv, 0.0, "the tenant stream given back by the page left").await;
            let (status, t2) = post(&client(), format!("{api}/api/v1/traces"), &json!({"name": "started-while-away", "agent_id": "support"})).await;
            assert_eq!(status, 201, "{t2}");
            let id2 = t2["trace_id"].as_str().expect("id").to_string();
            c.back().await.expect("back");
            wait_js(c, "the list shown again", "return !!document.querySelector('.list-view')").await;
            let kept = c.execute("return window.twKept || null", vec![]).await.expect("probe");
            assert_eq!(kept, json!("list"), "the list came back from the back-forward cache, not reloaded");
            wait_js(c, "the trace started while away, on top", &format!(
                "const r = document.querySelector('tr.trace-row'); return r && r.dataset.id === '{id2}'"
            )).await;
            wait_subscribers(srv, 1.0, "the tenant stream, open again").await;
            let n = c.execute(&format!("return document.querySelectorAll('tr.trace-row[data-id=\"{id}\"]').length"), vec![]).await.expect("rows");
            assert_eq!(n, json!(1), "each trace once");
        })
        .await;
    server.stop();
}

/// A server that ends every stream response after `--stream-max-lifetime` (1 s here).
/// The trace view reconnects each time with `Last-Event-ID` of the last event it applied
/// and shows every step once; the list, whose tenant stream resumes nothing, re-reads its
/// newest page when a connection reopens, so a trace that started while it was cut off
/// shows up (ADR 007).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_ended_at_their_lifetime_are_followed_again_with_nothing_missed_or_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--stream-max-lifetime", "1s"]);
    let (status, t) = post(
        &client(),
        format!("{}/api/v1/traces", server.url),
        &json!({"name": "long-run", "agent_id": "support"}),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    let relay = Relay::start(&server.url).await;
    let browser = Browser::start().await;
    let (page, api) = (relay.url.clone(), server.url.clone());
    let (srv, relay) = (&server, &relay);
    let stream_path = format!("/api/v1/traces/{id}/stream");
    browser
        .run(|c| async move {
            let c = &c;
            c.goto(&format!("{page}/#/trace/{id}")).await.expect("open");
            wait_js(c, "the trace view, following its stream", "return document.getElementById('live').textContent === 'live'").await;
            // One step at a time, each shown before the next, until the page has
            // reconnected three times after the server ended its stream.
            let mut steps = Vec::new();
            while relay.last_event_ids(&stream_path).len() < 4 {
                let span = format!("{:016x}", 0xa000 + steps.len());
                append(srv, None, &id, json!([{"type": "span_ended", "span": {
                    "span_id": span, "kind": "tool", "name": format!("step-{}", steps.len()),
                    "start_time": at(100), "end_time": at(50), "status": {"code": "ok"}}}])).await;
                wait_js(c, "the step", &format!("return !!document.querySelector('.wf-row[data-id=\"{span}\"]')")).await;
                steps.push(span);
                assert!(steps.len() < 2000, "the page never reconnected: {:?}", relay.last_event_ids(&stream_path));
            }
            let last = get(&client(), format!("{api}/api/v1/traces/{id}")).await.1["trace"]["last_seq"].as_u64().expect("last_seq");
            wait_js(c, "every event applied", &format!("return document.querySelector('.trace-head').dataset.lastSeq === '{last}'")).await;
            let rows = c.execute("return [...document.querySelectorAll('.wf-row[data-id]')].map(r => r.dataset.id)", vec![]).await.expect("rows");
            let mut rows: Vec<String> = rows.as_array().expect("rows").iter().map(|r| r.as_str().unwrap_or("").to_string()).collect();
            rows.sort_unstable();
            let mut want = steps.clone();
            want.sort_unstable();
            assert_eq!(rows, want, "each step once");
            // Every reconnect resumed from an event the page had: ids never go back.
            let ids: Vec<u64> = relay.last_event_ids(&stream_path).iter()
                .map(|i| i.as_deref().expect("each request resumes").parse().expect("a seq")).collect();
            assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");

            // The list: cut off, a trace starts; reconnected, it shows up. Every listed trace
            // is finished, so the list's poll of running traces does not re-read it.
            let r = client().patch(format!("{api}/api/v1/traces/{id}")).json(&json!({"state": "COMPLETED"})).send().await.expect("patch");
            assert!(r.status().is_success());
            c.goto(&format!("{page}/#/")).await.expect("list");
            wait_js(c, "the list, following the tenant", &format!(
                "return !!document.querySelector('tr.trace-row[data-id=\"{id}\"]') && document.getElementById('live').textContent === 'live'"
            )).await;
            relay.cut();
            wait_js(c, "the page noticing the dropped connection", "return document.getElementById('live').textContent === 'reconnecting'").await;
            let (_, t2) = post(&client(), format!("{api}/api/v1/traces"), &json!({"name": "started-while-cut-off"})).await;
            let id2 = t2["trace_id"].as_str().expect("id").to_string();
            relay.restore();
            wait_js(c, "the trace that started meanwhile", &format!(
                "return !!document.querySelector('tr.trace-row[data-id=\"{id2}\"]')"
            )).await;
            let n = c.execute(&format!("return document.querySelectorAll('tr.trace-row[data-id=\"{id2}\"]').length"), vec![]).await.expect("count");
            assert_eq!(n, json!(1));
        })
        .await;
    server.stop();
}
