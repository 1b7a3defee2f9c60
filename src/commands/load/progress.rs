//! Progress while a load runs, on stderr: a bar on a terminal, a plain line
//! every few seconds otherwise (a CI log, a pipe), so stdout holds only the
//! report.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain lines come.
const LINE_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    started: Instant,
    view: View,
}

enum View {
    Bar(ProgressBar),
    /// When the last line was printed.
    Lines(Mutex<Instant>),
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let view = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len}, {eta} left {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            View::Bar(bar)
        } else {
            View::Lines(Mutex::new(Instant::now()))
        };
        Progress {
            total,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            started: Instant::now(),
            view,
        }
    }

    /// One upload answered.
    pub fn answered(&self, failed: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        match &self.view {
            View::Bar(bar) => {
                bar.inc(1);
                if failed {
                    bar.set_message(format!("{} failed", self.failed.load(Ordering::Relaxed)));
                }
            }
            View::Lines(last) => {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    self.print_line();
                }
            }
        }
    }

    pub fn finish(&self) {
        match &self.view {
            View::Bar(bar) => bar.finish_and_clear(),
            View::Lines(_) => self.print_line(),
        }
    }

    fn print_line(&self) {
        let done = self.done.load(Ordering::Relaxed);
        eprintln!(
            "load: {done}/{} answered, {} failed, {:.1}/s",
            self.total,
            self.failed.load(Ordering::Relaxed),
            done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
        );
    }
}
