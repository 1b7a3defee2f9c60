//! Test helpers: run the real `imagefleet` binary and talk to it over HTTP.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/samples").join(name)).unwrap()
}

/// (file, accepted labels) from tests/samples/expected.csv.
pub fn expected_labels() -> Vec<(String, Vec<String>)> {
    let csv = std::fs::read_to_string(repo_root().join("tests/samples/expected.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (
                fields[0].to_owned(),
                fields[2].split('|').map(str::to_owned).collect(),
            )
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `imagefleet` process, stopped with SIGTERM when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Lines the process printed on stdout.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Its log lines (stderr; its workers' too).
    pub stderr: Arc<Mutex<Vec<String>>>,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// `imagefleet <args> --listen 127.0.0.1:PORT --data-dir <temp>`, once
    /// `/healthz` answers.
    pub fn start(args: &[&str]) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let mut server = Server::start_in(args, &data_dir);
        server._temp = Some(temp);
        server
    }

    pub fn start_in(args: &[&str], data_dir: &Path) -> Server {
        Server::start_in_with_env(args, data_dir, &[])
    }

    /// As `start`, with these environment variables set for the process.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let mut server = Server::start_in_with_env(args, &data_dir, env);
        server._temp = Some(temp);
        server
    }

    pub fn start_in_with_env(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
            .args(args)
            .envs(env.iter().copied())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start imagefleet");
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        let server = Server {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            stdout,
            stderr,
            _temp: None,
        };
        server.wait_healthy(Duration::from_secs(60));
        server
    }

    /// Log lines so far that contain `text`.
    pub fn logged(&self, text: &str) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            if let Ok(response) = client.get(self.url("/healthz")).send() {
                if response.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server on {} did not become healthy", self.addr);
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        terminate(&mut self.child, "server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// Uploads `bytes` as multipart field `field`, as the classic workload
/// generator does.
pub fn upload(
    client: &reqwest::blocking::Client,
    url: &str,
    field: &str,
    file_name: &str,
    bytes: Vec<u8>,
    json: bool,
) -> reqwest::blocking::Response {
    let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
    let form = reqwest::blocking::multipart::Form::new().part(field.to_owned(), part);
    let mut request = client.post(url).multipart(form);
    if json {
        request = request.header("Accept", "application/json");
    }
    request.send().expect("request sent")
}

/// Object keys in a local bucket directory (temporary files excluded).
pub fn bucket_keys(data_dir: &Path, bucket: &str) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(data_dir.join("buckets").join(bucket))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    keys.sort();
    keys
}

/// Collects a child's output lines in the background (and echoes them, so a
/// failing test shows what the process said).
pub fn collect_lines(output: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
        {
            println!("[imagefleet] {line}");
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Polls `check` every 50 ms until it returns Some, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn get_json(url: &str) -> serde_json::Value {
    reqwest::blocking::get(url).unwrap().json().unwrap()
}

/// SIGTERM (as systemd or an operator stops a process), then the exit
/// status; panics if `what` is still running 60 s later.
pub fn terminate(child: &mut Child, what: &str) -> ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    exit_within(
        child,
        Duration::from_secs(60),
        &format!("{what}, sent SIGTERM,"),
    )
}

/// The exit status of `child` once it exits; kills it and panics if `what`
/// is still running after `limit`, so a process that should have stopped
/// fails the test instead of hanging it.
pub fn exit_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the binary to completion (from the repository, no stdin), with
/// `env` added to its environment.
pub fn run_imagefleet(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run imagefleet")
}

/// [`run_imagefleet`], checking that it succeeded; its stdout.
pub fn run_imagefleet_ok(args: &[&str]) -> String {
    let output = run_imagefleet(args, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "imagefleet {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A running `imagefleet` process without an HTTP port (a controller, say),
/// its stdout collected; killed if still running when dropped.
pub struct Process {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Its log lines (stderr).
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start imagefleet");
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        Process {
            child,
            stdout,
            stderr,
        }
    }

    /// Whether any log line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        terminate(&mut self.child, "imagefleet")
    }

    /// SIGKILL: a crash, with no chance to clean up.
    pub fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples `probe` every 100 ms on a thread until `finish`, e.g. to find
/// the peak fleet size during a test.
pub struct Sampler<T> {
    running: Arc<std::sync::atomic::AtomicBool>,
    samples: Arc<Mutex<Vec<T>>>,
    thread: std::thread::JoinHandle<()>,
}

impl<T: Clone + Send + 'static> Sampler<T> {
    pub fn start(mut probe: impl FnMut() -> T + Send + 'static) -> Sampler<T> {
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (Arc::clone(&running), Arc::clone(&samples));
        let thread = std::thread::spawn(move || {
            while flag.load(std::sync::atomic::Ordering::Relaxed) {
                let sample = probe();
                sink.lock().unwrap().push(sample);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            running,
            samples,
            thread,
        }
    }

    /// The newest sample, if any was taken yet.
    pub fn latest(&self) -> Option<T> {
        self.samples.lock().unwrap().last().cloned()
    }

    /// Stops sampling; every sample taken, in order.
    pub fn finish(self) -> Vec<T> {
        self.running
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("sampler thread");
        let samples = self.samples.lock().unwrap().clone();
        samples
    }
}

/// `count` clients upload the sample photos at once (as the classic workload
/// generator does); every one must get 200 and an accepted label.
pub fn upload_concurrently(url: &str, count: usize, timeout: Duration) {
    let expected = Arc::new(expected_labels());
    let clients: Vec<_> = (0..count)
        .map(|i| {
            let expected = Arc::clone(&expected);
            let url = url.to_owned();
            std::thread::spawn(move || {
                let (file, accept) = &expected[i % expected.len()];
                let client = reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
                    .unwrap();
                let response = upload(&client, &url, "myfile", file, sample(file), false);
                let status = response.status();
                let label = response.text().unwrap();
                assert_eq!(status, 200, "{file}: {label}");
                assert!(
                    accept.contains(&label),
                    "{file}: got {label:?}, accepted {accept:?}"
                );
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// True once `pid` has exited (gone, or a zombie waiting for its parent).
pub fn process_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // The state follows the command name in parentheses.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// Pids of the local fleet's workers in `state` (any state if None), from
/// its registry under `data_dir`.
pub fn worker_pids(data_dir: &Path, state: Option<imagefleet::fleet::InstanceState>) -> Vec<u32> {
    let path = imagefleet::services::LocalLayout::new(data_dir).fleet_file();
    let Ok(registry) = imagefleet::fleet::InstanceRegistry::open(&path) else {
        return Vec::new();
    };
    registry
        .all()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| state.is_none_or(|s| r.instance.state == s))
        .map(|r| r.pid)
        .collect()
}

/// Puts `count` requests on the local request queue of `data_dir`. The
/// bodies are not jobs: for controllers and dry runs, which only count them.
pub fn queue_requests(data_dir: &Path, count: usize) {
    let services = imagefleet::services::Services::local(data_dir).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for i in 0..count {
            services.requests.send(&format!("job {i}")).await.unwrap();
        }
    });
}

/// A dry-run `serve` on `data_dir` under `policy`, ticking every 200 ms,
/// with room for 20 instances (the local default is one per core).
pub fn dry_run_server(data_dir: &Path, policy: &Path) -> Server {
    let args = [
        "serve",
        "--dry-run",
        "--max-instances",
        "20",
        "--interval-ms",
        "200",
        "--policy",
        policy.to_str().unwrap(),
    ];
    Server::start_in(&args, data_dir)
}
