//! imagefleet: an autoscaling image-recognition service. The web tier
//! queues jobs, workers classify them, a controller sizes the fleet.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod fleet;
pub mod job;
pub mod paths;
pub mod policy;
pub mod queue;
pub mod retention;
pub mod rng;
pub mod services;
pub mod shutdown;
pub mod simulate;
pub mod store;
pub mod web;
pub mod worker;
