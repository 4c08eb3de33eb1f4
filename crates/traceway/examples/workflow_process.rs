//! One process of a durable workflow, for the restart tests (and as an example):
//!
//! - `workflow_process start ENDPOINT TENANT INSTANCE AGENT`: starts the workflow's
//!   span, records two steps, stores the context on the server, prints
//!   `READY <trace_id> <span_id>` and waits to be killed;
//! - `workflow_process resume ENDPOINT TENANT INSTANCE AGENT`: resumes the instance,
//!   records two steps under it, ends it (which ends the trace), forgets the context and
//!   prints `RESUMED <trace_id> <span_id> <continued>`.

use std::time::Duration;

use traceway::workflow::{ContextStore, ServerContextStore};
use traceway::Tracer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, endpoint, tenant, instance, agent] = &args[..] else {
        return Err("usage: workflow_process start|resume ENDPOINT TENANT INSTANCE AGENT".into());
    };
    let tracer = Tracer::builder()
        .endpoint(endpoint.as_str())
        .tenant(tenant.as_str())
        .service(format!("{agent}-worker"))
        .flush_interval(Duration::from_millis(20))
        .build()?;
    let contexts = ServerContextStore::new(tracer.clone(), endpoint)?;
    match mode.as_str() {
        "start" => {
            let run = tracer
                .agent(format!("{agent}.ToolCallingWorkflow"))
                .attribute(traceway::workflow::INSTANCE_ID_ATTR, instance.clone())
                .start();
            run.in_scope(async {
                for step in ["plan", "fetch_order"] {
                    tracer.tool(step).start().end();
                }
            })
            .await;
            contexts
                .store(instance, &run.context(), Some(agent))
                .await?;
            tracer.flush().await;
            println!("READY {} {}", run.trace_id(), run.span_id());
            // The workflow is mid-flight when the process dies.
            std::future::pending::<()>().await;
        }
        "resume" => {
            let resumed = contexts.resume(instance, agent).await?;
            let span = resumed.span;
            span.in_scope(async {
                for step in ["refund", "notify_customer"] {
                    tracer.tool(step).start().end();
                }
            })
            .await;
            println!(
                "RESUMED {} {} {}",
                span.trace_id(),
                span.span_id(),
                resumed.continued
            );
            span.end();
            contexts.cleanup(instance).await?;
            if !tracer.shutdown(Duration::from_secs(10)).await {
                return Err("the tracer did not flush in time".into());
            }
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    Ok(())
}
