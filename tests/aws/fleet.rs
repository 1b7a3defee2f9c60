//! The `Fleet` trait on raw EC2 instances (moto): tagged launches with the
//! workers' user data, IMDSv2 required and terminate-on-shutdown, listing
//! by tag with the workers' own state tags, terminations limited to the
//! fleet, stopped and never-ready instances reaped, failing launches
//! backed off and reported, and launched instances remembered while EC2
//! does not list them yet (a restarted controller included).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::moto::{
    any_image, clients, config, live_instances, tagged_instances, unique_fleet, MotoFleet,
};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::run_instances::RunInstancesOutput;
use aws_sdk_ec2::types::{HttpTokensState, InstanceAttributeName, Tag};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use imagefleet::aws::calls::CallLog;
use imagefleet::aws::config::WORKER_STATE_TAG;
use imagefleet::aws::{user_data, AwsClients};
use imagefleet::controller::{Controller, ControllerSettings, Limits};
use imagefleet::fleet::{Ec2Fleet, Fleet, FleetError, InstanceState, FLEET_TAG};
use imagefleet::policy::PolicySource;
use imagefleet::queue::{Queue, SqsQueue};

/// Launches until `count` instances are up: RunInstances asks for MinCount
/// 1, and moto then launches exactly one (EC2 launches up to MaxCount).
async fn launch_all(fleet: &Ec2Fleet, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let got = fleet.launch(count - ids.len()).await.unwrap();
        assert!(!got.is_empty());
        ids.extend(got);
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn launch_list_terminate_with_tags_imdsv2_and_user_data() {
    let fleet_name = unique_fleet("fleet");
    let mut config = config(&fleet_name);
    let clients = clients(&config).await;
    config.workers.image_id = Some(any_image(&clients).await);
    config.workers.instance_type = "t3.micro".into();
    let fleet = Ec2Fleet::new(&clients, &config);
    assert!(fleet.list().await.unwrap().is_empty());

    let ids = launch_all(&fleet, 4).await;
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), ids);
    // No worker has said it is ready: pending, busy unknown.
    assert!(listed
        .iter()
        .all(|i| i.state == InstanceState::Pending && i.busy.is_none() && i.launched_at_ms > 0));

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
        // IMDSv2 only: no credentials without a session token.
        assert_eq!(
            instance.metadata_options().and_then(|m| m.http_tokens()),
            Some(&HttpTokensState::Required),
            "{:?}",
            instance.instance_id()
        );
    }

    for id in &ids {
        // Every instance knows its queues, buckets and region from user data.
        let text = fleet.user_data(id).await.unwrap();
        assert!(text.starts_with("#cloud-config"));
        let env = user_data::parse_env(&text);
        assert_eq!(env, user_data::worker_env(&config, Some("us-east-1")));
        // A worker that shuts its instance down is gone for good.
        let behaviour = clients
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send()
            .await
            .unwrap();
        assert_eq!(
            behaviour
                .instance_initiated_shutdown_behavior()
                .and_then(|v| v.value()),
            Some("terminate")
        );
    }

    // A worker's tag says it is running, and whether busy.
    tag(&clients, &ids[0], "idle").await;
    tag(&clients, &ids[1], "busy").await;
    let state: HashMap<String, (InstanceState, Option<bool>)> = fleet
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.id, (i.state, i.busy)))
        .collect();
    assert_eq!(state[&ids[0]], (InstanceState::Running, Some(false)));
    assert_eq!(state[&ids[1]], (InstanceState::Running, Some(true)));
    assert_eq!(state[&ids[2]], (InstanceState::Pending, None));

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

async fn tag(clients: &AwsClients, id: &str, state: &str) {
    clients
        .ec2
        .create_tags()
        .resources(id)
        .tags(Tag::builder().key(WORKER_STATE_TAG).value(state).build())
        .send()
        .await
        .unwrap();
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

/// A stopped instance does no work but still costs (its volume) and would
/// hide from a listing of live states: it counts as draining and is
/// terminated. An instance whose worker never reports ready is too.
#[tokio::test]
async fn stopped_and_never_ready_instances_are_terminated() {
    let fleet_name = unique_fleet("reap");
    let mut config = config(&fleet_name);
    let clients = clients(&config).await;
    config.workers.image_id = Some(any_image(&clients).await);
    config.workers.ready_timeout_secs = 3600;
    let fleet = Ec2Fleet::new(&clients, &config);
    let ids = launch_all(&fleet, 2).await;
    tag(&clients, &ids[1], "idle").await;
    clients
        .ec2
        .stop_instances()
        .instance_ids(&ids[0])
        .send()
        .await
        .unwrap();
    // `aws status` only looks.
    let looking = fleet.clone().read_only().list().await.unwrap();
    assert_eq!(looking[0].state, InstanceState::Draining);
    assert!(tagged_instances(&clients, &fleet_name, Some("terminated"))
        .await
        .is_empty());
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed[0].id, ids[0]);
    assert_eq!(listed[0].state, InstanceState::Draining);
    assert_eq!(listed[1].state, InstanceState::Running);
    assert_eq!(
        tagged_instances(&clients, &fleet_name, Some("terminated")).await,
        BTreeSet::from([ids[0].clone()])
    );

    // With a ready timeout of zero, an instance without the worker's tag
    // has had its chance; the ready one stays.
    config.workers.ready_timeout_secs = 0;
    let impatient = Ec2Fleet::new(&clients, &config);
    let late = launch_all(&impatient, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let listed = impatient.list().await.unwrap();
    let state_of = |id: &str| listed.iter().find(|i| i.id == id).unwrap().state;
    assert_eq!(state_of(&late[0]), InstanceState::Draining);
    assert_eq!(state_of(&ids[1]), InstanceState::Running);
    assert!(tagged_instances(&clients, &fleet_name, Some("terminated"))
        .await
        .contains(&late[0]));
}

async fn enqueue(moto: &MotoFleet, count: usize) -> SqsQueue {
    let requests = SqsQueue::open(moto.clients.sqs.clone(), &moto.config.requests_queue)
        .await
        .unwrap();
    for i in 0..count {
        // No workers run here, so the bodies are never read.
        requests.send(&format!("job {i}")).await.unwrap();
    }
    requests
}

fn controller(requests: &SqsQueue, fleet: Ec2Fleet, max: u32) -> Controller {
    let policy =
        PolicySource::open(&crate::support::repo_root().join("policies/scale.rhai")).unwrap();
    Controller::new(
        Arc::new(requests.clone()) as Arc<dyn Queue>,
        Arc::new(fleet),
        policy,
        ControllerSettings {
            interval: Duration::from_millis(300),
            limits: Limits { min: 0, max },
            dry_run: false,
            ..ControllerSettings::default()
        },
    )
}

/// A launch that fails (here: a subnet that does not exist) is retried
/// after 2 s, 4 s, ... rather than on every tick, and the controller's
/// status says why and when the next attempt is.
#[tokio::test]
async fn a_failing_launch_backs_off_and_is_reported() {
    let moto = MotoFleet::setup("backoff").await;
    let log = CallLog::memory();
    let clients = AwsClients::recorded(&moto.config, &log).await;
    let mut config = moto.config.clone();
    config.workers.image_id = Some(moto.image.clone());
    config.workers.subnet_ids = vec!["subnet-00000000000000000".into()];
    let requests = enqueue(&moto, 35).await;
    let controller = controller(&requests, Ec2Fleet::new(&clients, &config), 20);
    let status = controller.status();
    let (trigger, shutdown) = imagefleet::shutdown::Shutdown::new();
    let running = tokio::spawn(controller.run(shutdown));
    // 20 ticks of 300 ms, in which the old code tried 20 launches.
    tokio::time::sleep(Duration::from_millis(5900)).await;
    trigger.trigger();
    running.await.unwrap();

    let attempts = log
        .calls()
        .iter()
        .filter(|c| c.operation == "RunInstances")
        .count();
    // At 0 s, 2 s and 6 s at most.
    let ops: Vec<String> = log
        .calls()
        .iter()
        .map(|c| format!("{}:{}:{:?}", c.service, c.operation, c.status))
        .collect();
    assert!(
        (2..=3).contains(&attempts),
        "{attempts} launches: {ops:?} {:?}",
        status.snapshot().last_error
    );
    // What GET /status shows: the cause, and that it is waiting.
    let error = status
        .snapshot()
        .last_error
        .expect("the launch error is in the controller's status");
    assert!(error.contains("cannot launch"), "{error}");
    assert!(error.contains("failed launch"), "{error}");
    assert!(error.contains("InvalidSubnetID"), "{error}");
    assert!(error.contains("next attempt in"), "{error}");
    moto.teardown().await;
}

/// EC2 answering DescribeInstances without instances launched less than
/// `lag` ago, as real EC2 may for a while (eventual consistency).
#[derive(Debug, Clone)]
struct LaggingListings {
    lag: Duration,
    launched: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Intercept for LaggingListings {
    fn name(&self) -> &'static str {
        "lagging-listings"
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let mut launched = self.launched.lock().unwrap();
        if let Some(run) = output.downcast_ref::<RunInstancesOutput>() {
            for id in run.instances().iter().filter_map(|i| i.instance_id()) {
                launched.insert(id.to_owned(), Instant::now());
            }
        }
        if let Some(listing) = output.downcast_mut::<DescribeInstancesOutput>() {
            for reservation in listing.reservations.iter_mut().flatten() {
                if let Some(instances) = reservation.instances.as_mut() {
                    instances.retain(|i| {
                        i.instance_id()
                            .and_then(|id| launched.get(id))
                            .is_none_or(|at| at.elapsed() >= self.lag)
                    });
                }
            }
        }
        Ok(())
    }
}

/// Two controllers in turn (the first stops, as after a crash, and a new
/// one starts on the same data dir) against an EC2 whose listings lag 4 s
/// behind launches: the cap of 4 holds throughout, because launched
/// instances are remembered, in the process and in the data dir, until a
/// listing shows them.
#[tokio::test]
async fn the_cap_holds_while_listings_lag_and_across_a_restart() {
    let moto = MotoFleet::setup("lag").await;
    let mut config = moto.config.clone();
    config.workers.image_id = Some(moto.image.clone());
    let lagging = LaggingListings {
        lag: Duration::from_secs(4),
        launched: Arc::default(),
    };
    let mut clients = moto.clients.clone();
    clients.ec2 = aws_sdk_ec2::Client::from_conf(
        clients
            .ec2
            .config()
            .to_builder()
            .interceptor(lagging.clone())
            .build(),
    );
    let data = tempfile::tempdir().unwrap();
    let record = data.path().join("ec2-launches.json");
    let requests = enqueue(&moto, 35).await;
    let launched = || lagging.launched.lock().unwrap().len();

    let fleet = Ec2Fleet::new(&clients, &config).remembering_launches_in(&record);
    let mut first = controller(&requests, fleet, 4);
    let started = Instant::now();
    // Ticks until 4 are launched (moto launches one per call), then 1 s more.
    while launched() < 4 && started.elapsed() < Duration::from_secs(3) {
        first.tick().await.unwrap();
    }
    assert_eq!(launched(), 4, "the first controller launched the 4 wanted");
    drop(first);

    // The listings still show none of them; the new controller must not
    // launch 4 more.
    let fleet = Ec2Fleet::new(&clients, &config).remembering_launches_in(&record);
    let mut second = controller(&requests, fleet, 4);
    while started.elapsed() < Duration::from_secs(6) {
        let plan = second.tick().await.unwrap();
        assert_eq!(launched(), 4, "{plan}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now listed: running or pending, and forgotten by the record.
    assert_eq!(
        live_instances(&Ec2Fleet::new(&moto.clients, &config))
            .await
            .len(),
        4
    );
    let remembered: HashMap<String, u64> =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert!(remembered.is_empty(), "{remembered:?}");
    moto.teardown().await;
}
