//! The `Fleet` trait on EC2 (moto): tagged launches with the workers' user
//! data, listing by tag, and terminations limited to the fleet.

use crate::moto::{any_image, clients, config, live_instances, tagged_instances, unique_fleet};
use imagefleet::aws::user_data;
use imagefleet::fleet::{Ec2Fleet, Fleet, FleetError, InstanceState, FLEET_TAG};

#[tokio::test]
async fn launch_list_terminate_with_tags_and_user_data() {
    let fleet_name = unique_fleet("fleet");
    let mut config = config(&fleet_name);
    let clients = clients(&config).await;
    config.workers.image_id = Some(any_image(&clients).await);
    config.workers.instance_type = "t3.micro".into();
    let fleet = Ec2Fleet::new(&clients, &config);
    assert!(fleet.list().await.unwrap().is_empty());

    let mut ids = fleet.launch(4).await.unwrap();
    ids.sort();
    assert_eq!(ids.len(), 4);
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), ids);
    assert!(listed.iter().all(|i| matches!(
        i.state,
        InstanceState::Pending | InstanceState::Running
    ) && i.busy.is_none()
        && i.launched_at_ms > 0));

    // Tagged as the fleet's, with the configured type and image.
    let described = clients
        .ec2
        .describe_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .unwrap();
    for instance in described.reservations().iter().flat_map(|r| r.instances()) {
        let tag = |key: &str| {
            instance
                .tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_owned)
        };
        assert_eq!(tag(FLEET_TAG), Some(fleet_name.clone()));
        assert_eq!(tag("Name"), Some(format!("imagefleet-{fleet_name}-worker")));
        assert_eq!(instance.instance_type().unwrap().as_str(), "t3.micro");
        assert_eq!(instance.image_id(), config.workers.image_id.as_deref());
    }

    // Every instance knows its queues, buckets and region from user data.
    for id in &ids {
        let text = fleet.user_data(id).await.unwrap();
        assert!(text.starts_with("#cloud-config"));
        let env = user_data::parse_env(&text);
        assert_eq!(env, user_data::worker_env(&config, Some("us-east-1")));
    }

    // Another fleet neither sees nor terminates these.
    let other = Ec2Fleet::new(
        &clients,
        &imagefleet::aws::AwsConfig::derived(&unique_fleet("other"), false),
    );
    assert!(other.list().await.unwrap().is_empty());
    assert!(matches!(
        other.terminate(&ids[..1]).await,
        Err(FleetError::Terminate(_))
    ));

    fleet.terminate(&ids[..2]).await.unwrap();
    assert_eq!(live_instances(&fleet).await, ids[2..]);
    fleet.terminate(&ids[2..]).await.unwrap();
    assert!(fleet
        .list()
        .await
        .unwrap()
        .iter()
        .all(|i| i.state == InstanceState::Draining));

    // Terminated instances stay terminated in EC2, only out of the fleet.
    let terminated = tagged_instances(&clients, &fleet_name, Some("terminated")).await;
    assert_eq!(terminated.len(), 4);
}

#[tokio::test]
async fn launching_without_an_image_is_a_clear_error() {
    let config = config(&unique_fleet("noami"));
    let clients = clients(&config).await;
    let err = Ec2Fleet::new(&clients, &config)
        .launch(1)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("IMAGEFLEET_WORKER_IMAGE_ID"),
        "{err}"
    );
}
