//! `load --expected FILE`: the labels each image should get, from a CSV
//! file. Two layouts are read:
//!
//! - `file,label` rows, with or without that header;
//! - a header naming its columns, where `file` is the image and `accept`
//!   (else `label`) the answer, as tests/samples/expected.csv has it.
//!
//! A label may list alternatives separated by `|` (`tiger cat|tabby`): for
//! images the model finds ambiguous, any of them counts as right. Images are
//! matched by file name, so the CSV need not repeat the paths given to
//! `load`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

#[derive(Debug, Default)]
pub struct Expected {
    /// File name -> accepted labels.
    labels: HashMap<String, Vec<String>>,
}

impl Expected {
    pub fn load(path: &Path) -> anyhow::Result<Expected> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the expected labels {}", path.display()))?;
        Expected::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Expected> {
        let mut rows = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|(index, line)| (index + 1, split(line)));
        let Some((_, first)) = rows.next() else {
            anyhow::bail!("no rows: expected `file,label` lines");
        };
        let named = |name: &str| {
            first
                .iter()
                .position(|column| column.trim().eq_ignore_ascii_case(name))
        };
        let (file_column, label_column, header) = match named("file") {
            Some(file) => {
                let label = named("accept")
                    .or_else(|| named("label"))
                    .with_context(|| {
                        "the header names a `file` column but no `label` or `accept` column"
                    })?;
                (file, label, true)
            }
            None => (0, 1, false),
        };
        let mut expected = Expected::default();
        let first_row = (!header).then_some((1, first.clone()));
        for (line, fields) in first_row.into_iter().chain(rows) {
            let (Some(file), Some(label)) = (fields.get(file_column), fields.get(label_column))
            else {
                anyhow::bail!("line {line}: expected a file and a label");
            };
            let accepted: Vec<String> = label
                .split('|')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            anyhow::ensure!(!accepted.is_empty(), "line {line}: no label");
            expected.labels.insert(file_name(file.trim()), accepted);
        }
        Ok(expected)
    }

    /// The accepted labels for an image, by its file name.
    pub fn accepted(&self, file: &str) -> Option<&[String]> {
        self.labels.get(&file_name(file)).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// One CSV line's fields; double quotes protect commas, `""` is a quote.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("never empty");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => field.push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_samples_layout_with_alternatives() {
        let expected = Expected::parse(
            "file,label,accept,probability,top5\n\
             chelsea.jpg,tiger cat,tiger cat|Egyptian cat|tabby,0.3795,tiger cat|lynx\n\
             coffee.png,espresso,espresso,0.9567,espresso|cup\n",
        )
        .unwrap();
        assert_eq!(
            expected.accepted("tests/samples/chelsea.jpg").unwrap(),
            ["tiger cat", "Egyptian cat", "tabby"]
        );
        assert_eq!(expected.accepted("coffee.png").unwrap(), ["espresso"]);
        assert_eq!(expected.accepted("camera.png"), None);
    }

    #[test]
    fn reads_plain_file_label_rows_with_or_without_a_header() {
        for text in [
            "file,label\ncat.jpg,tabby\n\"a, b.png\",\"say \"\"hi\"\"\"\n",
            "cat.jpg,tabby\n\"a, b.png\",\"say \"\"hi\"\"\"\n",
        ] {
            let expected = Expected::parse(text).unwrap();
            assert_eq!(expected.accepted("cat.jpg").unwrap(), ["tabby"]);
            assert_eq!(expected.accepted("a, b.png").unwrap(), ["say \"hi\""]);
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(Expected::parse("").is_err());
        assert!(Expected::parse("file,probability\na.png,0.5\n").is_err());
        let error = Expected::parse("a.png,cat\nb.png\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
