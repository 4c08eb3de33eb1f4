//! The current span: task-local, holds across `.await`, handed to spawned tasks
//! explicitly.

use traceway::{SpanKind, Tracer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_span_holds_across_await_and_is_handed_over_explicitly() {
    let tracer = Tracer::local("svc");
    let root = tracer.agent("run").start();
    let (root_trace, root_id) = (root.trace_id(), root.span_id());
    let (inner, handed, not_handed, explicit) = root
        .in_scope(async {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let inner = traceway::current().expect("current after awaits");
            let t = tracer.clone();
            let handed = traceway::spawn(async move {
                let s = t.tool("in_spawned").start();
                (s.trace_id(), traceway::current().map(|c| c.span_id()))
            })
            .await
            .unwrap();
            let t = tracer.clone();
            let not_handed = tokio::spawn(async move {
                let s = t.tool("in_plain_spawn").start();
                (s.trace_id(), traceway::current().is_none())
            })
            .await
            .unwrap();
            let child = tracer.llm("child").start();
            let explicit = child.child(SpanKind::Tool, "grandchild").start();
            let explicit = (child.span_id(), explicit.context());
            (inner, handed, not_handed, explicit)
        })
        .await;
    assert_eq!((inner.trace_id(), inner.span_id()), (root_trace, root_id));
    assert_eq!(handed, (root_trace, Some(root_id)));
    assert_ne!(
        not_handed.0, root_trace,
        "a plain tokio::spawn starts a new trace"
    );
    assert!(not_handed.1);
    assert_eq!(explicit.1.trace_id(), root_trace);
    assert!(traceway::current().is_none(), "the scope ended");
    assert_ne!(explicit.1.span_id(), explicit.0);
}
