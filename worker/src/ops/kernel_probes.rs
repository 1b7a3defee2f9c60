//! Time per call of the kernels' units of work (a streamed row, a 7x7
//! layer), by kind and shape, for `worker-bench --kernel-probes`: how far
//! below the FMA peak each runs inside the model, where `--profile-nodes`
//! sees whole nodes only and `perf` cannot tell apart the layers that
//! share one compiled kernel.
//!
//! Compiled in only with the `kernel-probes` feature (about 50 ns a call:
//! two clock reads and a map entry); without it [`start`] gives a
//! [`Timer`] that does nothing and [`take`] finds nothing.

use std::time::Duration;

/// A kind of kernel work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The stem's rows (`ConvRows` with 3x3 filters).
    StemRow,
    /// A 1x1 expansion's rows (`ConvRows`).
    ExpansionRow,
    /// A streamed depthwise convolution's rows, every channel.
    DepthwiseRow,
    /// A streamed projection's rows, written out.
    ProjectionRow,
    /// A whole 1x1 convolution with channels in the lanes (7x7 planes).
    LanesPointwise,
}

/// What one probe counts: a kind of work and its shape, `[input channels,
/// output channels, filter side, stride, output width]` (for a depthwise
/// convolution both channel counts are its channels; a whole layer's
/// width is its pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Probe {
    pub kind: Kind,
    pub shape: [usize; 5],
}

impl Probe {
    /// Multiply-adds one call does: every output times the filter's taps.
    pub fn fmas(&self) -> u64 {
        let [cin, cout, side, _, width] = self.shape.map(|d| d as u64);
        match self.kind {
            Kind::DepthwiseRow => cout * side * side * width,
            _ => cin * cout * side * side * width,
        }
    }
}

/// Calls of one probe and the time they took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub time: Duration,
}

/// Counts the time from [`start`] until it is dropped under its probe,
/// with the feature on; without it, nothing (a zero-sized value with no
/// `Drop`, so the kernels compile as if it were not there).
#[must_use = "the time counted ends when this is dropped"]
pub struct Timer {
    #[cfg(feature = "kernel-probes")]
    probe: Probe,
    #[cfg(feature = "kernel-probes")]
    started: std::time::Instant,
}

/// Starts timing the work until the returned [`Timer`] is dropped.
#[inline(always)]
pub fn start(probe: impl FnOnce() -> Probe) -> Timer {
    #[cfg(feature = "kernel-probes")]
    {
        Timer {
            probe: probe(),
            started: std::time::Instant::now(),
        }
    }
    #[cfg(not(feature = "kernel-probes"))]
    {
        let _ = probe;
        Timer {}
    }
}

#[cfg(feature = "kernel-probes")]
impl Drop for Timer {
    fn drop(&mut self) {
        enabled::record(self.probe, self.started.elapsed());
    }
}

/// Whether this build counts anything.
pub const ENABLED: bool = cfg!(feature = "kernel-probes");

/// This thread's counts so far, by probe, and a fresh start.
pub fn take() -> Vec<(Probe, Totals)> {
    #[cfg(feature = "kernel-probes")]
    {
        enabled::take()
    }
    #[cfg(not(feature = "kernel-probes"))]
    {
        Vec::new()
    }
}

#[cfg(feature = "kernel-probes")]
mod enabled {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::{Probe, Totals};

    thread_local! {
        static COUNTS: RefCell<BTreeMap<Probe, Totals>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub(super) fn record(probe: Probe, time: Duration) {
        COUNTS.with(|counts| {
            let mut counts = counts.borrow_mut();
            let totals = counts.entry(probe).or_default();
            totals.calls += 1;
            totals.time += time;
        });
    }

    pub(super) fn take() -> Vec<(Probe, Totals)> {
        COUNTS.with(|counts| {
            std::mem::take(&mut *counts.borrow_mut())
                .into_iter()
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_count_only_with_the_feature() {
        let probe = Probe {
            kind: Kind::ProjectionRow,
            shape: [96, 24, 1, 1, 56],
        };
        assert_eq!(probe.fmas(), 96 * 24 * 56);
        take();
        for _ in 0..2 {
            let _timer = start(|| probe);
        }
        let counts = take();
        if ENABLED {
            assert_eq!(counts.len(), 1);
            assert_eq!(counts[0].0, probe);
            assert_eq!(counts[0].1.calls, 2);
        } else {
            assert!(counts.is_empty());
            assert_eq!(std::mem::size_of::<Timer>(), 0);
        }
        assert!(take().is_empty(), "take starts afresh");
    }

    #[test]
    fn depthwise_work_counts_each_channel_once() {
        let probe = Probe {
            kind: Kind::DepthwiseRow,
            shape: [672, 672, 5, 1, 14],
        };
        assert_eq!(probe.fmas(), 672 * 25 * 14);
    }
}
