//! The classifier on the real model (models/), one test binary for all of
//! it: each binary links tract again, which is slow on small machines.
//!
//! - `samples`: the sample photos get the labels their reference accepts,
//!   every upload format decodes to the same picture, bad uploads get typed
//!   errors.
//! - `kernels`: the fast kernels give tract's answers.

mod decoding;
mod fuzz;
mod kernels;
mod samples;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imagefleet_worker::Classifier;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest() -> PathBuf {
    repo_root().join("models/model.toml")
}

/// The model on the default (fast) kernels, loaded once for every test.
fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| Classifier::load(&manifest()).expect("model loads"))
}
