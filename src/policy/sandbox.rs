//! The engine a policy script runs in: what it can reach (nothing outside
//! the observation: no modules, no `eval`, no file, network or process
//! functions, since Rhai has none unless the host registers them) and how
//! much it may take (operations, call depth, sizes, wall-clock time).
//! policies/README.md documents every limit for operators; keep the two in
//! step.

use std::cell::Cell;
use std::time::{Duration, Instant};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{Dynamic, Engine};

/// Operations one decision may take; an endless loop stops here.
pub const MAX_OPERATIONS: u64 = 100_000;

/// Wall-clock time one decision may take. The operation limit alone let a
/// script run for 23 s: some single operations (`contains` on a big array,
/// comparing arrays) do thousands of steps that Rhai does not count.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(100);

/// Nested function calls (recursion depth).
pub const MAX_CALL_LEVELS: usize = 32;
/// Nesting of expressions, at top level and inside functions.
pub const MAX_EXPR_DEPTH: usize = 64;
pub const MAX_FUNCTION_EXPR_DEPTH: usize = 32;
/// Bytes in one string: a reason needs a line. Rhai checks a map's size
/// only when the map is used, so a loop can add one entry per few
/// operations until then; small strings keep that within a few megabytes.
pub const MAX_STRING_SIZE: usize = 1024;
/// Elements in one array or blob. A policy needs a handful; at 10,000 one
/// `contains` between two arrays cost milliseconds, which is what made the
/// issue's slow script slow.
pub const MAX_ARRAY_SIZE: usize = 1_000;
/// Properties in one object map.
pub const MAX_MAP_SIZE: usize = 1_000;
/// `print` and `debug` lines one decision may log; a loop of prints would
/// otherwise write 100,000 log lines every tick.
pub const MAX_LOG_LINES: u32 = 20;

/// What `Engine::on_progress` returns to stop a script at its deadline;
/// recognised again when the error comes back.
pub(super) const DEADLINE_TOKEN: &str = "imagefleet: policy deadline";

/// The limits a policy runs under that an operator may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Wall-clock time per decision.
    pub deadline: Duration,
    /// Operations per decision (0: no limit, for tests of the deadline).
    pub max_operations: u64,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            deadline: DEFAULT_DEADLINE,
            max_operations: MAX_OPERATIONS,
        }
    }
}

/// One evaluation's allowance. Rhai's progress and print callbacks are set
/// once per engine and get no per-evaluation context, so the evaluation in
/// progress on this thread keeps its allowance here; an engine is never
/// evaluating on two threads through the same allowance.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    deadline: Instant,
    log_lines_left: u32,
}

thread_local! {
    static ALLOWANCE: Cell<Option<Allowance>> = const { Cell::new(None) };
}

/// Runs `evaluate` with a deadline `limit` from now; the engine's callbacks
/// stop it once the deadline has passed.
pub(super) fn with_deadline<T>(limit: Duration, evaluate: impl FnOnce() -> T) -> T {
    let allowance = Allowance {
        // A deadline too far to represent is no deadline.
        deadline: Instant::now().checked_add(limit).unwrap_or_else(far_future),
        log_lines_left: MAX_LOG_LINES,
    };
    // Restored on the way out, also on unwinding, so an evaluation never
    // runs against another's deadline.
    struct Restore(Option<Allowance>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALLOWANCE.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ALLOWANCE.with(|a| a.replace(Some(allowance))));
    evaluate()
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn past_deadline() -> bool {
    ALLOWANCE.with(|a| a.get().is_some_and(|a| Instant::now() >= a.deadline))
}

/// Whether one more log line fits this evaluation's allowance.
fn take_log_line() -> bool {
    ALLOWANCE.with(|cell| match cell.get() {
        Some(mut allowance) => {
            let ok = allowance.log_lines_left > 0;
            allowance.log_lines_left = allowance.log_lines_left.saturating_sub(1);
            cell.set(Some(allowance));
            ok
        }
        None => true,
    })
}

pub(super) fn engine(limits: PolicyLimits) -> Engine {
    let mut engine = engine_without_syntax_bans(limits);
    // `eval` would let a script compile code the checks never saw.
    engine.disable_symbol("eval");
    // `Engine::new` resolves `import "path"` to any .rhai file on disk and
    // runs it. That `import` does not even parse is the error operators see,
    // with line and column; the engine below refuses modules as well.
    engine.disable_symbol("import");
    engine
}

/// The engine before `import` and `eval` are taken out of the language:
/// tests show it refuses modules on its own.
fn engine_without_syntax_bans(limits: PolicyLimits) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FUNCTION_EXPR_DEPTH);
    engine.set_max_string_size(MAX_STRING_SIZE);
    engine.set_max_array_size(MAX_ARRAY_SIZE);
    engine.set_max_map_size(MAX_MAP_SIZE);
    // No modules: not one import is allowed, and the resolver finds none.
    engine.set_max_modules(0);
    engine.set_module_resolver(DummyModuleResolver::new());
    // Called before each operation, so the deadline is checked at least as
    // often as the operation limit; the costliest single operation under the
    // size limits above takes well under a millisecond.
    engine.on_progress(|_operations| past_deadline().then(|| Dynamic::from(DEADLINE_TOKEN)));
    engine.on_print(|text| {
        if take_log_line() {
            tracing::info!(target: "policy", "{text}");
        }
    });
    engine.on_debug(|text, _, position| {
        if take_log_line() {
            tracing::debug!(target: "policy", %position, "{text}");
        }
    });
    engine
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::policy::{Observation, Policy, PolicyErrorKind};

    fn observation() -> Observation {
        Observation {
            visible: 35,
            max: 20,
            ..Observation::default()
        }
    }

    #[test]
    fn import_is_a_compile_error_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        // A module that would make the decision 42 if it were ever loaded.
        std::fs::write(dir.path().join("evil.rhai"), "export const X = 42;").unwrap();
        let module = dir.path().join("evil");
        for script in [
            format!("let a = 1;\nimport \"{}\" as m;\nm::X", module.display()),
            "let a = 1;\nimport \"/any/path\" as m;\n1".to_owned(),
            "let a = 1;\n  import \"x\";\n1".to_owned(),
        ] {
            let err = Policy::compile(&script).unwrap_err();
            assert_eq!(err.kind, PolicyErrorKind::Compile, "{script}: {err}");
            assert_eq!(err.line, Some(2), "{script}: {err}");
            assert!(err.column.is_some(), "{err}");
            assert!(err.message.contains("`import` is not allowed"), "{err}");
        }
    }

    #[test]
    fn the_engine_refuses_modules_even_where_import_parses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("evil.rhai"), "export const X = 42;").unwrap();
        let script = format!(
            "import \"{}\" as m; m::X",
            dir.path().join("evil").display()
        );
        // A plain engine loads the file from disk: what the sandbox prevents.
        let plain: i64 = Engine::new().eval(&script).unwrap();
        assert_eq!(plain, 42);
        let engine = engine_without_syntax_bans(PolicyLimits::default());
        let err = engine.eval::<i64>(&script).unwrap_err();
        assert!(
            matches!(
                *err,
                rhai::EvalAltResult::ErrorTooManyModules(_)
                    | rhai::EvalAltResult::ErrorModuleNotFound(..)
            ),
            "{err}"
        );
        // Without the module limit the resolver still finds nothing.
        let mut engine = engine_without_syntax_bans(PolicyLimits::default());
        engine.set_max_modules(usize::MAX);
        let err = engine.eval::<i64>(&script).unwrap_err();
        assert!(
            matches!(*err, rhai::EvalAltResult::ErrorModuleNotFound(..)),
            "{err}"
        );
    }

    #[test]
    fn eval_is_a_compile_error() {
        let err = Policy::compile("let a = 1;\neval(\"40 + 2\")").unwrap_err();
        assert_eq!(err.kind, PolicyErrorKind::Compile);
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("`eval` is not allowed"), "{err}");
    }

    /// Cheap in operations, slow in time: each `contains` compares every
    /// element of a full array, which Rhai counts as one operation.
    const SLOW_IN_TIME: &str = "
        let a = [];
        for i in 0..1000 { a.push(i); }
        let found = 0;
        for i in 0..100000 { if a.contains(-1) { found += 1; } }
        found";

    #[test]
    fn the_deadline_stops_work_the_operation_limit_does_not_see() {
        let no_op_limit = PolicyLimits {
            deadline: DEFAULT_DEADLINE,
            max_operations: 0,
        };
        let policy = Policy::compile_with(SLOW_IN_TIME, no_op_limit).unwrap();
        let started = Instant::now();
        let err = policy.decide(&observation()).unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind, PolicyErrorKind::Deadline, "{err}");
        assert!(err.message.contains("100 ms"), "{err}");
        assert!(took < Duration::from_millis(400), "stopped after {took:?}");
        println!("refused after {took:?}");
    }

    #[test]
    fn the_issues_slow_script_is_refused_within_the_deadline() {
        // The issue's script: a loop over two 10,000-element arrays took
        // 23 s per decision within the operation limit. Refused now by the
        // array size, and its in-limit version by the deadline.
        for size in [10_000, MAX_ARRAY_SIZE] {
            let script = format!(
                "let a = []; let b = [];
                 for i in 0..{size} {{ a.push(i); b.push(-i); }}
                 let n = 0;
                 for x in a {{ if b.contains(x) {{ n += 1; }} }}
                 for x in a {{ if b.contains(x) {{ n += 1; }} }}
                 n"
            );
            let started = Instant::now();
            let result = Policy::compile(&script).unwrap().decide(&observation());
            let took = started.elapsed();
            assert!(result.is_err(), "size {size}: {result:?}");
            assert!(took < Duration::from_millis(400), "size {size}: {took:?}");
            println!("size {size}: {:?} after {took:?}", result.unwrap_err().kind);
        }
    }

    #[test]
    fn the_deadline_is_configurable() {
        // About 50 ms of work: refused at 10 ms, decided with 5 s.
        let script = "
            let a = [];
            for i in 0..1000 { a.push(i); }
            let found = 0;
            for i in 0..200 { if a.contains(-1) { found += 1; } }
            found";
        let limits = |ms| PolicyLimits {
            deadline: Duration::from_millis(ms),
            max_operations: MAX_OPERATIONS,
        };
        let err = Policy::compile_with(script, limits(1))
            .unwrap()
            .decide(&observation())
            .unwrap_err();
        assert_eq!(err.kind, PolicyErrorKind::Deadline, "{err}");
        let started = Instant::now();
        let decision = Policy::compile_with(script, limits(5_000))
            .unwrap()
            .decide(&observation())
            .unwrap();
        assert_eq!(decision.desired, 0);
        println!("the same work took {:?}", started.elapsed());
    }

    #[test]
    fn big_data_is_refused_before_it_is_built() {
        for script in [
            "let a = []; for i in 0..1001 { a.push(i); } 0",
            "let a = [1]; for i in 0..20 { a += a; } 0",
            "let b = blob(100000000); 0",
            "let s = \"x\"; s.pad(100000, \"y\"); 0",
            "let s = \"x\"; for i in 0..20 { s += s; } 0",
            // Rhai checks a map's size when it is used, not on each insert.
            "let m = #{}; for i in 0..1001 { m[`k${i}`] = i; } m.len()",
            "fn f(n) { f(n + 1) } f(0)",
        ] {
            let started = Instant::now();
            let err = Policy::compile(script)
                .unwrap()
                .decide(&observation())
                .unwrap_err();
            assert_eq!(err.kind, PolicyErrorKind::Runtime, "{script}: {err}");
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "{script}: {:?}",
                started.elapsed()
            );
        }
    }

    /// The table of limits in policies/README.md, row by row.
    #[test]
    fn every_documented_limit_gives_its_documented_error() {
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        let rows = [
            (
                "fn f(n) { f(n + 1) } f(0)",
                PolicyErrorKind::Runtime,
                "Stack overflow",
            ),
            (
                &deep,
                PolicyErrorKind::Compile,
                "Expression exceeds maximum complexity",
            ),
            (
                "let s = \"x\"; for i in 0..20 { s += s; } 0",
                PolicyErrorKind::Runtime,
                "Length of string too large",
            ),
            (
                "let a = []; for i in 0..1001 { a.push(i); } 0",
                PolicyErrorKind::Runtime,
                "Size of array/BLOB too large",
            ),
            (
                "let m = #{}; for i in 0..1001 { m[`k${i}`] = i; } m.len()",
                PolicyErrorKind::Runtime,
                "Size of object map too large",
            ),
            (
                "loop {}",
                PolicyErrorKind::OperationLimit,
                "Too many operations",
            ),
        ];
        let readme = include_str!("../../policies/README.md");
        for (script, kind, message) in rows {
            let err = Policy::compile(script)
                .and_then(|p| p.decide(&observation()))
                .unwrap_err();
            assert_eq!(
                (err.kind, err.message.as_str()),
                (kind, message),
                "{script}"
            );
            assert!(
                readme.contains(message),
                "policies/README.md lacks {message:?}"
            );
        }
        let limits = [
            MAX_CALL_LEVELS,
            MAX_EXPR_DEPTH,
            MAX_STRING_SIZE,
            MAX_ARRAY_SIZE,
            MAX_MAP_SIZE,
        ];
        for limit in limits {
            let shown = limit.to_string();
            let thousands = if limit >= 1000 {
                format!("{},{:03}", limit / 1000, limit % 1000)
            } else {
                shown.clone()
            };
            assert!(
                readme.contains(&format!("| {thousands}"))
                    || readme.contains(&format!("| {shown}")),
                "policies/README.md does not show the limit {limit}"
            );
        }
    }

    #[test]
    fn each_evaluation_has_its_own_deadline_and_log_lines() {
        with_deadline(Duration::from_secs(60), || {
            for _ in 0..MAX_LOG_LINES {
                assert!(take_log_line());
            }
            assert!(!take_log_line(), "more log lines than allowed");
            // A nested evaluation starts afresh and gives the outer one back.
            with_deadline(Duration::ZERO, || {
                assert!(past_deadline());
                assert!(take_log_line());
            });
            assert!(!past_deadline());
            assert!(!take_log_line());
        });
        assert!(
            !past_deadline(),
            "outside any evaluation there is no deadline"
        );
    }
}
