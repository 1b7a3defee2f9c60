//! Every accepted upload gets exactly one answer, through scale-in, crashes,
//! stalls and poison: the real binary's workers, queue file and buckets,
//! with real signals.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use imagefleet::fleet::InstanceState;
use imagefleet::job::{unix_millis, JobId, JobRequest, JobResult, Outcome};
use imagefleet::queue::QueueDepth;
use imagefleet::services::Services;

use crate::support::{
    bucket_keys, expected_labels, get_json, process_gone, repo_root, run_imagefleet_ok, sample,
    signal, upload_concurrently, wait_for, worker_pids, Process, Server,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Queues `count` jobs for `image` directly (as the web tier would);
/// returns their ids.
fn queue_jobs(services: &Services, image: &[u8], count: usize) -> Vec<JobId> {
    runtime().block_on(async {
        let mut ids = Vec::new();
        for _ in 0..count {
            let job_id = JobId::new();
            let key = job_id.input_key();
            services
                .inputs
                .put(&key, Bytes::from(image.to_vec()), "image/png")
                .await
                .unwrap();
            let request = JobRequest {
                job_id,
                input_key: key,
                file_name: "test.png".into(),
                content_type: "image/png".into(),
                submitted_at_ms: unix_millis(),
                attempt: 1,
                reply_to: None,
                request_id: None,
                keep_input: false,
            };
            let body = serde_json::to_string(&request).unwrap();
            services.requests.send(&body).await.unwrap();
            ids.push(job_id);
        }
        ids
    })
}

fn depth(services: &Services) -> (QueueDepth, QueueDepth) {
    runtime().block_on(async {
        (
            services.requests.depth().await.unwrap(),
            services.dead_letters.depth().await.unwrap(),
        )
    })
}

/// Every message on the results queue (nobody else reads it in these
/// tests), taken off it.
fn drain_announcements(services: &Services) -> Vec<JobResult> {
    runtime().block_on(async {
        let mut all = Vec::new();
        loop {
            let batch = services
                .results
                .receive(10, Duration::ZERO, Duration::from_secs(60))
                .await
                .unwrap();
            if batch.is_empty() {
                return all;
            }
            for message in batch {
                all.push(serde_json::from_str(&message.body).unwrap());
                services.results.delete(&message.receipt).await.unwrap();
            }
        }
    })
}

fn stored_results(data_dir: &Path) -> Vec<JobResult> {
    bucket_keys(data_dir, "output")
        .iter()
        .map(|key| {
            let bytes = std::fs::read(data_dir.join("buckets/output").join(key)).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

/// `imagefleet worker` on `data_dir`, as a process of its own.
fn start_worker(data_dir: &Path, extra: &[&str]) -> Process {
    let parent = std::process::id().to_string();
    // --parent-pid: gone with this test process, even if it panics.
    let mut args = vec![
        "worker",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--parent-pid",
        &parent,
    ];
    args.extend_from_slice(extra);
    Process::start(&args, &[])
}

/// SIGSTOP, and wait until the process has really stopped (the signal is
/// delivered asynchronously).
fn pause(pid: u32) {
    signal(pid, libc::SIGSTOP);
    wait_for("the process to stop", Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        (state == 'T').then_some(())
    });
}

/// Whether another process could write the queue file now (nobody holds
/// its write lock).
fn queue_writable(data_dir: &Path) -> bool {
    let path = imagefleet::services::LocalLayout::new(data_dir).queue_file();
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.busy_timeout(Duration::from_millis(50)).unwrap();
    connection
        .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .is_ok()
}

/// A PNG that takes a worker tens of milliseconds to decode: noise does not
/// compress, so inflating it is real work.
fn slow_png(side: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let image = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// A worker stopped cleanly (scale-in, restart) hands back the job it had
/// fetched ahead without using up one of the job's attempts: after seven
/// stops mid-run every job is done on its first attempt and nothing is
/// dead-lettered. (Before, each hand-back counted as a failed receive and
/// healthy jobs ended in the dead-letter queue.)
#[test]
fn jobs_survive_seven_clean_stops_of_their_worker() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let services = Services::local(&data_dir).unwrap();
    let ids = queue_jobs(&services, &sample("camera.png"), 20);

    let mut handed_back = 0;
    for round in 0..7 {
        let before = bucket_keys(&data_dir, "output").len();
        if before == ids.len() {
            break;
        }
        let mut worker = start_worker(&data_dir, &[]);
        // Stop it as soon as it holds jobs: mid-job, with one fetched ahead.
        wait_for("the worker to take jobs", Duration::from_secs(60), || {
            let in_flight = depth(&services).0.in_flight;
            (in_flight > 0 || bucket_keys(&data_dir, "output").len() > before).then_some(())
        });
        let status = worker.stop();
        assert!(status.success(), "round {round}: worker exited {status}");
        if worker.logged("handing back jobs not started") {
            handed_back += 1;
        }
    }
    if bucket_keys(&data_dir, "output").len() < ids.len() {
        let mut last = start_worker(&data_dir, &[]);
        wait_for("every job done", Duration::from_secs(60), || {
            (bucket_keys(&data_dir, "output").len() == ids.len()).then_some(())
        });
        assert!(last.stop().success());
    }

    assert!(handed_back > 0, "no stop caught a job fetched ahead");
    let (requests, dead) = depth(&services);
    assert_eq!(requests, QueueDepth::default());
    assert_eq!(dead, QueueDepth::default(), "nothing dead-lettered");
    let results = stored_results(&data_dir);
    assert_eq!(results.len(), ids.len());
    for result in &results {
        assert!(matches!(result.outcome, Outcome::Done { .. }), "{result:?}");
        assert_eq!(
            result.attempt, 1,
            "a hand-back used up an attempt: {result:?}"
        );
    }
}

/// A job whose input cannot be read fails every attempt; the client that
/// waits for it gets a failure answer a few seconds after the last one (not
/// a 504 a minute later), `GET /jobs/{id}` says `failed`, and once the input
/// is fixed `dlq redrive` completes the job.
#[test]
fn a_job_that_keeps_failing_is_answered_and_can_be_redriven() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let policy = temp.path().join("policy.rhai");
    std::fs::write(&policy, "0").unwrap();
    let server = Server::start_in(
        &[
            "serve",
            "--interval-ms",
            "200",
            "--max-instances",
            "1",
            "--policy",
            policy.to_str().unwrap(),
        ],
        &data_dir,
    );
    let url = server.url("/");
    let client = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let response = crate::support::upload(
            &client,
            &url,
            "myfile",
            "cat.jpg",
            sample("chelsea.jpg"),
            true,
        );
        let status = response.status().as_u16();
        (
            status,
            response.json::<serde_json::Value>().unwrap(),
            Instant::now(),
        )
    });

    // No workers yet: the job waits. Make its input unreadable (a directory
    // where the file was), then let the policy start a worker.
    let key = wait_for("the upload to be stored", Duration::from_secs(30), || {
        bucket_keys(&data_dir, "input").pop()
    });
    let input = data_dir.join("buckets/input").join(&key);
    std::fs::remove_file(&input).unwrap();
    std::fs::create_dir(&input).unwrap();
    std::fs::write(&policy, "1").unwrap();
    let workers_wanted = Instant::now();

    let (status, body, answered) = client.join().unwrap();
    let waited = answered - workers_wanted;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "job_failed", "{body}");
    assert_eq!(body["kind"], "attempts_exhausted", "{body}");
    assert!(
        waited < Duration::from_secs(20),
        "answered {waited:?} after the worker was wanted"
    );
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(id, key);
    let job = get_json(&server.url(&format!("/jobs/{id}")));
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        get_json(&server.url("/status"))["dead_letters"]["visible"],
        1
    );

    let listed = run_imagefleet_ok(&["dlq", "list", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(
        listed.contains(&id) && listed.contains("attempts_exhausted"),
        "{listed}"
    );

    // The operator fixes the input and sends the job through again.
    std::fs::remove_dir(&input).unwrap();
    std::fs::write(&input, sample("chelsea.jpg")).unwrap();
    let redriven = run_imagefleet_ok(&[
        "dlq",
        "redrive",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--id",
        &id,
    ]);
    assert!(
        redriven.contains(&format!("{id} queued again")),
        "{redriven}"
    );
    let accepted = &expected_labels()
        .into_iter()
        .find(|(file, _)| file == "chelsea.jpg")
        .unwrap()
        .1;
    let done = wait_for("the redriven job's label", Duration::from_secs(30), || {
        let job = get_json(&server.url(&format!("/jobs/{id}")));
        (job["status"] == "done").then_some(job)
    });
    assert!(
        accepted.contains(&done["label"].as_str().unwrap().to_owned()),
        "{done}"
    );
    assert_eq!(
        get_json(&server.url("/status"))["dead_letters"]["visible"],
        0
    );
}

/// A worker that stalls past its lease (here SIGSTOP) loses its jobs to
/// another worker; when it resumes it publishes nothing: every job has
/// exactly one stored result and one announcement.
#[test]
fn a_stalled_worker_that_lost_its_lease_publishes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let services = Services::local(&data_dir).unwrap();
    // Each job takes a few hundred ms to decode, so the pause below lands
    // in the middle of the first one, far from any queue transaction.
    let ids = queue_jobs(&services, &slow_png(3500), 8);

    let mut stalled = start_worker(&data_dir, &["--lease-secs", "3"]);
    let pid = stalled.child.id();
    // Pause it while it holds jobs, in the middle of decoding one: a
    // process frozen inside a queue transaction (microseconds long) would
    // block the local queue file for everyone until it resumes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while depth(&services).0.in_flight == 0 {
        assert!(Instant::now() < deadline, "the first worker took no job");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(40));
    pause(pid);
    // Frozen inside a queue transaction (it fsyncs, so under disk load that
    // is not so rare), it would block everyone; that is SQLite's nature and
    // not what this test is about: let it on a little and pause it again.
    while !queue_writable(&data_dir) {
        signal(pid, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(3));
        pause(pid);
    }
    let held = depth(&services).0.in_flight;
    assert!(held > 0, "the paused worker holds no job");

    let mut other = start_worker(&data_dir, &["--lease-secs", "3"]);
    wait_for(
        "the other worker to finish every job",
        Duration::from_secs(120),
        || (bucket_keys(&data_dir, "output").len() == ids.len()).then_some(()),
    );
    signal(pid, libc::SIGCONT);
    // Time for the resumed worker to finish what it held and try to
    // publish it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(stalled.stop().success());
    assert!(other.stop().success());

    let announced = drain_announcements(&services);
    let mut per_job: HashMap<JobId, usize> = HashMap::new();
    for result in &announced {
        *per_job.entry(result.id).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(
            per_job.get(id),
            Some(&1),
            "job {id} announced {:?} times",
            per_job.get(id)
        );
    }
    assert_eq!(announced.len(), ids.len());
    let stored = stored_results(&data_dir);
    assert_eq!(stored.len(), ids.len());
    for (result, announcement) in stored
        .iter()
        .filter_map(|s| announced.iter().find(|a| a.id == s.id).map(|a| (s, a)))
    {
        assert_eq!(
            result, announcement,
            "the announcement is the stored result"
        );
    }
    let (requests, dead) = depth(&services);
    assert_eq!(requests, QueueDepth::default());
    assert_eq!(dead, QueueDepth::default());
    // And the stall really cost the worker its lease (the case under test).
    assert!(
        stalled.logged("lease lost"),
        "the paused worker kept its lease"
    );
}

/// A worker killed outright under load: its jobs come back when their
/// short lease runs out, the service replaces the worker, and every upload
/// is answered 200 (none waits out a 60 s timeout).
#[test]
fn a_killed_worker_costs_its_jobs_seconds_not_answers() {
    let server = Server::start(&["serve", "--workers", "2", "--interval-ms", "200"]);
    let data_dir = server.data_dir.clone();
    let running = wait_for("two running workers", Duration::from_secs(60), || {
        let pids = worker_pids(&data_dir, Some(InstanceState::Running));
        (pids.len() == 2).then_some(pids)
    });
    let url = server.url("/");
    let uploads = std::thread::spawn(move || {
        upload_concurrently(&url, 100, Duration::from_secs(120));
        Instant::now()
    });
    wait_for("the first results", Duration::from_secs(60), || {
        (bucket_keys(&data_dir, "output").len() >= 10).then_some(())
    });
    signal(running[0], libc::SIGKILL);
    let killed = Instant::now();
    let finished = uploads
        .join()
        .expect("every upload answered 200 with its label");
    let after_kill = finished.saturating_duration_since(killed);
    println!("last answer {after_kill:?} after the kill");
    assert!(
        after_kill < Duration::from_secs(15),
        "orphaned jobs took {after_kill:?} after the kill"
    );
    wait_for("the dead worker replaced", Duration::from_secs(30), || {
        let pids = worker_pids(&data_dir, Some(InstanceState::Running));
        (pids.len() == 2 && !pids.contains(&running[0])).then_some(())
    });
}

/// SIGTERM to `serve` with a request in flight: the request still gets its
/// label, `serve` exits 0 within its shutdown timeout, and no worker is
/// left behind.
#[test]
fn sigterm_answers_open_requests_then_stops_everything() {
    let mut server = Server::start(&[
        "serve",
        "--workers",
        "1",
        "--interval-ms",
        "200",
        "--shutdown-timeout-secs",
        "10",
    ]);
    let data_dir = server.data_dir.clone();
    let worker = wait_for("a running worker", Duration::from_secs(60), || {
        worker_pids(&data_dir, Some(InstanceState::Running)).pop()
    });
    // Hold the worker so the request is surely still open at SIGTERM (and
    // not inside a queue transaction, which would hold up the web tier).
    pause(worker);
    while !queue_writable(&data_dir) {
        signal(worker, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(3));
        pause(worker);
    }
    let url = server.url("/");
    let client = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        let response = crate::support::upload(
            &client,
            &url,
            "myfile",
            "coffee.png",
            sample("coffee.png"),
            false,
        );
        (response.status().as_u16(), response.text().unwrap())
    });
    let services = Services::local(&data_dir).unwrap();
    wait_for("the job queued", Duration::from_secs(30), || {
        (depth(&services).0.backlog() > 0).then_some(())
    });
    signal(server.child.id(), libc::SIGTERM);
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    signal(worker, libc::SIGCONT);

    let (status, label) = client.join().unwrap();
    assert_eq!((status, label.as_str()), (200, "espresso"));
    let exit = crate::support::exit_within(&mut server.child, Duration::from_secs(15), "serve");
    let took = stopped_at.elapsed();
    assert!(exit.success(), "serve exited {exit}");
    assert!(
        took < Duration::from_secs(12),
        "serve took {took:?} to stop"
    );
    wait_for("the worker gone", Duration::from_secs(5), || {
        process_gone(worker).then_some(())
    });
}

/// SIGKILL to `serve`: its workers notice and are gone within seconds,
/// instead of running on unsupervised.
#[test]
fn workers_die_with_a_killed_serve() {
    let mut server = Server::start(&["serve", "--workers", "2", "--interval-ms", "200"]);
    let data_dir = server.data_dir.clone();
    let pids = wait_for("two running workers", Duration::from_secs(60), || {
        let pids = worker_pids(&data_dir, Some(InstanceState::Running));
        (pids.len() == 2).then_some(pids)
    });
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let killed = Instant::now();
    wait_for("the workers gone", Duration::from_secs(5), || {
        pids.iter().all(|pid| process_gone(*pid)).then_some(())
    });
    println!("workers gone {:?} after serve was killed", killed.elapsed());
}

/// One controller per data dir: a second one refuses to start, saying why,
/// instead of launching workers past the cap.
#[test]
fn a_second_controller_on_the_same_data_dir_refuses_to_start() {
    let server = Server::start(&["serve", "--interval-ms", "200"]);
    let output = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(["controller", "--data-dir"])
        .arg(&server.data_dir)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("another controller"), "{stderr}");
    assert!(stderr.contains(&server.child.id().to_string()), "{stderr}");
}
