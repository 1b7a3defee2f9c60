//! What goes wrong in a simulated run: the queue and fleet unobservable for
//! a while, counts off by some fraction, instances that boot slowly or not
//! at all, workers that crash mid-job. Set in a trace's `[faults]` table
//! or with `simulate --fault KEY=VALUE`; drawn from a seeded generator, so
//! a run repeats exactly.

use serde::Deserialize;

use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seeds the draws below.
    pub seed: u64,
    /// `[start, end)` in seconds during which nothing can be observed: the
    /// controller sees the last good counts, `stale_secs` and falls back.
    pub outages: Vec<[f64; 2]>,
    /// Each observed count is off by up to this fraction either way.
    pub count_noise: f64,
    /// The share of launches that never become ready (they vanish at the
    /// end of their boot, as a worker that exits at start-up does).
    pub boot_failure: f64,
    /// The share of launches that take `slow_boot_factor` times the boot
    /// delay.
    pub slow_boot: f64,
    pub slow_boot_factor: f64,
    /// Crashes per instance-hour; a crashed worker's job comes back to the
    /// queue when its lease runs out.
    pub crashes_per_hour: f64,
    pub lease_s: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 1,
            outages: Vec::new(),
            count_noise: 0.0,
            boot_failure: 0.0,
            slow_boot: 0.0,
            slow_boot_factor: 5.0,
            crashes_per_hour: 0.0,
            lease_s: 10.0,
        }
    }
}

impl Faults {
    pub fn validate(&self) -> anyhow::Result<()> {
        let share = |name: &str, v: f64| {
            anyhow::ensure!(
                (0.0..=1.0).contains(&v),
                "faults: {name} must be between 0 and 1, got {v}"
            );
            Ok(())
        };
        share("count_noise", self.count_noise)?;
        share("boot_failure", self.boot_failure)?;
        share("slow_boot", self.slow_boot)?;
        anyhow::ensure!(
            self.slow_boot_factor.is_finite() && self.slow_boot_factor >= 1.0,
            "faults: slow_boot_factor must be at least 1"
        );
        anyhow::ensure!(
            self.crashes_per_hour.is_finite() && self.crashes_per_hour >= 0.0,
            "faults: crashes_per_hour must not be negative"
        );
        anyhow::ensure!(
            self.lease_s.is_finite() && self.lease_s >= 0.0,
            "faults: lease_s must not be negative"
        );
        for [start, end] in &self.outages {
            anyhow::ensure!(
                start.is_finite() && end.is_finite() && start < end,
                "faults: an outage is [start, end) with start < end, got [{start}, {end}]"
            );
        }
        Ok(())
    }

    pub fn any(&self) -> bool {
        let quiet = Faults {
            seed: self.seed,
            ..Faults::default()
        };
        *self != quiet
    }

    pub fn in_outage(&self, t: f64) -> bool {
        self.outages
            .iter()
            .any(|[start, end]| *start <= t && t < *end)
    }

    /// Applies `KEY=VALUE`, as given to `simulate --fault`: `outage=A..B`
    /// (adds one), `count_noise=0.2`, `boot_failure=0.1`, `slow_boot=0.2`,
    /// `slow_boot_factor=5`, `crashes_per_hour=2`, `lease_s=10`, `seed=7`.
    pub fn set(&mut self, assignment: &str) -> anyhow::Result<()> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--fault {assignment:?}: expected KEY=VALUE"))?;
        let number = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| anyhow::anyhow!("--fault {key}: {v:?} is not a number"))
        };
        match key.trim() {
            "outage" | "outages" => {
                let (a, b) = value.split_once("..").ok_or_else(|| {
                    anyhow::anyhow!("--fault outage={value}: expected START..END in seconds")
                })?;
                self.outages.push([number(a)?, number(b)?]);
            }
            "count_noise" => self.count_noise = number(value)?,
            "boot_failure" => self.boot_failure = number(value)?,
            "slow_boot" => self.slow_boot = number(value)?,
            "slow_boot_factor" => self.slow_boot_factor = number(value)?,
            "crashes_per_hour" => self.crashes_per_hour = number(value)?,
            "lease_s" => self.lease_s = number(value)?,
            "seed" => {
                self.seed = value
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--fault seed: {value:?} is not a number"))?
            }
            other => anyhow::bail!(
                "--fault {other}: unknown; known: outage, count_noise, boot_failure, slow_boot, \
                 slow_boot_factor, crashes_per_hour, lease_s, seed"
            ),
        }
        self.validate()
    }
}

/// `count` off by up to `noise` of itself either way.
pub fn noisy(rng: &mut Rng, count: u64, noise: f64) -> u64 {
    if noise <= 0.0 {
        return count;
    }
    let factor = 1.0 + noise * (2.0 * rng.unit() - 1.0);
    (count as f64 * factor).round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_set_from_the_command_line() {
        let mut faults = Faults::default();
        faults.set("outage=30..45").unwrap();
        faults.set("count_noise=0.25").unwrap();
        faults.set("crashes_per_hour=6").unwrap();
        assert_eq!(faults.outages, [[30.0, 45.0]]);
        assert!(faults.in_outage(30.0) && faults.in_outage(44.9) && !faults.in_outage(45.0));
        assert!(faults.any());
        assert!(faults.set("boot_failure=2").is_err());
        assert!(faults.set("meteor=1").is_err());
        assert!(faults.set("outage=5..1").is_err());
    }

    #[test]
    fn draws_repeat_from_the_seed() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..5)
                .map(|_| noisy(&mut rng, 100, 0.2))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(draw(3).iter().all(|n| (80..=120).contains(n)));
        assert_ne!(draw(3), draw(4));
    }
}
