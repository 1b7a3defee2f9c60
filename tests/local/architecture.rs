//! The house rule, checked on the source: no module imports from a layer
//! above its own, so there is no arrow running back up and no circle
//! between the top-level modules of `src/`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::repo_root;

/// Top-level modules of the `imagefleet` crate, lowest layer first. A module
/// may use modules of lower layers only (and itself).
const LAYERS: &[&[&str]] = &[
    // A seeded generator (the policy fuzzer and the simulator draw from it).
    &["rng"],
    // Contracts and pure logic: the job messages, default paths, the stop
    // signal, the scaling policy.
    &["job", "paths", "shutdown", "policy"],
    // AWS plumbing: SDK clients, configuration, user data.
    &["aws"],
    // The seams and their backends.
    &["queue", "store", "fleet"],
    // A process's queues and buckets together.
    &["services"],
    // The reconcile loop; the app-tier loop; the embedded backend's
    // janitor.
    &["controller", "worker", "retention"],
    // The simulator (drives the controller's pure plan); the web tier
    // (shows the controller's status).
    &["simulate", "web"],
    // One module per subcommand.
    &["commands"],
    // The subcommand enum.
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `crate::<module>` a source text names, including grouped
/// `use crate::{a::x, b}` forms.
fn crate_modules_used(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let src = repo_root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "main" || top == "lib" {
            continue;
        }
        let own = layer_of(&top)
            .unwrap_or_else(|| panic!("src/{top} is in no layer: add it to LAYERS in this test"));
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_modules_used(&text) {
            if used == top {
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer < own => {}
                Some(_) => violations.push(format!(
                    "src/{} uses crate::{used}, which is not below {top}",
                    relative.display()
                )),
                None => violations.push(format!(
                    "src/{} uses crate::{used}, which is in no layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_import_scanner_sees_grouped_and_nested_paths() {
    let used = crate_modules_used(
        "use crate::queue::Queue;\nuse crate::{job::JobId, store};\nlet x = crate::paths::absolute(p);",
    );
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["job", "paths", "queue", "store"]
    );
}
