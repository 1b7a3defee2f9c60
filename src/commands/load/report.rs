//! The closing report of a load run: throughput, latency percentiles,
//! errors by status, and how many answers were right. As text for people,
//! or one JSON object (`--json`, which benches/pipeline.rs reads: keep the
//! fields it uses).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::expected::Expected;

/// What one upload got.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200 and this label.
    Label(String),
    /// Another HTTP status.
    Status(u16),
    /// No HTTP answer in time.
    Timeout,
    /// No HTTP answer: connection refused, reset, ...
    Transport(String),
}

impl Answer {
    pub fn is_failure(&self) -> bool {
        !matches!(self, Answer::Label(_))
    }

    /// How `answers` counts it (the form earlier versions printed).
    fn key(&self) -> String {
        match self {
            Answer::Label(label) => label.clone(),
            Answer::Status(status) => format!("HTTP {status}"),
            Answer::Timeout => "error: timed out".to_owned(),
            Answer::Transport(error) => format!("error: {error}"),
        }
    }

    /// How `errors_by_status` counts a failure.
    fn error_class(&self) -> Option<String> {
        match self {
            Answer::Label(_) => None,
            Answer::Status(status) => Some(status.to_string()),
            Answer::Timeout => Some("timeout".to_owned()),
            Answer::Transport(_) => Some("connection".to_owned()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// The uploaded file's name.
    pub file: String,
    /// From the upload's arrival (open loop: its scheduled time) to the
    /// answer.
    pub latency: Duration,
    pub answer: Answer,
}

/// How the uploads were sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `clients` uploaders, each sending its next upload when the last is
    /// answered.
    Closed,
    /// Uploads arrive at `rate` per second whatever the answers do (at most
    /// `clients` in flight; latency counts the wait for one).
    Open,
}

/// What a load run measured; `load --json` prints it as one object.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    pub failed: usize,
    /// p50, p90, p99 and max, in milliseconds; absent without requests.
    pub latency_ms: Option<Latency>,
    /// How often each answer (label, `HTTP <status>` or error) came back.
    pub answers: BTreeMap<String, usize>,
    pub mode: Mode,
    pub clients: usize,
    /// Arrivals per second (open loop).
    pub rate: Option<f64>,
    /// Failures by HTTP status, `timeout` or `connection`.
    pub errors_by_status: BTreeMap<String, usize>,
    /// With `--expected`: how many answers were right.
    pub expected: Option<Accuracy>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct Accuracy {
    /// Labels given for images the CSV names.
    pub checked: usize,
    /// Of those, labels the CSV accepts.
    pub matched: usize,
    /// matched / checked (0 when nothing was checked).
    pub share: f64,
    /// Labels given for images the CSV does not name.
    pub unchecked: usize,
    /// Wrong answers, most frequent first.
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, Serialize)]
pub struct Mismatch {
    pub file: String,
    pub answer: String,
    pub expected: Vec<String>,
    pub count: usize,
}

pub struct RunShape {
    pub mode: Mode,
    pub clients: usize,
    pub rate: Option<f64>,
}

pub fn summarise(
    outcomes: &[Outcome],
    elapsed: Duration,
    shape: RunShape,
    expected: Option<&Expected>,
) -> Summary {
    let mut latencies: Vec<f64> = outcomes
        .iter()
        .map(|o| o.latency.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let latency_ms = (!latencies.is_empty()).then(|| Latency {
        p50: quantile(0.5),
        p90: quantile(0.9),
        p99: quantile(0.99),
        max: latencies[latencies.len() - 1],
    });
    let mut answers = BTreeMap::new();
    let mut errors_by_status = BTreeMap::new();
    for outcome in outcomes {
        *answers.entry(outcome.answer.key()).or_default() += 1;
        if let Some(class) = outcome.answer.error_class() {
            *errors_by_status.entry(class).or_default() += 1;
        }
    }
    Summary {
        requests: outcomes.len(),
        seconds: elapsed.as_secs_f64(),
        images_per_s: outcomes.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        failed: outcomes.iter().filter(|o| o.answer.is_failure()).count(),
        latency_ms,
        answers,
        mode: shape.mode,
        clients: shape.clients,
        rate: shape.rate,
        errors_by_status,
        expected: expected.map(|expected| accuracy(outcomes, expected)),
    }
}

fn accuracy(outcomes: &[Outcome], expected: &Expected) -> Accuracy {
    let (mut checked, mut matched, mut unchecked) = (0, 0, 0);
    let mut wrong: BTreeMap<(String, String), usize> = BTreeMap::new();
    for outcome in outcomes {
        let Answer::Label(label) = &outcome.answer else {
            continue;
        };
        match expected.accepted(&outcome.file) {
            None => unchecked += 1,
            Some(accepted) => {
                checked += 1;
                if accepted.contains(label) {
                    matched += 1;
                } else {
                    *wrong
                        .entry((outcome.file.clone(), label.clone()))
                        .or_default() += 1;
                }
            }
        }
    }
    let mut mismatches: Vec<Mismatch> = wrong
        .into_iter()
        .map(|((file, answer), count)| Mismatch {
            expected: expected.accepted(&file).unwrap_or_default().to_vec(),
            file,
            answer,
            count,
        })
        .collect();
    mismatches.sort_by_key(|m| std::cmp::Reverse(m.count));
    Accuracy {
        checked,
        matched,
        share: if checked == 0 {
            0.0
        } else {
            matched as f64 / checked as f64
        },
        unchecked,
        mismatches,
    }
}

/// The report for people.
pub fn text(summary: &Summary) -> String {
    let mut out = String::new();
    let shape = match (summary.mode, summary.rate) {
        (Mode::Open, Some(rate)) => format!(
            "open loop, {rate} arrivals/s, at most {} in flight",
            summary.clients
        ),
        _ => format!("closed loop, {} clients", summary.clients),
    };
    let _ = writeln!(
        out,
        "{} requests in {:.2} s ({shape})",
        summary.requests, summary.seconds
    );
    let _ = writeln!(out, "throughput  {:.1} images/s", summary.images_per_s);
    if let Some(l) = &summary.latency_ms {
        let _ = writeln!(
            out,
            "latency ms  p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}",
            l.p50, l.p90, l.p99, l.max
        );
    }
    if summary.errors_by_status.is_empty() {
        let _ = writeln!(out, "errors      none");
    } else {
        let errors: Vec<String> = summary
            .errors_by_status
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        let _ = writeln!(
            out,
            "errors      {} failed ({})",
            summary.failed,
            errors.join(", ")
        );
    }
    if let Some(accuracy) = &summary.expected {
        let _ = write!(
            out,
            "expected    {}/{} answers match ({:.1}%)",
            accuracy.matched,
            accuracy.checked,
            accuracy.share * 100.0
        );
        if accuracy.unchecked > 0 {
            let _ = write!(out, "; {} for images not in the CSV", accuracy.unchecked);
        }
        out.push('\n');
        for m in accuracy.mismatches.iter().take(10) {
            let _ = writeln!(
                out,
                "            {}: got {:?} {} times, expected {}",
                m.file,
                m.answer,
                m.count,
                m.expected.join("|")
            );
        }
    }
    let _ = writeln!(out, "answers");
    for (answer, count) in &summary.answers {
        let _ = writeln!(out, "{count:>8}  {answer}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(file: &str, ms: u64, answer: Answer) -> Outcome {
        Outcome {
            file: file.into(),
            latency: Duration::from_millis(ms),
            answer,
        }
    }

    #[test]
    fn the_report_counts_errors_and_right_answers() {
        let expected =
            Expected::parse("file,label\ncat.jpg,tabby|tiger cat\ncup.png,espresso\n").unwrap();
        let outcomes = vec![
            outcome("cat.jpg", 10, Answer::Label("tabby".into())),
            outcome("cat.jpg", 20, Answer::Label("lynx".into())),
            outcome("cup.png", 30, Answer::Label("espresso".into())),
            outcome("dog.png", 40, Answer::Label("beagle".into())),
            outcome("cup.png", 50, Answer::Status(503)),
            outcome("cup.png", 60, Answer::Timeout),
        ];
        let shape = RunShape {
            mode: Mode::Closed,
            clients: 2,
            rate: None,
        };
        let summary = summarise(&outcomes, Duration::from_secs(2), shape, Some(&expected));
        assert_eq!(summary.failed, 2);
        assert_eq!(summary.images_per_s, 3.0);
        assert_eq!(summary.latency_ms.as_ref().unwrap().p50, 40.0);
        assert_eq!(summary.latency_ms.as_ref().unwrap().max, 60.0);
        assert_eq!(summary.errors_by_status["503"], 1);
        assert_eq!(summary.errors_by_status["timeout"], 1);
        assert_eq!(summary.answers["HTTP 503"], 1);
        let accuracy = summary.expected.as_ref().unwrap();
        assert_eq!(
            (accuracy.checked, accuracy.matched, accuracy.unchecked),
            (3, 2, 1)
        );
        assert_eq!(accuracy.mismatches[0].answer, "lynx");

        let report = text(&summary);
        assert!(report.contains("throughput  3.0 images/s"), "{report}");
        assert!(
            report.contains("p50 40  p90 60  p99 60  max 60"),
            "{report}"
        );
        assert!(report.contains("2 failed (503: 1, timeout: 1)"), "{report}");
        assert!(report.contains("2/3 answers match (66.7%)"), "{report}");
        assert!(report.contains("cat.jpg: got \"lynx\" 1 times"), "{report}");
    }
}
