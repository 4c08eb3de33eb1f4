//! Real `redis-server` processes for tests. A standalone server listens only on a unix
//! socket in its own temporary directory, so no two tests can race for a port. Cluster
//! nodes need TCP (the cluster bus listens on port + 10000, and nodes announce `ip:port`
//! to clients in `MOVED` and `CLUSTER SLOTS`): they take free loopback ports, retrying on
//! a port taken in between. Each server is killed when its guard drops; the ones shared by
//! a whole test binary (the Cluster) are watched by a small shell loop that kills them when
//! the test process exits.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sends one inline command and returns the raw reply.
pub fn command(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 65536];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Whether a server answers on `port` within `within`.
fn ready(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if command(port, "PING").is_some_and(|r| r.starts_with("+PONG")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends one inline command over a unix socket and returns the raw reply.
pub fn unix_command(socket: &Path, cmd: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 65536];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits until the server on `socket` answers `PING`.
fn wait_ready_unix(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if unix_command(socket, "PING").is_some_and(|r| r.starts_with("+PONG")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server on {} did not start", socket.display());
}

/// One `redis-server` on a unix socket in its own directory, killed on drop.
pub struct RedisServer {
    pub socket: PathBuf,
    pub dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A throwaway server: no persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server with extra arguments, in its own temporary directory.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let socket = dir.join("redis.sock");
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn(&socket, &dir, &args);
        wait_ready_unix(&socket);
        RedisServer {
            socket,
            dir,
            child: Some(child),
            args,
            _tmp: Some(tmp),
        }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}?db=0", self.socket.display())
    }

    /// Sends one inline command to this server.
    pub fn command(&self, cmd: &str) -> Option<String> {
        unix_command(&self.socket, cmd)
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills it and starts it again on the same socket and directory without waiting until
    /// it serves (it may still be loading its dataset, answering `LOADING`).
    pub fn restart_no_wait(&mut self) {
        self.stop();
        self.child = Some(spawn(&self.socket, &self.dir, &self.args));
    }

    /// Starts it again on the same socket and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn(&self.socket, &self.dir, &self.args));
        wait_ready_unix(&self.socket);
    }
}

fn spawn(socket: &Path, dir: &Path, args: &[String]) -> Child {
    Command::new("redis-server")
        .arg("--port")
        .arg("0")
        .arg("--unixsocket")
        .arg(socket)
        .arg("--unixsocketperm")
        .arg("700")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts one Cluster node that dies with the test process: a shell waits on our pid, then
/// kills it (and exits by itself if the node could not start).
fn spawn_cluster_node(port: u16, node_dir: &Path, me: u32) {
    let script = format!(
        "redis-server --port {port} --bind 127.0.0.1 --dir {d} --save '' --appendonly no \
         --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
         >/dev/null 2>&1 & pid=$!; \
         while kill -0 {me} 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 0.5; done; \
         kill -9 $pid 2>/dev/null; rm -rf {d}",
        d = node_dir.display()
    );
    // Not waited for on purpose: the watcher outlives this function and exits by itself
    // once the test process is gone.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
}

/// A 3-master Redis Cluster on loopback, started once per test binary and killed when the
/// test process exits. Returns its seed URL (`redis+cluster://…`).
pub fn shared_cluster() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(start_cluster)
}

fn start_cluster() -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Kept for the life of the process (the servers write there).
    let dir = tmp.keep();
    let me = std::process::id();
    let mut ports = Vec::new();
    for i in 0..3 {
        let node_dir = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let port = (0..5)
            .find_map(|_| {
                let port = free_port();
                spawn_cluster_node(port, &node_dir, me);
                ready(port, Duration::from_secs(10)).then_some(port)
            })
            .expect("cluster node did not start on any of 5 ports");
        ports.push(port);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    'wait: loop {
        assert!(Instant::now() < deadline, "cluster did not become ok");
        for p in &ports {
            if !command(*p, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok")) {
                std::thread::sleep(Duration::from_millis(100));
                continue 'wait;
            }
        }
        break;
    }
    format!("redis+cluster://{}", nodes.join(","))
}
