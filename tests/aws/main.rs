//! Integration tests of the AWS backend against the moto server that
//! scripts/test starts, through the real SDK clients. One test binary for
//! all of them, so the AWS SDK and tract are linked once.

#[path = "../support/mod.rs"]
mod support;

mod imds;
mod moto;
mod policy;

mod asg;
mod controller;
mod fleet;
mod iam;
mod lifecycle;
mod pipeline;
mod queue;
mod replicas;
mod setup;
mod store;
mod worker_binary;
