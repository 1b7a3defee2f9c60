//! The upload page and the dashboard in a real browser: Debian's headless
//! Chromium, driven through chromedriver (W3C WebDriver) by fantoccini.
//! Screenshots of both are kept under the target directory's tmp folder
//! (the test prints where).
//!
//! Chromium is required: without it this test fails, saying how to install
//! it (scripts/test installs it when it runs as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::webdriver::Session;
use crate::support::{repo_root, sample, upload, Server};

/// As the machine's own probe runs it: no sandbox (tests run as root), no
/// GPU, and nothing that reaches for the network on its own (the machine's
/// closed network refuses it, slowly).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(program: &Path) -> Driver {
        let addr = super::free_addr();
        let port = addr.rsplit(':').next().unwrap();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let url = format!("http://{addr}");
        let driver = Driver { child, url };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = reqwest::blocking::get(format!("{}/status", driver.url))
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|status| status["value"]["ready"] == true);
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go: kept after the run, beside the build.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn screenshot(client: &Session, name: &str) {
    let png = client.screenshot();
    let path = artifacts().join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

/// Runs `probe` (a script returning a value) until `ready` accepts what it
/// returns; panics with the last value after `limit`.
fn until(
    client: &Session,
    what: &str,
    limit: Duration,
    probe: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let value = client.execute(probe);
        if ready(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen {value}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const CARDS: &str = "return Array.from(document.querySelectorAll('#results article')).map(a => ({
    state: a.dataset.state,
    label: a.querySelector('.label').textContent,
    bars: a.querySelectorAll('.top5 li').length,
    time: (a.querySelector('.time') || {}).textContent || null,
    message: (a.querySelector('.message') || {}).textContent || null,
    preview: !!(a.querySelector('img.preview') || {}).naturalWidth,
}));";

const DASHBOARD: &str = "const text = id => document.getElementById(id).textContent;
    const chart = document.getElementById('chart');
    return {
        connection: document.getElementById('connection').className,
        updated: text('updated'),
        done: Number(text('done')),
        samples: Number(chart.dataset.samples || 0),
        max_backlog: Number(chart.dataset.maxBacklog || 0),
        max_actual: Number(chart.dataset.maxActual || 0),
        max_desired: Number(chart.dataset.maxDesired || 0),
        backlog_line: !!document.getElementById('line-backlog'),
        actions: text('actions'),
        overflow: document.documentElement.scrollWidth - window.innerWidth,
    };";

#[test]
fn the_upload_page_and_the_dashboard_in_chromium() {
    let (Some(chromium), Some(chromedriver)) = (
        find_program(&["chromium", "chromium-browser"]),
        find_program(&["chromedriver"]),
    ) else {
        panic!(
            "the browser test needs Chromium and ChromeDriver: `apt-get install -y chromium chromium-driver` \
             (Debian; scripts/test installs them when run as root)"
        );
    };
    // The fleet starts empty and follows the policy, quickly.
    let server = Server::start(&["serve", "--interval-ms", "300", "--max-instances", "2"]);
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let capabilities = json!({
        "goog:chromeOptions": { "binary": chromium, "args": args }
    });
    let client = Session::start(&driver.url, capabilities);
    let base = server.url("/");
    upload_page(&client, &base);
    dashboard(&client, &base);
}

/// One image picked, then two at once, then a file that is no image.
fn upload_page(client: &Session, base: &str) {
    let samples = repo_root().join("tests/samples");
    client.goto(base);
    let input = client.find("#file");
    client.send_keys(&input, samples.join("coffee.png").to_str().unwrap());
    let cards = until(
        client,
        "the label of coffee.png",
        Duration::from_secs(30),
        CARDS,
        |cards| cards[0]["state"] == "done",
    );
    assert_eq!(cards[0]["label"], "espresso", "{cards}");
    assert_eq!(cards[0]["bars"], 5, "{cards}");
    assert!(
        cards[0]["time"].as_str().unwrap().ends_with(" s"),
        "{cards}"
    );
    assert_eq!(cards[0]["preview"], true, "{cards}");
    // What a person sees: the label as rendered text.
    let label = client.find("#results article.done .label");
    assert_eq!(client.text(&label), "espresso");

    let two = format!(
        "{}\n{}",
        samples.join("camera.png").display(),
        samples.join("chelsea.jpg").display()
    );
    client.send_keys(&input, &two);
    client.send_keys(&input, samples.join("README.md").to_str().unwrap());
    let cards = until(
        client,
        "four answers",
        Duration::from_secs(30),
        CARDS,
        |cards| {
            cards.as_array().unwrap().len() == 4
                && cards
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["state"] != "pending")
        },
    );
    let labels: Vec<&str> = cards
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"tripod"), "{cards}");
    assert!(
        labels
            .iter()
            .any(|l| ["tiger cat", "Egyptian cat", "tabby"].contains(l)),
        "{cards}"
    );
    // The error is the API's own sentence.
    let error = cards
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "error")
        .expect("an error card");
    assert!(error["label"].as_str().unwrap().contains("415"), "{cards}");
    assert_eq!(
        error["message"], "not a supported image format (JPEG, PNG, WebP, GIF, BMP or TIFF)",
        "{cards}"
    );
    screenshot(client, "upload.png");
}

/// Live, and moving while a burst of jobs runs; readable on a phone.
fn dashboard(client: &Session, base: &str) {
    client.goto(&format!("{base}dashboard"));
    let before = until(
        client,
        "the dashboard's first update",
        Duration::from_secs(10),
        DASHBOARD,
        |d| d["connection"].as_str().unwrap().contains("live") && d["updated"] != "never",
    );
    // Enough jobs, sent from a few clients at once, that the backlog
    // outlives several of the dashboard's one-second samples: with 100 sent
    // one by one, two workers kept up and the chart could see no backlog.
    let clients = 4;
    let per_client = 75;
    let jobs = clients * per_client;
    let submitters: Vec<_> = (0..clients)
        .map(|_| {
            let url = format!("{base}jobs");
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for i in 0..per_client {
                    let (name, bytes) = if i % 2 == 0 {
                        ("coffee.png", sample("coffee.png"))
                    } else {
                        ("camera.png", sample("camera.png"))
                    };
                    let response = upload(&client, &url, "myfile", name, bytes, true);
                    assert_eq!(response.status(), 202);
                }
            })
        })
        .collect();
    let done = before["done"].as_u64().unwrap() + jobs;
    let after = until(
        client,
        "the dashboard to count the burst",
        Duration::from_secs(60),
        DASHBOARD,
        |d| d["done"].as_u64() >= Some(done),
    );
    for submitter in submitters {
        submitter.join().expect("a job submitter");
    }
    assert!(
        after["max_backlog"].as_u64().unwrap() >= 1,
        "the chart saw no backlog: {after}"
    );
    assert!(
        after["max_desired"].as_u64().unwrap() >= 1,
        "the chart saw no desired instances: {after}"
    );
    assert!(
        after["max_actual"].as_u64().unwrap() >= 1,
        "the chart saw no instances: {after}"
    );
    assert!(
        after["samples"].as_u64().unwrap() > before["samples"].as_u64().unwrap(),
        "{before} {after}"
    );
    assert_eq!(after["backlog_line"], true);
    assert!(
        after["actions"].as_str().unwrap().contains("launch"),
        "{after}"
    );
    // Tall enough for the whole page in one picture.
    client.set_window_size(1280, 1300);
    screenshot(client, "dashboard.png");

    // Readable on a phone: nothing wider than the screen.
    client.set_window_size(390, 844);
    let phone = until(
        client,
        "the phone layout",
        Duration::from_secs(5),
        DASHBOARD,
        |d| d["overflow"].as_i64() <= Some(0),
    );
    assert!(phone["overflow"].as_i64() <= Some(0), "{phone}");
    screenshot(client, "dashboard-phone.png");
}
