//! Backing off after failed launches: a launch that fails (no capacity, a
//! bad AMI, a missing permission) is tried again after 2 s, 4 s, 8 s, ...
//! up to 5 minutes, not on every controller tick forever. While it waits,
//! asking again is an error that says when the next attempt is and why the
//! last one failed, which the controller shows in its status.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(2);
const LONGEST: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: String,
}

impl Backoff {
    /// `Err(why not)` while waiting; `Ok` when an attempt may go ahead.
    pub(super) fn check(&self, now: Instant) -> Result<(), String> {
        match self.next_attempt {
            Some(at) if now < at => Err(format!(
                "{} failed launch{} in a row, next attempt in {} s; last error: {}",
                self.failures,
                if self.failures == 1 { "" } else { "es" },
                (at - now).as_secs_f64().ceil() as u64,
                self.last_error
            )),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns how long until the next attempt.
    pub(super) fn failed(&mut self, now: Instant, error: String) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(LONGEST);
        self.next_attempt = Some(now + delay);
        self.last_error = error;
        delay
    }

    pub(super) fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_five_minutes_and_reset_on_success() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.check(start).is_ok());
        let delays: Vec<u64> = (0..10)
            .map(|_| backoff.failed(start, "no capacity".into()).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        let why = backoff.check(start + Duration::from_secs(1)).unwrap_err();
        assert!(why.contains("10 failed launches"), "{why}");
        assert!(why.contains("no capacity"), "{why}");
        assert!(backoff.check(start + LONGEST).is_ok());
        backoff.succeeded();
        assert_eq!(backoff.failed(start, "again".into()), FIRST);
    }
}
