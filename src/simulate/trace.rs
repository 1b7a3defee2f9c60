//! Workload traces for the simulator (TOML).

use std::path::Path;

use serde::Deserialize;

use super::faults::Faults;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    #[serde(default)]
    pub description: String,
    /// Time one instance takes for one image, in milliseconds.
    pub service_time_ms: f64,
    /// From launch until an instance takes jobs, in seconds.
    pub boot_delay_s: f64,
    /// Controller interval, in seconds.
    #[serde(default = "default_tick")]
    pub tick_s: f64,
    /// Arrivals, phase after phase.
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
    /// Jobs already queued at the start (a replayed period's backlog).
    #[serde(default)]
    pub initial_backlog: u64,
    /// Instances already running at the start.
    #[serde(default)]
    pub initial_instances: u32,
    /// What goes wrong on the way (`[faults]`; none by default).
    #[serde(default)]
    pub faults: Faults,
    /// Where each phase starts, for a fast lookup over long (replayed)
    /// traces.
    #[serde(skip)]
    starts: Vec<f64>,
}

/// `seconds` of arrivals at `rate` per second, or ramping linearly from
/// `rate` to `rate_end`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub seconds: f64,
    pub rate: f64,
    pub rate_end: Option<f64>,
}

fn default_tick() -> f64 {
    2.0
}

impl Trace {
    pub fn load(path: &Path) -> anyhow::Result<Trace> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read trace {}: {e}", path.display()))?;
        Trace::parse(&text).map_err(|e| anyhow::anyhow!("trace {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Trace> {
        let trace: Trace = toml::from_str(text)?;
        trace.ready()
    }

    /// A trace made in code (a replayed period), checked as a file is.
    pub fn from_phases(
        description: String,
        service_time_ms: f64,
        boot_delay_s: f64,
        tick_s: f64,
        phases: Vec<Phase>,
    ) -> anyhow::Result<Trace> {
        Trace {
            description,
            service_time_ms,
            boot_delay_s,
            tick_s,
            phases,
            initial_backlog: 0,
            initial_instances: 0,
            faults: Faults::default(),
            starts: Vec::new(),
        }
        .ready()
    }

    fn ready(mut self) -> anyhow::Result<Trace> {
        self.validate()?;
        self.faults.validate()?;
        let mut start = 0.0;
        self.starts = self
            .phases
            .iter()
            .map(|p| {
                let here = start;
                start += p.seconds;
                here
            })
            .collect();
        Ok(self)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        anyhow::ensure!(
            positive(self.service_time_ms),
            "service_time_ms must be positive"
        );
        anyhow::ensure!(
            self.boot_delay_s.is_finite() && self.boot_delay_s >= 0.0,
            "boot_delay_s must not be negative"
        );
        anyhow::ensure!(
            self.tick_s >= 0.05 && self.tick_s.is_finite(),
            "tick_s must be at least 0.05"
        );
        anyhow::ensure!(
            !self.phases.is_empty(),
            "a trace needs at least one [[phase]]"
        );
        for (i, phase) in self.phases.iter().enumerate() {
            anyhow::ensure!(
                positive(phase.seconds),
                "phase {}: seconds must be positive",
                i + 1
            );
            let rates = [Some(phase.rate), phase.rate_end];
            anyhow::ensure!(
                rates
                    .iter()
                    .flatten()
                    .all(|r| r.is_finite() && *r >= 0.0 && *r <= 1e5),
                "phase {}: rates must be between 0 and 100000 per second",
                i + 1
            );
        }
        anyhow::ensure!(
            self.duration() <= 86_400.0,
            "a trace may cover at most one day"
        );
        Ok(())
    }

    /// Seconds covered by the phases.
    pub fn duration(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }

    /// Arrival rate (per second) at time `t`.
    pub fn rate_at(&self, t: f64) -> f64 {
        if t < 0.0 {
            return 0.0;
        }
        let index = self.starts.partition_point(|start| *start <= t);
        let Some(i) = index.checked_sub(1) else {
            return 0.0;
        };
        let (phase, start) = (&self.phases[i], self.starts[i]);
        if t >= start + phase.seconds {
            return 0.0;
        }
        let end = phase.rate_end.unwrap_or(phase.rate);
        let progress = (t - start) / phase.seconds;
        phase.rate + (end - phase.rate) * progress
    }
}
