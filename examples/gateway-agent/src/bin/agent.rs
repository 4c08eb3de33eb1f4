//! `cargo run -p gateway-agent --bin agent [LISTEN] [TRACEWAY_URL]`
//! (defaults `127.0.0.1:8081`, `http://127.0.0.1:4318`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:4318".into());
    let tracer = traceway::Tracer::builder()
        .endpoint(server)
        .service("agent")
        .build()?;
    gateway_agent::run(gateway_agent::agent_app(tracer, None), &listen).await
}
