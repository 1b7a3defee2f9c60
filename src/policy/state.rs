//! What a policy remembers and what it may tune: `state`, a map the script
//! reads and writes (kept across ticks and reloads, and by the controller
//! across restarts), `history`, the last observations, and the controller's
//! stabilization and outage settings, which a script sees and may override
//! in its answer. policies/README.md documents all of it for operators;
//! keep the two in step.

use rhai::{Array, Dynamic, Map, FLOAT, INT};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Decision;

/// The most a state may weigh as JSON: it is written to the data dir after
/// each change and shown in `GET /status`.
pub const MAX_STATE_BYTES: usize = 64 * 1024;
/// How deeply arrays and maps may nest in a state.
const MAX_STATE_DEPTH: usize = 32;
/// Observations a script sees in `history` unless configured otherwise
/// (a minute at the default 2 s tick).
pub const DEFAULT_HISTORY: usize = 30;

/// What the controller does with a decision made on numbers it could not
/// refresh (the queue or the fleet did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnOutage {
    /// Keep the fleet as it is: launch nothing, stop nothing.
    #[default]
    Hold,
    /// Go to the configured minimum (`limits.min`).
    Floor,
    /// Keep the count of the last plan made on fresh numbers.
    LastPlan,
    /// Apply the script's answer anyway (it sees `stale_secs`).
    Policy,
}

impl OnOutage {
    pub fn as_str(self) -> &'static str {
        match self {
            OnOutage::Hold => "hold",
            OnOutage::Floor => "floor",
            OnOutage::LastPlan => "last-plan",
            OnOutage::Policy => "policy",
        }
    }

    pub fn parse(text: &str) -> Option<OnOutage> {
        [
            OnOutage::Hold,
            OnOutage::Floor,
            OnOutage::LastPlan,
            OnOutage::Policy,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == text)
    }
}

impl std::fmt::Display for OnOutage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The controller's settings that shape how a desired count is followed;
/// the script sees them as `settings` and may override the first three in
/// its answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// Scale in only to the highest count wanted within this many seconds.
    pub scale_in_delay_s: f64,
    /// Stop at most this many instances per tick interval.
    pub scale_in_step: u32,
    pub on_outage: OnOutage,
    /// Seconds between regular ticks.
    pub interval_s: f64,
}

/// The default scale-in delay: long enough to ride out the gaps of a
/// bursty queue, short against the cost of an idle worker.
pub const DEFAULT_SCALE_IN_DELAY_S: f64 = 30.0;
/// The default scale-in rate, in instances per tick interval.
pub const DEFAULT_SCALE_IN_STEP: u32 = 1;
/// The longest scale-in delay a setting or a script may ask for.
pub const MAX_SCALE_IN_DELAY_S: f64 = 86_400.0;

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            scale_in_delay_s: DEFAULT_SCALE_IN_DELAY_S,
            scale_in_step: DEFAULT_SCALE_IN_STEP,
            on_outage: OnOutage::Hold,
            interval_s: 2.0,
        }
    }
}

impl Tuning {
    /// These settings with the script's overrides applied.
    pub fn with(mut self, overrides: &Overrides) -> Tuning {
        if let Some(delay) = overrides.scale_in_delay_s {
            self.scale_in_delay_s = delay;
        }
        if let Some(step) = overrides.scale_in_step {
            self.scale_in_step = step;
        }
        if let Some(mode) = overrides.on_outage {
            self.on_outage = mode;
        }
        self
    }

    fn to_map(self) -> Map {
        let mut map = Map::new();
        map.insert("scale_in_delay".into(), self.scale_in_delay_s.into());
        map.insert("scale_in_step".into(), INT::from(self.scale_in_step).into());
        map.insert("on_outage".into(), self.on_outage.as_str().into());
        map.insert("interval".into(), self.interval_s.into());
        map
    }
}

/// One past observation, as `history` shows it (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryEntry {
    /// Unix time in seconds.
    pub t: f64,
    pub visible: u64,
    pub in_flight: u64,
    pub running: u32,
    pub pending: u32,
    pub draining: u32,
    pub idle: u32,
    /// The count the controller settled on after this observation.
    pub desired: u32,
    /// How old the counts were (0 when fresh).
    pub stale_secs: f64,
}

impl HistoryEntry {
    fn to_dynamic(&self) -> Dynamic {
        let int = |n: u64| INT::try_from(n).unwrap_or(INT::MAX);
        let mut map = Map::new();
        map.insert("t".into(), self.t.into());
        map.insert("visible".into(), int(self.visible).into());
        map.insert("in_flight".into(), int(self.in_flight).into());
        map.insert(
            "backlog".into(),
            int(self.visible.saturating_add(self.in_flight)).into(),
        );
        map.insert("running".into(), INT::from(self.running).into());
        map.insert("pending".into(), INT::from(self.pending).into());
        map.insert("draining".into(), INT::from(self.draining).into());
        map.insert("idle".into(), INT::from(self.idle).into());
        map.insert(
            "active".into(),
            INT::from(self.running.saturating_add(self.pending)).into(),
        );
        map.insert("desired".into(), INT::from(self.desired).into());
        map.insert("stale_secs".into(), self.stale_secs.into());
        map.into()
    }
}

pub(super) fn history_array(history: &[HistoryEntry]) -> Array {
    history.iter().map(HistoryEntry::to_dynamic).collect()
}

pub(super) fn settings_map(tuning: &Tuning) -> Map {
    tuning.to_map()
}

/// What the script's answer changes besides the count: the controller's
/// settings for this decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_in_delay_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_in_step: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_outage: Option<OnOutage>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
}

/// A decision with everything else the script said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub decision: Decision,
    pub overrides: Overrides,
    /// The state as the script left it.
    #[serde(skip)]
    pub state: Value,
}

/// An empty state: what a script sees before it has written anything.
pub fn empty_state() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The state as the script sees it.
pub(super) fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(0.0).into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(items) => items.iter().map(to_dynamic).collect::<Array>().into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
            .collect::<Map>()
            .into(),
    }
}

/// The state the script left, as JSON: a map of numbers, strings, booleans,
/// arrays and maps (nothing a file could not hold), within the size limit.
pub(super) fn from_dynamic(value: &Dynamic) -> Result<Value, String> {
    if !value.is_map() {
        return Err(format!("`state` must be a map, not {}", value.type_name()));
    }
    let json = convert(value, 0)?;
    let size = serde_json::to_string(&json).map_or(usize::MAX, |s| s.len());
    if size > MAX_STATE_BYTES {
        return Err(format!(
            "`state` is {size} bytes as JSON, more than the {MAX_STATE_BYTES} allowed"
        ));
    }
    Ok(json)
}

fn convert(value: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_STATE_DEPTH {
        return Err(format!(
            "`state` nests deeper than {MAX_STATE_DEPTH} arrays or maps"
        ));
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        let f: FLOAT = f;
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("`state` cannot keep the number {f}"));
    }
    if value.is_string() || value.is_char() {
        return Ok(Value::String(value.to_string()));
    }
    if value.is_array() {
        let array = value
            .read_lock::<Array>()
            .ok_or("`state`: unreadable array")?;
        return array
            .iter()
            .map(|item| convert(item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if value.is_map() {
        let map = value.read_lock::<Map>().ok_or("`state`: unreadable map")?;
        let mut out = serde_json::Map::new();
        for (key, item) in map.iter() {
            out.insert(key.to_string(), convert(item, depth + 1)?);
        }
        return Ok(Value::Object(out));
    }
    Err(format!(
        "`state` can keep numbers, strings, booleans, arrays and maps, not {}",
        value.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_the_script_types() {
        let state = serde_json::json!({
            "n": 3, "x": 1.5, "s": "text", "b": true, "none": null,
            "list": [1, [2, 3], {"k": "v"}], "nested": {"deep": {"er": -1}}
        });
        assert_eq!(from_dynamic(&to_dynamic(&state)).unwrap(), state);
    }

    #[test]
    fn states_a_file_cannot_hold_are_refused() {
        assert!(from_dynamic(&Dynamic::from(3_i64))
            .unwrap_err()
            .contains("map"));
        let mut map = Map::new();
        map.insert("x".into(), Dynamic::from(f64::NAN));
        assert!(from_dynamic(&map.into()).is_err());
        let mut map = Map::new();
        map.insert("big".into(), "x".repeat(1000).into());
        for i in 0..70 {
            map.insert(format!("k{i}").into(), "y".repeat(1000).into());
        }
        assert!(from_dynamic(&map.into()).unwrap_err().contains("bytes"));
        let mut deep: Dynamic = Map::new().into();
        for _ in 0..40 {
            deep = vec![deep].into();
        }
        let mut map = Map::new();
        map.insert("deep".into(), deep);
        assert!(from_dynamic(&map.into()).unwrap_err().contains("nests"));
    }

    #[test]
    fn outage_modes_read_as_written() {
        for mode in ["hold", "floor", "last-plan", "policy"] {
            assert_eq!(OnOutage::parse(mode).unwrap().as_str(), mode);
        }
        assert!(OnOutage::parse("panic").is_none());
    }
}
