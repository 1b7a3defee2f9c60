//! What a policy script can read.

use rhai::{Map, Scope, INT};
use serde::{Deserialize, Serialize};

/// The state the controller observed, as the script sees it. Documented for
/// operators in policies/README.md; keep the two in step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observation {
    /// Messages waiting in the request queue.
    pub visible: u64,
    /// Messages received by a worker and not yet deleted.
    pub in_flight: u64,
    pub running: u32,
    pub pending: u32,
    pub draining: u32,
    /// Running instances not working on a job right now.
    pub idle: u32,
    pub min: u32,
    pub max: u32,
    /// Seconds since the controller last launched or terminated anything;
    /// `None` before its first action (the script sees a very large number).
    pub since_last_scale_secs: Option<f64>,
    /// Unix time in seconds.
    pub now: f64,
    /// How old the queue and fleet counts are: 0 when this tick read them,
    /// else the seconds since they were last read (the counts are the last
    /// good ones).
    pub stale_secs: f64,
}

/// What "never" looks like to a script: larger than any delay a policy
/// would wait for.
const NEVER_SECS: f64 = 1e9;

impl Observation {
    pub fn backlog(&self) -> u64 {
        // Saturating: counts come from outside (SQS reports approximate
        // depths), and an overflow here panicked the controller (found by
        // policy::fuzz).
        self.visible.saturating_add(self.in_flight)
    }

    pub(super) fn fill_scope(&self, scope: &mut Scope) {
        let int = |n: u64| INT::try_from(n).unwrap_or(INT::MAX);
        let mut queue = Map::new();
        queue.insert("visible".into(), int(self.visible).into());
        queue.insert("in_flight".into(), int(self.in_flight).into());
        queue.insert("backlog".into(), int(self.backlog()).into());
        let mut instances = Map::new();
        instances.insert("running".into(), INT::from(self.running).into());
        instances.insert("pending".into(), INT::from(self.pending).into());
        instances.insert("draining".into(), INT::from(self.draining).into());
        instances.insert("idle".into(), INT::from(self.idle).into());
        instances.insert(
            "active".into(),
            INT::from(self.running.saturating_add(self.pending)).into(),
        );
        let mut limits = Map::new();
        limits.insert("min".into(), INT::from(self.min).into());
        limits.insert("max".into(), INT::from(self.max).into());
        let mut time = Map::new();
        let seconds_of_day = (self.now.max(0.0) as u64) % 86_400;
        time.insert("hour".into(), int(seconds_of_day / 3600).into());
        time.insert("minute".into(), int(seconds_of_day % 3600 / 60).into());
        // 1970-01-01 was a Thursday; 0 = Monday .. 6 = Sunday.
        let weekday = ((self.now.max(0.0) as u64) / 86_400 + 3) % 7;
        time.insert("weekday".into(), int(weekday).into());

        scope.push_constant("queue", queue);
        scope.push_constant("instances", instances);
        scope.push_constant("limits", limits);
        scope.push_constant(
            "since_last_scale",
            self.since_last_scale_secs.unwrap_or(NEVER_SECS),
        );
        scope.push_constant("now", self.now);
        scope.push_constant("time", time);
        scope.push_constant("stale_secs", self.stale_secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn every_documented_field_is_readable() {
        let observation = Observation {
            visible: 7,
            in_flight: 3,
            running: 2,
            pending: 1,
            draining: 1,
            idle: 1,
            min: 0,
            max: 20,
            since_last_scale_secs: Some(12.5),
            // 2026-12-02, a Wednesday (2), 14:30 UTC
            now: 1_796_221_800.0,
            stale_secs: 4.0,
        };
        let script = "queue.visible + queue.in_flight + queue.backlog + instances.running \
             + instances.pending + instances.draining + instances.idle + instances.active \
             + limits.min * 100 + limits.max + since_last_scale.to_int() + now.to_int() * 0 \
             + time.hour + time.minute + time.weekday + stale_secs.to_int()";
        let got = Policy::compile(script)
            .unwrap()
            .decide(&observation)
            .unwrap()
            .desired;
        assert_eq!(
            got,
            7 + 3 + 10 + 2 + 1 + 1 + 1 + 3 + 20 + 12 + 14 + 30 + 2 + 4
        );
    }
}
