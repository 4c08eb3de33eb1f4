//! Recording one span (start, three attributes, end) on the caller's thread: the
//! `traceway` tracer and the `opentelemetry_sdk` tracer in the same run.
//!
//! Both record a child of a current span and hand it to a background exporter: ours to a
//! loopback HTTP server that accepts and discards (a real exporter task, real requests),
//! the SDK's through its `BatchSpanProcessor` to an exporter that discards. Drops are
//! printed at the end, so a run where an exporter fell behind is visible.
//!
//! cargo bench -p traceway --bench record_span

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use traceway::{SpanKind, Tracer};

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
            black_box(body.len());
            (axum::http::StatusCode::OK, "{}")
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    });
    let tracer = {
        let _guard = rt.enter();
        Tracer::builder().endpoint(url).build().unwrap()
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .build();
    let otel = provider.tracer("bench");

    let mut group = c.benchmark_group("record_span");
    let root = tracer.agent("bench-root").start();
    root.context().sync_scope(|| {
        group.bench_function("traceway", |b| {
            b.iter(|| {
                let mut s = tracer.span(SpanKind::Other, "step").start();
                s.set_attribute("key.string", "value");
                s.set_attribute("key.int", 42i64);
                s.set_attribute("key.bool", true);
                s.end();
            })
        });
    });
    let parent = otel.start("bench-root");
    let cx = opentelemetry::Context::current_with_span(parent);
    let _attached = cx.clone().attach();
    group.bench_function("opentelemetry_sdk", |b| {
        b.iter(|| {
            let mut s = otel.start("step");
            s.set_attribute(KeyValue::new("key.string", "value"));
            s.set_attribute(KeyValue::new("key.int", 42i64));
            s.set_attribute(KeyValue::new("key.bool", true));
            s.end();
        })
    });
    group.finish();
    drop(root);
    rt.block_on(tracer.shutdown(Duration::from_secs(10)));
    eprintln!("traceway exporter after the run: {:?}", tracer.metrics());
    let _ = provider.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
