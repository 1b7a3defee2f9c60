//! Scale out at once, scale in slowly. A backlog-driven policy wants fewer
//! instances the moment its fleet has worked the queue down, and more again
//! a tick later: followed literally, the default policy launched and
//! stopped 658 instances for a peak of 20 on the ramp trace. So the
//! controller follows a lower count only once it has been wanted for the
//! whole scale-in delay (it scales in to the highest count wanted within
//! the delay, as the Kubernetes HPA's stabilization window does), and then
//! stops at most `scale_in_step` instances per tick interval. Pure: the
//! clock is passed in.

use std::collections::VecDeque;

use crate::policy::Tuning;

/// Recommendations kept at most, whatever the delay: a day of 2 s ticks
/// with room for wake-ups, a bounded memory however a script sets it.
const MAX_WINDOW: usize = 65_536;

/// Pacing tolerance: a tick that comes a little early (timer jitter, a
/// wake-up) still counts as the next interval.
const EARLY_TICK: f64 = 0.9;

#[derive(Debug, Clone, Default)]
pub struct Stabilizer {
    /// (time, count wanted), oldest first, within the longest delay asked.
    window: VecDeque<(f64, u32)>,
    last_scale_in: Option<f64>,
    seeded: bool,
}

/// The count to move to, and why it differs from the one wanted.
#[derive(Debug, Clone, PartialEq)]
pub struct Stabilized {
    pub target: u32,
    pub note: Option<String>,
}

impl Stabilizer {
    /// The count to move to at time `t` (seconds, any fixed origin) when
    /// `wanted` instances are wanted (already within the limits) and
    /// `active` run or start.
    pub fn stabilize(&mut self, t: f64, wanted: u32, active: u32, tuning: &Tuning) -> Stabilized {
        if !self.seeded {
            // The fleet found at start counts as wanted just now: a
            // restarted controller does not stop adopted instances before
            // the delay has passed either.
            self.seeded = true;
            self.window.push_back((t, active));
        }
        // The window is (t - delay, t]: with no delay, only this answer.
        let delay = tuning.scale_in_delay_s.max(0.0);
        let horizon = t - delay;
        while self
            .window
            .front()
            .is_some_and(|(seen, _)| *seen <= horizon || self.window.len() >= MAX_WINDOW)
        {
            self.window.pop_front();
        }
        self.window.push_back((t, wanted));
        if wanted >= active {
            return Stabilized {
                target: wanted,
                note: None,
            };
        }
        let highest = self
            .window
            .iter()
            .map(|(_, count)| *count)
            .max()
            .unwrap_or(wanted);
        let delayed = highest.clamp(wanted, active);
        if delayed == active {
            return Stabilized {
                target: active,
                note: Some(format!(
                    "scale-in delay: {highest} wanted within the last {} s",
                    seconds(delay)
                )),
            };
        }
        let step = tuning.scale_in_step.max(1);
        let interval = tuning.interval_s.max(0.0);
        if self
            .last_scale_in
            .is_some_and(|last| t - last < interval * EARLY_TICK)
        {
            return Stabilized {
                target: active,
                note: Some(format!(
                    "scale-in rate: at most {step} per {} s",
                    seconds(interval)
                )),
            };
        }
        self.last_scale_in = Some(t);
        let paced = delayed.max(active.saturating_sub(step));
        let note = if paced > delayed {
            Some(format!(
                "scale-in rate: at most {step} per {} s",
                seconds(interval)
            ))
        } else if delayed > wanted {
            Some(format!(
                "scale-in delay: {highest} wanted within the last {} s",
                seconds(delay)
            ))
        } else {
            None
        };
        Stabilized {
            target: paced,
            note,
        }
    }
}

/// Seconds as an operator writes them: `30`, `0.5`.
fn seconds(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning(delay: f64, step: u32) -> Tuning {
        Tuning {
            scale_in_delay_s: delay,
            scale_in_step: step,
            interval_s: 2.0,
            ..Tuning::default()
        }
    }

    #[test]
    fn scale_out_is_immediate() {
        let mut s = Stabilizer::default();
        let t = tuning(30.0, 1);
        assert_eq!(s.stabilize(0.0, 5, 0, &t).target, 5);
        assert_eq!(s.stabilize(2.0, 9, 5, &t).target, 9);
    }

    #[test]
    fn scale_in_waits_for_the_delay_then_goes_at_the_step() {
        let mut s = Stabilizer::default();
        let t = tuning(30.0, 2);
        assert_eq!(s.stabilize(0.0, 8, 0, &t).target, 8);
        // Wanted lower from t = 2 s: held while the 8 is within 30 s.
        for tick in 1..=14 {
            let got = s.stabilize(tick as f64 * 2.0, 1, 8, &t);
            assert_eq!(got.target, 8, "t = {}", tick * 2);
            assert!(got.note.unwrap().starts_with("scale-in delay: 8 wanted"));
        }
        // t = 30: the 8 at t = 0 has left the window; 2 per tick from here.
        assert_eq!(s.stabilize(30.0, 1, 8, &t).target, 6);
        // A wake-up between ticks does not speed it up.
        let early = s.stabilize(30.5, 1, 6, &t);
        assert_eq!(early.target, 6);
        assert!(early.note.unwrap().starts_with("scale-in rate"));
        assert_eq!(s.stabilize(32.0, 1, 6, &t).target, 4);
        assert_eq!(s.stabilize(34.0, 1, 4, &t).target, 2);
        let last = s.stabilize(36.0, 1, 2, &t);
        assert_eq!(
            last,
            Stabilized {
                target: 1,
                note: None
            }
        );
    }

    #[test]
    fn scale_in_follows_the_highest_count_within_the_delay() {
        let mut s = Stabilizer::default();
        let t = tuning(10.0, 100);
        s.stabilize(0.0, 10, 0, &t);
        s.stabilize(4.0, 6, 10, &t);
        s.stabilize(8.0, 3, 10, &t);
        // At 12 the 10 (t = 0) is out of the window, the 6 (t = 4) is in.
        let got = s.stabilize(12.0, 2, 10, &t);
        assert_eq!(got.target, 6);
        assert!(got.note.unwrap().contains("6 wanted within the last 10 s"));
    }

    #[test]
    fn no_delay_and_a_large_step_follow_the_policy_exactly() {
        let mut s = Stabilizer::default();
        let t = tuning(0.0, u32::MAX);
        assert_eq!(s.stabilize(0.0, 20, 0, &t).target, 20);
        assert_eq!(s.stabilize(2.0, 0, 20, &t).target, 0);
        assert_eq!(s.stabilize(4.0, 3, 0, &t).target, 3);
    }

    #[test]
    fn a_fleet_found_at_start_is_kept_for_the_delay() {
        let mut s = Stabilizer::default();
        let t = tuning(30.0, 10);
        assert_eq!(s.stabilize(100.0, 0, 4, &t).target, 4);
        assert_eq!(s.stabilize(129.0, 0, 4, &t).target, 4);
        assert_eq!(s.stabilize(130.0, 0, 4, &t).target, 0);
    }
}
