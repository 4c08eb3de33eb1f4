//! The server's memory, from /proc/PID/status, sampled while the load runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// The highest VmRSS sampled during the run.
    pub(crate) peak_kib: u64,
    /// VmRSS at the end.
    pub(crate) last_kib: u64,
    /// VmHWM: the peak over the server's whole life.
    pub(crate) hwm_kib: u64,
}

pub(crate) struct MemoryWatch {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl MemoryWatch {
    /// Samples the server's RSS every 50 ms (its own VmHWM covers its whole life, so
    /// sampling shows the peak during this run).
    pub(crate) fn start(pid: u32) -> MemoryWatch {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status_kib(pid, "VmRSS") {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        MemoryWatch {
            pid,
            peak,
            stop,
            thread,
        }
    }

    pub(crate) fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let last = proc_status_kib(self.pid, "VmRSS").unwrap_or(0);
        Memory {
            peak_kib: self.peak.load(Ordering::Relaxed).max(last),
            last_kib: last,
            hwm_kib: proc_status_kib(self.pid, "VmHWM").unwrap_or(0),
        }
    }
}
