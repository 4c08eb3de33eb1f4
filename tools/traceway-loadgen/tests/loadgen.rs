//! The load generator, in small, against a real server on loopback (started in this
//! process, on a fresh SQLite file) over both transports.

use std::process::Command;

use serde_json::Value;

/// The server, run in this test's process on ports chosen by the OS.
struct Server {
    url: String,
    grpc_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(dir: &std::path::Path) -> Server {
        let args = traceway_server::ServeArgs {
            data_dir: Some(dir.to_path_buf()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
            no_watchdog: Some(true),
            ..Default::default()
        };
        let config = traceway_server::Config::resolve(args).expect("config");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, listening) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(traceway_server::serve(
            config,
            async move {
                let _ = stopped.await;
            },
            move |addrs| {
                let _ = ready.send(addrs);
            },
        ));
        let addrs = listening.await.expect("the server starts");
        Server {
            url: format!("http://{}", addrs.http),
            grpc_url: format!("http://{}", addrs.grpc),
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("server task")
            .expect("the server stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_sends_agent_traces_over_both_transports_and_reads_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    for protocol in ["http", "grpc"] {
        let out = Command::new(env!("CARGO_BIN_EXE_traceway-loadgen"))
            .args([
                "--protocol",
                protocol,
                "--http",
                &server.url,
                "--grpc",
                &server.grpc_url,
            ])
            .args([
                "--traces",
                "40",
                "--spans-per-request",
                "50",
                "--concurrency",
                "3",
            ])
            .args([
                "--timeout",
                "60",
                "--json",
                "--server-pid",
                &std::process::id().to_string(),
            ])
            .output()
            .expect("run traceway-loadgen");
        assert!(
            out.status.success(),
            "{protocol}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
        assert_eq!(v["spans"], 440, "{protocol}: 11 spans per trace");
        assert_eq!(v["accepted_spans"], 440, "{protocol}: {v}");
        assert_eq!(v["rejected_spans"], 0, "{protocol}: {v}");
        assert_eq!(v["queryable_traces"], 40, "{protocol}: {v}");
        assert_eq!(v["queryable_spans"], 440, "{protocol}: {v}");
        assert_eq!(v["requests"], 9, "{protocol}: 440 spans in requests of 50");
        assert!(
            v["accepted_spans_per_second"].as_f64().unwrap_or(0.0) > 0.0,
            "{v}"
        );
        assert!(
            v["server_peak_rss_mib"].as_f64().unwrap_or(0.0) > 1.0,
            "{protocol}: {v}"
        );
    }
    // Only loopback targets.
    let out = Command::new(env!("CARGO_BIN_EXE_traceway-loadgen"))
        .args(["--http", "http://192.0.2.1:4318", "--traces", "1"])
        .output()
        .expect("run traceway-loadgen");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    server.stop().await;
}
