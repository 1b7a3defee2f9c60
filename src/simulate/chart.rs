//! An SVG chart of backlog and instances over simulated time.

use std::fmt::Write;

use super::Sample;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 50.0;

pub fn svg(samples: &[Sample], title: &str) -> String {
    let end = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let max_backlog = samples.iter().map(|s| s.backlog).max().unwrap_or(0).max(1) as f64;
    let max_instances = samples
        .iter()
        .map(|s| s.instances)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let x = |t: f64| MARGIN + t / end * (WIDTH - 2.0 * MARGIN);
    let y = |v: f64, max: f64| HEIGHT - MARGIN - v / max * (HEIGHT - 2.0 * MARGIN);
    let line = |value: &dyn Fn(&Sample) -> f64, max: f64| {
        samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(value(s), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{MARGIN}" y="20" font-size="14">{title}</text>
<line x1="{MARGIN}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>
<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{bottom}" stroke="#1f77b4"/>
<line x1="{right}" y1="{MARGIN}" x2="{right}" y2="{bottom}" stroke="#d62728"/>
<text x="{MARGIN}" y="{top_label}" fill="#1f77b4">backlog (max {max_backlog})</text>
<text x="{right}" y="{top_label}" fill="#d62728" text-anchor="end">instances (max {max_instances})</text>
<text x="{right}" y="{time_label}" text-anchor="end">{end:.0} s</text>
<text x="{MARGIN}" y="{time_label}">0 s</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{backlog}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{instances}"/>
</svg>
"##,
        title = escape(title),
        bottom = HEIGHT - MARGIN,
        right = WIDTH - MARGIN,
        top_label = MARGIN - 8.0,
        time_label = HEIGHT - MARGIN + 18.0,
        backlog = line(&|s| s.backlog as f64, max_backlog),
        instances = line(&|s| f64::from(s.instances), max_instances),
    );
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
