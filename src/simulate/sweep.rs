//! Parameter sweeps: one simulation per value of a policy constant (a
//! top-level `let NAME = N;` or `const NAME = N;` in the script) or of a
//! controller setting (`scale_in_delay`, `scale_in_step`), tabulated as
//! cost (instance-seconds) against latency (p95 queue wait), with the
//! Pareto front: the values no other value beats on both.

use std::fmt::{self, Write};

use super::{simulate_with, SimOptions, Summary, Trace};
use crate::policy::{Policy, PolicyLimits};

/// At most this many runs per sweep.
const MAX_VALUES: usize = 200;

pub struct SweepRow {
    pub value: f64,
    pub summary: Summary,
    /// On the Pareto front of instance-seconds against p95 wait.
    pub front: bool,
}

pub struct SweepTable {
    pub parameter: String,
    pub rows: Vec<SweepRow>,
}

/// Runs the sweep `spec` (`NAME=RANGE`) of `script` over `trace`.
pub fn sweep(
    trace: &Trace,
    script: &str,
    limits: PolicyLimits,
    options: &SimOptions,
    spec: &str,
) -> anyhow::Result<SweepTable> {
    let (name, range) = spec
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--sweep {spec:?}: expected NAME=RANGE"))?;
    let name = name.trim();
    let values = parse_range(range)?;
    let mut rows = Vec::with_capacity(values.len());
    for value in values {
        let mut options = options.clone();
        options.record = false;
        let policy = match name {
            "scale_in_delay" => {
                options.tuning.scale_in_delay_s = value;
                Policy::compile_with(script, limits)?
            }
            "scale_in_step" => {
                anyhow::ensure!(
                    value >= 1.0 && value.fract() == 0.0,
                    "scale_in_step takes whole numbers from 1"
                );
                options.tuning.scale_in_step = value as u32;
                Policy::compile_with(script, limits)?
            }
            constant => Policy::compile_with(&substitute(script, constant, value)?, limits)
                .map_err(|e| anyhow::anyhow!("{constant} = {}: {e}", show(value)))?,
        };
        let summary = simulate_with(trace, &policy, &options)
            .map_err(|e| anyhow::anyhow!("{name} = {}: {e}", show(value)))?;
        rows.push(SweepRow {
            value,
            summary,
            front: false,
        });
    }
    mark_front(&mut rows);
    Ok(SweepTable {
        parameter: name.to_owned(),
        rows,
    })
}

/// `5..30` (step 1), `5..30:5`, `0.5..2:0.5` or `5,10,20`.
pub fn parse_range(text: &str) -> anyhow::Result<Vec<f64>> {
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| anyhow::anyhow!("{s:?} is not a number"))
    };
    let values: Vec<f64> = if let Some((from, rest)) = text.split_once("..") {
        let (to, step) = match rest.split_once(':') {
            Some((to, step)) => (number(to)?, number(step)?),
            None => (number(rest)?, 1.0),
        };
        let from = number(from)?;
        anyhow::ensure!(step > 0.0, "the step of {text:?} must be positive");
        anyhow::ensure!(from <= to, "{text:?} runs backwards");
        let count = ((to - from) / step + 1e-9).floor() as usize + 1;
        anyhow::ensure!(
            count <= MAX_VALUES,
            "{text:?} has {count} values; at most {MAX_VALUES}"
        );
        (0..count).map(|i| from + step * i as f64).collect()
    } else {
        text.split(',').map(number).collect::<Result<_, _>>()?
    };
    anyhow::ensure!(
        !values.is_empty() && values.len() <= MAX_VALUES,
        "{text:?}: give 1 to {MAX_VALUES} values"
    );
    Ok(values)
}

/// The script with its top-level `let NAME = ...;` (or `const`) set to
/// `value`.
pub fn substitute(script: &str, name: &str, value: f64) -> anyhow::Result<String> {
    let mut found = false;
    let lines: Vec<String> = script
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let declared = ["let ", "const "].iter().find_map(|keyword| {
                let rest = trimmed.strip_prefix(keyword)?.trim_start();
                let rest = rest.strip_prefix(name)?.trim_start();
                rest.strip_prefix('=')?;
                Some(rest)
            });
            match declared {
                Some(rest) if !found => {
                    found = true;
                    let keyword = if trimmed.starts_with("let") {
                        "let"
                    } else {
                        "const"
                    };
                    let indent = &line[..line.len() - trimmed.len()];
                    // Whatever followed the statement (a comment) stays.
                    let tail = rest.find(';').map_or("", |i| &rest[i + 1..]);
                    format!("{indent}{keyword} {name} = {};{tail}", show(value))
                }
                _ => line.to_owned(),
            }
        })
        .collect();
    anyhow::ensure!(
        found,
        "the policy has no `let {name} = ...;` line to sweep (or sweep scale_in_delay or \
         scale_in_step)"
    );
    Ok(lines.join("\n"))
}

/// Whole numbers as integers, so a script's integer arithmetic stays so.
fn show(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn mark_front(rows: &mut [SweepRow]) {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.summary.instance_seconds, r.summary.wait_p95_s))
        .collect();
    for (i, row) in rows.iter_mut().enumerate() {
        let (cost, wait) = points[i];
        row.front = !points
            .iter()
            .enumerate()
            .any(|(j, &(c, w))| j != i && c <= cost && w <= wait && (c < cost || w < wait));
    }
}

impl fmt::Display for SweepTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.parameter.len().max(6);
        writeln!(
            f,
            "{:>width$}  launches  peak  instance-s  wait p50  wait p95  wait max  front",
            self.parameter
        )?;
        for row in &self.rows {
            let s = &row.summary;
            writeln!(
                f,
                "{:>width$}  {:>8}  {:>4}  {:>10.1}  {:>8.2}  {:>8.2}  {:>8.2}  {}",
                show(row.value),
                s.launches,
                s.peak_instances,
                s.instance_seconds,
                s.wait_p50_s,
                s.wait_p95_s,
                s.wait_max_s,
                if row.front { "*" } else { "" }
            )?;
        }
        let front: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.front)
            .map(|r| show(r.value))
            .collect();
        writeln!(
            f,
            "Pareto front (no other value is both cheaper and faster): {} = {}",
            self.parameter,
            front.join(", ")
        )
    }
}

impl SweepTable {
    /// Cost against p95 wait, one dot per value, the front joined up.
    pub fn svg(&self, title: &str) -> String {
        const WIDTH: f64 = 800.0;
        const HEIGHT: f64 = 480.0;
        const MARGIN: f64 = 60.0;
        let max_cost = self
            .rows
            .iter()
            .map(|r| r.summary.instance_seconds)
            .fold(1.0, f64::max);
        let max_wait = self
            .rows
            .iter()
            .map(|r| r.summary.wait_p95_s)
            .fold(0.01, f64::max);
        let x = |c: f64| MARGIN + c / max_cost * (WIDTH - 2.0 * MARGIN);
        let y = |w: f64| HEIGHT - MARGIN - w / max_wait * (HEIGHT - 2.0 * MARGIN);
        let mut out = String::new();
        let _ = write!(
            out,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{MARGIN}" y="24" font-size="14">{title}: sweeping {param}</text>
<line x1="{MARGIN}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>
<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{bottom}" stroke="black"/>
<text x="{right}" y="{below}" text-anchor="end">instance-seconds (max {max_cost:.0})</text>
<text x="{MARGIN}" y="{above}">p95 queue wait, s (max {max_wait:.2})</text>
"##,
            title = title.replace('&', "&amp;").replace('<', "&lt;"),
            param = self.parameter,
            bottom = HEIGHT - MARGIN,
            right = WIDTH - MARGIN,
            below = HEIGHT - MARGIN + 30.0,
            above = MARGIN - 10.0,
        );
        let mut front: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter(|r| r.front)
            .map(|r| (r.summary.instance_seconds, r.summary.wait_p95_s))
            .collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        let points: Vec<String> = front
            .iter()
            .map(|(c, w)| format!("{:.1},{:.1}", x(*c), y(*w)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{}"/>"##,
            points.join(" ")
        );
        for row in &self.rows {
            let (cx, cy) = (x(row.summary.instance_seconds), y(row.summary.wait_p95_s));
            let colour = if row.front { "#d62728" } else { "#1f77b4" };
            let _ = writeln!(
                out,
                r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"##,
                cx + 6.0,
                cy - 6.0,
                show(row.value)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::Limits;

    #[test]
    fn ranges_read_as_written() {
        assert_eq!(parse_range("5..8").unwrap(), [5.0, 6.0, 7.0, 8.0]);
        assert_eq!(parse_range("5..30:10").unwrap(), [5.0, 15.0, 25.0]);
        assert_eq!(parse_range("0.5..1.5:0.5").unwrap(), [0.5, 1.0, 1.5]);
        assert_eq!(parse_range("5, 10,20").unwrap(), [5.0, 10.0, 20.0]);
        assert!(parse_range("30..5").is_err());
        assert!(parse_range("1..1000").is_err());
        assert!(parse_range("a..b").is_err());
    }

    #[test]
    fn a_constant_is_substituted_where_it_is_declared() {
        let script = "// per\nlet messages_per_instance = 10; // tune me\nlet x = messages_per_instance_2;\n";
        let out = substitute(script, "messages_per_instance", 25.0).unwrap();
        assert!(
            out.contains("let messages_per_instance = 25; // tune me"),
            "{out}"
        );
        assert!(out.contains("let x = messages_per_instance_2;"), "{out}");
        assert!(substitute(script, "missing", 1.0).is_err());
    }

    #[test]
    fn the_front_is_what_nothing_beats_on_both() {
        let trace = Trace::parse(
            "service_time_ms = 40.0\nboot_delay_s = 1.0\ntick_s = 2.0\n\
             [[phase]]\nseconds = 20.0\nrate = 50.0\n[[phase]]\nseconds = 20.0\nrate = 0.0\n",
        )
        .unwrap();
        let table = sweep(
            &trace,
            crate::policy::DEFAULT_POLICY,
            PolicyLimits::default(),
            &SimOptions::new(Limits::default()),
            "messages_per_instance=2..40:19",
        )
        .unwrap();
        assert_eq!(table.rows.len(), 3);
        // More messages per instance: fewer instances, longer waits.
        let costs: Vec<f64> = table
            .rows
            .iter()
            .map(|r| r.summary.instance_seconds)
            .collect();
        assert!(costs[0] > costs[2], "{costs:?}");
        assert!(table.rows.iter().any(|r| r.front));
        let text = table.to_string();
        assert!(text.contains("Pareto front"), "{text}");
        assert!(table.svg("t").contains("<circle"));
    }
}
