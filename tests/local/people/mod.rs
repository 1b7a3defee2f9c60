//! Issue 16, for people: the upload page and the dashboard (in a real
//! browser, too), the Prometheus metrics, request ids and JSON logs, and
//! the load generator's report.

mod browser;
mod dashboard;
mod load;
mod logs;
mod metrics;
mod pages;
mod prometheus;
mod webdriver;

use std::net::TcpListener;
use std::time::Duration;

use crate::support::{wait_for, Process};

/// A free loopback address.
pub fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `imagefleet serve` with its log lines (stderr) collected, on a fresh
/// data dir, once `/healthz` answers.
pub struct LoggedServe {
    pub process: Process,
    pub base: String,
    _data: tempfile::TempDir,
}

impl LoggedServe {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> LoggedServe {
        let data = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let data_dir = data.path().join("data");
        let mut all = vec!["serve", "--listen", &addr, "--data-dir"];
        all.push(data_dir.to_str().unwrap());
        all.extend_from_slice(args);
        let process = Process::start(&all, env);
        let base = format!("http://{addr}");
        let health = format!("{base}/healthz");
        wait_for("serve to answer /healthz", Duration::from_secs(60), || {
            reqwest::blocking::get(&health)
                .ok()
                .filter(|r| r.status().is_success())
        });
        LoggedServe {
            process,
            base,
            _data: data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}
