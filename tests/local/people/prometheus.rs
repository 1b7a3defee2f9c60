//! A strict reader of the Prometheus text format (0.0.4), enough to check
//! what `GET /metrics` serves: `# HELP` and `# TYPE` lines, and samples
//! `name{label="value",...} value`. Anything else fails the test.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name -> type (counter, gauge, histogram, ...).
    pub types: HashMap<String, String>,
    pub help: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample with this name and these labels (others
    /// ignored); panics if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in the metrics"))
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("value {text:?}: {e}")),
    }
}

/// The family a sample belongs to: histograms' `_bucket`, `_sum` and
/// `_count` series belong to the histogram.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    for (number, line) in text.lines().enumerate() {
        let fail = |why: String| format!("line {}: {why}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, tail) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
            let name = name
                .filter(|n| is_name(n))
                .ok_or_else(|| fail("bad name".into()))?;
            match keyword {
                Some("HELP") => {
                    exposition.help.insert(name.into(), tail.into());
                }
                Some("TYPE") => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail) {
                        return Err(fail(format!("unknown type {tail}")));
                    }
                    if exposition.types.insert(name.into(), tail.into()).is_some() {
                        return Err(fail("a second TYPE line".into()));
                    }
                }
                _ => {} // a comment
            }
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(_) => {
                let close = line
                    .rfind('}')
                    .ok_or_else(|| fail("no closing brace".into()))?;
                (&line[..close + 1], line[close + 1..].trim_start())
            }
            None => line
                .split_once(' ')
                .ok_or_else(|| fail("no value".into()))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels_of(&labels[..labels.len() - 1]).map_err(fail)?),
            None => (series, BTreeMap::new()),
        };
        if !is_name(name) {
            return Err(fail("bad metric name".into()));
        }
        let mut fields = rest.split_whitespace();
        let number = value(fields.next().ok_or_else(|| fail("no value".into()))?).map_err(fail)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|e| fail(format!("timestamp: {e}")))?;
        }
        if !exposition
            .types
            .contains_key(family(name, &exposition.types))
        {
            return Err(fail("a sample before its TYPE line".into()));
        }
        exposition.samples.push(Sample {
            name: name.into(),
            labels,
            value: number,
        });
    }
    Ok(exposition)
}

/// `a="x",b="y \"quoted\""` into its pairs.
fn labels_of(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("label without a quoted value in {text:?}"))?;
        if !is_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("a dangling escape".into()),
                },
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {text:?}")),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    Ok(labels)
}

#[test]
fn the_reader_takes_the_format_and_refuses_other_text() {
    let text =
        "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let parsed = parse(text).unwrap();
    assert_eq!(parsed.value("a_total", &[("y", "q\"")]), 3.0);
    assert_eq!(parsed.value("h_bucket", &[("le", "+Inf")]), 2.0);
    assert!(parse("no_type 1\n").is_err());
    assert!(parse("# TYPE a counter\na{x=1} 1\n").is_err());
    assert!(parse("# TYPE a counter\na one\n").is_err());
}
