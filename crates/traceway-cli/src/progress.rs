//! Progress of a long cleanup on stderr: a bar on a terminal, a line per batch otherwise.

/// `[#####.....] 50/100 traces (50%)`.
pub fn progress_bar(done: u64, total: u64, width: u64) -> String {
    let total = total.max(done).max(1);
    let filled = (done * width / total) as usize;
    format!(
        "[{}{}] {done}/{total} traces ({}%)",
        "#".repeat(filled),
        ".".repeat(width as usize - filled),
        done * 100 / total
    )
}

/// Progress of a long cleanup on stderr.
pub(crate) struct Progress {
    tty: bool,
    shown: bool,
}

impl Progress {
    const WIDTH: u64 = 30;

    pub(crate) fn new(tty: bool) -> Progress {
        Progress { tty, shown: false }
    }

    pub(crate) fn show(&mut self, done: u64, total: u64) {
        use std::io::Write;
        self.shown = true;
        let total = total.max(done).max(1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{}", progress_bar(done, total, Self::WIDTH));
        } else {
            let _ = writeln!(err, "deleted {done}/{total} traces");
        }
        let _ = err.flush();
    }

    pub(crate) fn finish(&mut self, done: u64) {
        if self.shown {
            self.show(done, done);
            if self.tty {
                eprintln!();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_fills_in_proportion() {
        assert_eq!(progress_bar(0, 10, 10), "[..........] 0/10 traces (0%)");
        assert_eq!(progress_bar(5, 10, 10), "[#####.....] 5/10 traces (50%)");
        assert_eq!(
            progress_bar(12, 10, 10),
            "[##########] 12/12 traces (100%)",
            "a total that grew meanwhile"
        );
    }
}
