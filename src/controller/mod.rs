//! The controller: a reconcile loop. Each tick observes the queue and the
//! fleet, asks the policy for a count, plans the difference within the
//! limits (holding scale-in for the scale-in delay and rate, falling back
//! when the counts are stale), and applies it (or, in dry run, prints it).
//! Ticks come every interval, and at once when jobs arrive at an empty
//! fleet (`wake`). Each tick is recorded (`decisions`), shadow policies are
//! evaluated beside the live one (`shadow`), and the policy's state is kept
//! in the data dir (`state_file`).

mod activity;
pub mod decide;
pub mod decisions;
pub mod plan;
mod shadow;
pub mod stabilize;
pub mod state_file;
mod status;
#[cfg(test)]
mod tests;
pub mod wake;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tracing::Instrument;

pub use activity::{Activity, ScaleEvent};
pub use plan::{Action, Limits, Plan};
pub use shadow::ShadowStatus;
pub use status::{AutoscalerStatus, ControllerStatus, OutageStatus, SharedStatus, TickCounts};
pub use wake::Arrivals;

use crate::fleet::{Fleet, Instance};
use crate::policy::{PolicySource, Tuning, DEFAULT_HISTORY};
use crate::queue::{Queue, QueueDepth};
use crate::shutdown::Shutdown;
use decide::Decider;
use decisions::{DecisionLog, DecisionRecord, ShadowRecord};
use shadow::Shadow;
use state_file::{SavedStates, StateFile};
use wake::{worth_waking, Cause, COUNTER_POLL, DEPTH_POLL, MIN_WAKE_GAP};

/// The cap on EC2 instances unless `--max-instances` says otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = 20;

/// The longest the controller waits for the queue's or the fleet's answer
/// before it counts as an outage.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ControllerSettings {
    pub interval: Duration,
    pub limits: Limits,
    /// Print each plan instead of applying it.
    pub dry_run: bool,
    /// Scale-in delay and rate, outage fallback (its `interval_s` is
    /// `interval`'s).
    pub tuning: Tuning,
    /// Observations the script sees in `history`.
    pub history_len: usize,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            interval: Duration::from_secs(2),
            limits: Limits::default(),
            dry_run: false,
            tuning: Tuning::default(),
            history_len: DEFAULT_HISTORY,
        }
    }
}

/// Counts the controller read last, and when.
struct Seen<T> {
    value: T,
    at: Instant,
}

/// What the run loop knows of the queue between ticks, to notice the first
/// job while the fleet is at zero.
#[derive(Default)]
struct QueueWatch {
    /// The queue's send counter at the last look (`None`: none read yet).
    sent: Option<u64>,
    /// Whether the queue keeps a counter (`None`: not asked yet).
    counted: Option<bool>,
    /// Visible messages at the last look (for queues without a counter).
    visible: u64,
}

pub struct Controller {
    queue: Arc<dyn Queue>,
    fleet: Arc<dyn Fleet>,
    /// Shared with the blocking thread that evaluates it.
    policy: Arc<Mutex<PolicySource>>,
    shadows: Arc<Mutex<Vec<Shadow>>>,
    settings: ControllerSettings,
    status: SharedStatus,
    last_scale: Option<Instant>,
    decider: Decider,
    /// The stabilizer's clock.
    started: Instant,
    depth: Option<Seen<QueueDepth>>,
    instances: Option<Seen<Vec<Instance>>>,
    outage_since: Option<u64>,
    /// Jobs this process's web tier queued, and how many the last tick saw.
    arrivals: Arc<Arrivals>,
    arrivals_seen: u64,
    watch: QueueWatch,
    /// Instances running or starting at the last tick (`None`: no tick yet).
    active: Option<u32>,
    ticks: TickCounts,
    log: Option<DecisionLog>,
    state_file: Option<StateFile>,
    saved: SavedStates,
}

impl Controller {
    pub fn new(
        queue: Arc<dyn Queue>,
        fleet: Arc<dyn Fleet>,
        policy: PolicySource,
        settings: ControllerSettings,
    ) -> Controller {
        let mut settings = settings;
        settings.tuning.interval_s = settings.interval.as_secs_f64();
        let status = SharedStatus::new(&settings, policy.status());
        let decider = Decider::new(settings.limits, settings.tuning, settings.history_len);
        Controller {
            queue,
            fleet,
            policy: Arc::new(Mutex::new(policy)),
            shadows: Arc::new(Mutex::new(Vec::new())),
            settings,
            status,
            last_scale: None,
            decider,
            started: Instant::now(),
            depth: None,
            instances: None,
            outage_since: None,
            arrivals: Arc::new(Arrivals::default()),
            arrivals_seen: 0,
            watch: QueueWatch::default(),
            active: None,
            ticks: TickCounts::default(),
            log: None,
            state_file: None,
            saved: SavedStates::default(),
        }
    }

    /// Candidates evaluated beside the live policy, never applied.
    pub fn with_shadows(self, shadows: Vec<PolicySource>) -> Controller {
        {
            let mut list = self.shadows.lock().unwrap_or_else(PoisonError::into_inner);
            list.extend(shadows.into_iter().map(|source| {
                Shadow::new(
                    source,
                    self.settings.limits,
                    self.settings.tuning,
                    self.settings.history_len,
                )
            }));
        }
        self
    }

    /// Keeps the policies' state in `DATA/policy-state.json` (restoring it
    /// now) and each tick's record in `DATA/decisions/` (`log_files` files
    /// of at most 8 MiB; 0: no log).
    pub fn with_data_dir(
        mut self,
        data_dir: &Path,
        log_files: usize,
    ) -> anyhow::Result<Controller> {
        let file = StateFile::new(data_dir.join("policy-state.json"));
        self.saved = file.load().unwrap_or_else(|e| {
            tracing::warn!(
                error = format!("{e:#}"),
                "the saved policy state is unreadable; starting afresh"
            );
            SavedStates::default()
        });
        {
            let mut policy = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
            policy.set_state(self.saved.live.clone());
            let mut shadows = self.shadows.lock().unwrap_or_else(PoisonError::into_inner);
            for shadow in shadows.iter_mut() {
                let key = shadow.status().path.display().to_string();
                if let Some(state) = self.saved.shadows.get(&key) {
                    shadow.source_mut().set_state(state.clone());
                }
            }
        }
        self.state_file = Some(file);
        if log_files > 0 {
            let log = DecisionLog::open(
                &data_dir.join("decisions"),
                log_files,
                decisions::DEFAULT_FILE_BYTES,
            )?;
            let dir = log.dir().to_owned();
            self.status
                .record_autoscaler(|a| a.decision_log = Some(dir));
            self.log = Some(log);
        }
        let state = self.saved.live.clone();
        self.status.record_autoscaler(|a| a.policy_state = state);
        Ok(self)
    }

    /// What `GET /status` shows.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// The web tier in this process rings this for each job it queues, so
    /// a job at an empty fleet starts a worker at once.
    pub fn arrivals(&self) -> Arc<Arrivals> {
        Arc::clone(&self.arrivals)
    }

    /// One reconcile step: observe, decide, plan, then apply or print.
    pub async fn tick(&mut self) -> anyhow::Result<Plan> {
        self.tick_because(Cause::Interval).await
    }

    async fn tick_because(&mut self, cause: Cause) -> anyhow::Result<Plan> {
        self.arrivals_seen = self.arrivals.count();
        let (observation, instances, sent, outage) = self.observe().await;
        let stale_secs = observation.stale_secs;
        // Reading the file and running the script block for up to the
        // policy's deadline (a few times over when versions fail): on the
        // async runtime that stalled every task on this worker thread,
        // `/healthz` included.
        let policy = Arc::clone(&self.policy);
        let observed = observation.clone();
        let history = self.decider.history();
        let tuning = *self.decider.tuning();
        let (answer, policy_status, state) = tokio::task::spawn_blocking(move || {
            let mut policy = policy.lock().unwrap_or_else(PoisonError::into_inner);
            policy.refresh();
            let answer = policy.evaluate(&observed, &history, &tuning);
            (answer, policy.status(), policy.state().clone())
        })
        .await
        .context("evaluating the policy")?;
        let t = self.started.elapsed().as_secs_f64();
        let plan = self.decider.plan(t, &answer, observation, &instances);

        // Apply first: the rest of the tick (shadows, records, the state
        // file) must not delay a launch.
        let mut launched = Vec::new();
        let mut apply_error = None;
        if self.settings.dry_run {
            // The product of a dry run: one line per tick on stdout.
            println!("{plan}");
        } else {
            match self.apply(&plan).await {
                Ok(ids) => launched = ids,
                Err(e) => apply_error = Some(e),
            }
        }
        // What runs now: after a scale-in to zero, the next job must find
        // the controller watching for arrivals at an empty fleet, not
        // waiting for the tick to notice the fleet is gone.
        let observed = plan.observation.running + plan.observation.pending;
        let applied = !self.settings.dry_run && apply_error.is_none();
        self.active = Some(match &plan.action {
            Action::Launch(k) if applied => observed.saturating_add(*k),
            Action::Terminate(ids) if applied => observed.saturating_sub(ids.len() as u32),
            _ => observed,
        });
        self.status
            .record(&plan, instances.clone(), policy_status.clone());
        let shadows = self.evaluate_shadows(t, &plan, &instances).await;

        self.ticks.total += 1;
        match cause {
            Cause::Arrival => self.ticks.woken_by_arrivals += 1,
            Cause::Queue => self.ticks.woken_by_queue += 1,
            Cause::Interval => {}
        }
        self.ticks.last_cause = Some(cause);
        let outage_status = (!outage.is_empty()).then(|| OutageStatus {
            errors: outage.clone(),
            since_ms: *self
                .outage_since
                .get_or_insert_with(crate::job::unix_millis),
            stale_secs,
            fallback: self.decider.tuning().with(&answer.overrides).on_outage,
        });
        if outage.is_empty() {
            if self.outage_since.take().is_some() {
                tracing::info!("the queue and the fleet answer again");
            }
        } else {
            tracing::warn!(stale_secs, errors = ?outage, "{plan}");
            self.status.record_error(outage.join("; "));
        }
        let shadow_status: Vec<ShadowStatus> = self
            .shadows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| s.status().clone())
            .collect();
        let ticks = self.ticks.clone();
        let live_state = state.clone();
        self.status.record_autoscaler(move |a| {
            a.outage = outage_status;
            a.shadows = shadow_status;
            a.policy_state = live_state;
            a.ticks = ticks;
        });

        if let Some(log) = &self.log {
            log.append(&DecisionRecord {
                t: plan.observation.now,
                tick: self.ticks.total,
                cause,
                interval_s: self.settings.interval.as_secs_f64(),
                dry_run: self.settings.dry_run,
                limits: self.settings.limits,
                tuning: *self.decider.tuning(),
                overrides: answer.overrides,
                sent,
                outage: (!outage.is_empty()).then(|| outage.join("; ")),
                instances,
                plan: plan.clone(),
                policy_error: policy_status.error_text.clone(),
                launched,
                apply_error: apply_error.as_ref().map(|e| format!("{e:#}")),
                shadows,
            });
        }
        self.save_state(state).await;
        match apply_error {
            Some(e) => Err(e),
            None => Ok(plan),
        }
    }

    /// The queue's depth and the fleet, each the last good value (with its
    /// age as `stale_secs`) when it cannot be read now.
    async fn observe(
        &mut self,
    ) -> (
        crate::policy::Observation,
        Vec<Instance>,
        Option<u64>,
        Vec<String>,
    ) {
        let mut outage = Vec::new();
        let depth = tokio::time::timeout(OBSERVE_TIMEOUT, self.queue.depth()).await;
        let depth = match depth {
            Ok(Ok(depth)) => {
                self.depth = Some(Seen {
                    value: depth,
                    at: Instant::now(),
                });
                Some(depth)
            }
            Ok(Err(e)) => {
                outage.push(format!("observing the queue: {e}"));
                None
            }
            Err(_) => {
                outage.push(format!(
                    "observing the queue: no answer within {OBSERVE_TIMEOUT:?}"
                ));
                None
            }
        };
        let sent = match depth {
            Some(_) => tokio::time::timeout(OBSERVE_TIMEOUT, self.queue.sent_count())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            None => None,
        };
        if let Some(sent) = sent {
            self.watch.sent = Some(sent);
            self.watch.counted = Some(true);
        }
        let listed = tokio::time::timeout(OBSERVE_TIMEOUT, self.fleet.list()).await;
        let listed = match listed {
            Ok(Ok(instances)) => {
                self.instances = Some(Seen {
                    value: instances.clone(),
                    at: Instant::now(),
                });
                Some(instances)
            }
            Ok(Err(e)) => {
                outage.push(format!("observing the fleet: {e}"));
                None
            }
            Err(_) => {
                outage.push(format!(
                    "observing the fleet: no answer within {OBSERVE_TIMEOUT:?}"
                ));
                None
            }
        };
        // How old the oldest count in use is; never zero when stale, so a
        // script (and the fallback) can tell.
        let age = |at: Option<Instant>| {
            at.unwrap_or(self.started)
                .elapsed()
                .as_secs_f64()
                .max(0.001)
        };
        let mut stale_secs: f64 = 0.0;
        let depth = depth.unwrap_or_else(|| {
            stale_secs = stale_secs.max(age(self.depth.as_ref().map(|s| s.at)));
            self.depth.as_ref().map(|s| s.value).unwrap_or_default()
        });
        let instances = listed.unwrap_or_else(|| {
            stale_secs = stale_secs.max(age(self.instances.as_ref().map(|s| s.at)));
            self.instances
                .as_ref()
                .map(|s| s.value.clone())
                .unwrap_or_default()
        });
        self.watch.visible = depth.visible;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let since_last_scale = self.last_scale.map(|t| t.elapsed().as_secs_f64());
        let mut observation = plan::observe(
            depth,
            &instances,
            self.settings.limits,
            since_last_scale,
            now,
        );
        observation.stale_secs = stale_secs;
        (observation, instances, sent, outage)
    }

    async fn evaluate_shadows(
        &mut self,
        t: f64,
        live: &Plan,
        instances: &[Instance],
    ) -> Vec<ShadowRecord> {
        let shadows = Arc::clone(&self.shadows);
        if shadows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            return Vec::new();
        }
        let live = live.clone();
        let instances = instances.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut shadows = shadows.lock().unwrap_or_else(PoisonError::into_inner);
            shadows
                .iter_mut()
                .map(|s| s.evaluate(t, &live.observation, &instances, &live))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Writes the policies' states to the data dir when they changed.
    async fn save_state(&mut self, live: serde_json::Value) {
        let Some(file) = self.state_file.clone() else {
            return;
        };
        let shadows = self
            .shadows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| {
                (
                    s.status().path.display().to_string(),
                    s.status().state.clone(),
                )
            })
            .collect();
        let states = SavedStates { live, shadows };
        if states == self.saved {
            return;
        }
        self.saved = states.clone();
        let saved = tokio::task::spawn_blocking(move || file.save(&states)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = format!("{e:#}"), "cannot save the policy state");
        }
    }

    /// Launches or terminates; returns the ids launched.
    async fn apply(&mut self, plan: &Plan) -> anyhow::Result<Vec<String>> {
        let launched = match &plan.action {
            Action::Hold => {
                tracing::debug!("{plan}");
                return Ok(Vec::new());
            }
            Action::Launch(count) => {
                tracing::info!("{plan}");
                self.fleet.launch(*count as usize).await?
            }
            Action::Terminate(ids) => {
                tracing::info!("{plan}");
                self.fleet.terminate(ids).await?;
                Vec::new()
            }
        };
        self.last_scale = Some(Instant::now());
        Ok(launched)
    }

    /// Whether the queue has changed in a way that wants a tick while the
    /// fleet is at zero: a send counted since the last look, or (without a
    /// counter) more visible messages than the last tick saw.
    async fn queue_changed(&mut self) -> bool {
        if self.watch.counted != Some(false) {
            match tokio::time::timeout(OBSERVE_TIMEOUT, self.queue.sent_count()).await {
                Ok(Ok(Some(sent))) => {
                    self.watch.counted = Some(true);
                    let changed = self.watch.sent.is_some_and(|seen| sent > seen);
                    self.watch.sent = Some(sent);
                    return changed;
                }
                Ok(Ok(None)) => self.watch.counted = Some(false),
                _ => return false,
            }
        }
        match tokio::time::timeout(OBSERVE_TIMEOUT, self.queue.depth()).await {
            Ok(Ok(depth)) => depth.visible > self.watch.visible,
            _ => false,
        }
    }

    /// Ticks every `interval` until shutdown, and at once when jobs arrive
    /// at an empty fleet or the backlog jumps. A tick that fails (the
    /// fleet refuses a launch) is logged and the next one tries again.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        let arrivals = Arc::clone(&self.arrivals);
        // Woken ticks come at most every MIN_WAKE_GAP; a regular tick does
        // not delay a wake-up (the first job after a scale-in to zero
        // comes just after the tick that stopped the last worker).
        let mut last_woken: Option<Instant> = None;
        loop {
            // At zero, watch the queue: jobs from another process's web
            // tier ring no bell here.
            let watch = match self.active {
                Some(0) if self.watch.counted == Some(false) => Some(DEPTH_POLL),
                Some(0) => Some(COUNTER_POLL),
                _ => None,
            };
            let cause = tokio::select! {
                _ = shutdown.requested() => break,
                _ = ticker.tick() => Cause::Interval,
                () = arrivals.rung() => {
                    let arrived = arrivals.count().saturating_sub(self.arrivals_seen);
                    if !worth_waking(arrived, self.active.unwrap_or(0)) {
                        continue;
                    }
                    Cause::Arrival
                }
                () = tokio::time::sleep(watch.unwrap_or(Duration::ZERO)), if watch.is_some() => {
                    if !self.queue_changed().await {
                        continue;
                    }
                    Cause::Queue
                }
            };
            if cause != Cause::Interval {
                if let Some(gap) = last_woken
                    .map(|t| t.elapsed())
                    .filter(|g| *g < MIN_WAKE_GAP)
                {
                    tokio::time::sleep(MIN_WAKE_GAP - gap).await;
                }
                // The next regular tick comes an interval after this one.
                ticker.reset();
                tracing::debug!(?cause, "woken before the tick");
                last_woken = Some(Instant::now());
            }
            // The controller serves no request, so its lines carry the tick
            // instead: the lines of one decision read together.
            ticks += 1;
            let span = tracing::info_span!("tick", n = ticks);
            if let Err(e) = self.tick_because(cause).instrument(span.clone()).await {
                let _in_tick = span.enter();
                tracing::error!(error = format!("{e:#}"), "controller tick failed");
                self.status.record_error(format!("{e:#}"));
            }
        }
    }
}
