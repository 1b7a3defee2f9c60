//! The scaling policy: a Rhai script that reads the observed state and
//! returns how many instances it wants. Pure: no clock, no I/O; the caller
//! passes everything in. The script runs sandboxed (see [`sandbox`]): no
//! modules, no file, network or process access, bounded operations, sizes
//! and wall-clock time.

#[cfg(test)]
mod fuzz;
mod observation;
pub mod sandbox;
mod source;
pub mod state;

use std::time::Duration;

use rhai::{
    Dynamic, Engine, EvalAltResult, LexError, Map, ParseError, ParseErrorType, Position, Scope, AST,
};
use serde::{Deserialize, Serialize};

pub use observation::Observation;
pub use sandbox::{PolicyLimits, DEFAULT_DEADLINE, MAX_OPERATIONS};
pub use source::{PolicySource, PolicyStatus, ReloadGate};
pub use state::{
    empty_state, Answer, HistoryEntry, OnOutage, Overrides, Tuning, DEFAULT_HISTORY,
    MAX_STATE_BYTES,
};

/// The policy shipped in policies/scale.rhai, built in so a broken or
/// missing file never leaves the fleet without a policy.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/scale.rhai");

/// The most instances a script may ask for; anything above is nonsense,
/// not a count (the configured cap still clamps sane values).
pub const MAX_SANE_DESIRED: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// As returned by the script, before clamping.
    pub desired: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{kind} error{}: {message}", location(*.line, *.column))]
pub struct PolicyError {
    pub kind: PolicyErrorKind,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyErrorKind {
    Compile,
    Runtime,
    OperationLimit,
    /// The decision took longer than the wall-clock deadline.
    Deadline,
    BadResult,
    /// The version fails its tests (`<name>.test.toml`).
    Test,
}

impl std::fmt::Display for PolicyErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicyErrorKind::Compile => "compile",
            PolicyErrorKind::Runtime => "runtime",
            PolicyErrorKind::OperationLimit => "operation limit",
            PolicyErrorKind::Deadline => "deadline",
            PolicyErrorKind::BadResult => "result",
            PolicyErrorKind::Test => "test",
        })
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

impl PolicyError {
    fn at(kind: PolicyErrorKind, message: String, position: Position) -> PolicyError {
        PolicyError {
            kind,
            message,
            line: position.line(),
            column: position.position(),
        }
    }

    fn bad_result(message: String) -> PolicyError {
        PolicyError::at(PolicyErrorKind::BadResult, message, Position::NONE)
    }

    /// A version that fails its tests.
    pub fn test(message: String) -> PolicyError {
        PolicyError::at(PolicyErrorKind::Test, message, Position::NONE)
    }
}

impl From<ParseError> for PolicyError {
    fn from(e: ParseError) -> Self {
        // Rhai's own words for a banned keyword ("'import' is a reserved
        // keyword") read as if the script had a typo.
        let banned = match &*e.0 {
            ParseErrorType::Reserved(word) => Some(word.as_str()),
            ParseErrorType::BadInput(LexError::ImproperSymbol(word, _)) => Some(word.as_str()),
            _ => None,
        };
        let message = match banned {
            Some("import") => {
                "`import` is not allowed: a policy cannot load modules or other files".into()
            }
            Some("eval") => {
                "`eval` is not allowed: a policy cannot compile code at run time".into()
            }
            _ => e.0.to_string(),
        };
        PolicyError::at(PolicyErrorKind::Compile, message, e.1)
    }
}

impl From<Box<EvalAltResult>> for PolicyError {
    fn from(e: Box<EvalAltResult>) -> Self {
        let kind = match &*e {
            EvalAltResult::ErrorTooManyOperations(_) => PolicyErrorKind::OperationLimit,
            EvalAltResult::ErrorTerminated(token, _)
                if token.clone().into_string().ok().as_deref() == Some(sandbox::DEADLINE_TOKEN) =>
            {
                PolicyErrorKind::Deadline
            }
            _ => PolicyErrorKind::Runtime,
        };
        let position = e.position();
        let mut message = e.to_string();
        // Rhai appends " (line L, position P)"; we report those separately.
        if let Some(cut) = message.rfind(" (line ") {
            message.truncate(cut);
        }
        PolicyError::at(kind, message, position)
    }
}

/// A compiled policy script.
pub struct Policy {
    engine: Engine,
    ast: AST,
    limits: PolicyLimits,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").finish_non_exhaustive()
    }
}

impl Policy {
    /// Compiles `script` under the default limits.
    pub fn compile(script: &str) -> Result<Policy, PolicyError> {
        Policy::compile_with(script, PolicyLimits::default())
    }

    pub fn compile_with(script: &str, limits: PolicyLimits) -> Result<Policy, PolicyError> {
        let engine = sandbox::engine(limits);
        let ast = engine.compile(script)?;
        Ok(Policy {
            engine,
            ast,
            limits,
        })
    }

    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }

    /// The built-in default (policies/scale.rhai as shipped).
    pub fn builtin() -> Policy {
        Policy::compile(DEFAULT_POLICY).expect("the shipped default policy compiles")
    }

    /// Runs the script on one observation, within the limits, with an
    /// empty state, no history and the default settings. Blocks for up to
    /// the deadline: call it off the async runtime.
    pub fn decide(&self, observation: &Observation) -> Result<Decision, PolicyError> {
        let state = empty_state();
        let input = PolicyInput {
            observation,
            state: &state,
            history: &[],
            tuning: &Tuning::default(),
        };
        self.evaluate(&input).map(|answer| answer.decision)
    }

    /// Runs the script on everything it may read, within the limits: the
    /// decision, the settings it overrides and the state it leaves. Blocks
    /// for up to the deadline: call it off the async runtime.
    pub fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Answer, PolicyError> {
        let mut scope = Scope::new();
        input.observation.fill_scope(&mut scope);
        scope.push_constant("history", state::history_array(input.history));
        scope.push_constant("settings", state::settings_map(input.tuning));
        // A variable, not a constant: the script writes it.
        scope.push("state", state::to_dynamic(input.state));
        let value: Dynamic = sandbox::with_deadline(self.limits.deadline, || {
            self.engine.eval_ast_with_scope(&mut scope, &self.ast)
        })
        .map_err(|e| {
            let mut error = PolicyError::from(e);
            if error.kind == PolicyErrorKind::Deadline {
                error.message = format!(
                    "the decision took longer than the deadline of {}",
                    describe(self.limits.deadline)
                );
            }
            error
        })?;
        let left = scope.get_value::<Dynamic>("state").unwrap_or_default();
        interpret_answer(value, left)
    }
}

/// Everything a script reads: the observation, its state, the recent
/// observations and the controller's settings.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub observation: &'a Observation,
    pub state: &'a serde_json::Value,
    pub history: &'a [HistoryEntry],
    pub tuning: &'a Tuning,
}

fn describe(duration: Duration) -> String {
    if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{duration:?}")
    }
}

/// The keys a returned map may have; any other is a typo worth an error
/// (a misspelt `scale_in_dealy` would otherwise be ignored for good).
const ANSWER_KEYS: &[&str] = &[
    "desired",
    "reason",
    "state",
    "scale_in_delay",
    "scale_in_step",
    "on_outage",
];

/// Accepts an integer (or an integral float), or a map with `desired` and
/// optional `reason`, `state` and setting overrides. `left` is the `state`
/// variable as the script left it; a returned `state` replaces it.
fn interpret_answer(value: Dynamic, left: Dynamic) -> Result<Answer, PolicyError> {
    let mut overrides = Overrides::default();
    let mut state = left;
    let decision = if value.is_map() {
        let map: Map = value.cast();
        if let Some(unknown) = map.keys().find(|k| !ANSWER_KEYS.contains(&k.as_str())) {
            return Err(PolicyError::bad_result(format!(
                "the returned map has an unknown key `{unknown}` (known: {})",
                ANSWER_KEYS.join(", ")
            )));
        }
        let desired = map.get("desired").cloned().ok_or_else(|| {
            PolicyError::bad_result("the returned map has no `desired` field".into())
        })?;
        let reason = match map.get("reason") {
            None => String::new(),
            Some(r) if r.is_string() => r.clone().into_string().unwrap_or_default(),
            Some(r) => {
                return Err(PolicyError::bad_result(format!(
                    "`reason` must be a string, not {}",
                    r.type_name()
                )))
            }
        };
        if let Some(returned) = map.get("state") {
            state = returned.clone();
        }
        if let Some(delay) = map.get("scale_in_delay") {
            let seconds = delay
                .as_float()
                .ok()
                .or_else(|| delay.as_int().ok().map(|i| i as f64))
                .filter(|s| (0.0..=state::MAX_SCALE_IN_DELAY_S).contains(s))
                .ok_or_else(|| {
                    PolicyError::bad_result(format!(
                        "`scale_in_delay` must be seconds between 0 and {}, got {delay}",
                        state::MAX_SCALE_IN_DELAY_S
                    ))
                })?;
            overrides.scale_in_delay_s = Some(seconds);
        }
        if let Some(step) = map.get("scale_in_step") {
            let step = step
                .as_int()
                .ok()
                .filter(|s| (1..=i64::from(u32::MAX)).contains(s))
                .ok_or_else(|| {
                    PolicyError::bad_result(format!(
                        "`scale_in_step` must be a whole number of instances from 1, got {step}"
                    ))
                })?;
            overrides.scale_in_step = Some(step as u32);
        }
        if let Some(mode) = map.get("on_outage") {
            let text = mode.clone().into_string().unwrap_or_default();
            overrides.on_outage = Some(OnOutage::parse(&text).ok_or_else(|| {
                PolicyError::bad_result(format!(
                    "`on_outage` must be \"hold\", \"floor\", \"last-plan\" or \"policy\", got {mode}"
                ))
            })?);
        }
        Decision {
            desired: count(desired)?,
            reason,
        }
    } else {
        Decision {
            desired: count(value)?,
            reason: String::new(),
        }
    };
    let state = state::from_dynamic(&state).map_err(PolicyError::bad_result)?;
    Ok(Answer {
        decision,
        overrides,
        state,
    })
}

fn count(value: Dynamic) -> Result<u32, PolicyError> {
    let number = if let Ok(int) = value.as_int() {
        int
    } else if let Ok(float) = value.as_float() {
        if !float.is_finite() || float.fract() != 0.0 || float.abs() > MAX_SANE_DESIRED as f64 {
            return Err(PolicyError::bad_result(format!(
                "desired must be a whole number of instances, got {float}"
            )));
        }
        float as i64
    } else {
        return Err(PolicyError::bad_result(format!(
            "the script must return an integer or a map with `desired`, not {}",
            value.type_name()
        )));
    };
    if !(0..=MAX_SANE_DESIRED).contains(&number) {
        return Err(PolicyError::bad_result(format!(
            "desired must be between 0 and {MAX_SANE_DESIRED}, got {number}"
        )));
    }
    Ok(number as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(visible: u64, in_flight: u64, running: u32) -> Observation {
        Observation {
            visible,
            in_flight,
            running,
            max: 20,
            ..Observation::default()
        }
    }

    #[test]
    fn default_policy_is_one_instance_per_ten_messages() {
        let policy = Policy::builtin();
        let desired = |v, f| policy.decide(&observe(v, f, 0)).unwrap().desired;
        assert_eq!(desired(0, 0), 0);
        assert_eq!(desired(1, 0), 1);
        assert_eq!(desired(35, 0), 4);
        assert_eq!(desired(30, 5), 4);
        assert_eq!(desired(500, 0), 20);
        assert!(!policy.decide(&observe(35, 0, 0)).unwrap().reason.is_empty());
    }

    #[test]
    fn integers_floats_and_maps_are_accepted() {
        let o = observe(0, 0, 0);
        assert_eq!(Policy::compile("3").unwrap().decide(&o).unwrap().desired, 3);
        assert_eq!(
            Policy::compile("3.0").unwrap().decide(&o).unwrap().desired,
            3
        );
        let d = Policy::compile(r#"#{ desired: 2, reason: "why" }"#)
            .unwrap()
            .decide(&o)
            .unwrap();
        assert_eq!(
            d,
            Decision {
                desired: 2,
                reason: "why".into()
            }
        );
    }

    #[test]
    fn nonsense_results_are_refused() {
        let o = observe(0, 0, 0);
        for script in [
            "-1",
            "2.5",
            "\"four\"",
            "#{ reason: \"x\" }",
            "1_000_000_000",
            "()",
        ] {
            let err = Policy::compile(script).unwrap().decide(&o).unwrap_err();
            assert_eq!(err.kind, PolicyErrorKind::BadResult, "{script}: {err}");
        }
    }

    #[test]
    fn compile_errors_carry_line_and_column() {
        let err = Policy::compile("let x = 1;\nlet y = ;\n").unwrap_err();
        assert_eq!(err.kind, PolicyErrorKind::Compile);
        assert_eq!(err.line, Some(2));
        assert!(err.column.is_some());
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn runtime_errors_carry_line_and_column() {
        let err = Policy::compile("let a = 1;\nthrow \"no\";")
            .unwrap()
            .decide(&observe(0, 0, 0))
            .unwrap_err();
        assert_eq!(err.kind, PolicyErrorKind::Runtime);
        assert_eq!(err.line, Some(2));
        let err = Policy::compile("queue.nope + 1")
            .unwrap()
            .decide(&observe(0, 0, 0))
            .unwrap_err();
        assert_eq!(err.kind, PolicyErrorKind::Runtime);
    }

    #[test]
    fn endless_loops_hit_the_operation_limit() {
        let err = Policy::compile("loop { }")
            .unwrap()
            .decide(&observe(0, 0, 0))
            .unwrap_err();
        assert_eq!(err.kind, PolicyErrorKind::OperationLimit);
    }

    #[test]
    fn scripts_cannot_eval_or_reach_outside() {
        assert!(Policy::compile(r#"eval("1")"#).is_err());
        // No file or process functions exist to call.
        for script in [
            r#"open("/etc/passwd")"#,
            r#"system("ls")"#,
            r#"import "x" as y; 1"#,
        ] {
            let result = Policy::compile(script).and_then(|p| p.decide(&observe(0, 0, 0)));
            assert!(result.is_err(), "{script} ran");
        }
    }
}
