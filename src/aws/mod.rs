//! AWS mode: configuration, SDK clients, the fleet's resources and the
//! workers' user data. The seams' AWS implementations live beside the local
//! ones (`queue::sqs`, `store::s3`, `fleet::ec2`).

pub mod clients;
pub mod config;
pub mod resources;
pub mod user_data;

pub use clients::AwsClients;
pub use config::{AwsConfig, ConfigError, WorkerLaunch};
