//! AWS plumbing: configuration, SDK clients and the workers' user data.
//! Nothing here imports from above it: the seams' AWS implementations
//! (`queue::sqs`, `store::s3`, `fleet::ec2`) build on this, and provisioning
//! (`commands::aws`) builds on those.

pub mod calls;
pub mod clients;
pub mod config;
pub mod user_data;

pub use clients::AwsClients;
pub use config::{AwsConfig, ConfigError, WorkerLaunch};
