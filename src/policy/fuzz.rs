//! Fuzzing policy evaluation: the shipped policies on arbitrary
//! observations, and generated scripts, must decide or fail with a
//! `PolicyError`, never panic, and never run far past the deadline. A
//! handful of cases run in the normal suite; `scripts/fuzz` runs them for a
//! set time (`FUZZ_SECONDS`, seed `FUZZ_SEED`), printing any failing case
//! to keep below as a regression test.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::{Observation, Policy, PolicyError, PolicyLimits, MAX_SANE_DESIRED};
use crate::rng::Rng;

struct Budget {
    seed: u64,
    cases: u64,
    until: Option<Instant>,
}

impl Budget {
    fn from_env(default_cases: u64) -> Budget {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Budget {
            seed: env("FUZZ_SEED").unwrap_or(0x1337),
            cases: default_cases,
            until: env("FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s)),
        }
    }

    fn more(&self, done: u64) -> bool {
        match self.until {
            Some(until) => Instant::now() < until,
            None => done < self.cases,
        }
    }
}

fn count(rng: &mut Rng) -> u64 {
    let random = rng.next_u64();
    *rng.pick(&[
        0,
        1,
        9,
        10,
        35,
        500,
        u64::from(u32::MAX),
        i64::MAX as u64,
        u64::MAX,
        random,
    ])
}

fn small(rng: &mut Rng) -> u32 {
    let random = rng.next_u64() as u32;
    *rng.pick(&[0, 1, 2, 20, 100_000, u32::MAX, random])
}

fn seconds(rng: &mut Rng) -> f64 {
    let random = rng.next_u64() as f64;
    *rng.pick(&[
        0.0,
        -1.0,
        1.5,
        1e9,
        f64::MAX,
        f64::MIN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        random,
    ])
}

fn observation(rng: &mut Rng) -> Observation {
    Observation {
        visible: count(rng),
        in_flight: count(rng),
        running: small(rng),
        pending: small(rng),
        draining: small(rng),
        idle: small(rng),
        min: small(rng),
        max: small(rng),
        since_last_scale_secs: (rng.below(2) == 0).then(|| seconds(rng)),
        now: seconds(rng),
        stale_secs: seconds(rng),
    }
}

/// A random expression over everything a script can read, with the
/// operators and functions a policy would use: overflow, division by zero,
/// NaN and type mix-ups included.
fn expression(rng: &mut Rng, depth: u32) -> String {
    const LEAVES: &[&str] = &[
        "queue.visible",
        "queue.in_flight",
        "queue.backlog",
        "instances.running",
        "instances.pending",
        "instances.draining",
        "instances.idle",
        "instances.active",
        "limits.min",
        "limits.max",
        "since_last_scale",
        "now",
        "time.hour",
        "time.weekday",
        "stale_secs",
        "settings.scale_in_delay",
        "history.len()",
        "state.len()",
        "0",
        "1",
        "10",
        "-1",
        "9223372036854775807",
        "0.5",
        "1e300",
        "\"text\"",
        "()",
        "true",
        "[1, 2]",
        "#{ desired: 1 }",
    ];
    const BINARY: &[&str] = &[
        "+", "-", "*", "/", "%", "**", "<<", ">>", "&", "|", "^", "==", "<", ">=", "&&", "||",
    ];
    const UNARY: &[&str] = &[
        "min({a}, {b})",
        "max({a}, {b})",
        "abs({a})",
        "({a}).to_int()",
        "({a}).to_float()",
        "sqrt({a})",
        "floor({a})",
        "({a}).to_string()",
        "if {a} > {b} {{ {a} }} else {{ {b} }}",
        "-({a})",
        "!({a})",
        "[{a}, {b}][{b}]",
        "#{{ desired: {a}, reason: `${{{b}}}` }}",
        "#{{ desired: {a} }}.desired",
    ];
    if depth == 0 || rng.below(3) == 0 {
        return rng.pick(LEAVES).to_string();
    }
    let a = expression(rng, depth - 1);
    let b = expression(rng, depth - 1);
    if rng.below(2) == 0 {
        format!("({a} {} {b})", rng.pick(BINARY))
    } else {
        rng.pick(UNARY).replace("{a}", &a).replace("{b}", &b)
    }
}

fn script(rng: &mut Rng) -> String {
    let body = expression(rng, 4);
    match rng.below(4) {
        0 => body,
        1 => format!("#{{ desired: {body}, reason: \"fuzz\" }}"),
        2 => format!("let x = {body};\nlet n = 0;\nfor i in 0..x {{ n += 1; }}\nn"),
        _ => format!(
            "fn f(v) {{ if v > 3 {{ v }} else {{ f(v + 1) }} }}\nf({})",
            expression(rng, 2)
        ),
    }
}

/// Decides once; fails the test with the case on a panic or an evaluation
/// far past its deadline.
fn check(policy: &Policy, observation: &Observation, what: &str) -> Result<u32, PolicyError> {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| policy.decide(observation)))
        .unwrap_or_else(|_| panic!("{what} panicked on {observation:?}"));
    let took = started.elapsed();
    assert!(
        took < policy.limits().deadline + Duration::from_millis(250),
        "{what} took {took:?} on {observation:?}"
    );
    let decision = result?;
    assert!(i64::from(decision.desired) <= MAX_SANE_DESIRED);
    Ok(decision.desired)
}

#[test]
fn fuzz_shipped_policies_on_arbitrary_observations() {
    let shipped = [
        ("scale.rhai", super::DEFAULT_POLICY),
        (
            "backlog-per-instance.rhai",
            include_str!("../../policies/backlog-per-instance.rhai"),
        ),
        (
            "business-hours-floor.rhai",
            include_str!("../../policies/business-hours-floor.rhai"),
        ),
        ("trend.rhai", include_str!("../../policies/trend.rhai")),
        (
            "warm-peak.rhai",
            include_str!("../../policies/warm-peak.rhai"),
        ),
        (
            "outage-aware.rhai",
            include_str!("../../policies/outage-aware.rhai"),
        ),
    ];
    let policies: Vec<(&str, Policy)> = shipped
        .iter()
        .map(|(name, text)| (*name, Policy::compile(text).unwrap()))
        .collect();
    let budget = Budget::from_env(300);
    let mut rng = Rng::new(budget.seed);
    let (mut cases, mut errors) = (0u64, 0u64);
    while budget.more(cases) {
        let observation = observation(&mut rng);
        for (name, policy) in &policies {
            errors += u64::from(check(policy, &observation, name).is_err());
        }
        cases += 1;
    }
    println!(
        "shipped policies: seed {}, {cases} observations, {errors} errors",
        budget.seed
    );
}

#[test]
fn fuzz_generated_scripts() {
    let budget = Budget::from_env(300);
    let mut rng = Rng::new(budget.seed ^ 0x5eed);
    let limits = PolicyLimits::default();
    let (mut cases, mut decided) = (0u64, 0u64);
    while budget.more(cases) {
        let text = script(&mut rng);
        let observation = observation(&mut rng);
        cases += 1;
        let compiled = catch_unwind(AssertUnwindSafe(|| Policy::compile_with(&text, limits)))
            .unwrap_or_else(|_| panic!("compiling panicked:\n{text}"));
        if let Ok(policy) = compiled {
            decided += u64::from(check(&policy, &observation, &text).is_ok());
        }
    }
    println!(
        "generated scripts: seed {}, {cases} scripts, {decided} decided",
        budget.seed
    );
}

/// Cases the fuzzers found.
#[test]
fn fuzz_regressions() {
    // The backlog (visible + in flight) and the active count (running +
    // pending) overflowed and panicked with counts near their maximum.
    let extreme = Observation {
        visible: u64::MAX,
        in_flight: u64::MAX,
        running: u32::MAX,
        pending: u32::MAX,
        max: 20,
        ..Observation::default()
    };
    let backlog = Policy::compile("queue.backlog / 100000000000000").unwrap();
    assert_eq!(backlog.decide(&extreme).unwrap().desired, 92_233);
    let active = Policy::compile("instances.active / 100000").unwrap();
    assert_eq!(active.decide(&extreme).unwrap().desired, 42_949);
    // The default policy adds the counts itself: Rhai's checked arithmetic
    // makes that an error, not a panic, and the controller holds.
    let error = Policy::builtin().decide(&extreme).unwrap_err();
    assert_eq!(error.kind, super::PolicyErrorKind::Runtime, "{error}");
}
