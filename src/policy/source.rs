//! A policy file that operators edit while the controller runs. Each tick
//! re-reads it; a new version takes over only if it compiles, passes its
//! tests (when a [`ReloadGate`] is given) and then decides without error.
//! Otherwise the last good version stays in charge and the error is kept for
//! `GET /status`. The script's `state` lives here, not in a version, so it
//! carries over reloads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::state::{empty_state, Answer, HistoryEntry, Tuning};
use super::{
    Decision, Observation, Policy, PolicyError, PolicyErrorKind, PolicyInput, PolicyLimits,
};

/// What a new version must pass before it is applied: the policy's tests.
/// Defined here and implemented above this layer (the tests run the
/// simulator), so the controller can gate reloads without knowing how.
pub trait ReloadGate: Send + Sync {
    /// Changes when the tests for `policy_path` change, so that editing the
    /// tests alone runs them again.
    fn fingerprint(&self, policy_path: &Path) -> String;
    /// `Ok(summary)` when `policy` passes the tests for `policy_path`
    /// (`Ok(None)`: it has none), `Err(why)` otherwise.
    fn check(&self, policy_path: &Path, policy: &Policy) -> Result<Option<String>, String>;
}

pub struct PolicySource {
    path: PathBuf,
    /// Every version, and the built-in fallback, runs under these.
    limits: PolicyLimits,
    /// The file's text as last read, and the tests' fingerprint, to notice
    /// edits of either.
    text: String,
    fingerprint: String,
    gate: Option<Arc<dyn ReloadGate>>,
    /// The newest version that compiled (and passed its tests).
    newest: Arc<Policy>,
    /// The newest version that also decided without error.
    last_good: Arc<Policy>,
    /// The shipped default, compiled once: the fallback of last resort.
    builtin: Arc<Policy>,
    /// Why the file's current text is not in charge, if it is not.
    error: Option<PolicyError>,
    /// The tests the version in charge passed, in a line.
    tests: Option<String>,
    reloads: u64,
    /// What the script keeps between decisions.
    state: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub path: PathBuf,
    /// How many times an edit was picked up.
    pub reloads: u64,
    /// The error that keeps the file's current text out of charge.
    pub error: Option<PolicyError>,
    /// Human-readable form of `error`, e.g. "compile error at line 3, column 9: ...".
    pub error_text: Option<String>,
    /// The tests the version in charge passed (`None`: it has none).
    pub tests: Option<String>,
}

impl PolicySource {
    /// Loads the policy; a file that does not compile is refused here, so a
    /// typo is found when the service starts, not later.
    pub fn open(path: &Path) -> anyhow::Result<PolicySource> {
        PolicySource::open_with(path, PolicyLimits::default())
    }

    /// [`PolicySource::open`] with other limits (`--policy-deadline-ms`).
    pub fn open_with(path: &Path, limits: PolicyLimits) -> anyhow::Result<PolicySource> {
        PolicySource::open_gated(path, limits, None)
    }

    /// [`PolicySource::open_with`], with tests every version must pass: at
    /// start (a failing policy is refused, as one that does not compile)
    /// and on every reload.
    pub fn open_gated(
        path: &Path,
        limits: PolicyLimits,
        gate: Option<Arc<dyn ReloadGate>>,
    ) -> anyhow::Result<PolicySource> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", path.display()))?;
        let policy = Policy::compile_with(&text, limits)
            .map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
        let tests = match &gate {
            Some(gate) => gate
                .check(path, &policy)
                .map_err(|e| anyhow::anyhow!("policy {} fails its tests: {e}", path.display()))?,
            None => None,
        };
        let fingerprint = gate
            .as_ref()
            .map(|g| g.fingerprint(path))
            .unwrap_or_default();
        let policy = Arc::new(policy);
        Ok(PolicySource {
            path: path.to_owned(),
            limits,
            text,
            fingerprint,
            gate,
            newest: Arc::clone(&policy),
            last_good: policy,
            builtin: Arc::new(
                Policy::compile_with(super::DEFAULT_POLICY, limits)
                    .expect("the shipped default policy compiles"),
            ),
            error: None,
            tests,
            reloads: 0,
            state: empty_state(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the script keeps between decisions.
    pub fn state(&self) -> &Value {
        &self.state
    }

    /// Restores a state kept elsewhere (the data dir, after a restart).
    pub fn set_state(&mut self, state: Value) {
        if state.is_object() {
            self.state = state;
        }
    }

    /// Picks up an edit of the file or of its tests, if any.
    pub fn refresh(&mut self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                self.set_error(PolicyError {
                    kind: PolicyErrorKind::Compile,
                    message: format!("cannot read {}: {e}", self.path.display()),
                    line: None,
                    column: None,
                });
                return;
            }
        };
        let fingerprint = self
            .gate
            .as_ref()
            .map(|g| g.fingerprint(&self.path))
            .unwrap_or_default();
        if text == self.text && fingerprint == self.fingerprint {
            return;
        }
        self.text = text;
        self.fingerprint = fingerprint;
        self.reloads += 1;
        let policy = match Policy::compile_with(&self.text, self.limits) {
            Ok(policy) => policy,
            Err(e) => return self.set_error(e),
        };
        let tests = match &self.gate {
            Some(gate) => match gate.check(&self.path, &policy) {
                Ok(tests) => tests,
                Err(why) => return self.set_error(PolicyError::test(why)),
            },
            None => None,
        };
        tracing::info!(path = %self.path.display(), tests = tests.as_deref().unwrap_or("none"),
            "policy reloaded");
        self.newest = Arc::new(policy);
        self.tests = tests;
        self.error = None;
    }

    fn set_error(&mut self, error: PolicyError) {
        if self.error.as_ref() != Some(&error) {
            tracing::error!(path = %self.path.display(), %error,
                "policy not applied; the last good policy stays in charge");
        }
        self.error = Some(error);
    }

    /// The newest policy's decision, or the last good one's when the newest
    /// fails on this observation. Each evaluation may take up to the
    /// deadline (three when the newest and the last good version both
    /// fail): call it off the async runtime.
    pub fn decide(&mut self, observation: &Observation) -> Decision {
        self.evaluate(observation, &[], &Tuning::default()).decision
    }

    /// [`PolicySource::decide`] with the script's history and settings; the
    /// state the deciding version leaves is kept for the next decision (the
    /// built-in fallback neither reads nor changes it).
    pub fn evaluate(
        &mut self,
        observation: &Observation,
        history: &[HistoryEntry],
        tuning: &Tuning,
    ) -> Answer {
        let input = PolicyInput {
            observation,
            state: &self.state,
            history,
            tuning,
        };
        match self.newest.evaluate(&input) {
            Ok(answer) => {
                if !Arc::ptr_eq(&self.newest, &self.last_good) {
                    self.last_good = Arc::clone(&self.newest);
                }
                if self.error.as_ref().is_some_and(|e| {
                    !matches!(e.kind, PolicyErrorKind::Compile | PolicyErrorKind::Test)
                }) {
                    self.error = None;
                }
                self.state = answer.state.clone();
                answer
            }
            Err(error) => {
                self.set_error(error);
                let input = PolicyInput {
                    observation,
                    state: &self.state,
                    history,
                    tuning,
                };
                // The first that decides of: the last good version (unless it
                // is the one that just failed), then the shipped default.
                let last_good = (!Arc::ptr_eq(&self.last_good, &self.newest))
                    .then(|| self.last_good.evaluate(&input).ok())
                    .flatten();
                let mut answer = match last_good {
                    Some(answer) => {
                        self.state = answer.state.clone();
                        answer
                    }
                    None => {
                        let mut answer = self
                            .builtin
                            .evaluate(&PolicyInput {
                                state: &empty_state(),
                                ..input
                            })
                            .unwrap_or_else(|_| Answer {
                                decision: Decision {
                                    desired: observation
                                        .running
                                        .saturating_add(observation.pending),
                                    reason: "no policy could decide; holding".into(),
                                },
                                overrides: Default::default(),
                                state: empty_state(),
                            });
                        answer.state = self.state.clone();
                        answer
                    }
                };
                answer.decision.reason = format!("last good policy ({})", answer.decision.reason);
                answer
            }
        }
    }

    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            path: self.path.clone(),
            reloads: self.reloads,
            error: self.error.clone(),
            error_text: self.error.as_ref().map(ToString::to_string),
            tests: self.tests.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(visible: u64) -> Observation {
        Observation {
            visible,
            max: 20,
            ..Observation::default()
        }
    }

    #[test]
    fn edits_take_over_and_broken_edits_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scale.rhai");
        std::fs::write(&path, "(queue.backlog + 9) / 10").unwrap();
        let mut source = PolicySource::open(&path).unwrap();
        assert_eq!(source.decide(&backlog(35)).desired, 4);

        std::fs::write(&path, "(queue.backlog + 4) / 5").unwrap();
        source.refresh();
        assert_eq!(source.decide(&backlog(35)).desired, 7);
        assert!(source.status().error.is_none());

        std::fs::write(&path, "let x = ;").unwrap();
        source.refresh();
        assert_eq!(source.decide(&backlog(35)).desired, 7);
        let status = source.status();
        assert_eq!(status.error.as_ref().unwrap().line, Some(1));
        assert!(status
            .error_text
            .unwrap()
            .contains("compile error at line 1"));

        std::fs::write(&path, "loop {}").unwrap();
        source.refresh();
        let decision = source.decide(&backlog(35));
        assert_eq!(decision.desired, 7);
        assert!(decision.reason.starts_with("last good policy"));
        assert_eq!(
            source.status().error.unwrap().kind,
            PolicyErrorKind::OperationLimit
        );

        std::fs::write(&path, "1").unwrap();
        source.refresh();
        assert_eq!(source.decide(&backlog(35)).desired, 1);
        assert!(source.status().error.is_none());
        assert_eq!(source.status().reloads, 4);
    }

    #[test]
    fn a_policy_that_fails_on_some_input_falls_back_to_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scale.rhai");
        // Good on a small backlog, throws on a big one; never another version.
        std::fs::write(
            &path,
            "if queue.backlog > 100 { throw \"too big\" } queue.backlog",
        )
        .unwrap();
        let mut source = PolicySource::open(&path).unwrap();
        assert_eq!(source.decide(&backlog(7)).desired, 7);
        // The only good version is the one failing: the shipped default
        // (one per 10 messages, at most limits.max) decides.
        let decision = source.decide(&backlog(500));
        assert_eq!(decision.desired, 20);
        assert!(
            decision.reason.starts_with("last good policy"),
            "{decision:?}"
        );
        assert_eq!(
            source.status().error.unwrap().kind,
            PolicyErrorKind::Runtime
        );
        // The file's policy decides again where it can.
        assert_eq!(source.decide(&backlog(9)).desired, 9);
        assert!(source.status().error.is_none());
    }

    #[test]
    fn a_version_past_its_deadline_leaves_the_last_good_one_in_charge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scale.rhai");
        std::fs::write(&path, "(queue.backlog + 4) / 5").unwrap();
        let limits = PolicyLimits {
            deadline: std::time::Duration::from_millis(20),
            ..PolicyLimits::default()
        };
        let mut source = PolicySource::open_with(&path, limits).unwrap();
        assert_eq!(source.decide(&backlog(35)).desired, 7);
        // Slow in time, not in operations: each `contains` is one operation.
        std::fs::write(
            &path,
            "let a = []; for i in 0..1000 { a.push(i); }
             for i in 0..20000 { if a.contains(-1) { return 1; } }
             2",
        )
        .unwrap();
        source.refresh();
        let started = std::time::Instant::now();
        let decision = source.decide(&backlog(35));
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
        assert_eq!(decision.desired, 7);
        assert!(
            decision.reason.starts_with("last good policy"),
            "{decision:?}"
        );
        let error = source.status().error.unwrap();
        assert_eq!(error.kind, PolicyErrorKind::Deadline);
        assert!(
            source
                .status()
                .error_text
                .unwrap()
                .starts_with("deadline error"),
            "{error}"
        );
    }

    #[test]
    fn a_broken_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scale.rhai");
        std::fs::write(&path, "if {").unwrap();
        let err = PolicySource::open(&path).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
    const COUNTER: &str = "
        if !(\"n\" in state) { state.n = 0; }
        state.n += 1;
        #{ desired: state.n, reason: `tick ${state.n}` }";

    #[test]
    fn state_is_kept_between_decisions_and_across_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counter.rhai");
        std::fs::write(&path, COUNTER).unwrap();
        let mut source = PolicySource::open(&path).unwrap();
        let tuning = Tuning::default();
        assert_eq!(
            source.evaluate(&backlog(0), &[], &tuning).decision.desired,
            1
        );
        assert_eq!(
            source.evaluate(&backlog(0), &[], &tuning).decision.desired,
            2
        );
        // A new version reads the same state.
        std::fs::write(&path, "state.n += 10; state.n").unwrap();
        source.refresh();
        assert_eq!(
            source.evaluate(&backlog(0), &[], &tuning).decision.desired,
            12
        );
        // A version that throws after writing leaves the state as it was:
        // the last good version decides on the state before.
        std::fs::write(&path, "state.n = 1000; throw \"no\"").unwrap();
        source.refresh();
        let answer = source.evaluate(&backlog(0), &[], &tuning);
        assert_eq!(answer.decision.desired, 22);
        assert_eq!(source.state()["n"], 22);
        // A state restored from elsewhere (a restart) is what scripts see.
        std::fs::write(&path, COUNTER).unwrap();
        source.refresh();
        source.set_state(serde_json::json!({ "n": 41 }));
        assert_eq!(
            source.evaluate(&backlog(0), &[], &tuning).decision.desired,
            42
        );
    }

    /// Fails every version whose text contains "bad".
    struct NoBad;

    impl ReloadGate for NoBad {
        fn fingerprint(&self, _: &Path) -> String {
            String::new()
        }
        fn check(&self, path: &Path, _: &Policy) -> Result<Option<String>, String> {
            let text = std::fs::read_to_string(path).unwrap();
            if text.contains("bad") {
                Err("case \"bad\": expected no bad".into())
            } else {
                Ok(Some("1 case passed".into()))
            }
        }
    }

    #[test]
    fn a_version_failing_its_tests_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scale.rhai");
        std::fs::write(&path, "3").unwrap();
        let gate: Option<Arc<dyn ReloadGate>> = Some(Arc::new(NoBad));
        let mut source =
            PolicySource::open_gated(&path, PolicyLimits::default(), gate.clone()).unwrap();
        assert_eq!(source.status().tests.as_deref(), Some("1 case passed"));
        std::fs::write(&path, "// bad\n5").unwrap();
        source.refresh();
        assert_eq!(source.decide(&backlog(0)).desired, 3);
        let error = source.status().error.unwrap();
        assert_eq!(error.kind, PolicyErrorKind::Test);
        assert!(error.to_string().starts_with("test error: case"), "{error}");
        // It stays reported while deciding goes on.
        source.decide(&backlog(0));
        assert!(source.status().error.is_some());
        std::fs::write(&path, "6").unwrap();
        source.refresh();
        assert_eq!(source.decide(&backlog(0)).desired, 6);
        assert!(source.status().error.is_none());
        // At start a failing version is refused outright.
        std::fs::write(&path, "// bad\n5").unwrap();
        let refused = PolicySource::open_gated(&path, PolicyLimits::default(), gate)
            .err()
            .unwrap();
        assert!(refused.to_string().contains("fails its tests"), "{refused}");
    }
}
