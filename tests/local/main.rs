//! Integration tests of the embedded backend: the real `imagefleet` binary
//! over HTTP, its SQLite queue, directory buckets and worker processes.
//! One test binary for all of them, so tract is linked once.

#[path = "../support/mod.rs"]
mod support;

mod architecture;
mod autoscaler;
mod cli;
mod controller;
mod decode_limits;
mod front_door;
mod lifecycle;
mod people;
mod pipeline;
mod sandbox;
