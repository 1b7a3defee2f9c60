//! A policy file that operators edit while the controller runs. Each tick
//! re-reads it; a new version takes over only if it compiles and then
//! decides without error. Otherwise the last good version stays in charge and
//! the error is kept for `GET /status`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{Decision, Observation, Policy, PolicyError, PolicyErrorKind, PolicyLimits};

pub struct PolicySource {
    path: PathBuf,
    /// Every version, and the built-in fallback, runs under these.
    limits: PolicyLimits,
    /// The file's text as last read, to notice edits.
    text: String,
    /// The newest version that compiled.
    newest: Arc<Policy>,
    /// The newest version that also decided without error.
    last_good: Arc<Policy>,
    /// The shipped default, compiled once: the fallback of last resort.
    builtin: Arc<Policy>,
    /// Why the file's current text is not in charge, if it is not.
    error: Option<PolicyError>,
    reloads: u64,
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
}

impl PolicySource {
    /// Loads the policy; a file that does not compile is refused here, so a
    /// typo is found when the service starts, not later.
    pub fn open(path: &Path) -> anyhow::Result<PolicySource> {
        PolicySource::open_with(path, PolicyLimits::default())
    }

    /// [`PolicySource::open`] with other limits (`--policy-deadline-ms`).
    pub fn open_with(path: &Path, limits: PolicyLimits) -> anyhow::Result<PolicySource> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", path.display()))?;
        let policy = Arc::new(
            Policy::compile_with(&text, limits)
                .map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?,
        );
        Ok(PolicySource {
            path: path.to_owned(),
            limits,
            text,
            newest: Arc::clone(&policy),
            last_good: policy,
            builtin: Arc::new(
                Policy::compile_with(super::DEFAULT_POLICY, limits)
                    .expect("the shipped default policy compiles"),
            ),
            error: None,
            reloads: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Picks up an edit of the file, if any.
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
        if text == self.text {
            return;
        }
        self.text = text;
        self.reloads += 1;
        match Policy::compile_with(&self.text, self.limits) {
            Ok(policy) => {
                tracing::info!(path = %self.path.display(), "policy reloaded");
                self.newest = Arc::new(policy);
                self.error = None;
            }
            Err(e) => self.set_error(e),
        }
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
        match self.newest.decide(observation) {
            Ok(decision) => {
                if !Arc::ptr_eq(&self.newest, &self.last_good) {
                    self.last_good = Arc::clone(&self.newest);
                }
                if self
                    .error
                    .as_ref()
                    .is_some_and(|e| e.kind != PolicyErrorKind::Compile)
                {
                    self.error = None;
                }
                decision
            }
            Err(error) => {
                self.set_error(error);
                // The first that decides of: the last good version (unless it
                // is the one that just failed), then the shipped default.
                let mut decision = [&self.last_good, &self.builtin]
                    .into_iter()
                    .filter(|policy| !Arc::ptr_eq(policy, &self.newest))
                    .find_map(|policy| policy.decide(observation).ok())
                    .unwrap_or_else(|| Decision {
                        desired: observation.running + observation.pending,
                        reason: "no policy could decide; holding".into(),
                    });
                decision.reason = format!("last good policy ({})", decision.reason);
                decision
            }
        }
    }

    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            path: self.path.clone(),
            reloads: self.reloads,
            error: self.error.clone(),
            error_text: self.error.as_ref().map(ToString::to_string),
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
}
