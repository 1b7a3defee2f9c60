//! One module per subcommand, each with its flags and its `run`: they wire
//! the pieces together at the edge. Flags that several commands share are
//! in `args`.

pub mod args;
pub mod aws;
pub mod classify;
pub mod controller;
pub mod dlq;
pub mod load;
pub mod logging;
pub mod plan;
pub mod policy;
pub mod serve;
pub mod simulate;
pub mod web;
pub mod worker;
