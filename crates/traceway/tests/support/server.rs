//! The real `traceway` server binary on port 0, for the client crate's end-to-end tests
//! (also included by `examples/gateway-agent`'s tests).
//!
//! The binary is found next to the test's own build (`<target>/<profile>/traceway`), where
//! `cargo nextest run --workspace` builds it; when it is missing (a run of one package),
//! it is built with `cargo build --workspace --bin traceway`, so the test does not depend
//! on which crate of the workspace holds the binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|s| s.contains("[workspace]")) {
            return dir;
        }
        assert!(
            dir.pop(),
            "no workspace root above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
}

/// The path of the `traceway` binary, built if missing.
pub fn traceway_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // <target>/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary sits in <target>/<profile>/deps")
            .to_path_buf();
        let bin = profile_dir.join(format!("traceway{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--workspace", "--bin", "traceway"])
                .current_dir(workspace_root())
                .env("CARGO_TARGET_DIR", &target_dir);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build --bin traceway failed");
        }
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A running server on a temporary data directory; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// The same with more `serve` flags (`--store redis://…`).
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(traceway_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--stream-grace",
                "300ms",
                "--no-watchdog",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .env("TRACEWAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn traceway");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("traceway listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not start in 60 s");
        Server {
            child,
            url,
            _dir: dir,
        }
    }

    /// `traceway <args> --server URL` with stdout piped.
    pub fn cli(&self, args: &[&str]) -> Child {
        Command::new(traceway_bin())
            .args(args)
            .args(["--server", &self.url])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn traceway cli")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs JSON, polling until `done` accepts it (generous deadline, no bare sleeps as
/// synchronisation: each try is a real request).
pub async fn poll_json(
    url: &str,
    what: &str,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if done(&v) {
                    return v;
                }
                last = v;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; last answer: {last}");
}
