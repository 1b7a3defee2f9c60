//! The `ObjectStore` trait on S3 (moto).

use crate::moto::{clients, config, unique_fleet};
use bytes::Bytes;
use imagefleet::commands::aws as provision;
use imagefleet::store::{ObjectStore, S3Store, StoreError};

#[tokio::test]
async fn put_get_exists_list_delete() {
    let config = config(&unique_fleet("store"));
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    let store = S3Store::open(clients.s3.clone(), &config.input_bucket)
        .await
        .unwrap();
    assert_eq!(store.bucket(), config.input_bucket);

    assert_eq!(store.get("nothing").await.unwrap(), None);
    assert!(!store.exists("nothing").await.unwrap());
    store.delete("nothing").await.unwrap();

    let image = Bytes::from_static(b"\x89PNG not really");
    store
        .put("jobs/b.png", image.clone(), "image/png")
        .await
        .unwrap();
    store
        .put("jobs/a.json", Bytes::from_static(b"{}"), "application/json")
        .await
        .unwrap();
    store
        .put("other", Bytes::from_static(b"x"), "text/plain")
        .await
        .unwrap();
    assert_eq!(store.get("jobs/b.png").await.unwrap(), Some(image));
    assert!(store.exists("jobs/a.json").await.unwrap());
    assert_eq!(
        store.list("jobs/").await.unwrap(),
        ["jobs/a.json", "jobs/b.png"]
    );
    assert_eq!(store.list("").await.unwrap().len(), 3);

    // Overwrite replaces; delete removes.
    store
        .put("other", Bytes::from_static(b"y"), "text/plain")
        .await
        .unwrap();
    assert_eq!(store.get("other").await.unwrap().unwrap(), "y");
    store.delete("jobs/b.png").await.unwrap();
    assert!(!store.exists("jobs/b.png").await.unwrap());
    assert_eq!(store.list("jobs/").await.unwrap(), ["jobs/a.json"]);

    // Keys are checked before any request.
    assert!(matches!(
        store.put("../escape", Bytes::new(), "text/plain").await,
        Err(StoreError::InvalidKey { .. })
    ));
    provision::teardown(&clients, &config).await.unwrap();
}

#[tokio::test]
async fn opening_a_missing_bucket_says_to_run_setup() {
    let config = config(&unique_fleet("nobucket"));
    let clients = clients(&config).await;
    let err = S3Store::open(clients.s3.clone(), &config.output_bucket)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("imagefleet aws setup"), "{err}");
}

/// Results are written once: a late or duplicate worker cannot replace the
/// first result (S3 conditional writes, `If-None-Match: *`).
#[tokio::test]
async fn put_if_absent_lets_the_first_writer_win() {
    let config = config(&unique_fleet("once"));
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    let store = S3Store::open(clients.s3.clone(), &config.output_bucket)
        .await
        .unwrap();
    let first = Bytes::from_static(b"{\"label\":\"first\"}");
    let late = Bytes::from_static(b"{\"label\":\"late\"}");
    assert!(store
        .put_if_absent("r.json", first.clone(), "application/json")
        .await
        .unwrap());
    assert!(!store
        .put_if_absent("r.json", late, "application/json")
        .await
        .unwrap());
    assert_eq!(store.get("r.json").await.unwrap(), Some(first));
    provision::teardown(&clients, &config).await.unwrap();
}

/// Uploads stream to S3: past one part (5 MiB) as a multipart upload, so a
/// 12 MB upload never sits whole in memory; an aborted one leaves nothing.
#[tokio::test]
async fn streamed_objects_go_up_in_parts_and_aborts_leave_nothing() {
    let config = config(&unique_fleet("stream"));
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    let store = S3Store::open(clients.s3.clone(), &config.input_bucket)
        .await
        .unwrap();
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut writer = store.writer("big", "image/png").await.unwrap();
    for _ in 0..192 {
        writer.write(Bytes::from(chunk.clone())).await.unwrap();
    }
    assert!(
        !store.exists("big").await.unwrap(),
        "not visible before finish"
    );
    writer.finish().await.unwrap();
    let stored = store.get("big").await.unwrap().unwrap();
    assert_eq!(stored.len(), 192 * chunk.len());
    assert!(stored.chunks(chunk.len()).all(|c| c == chunk.as_slice()));

    let mut small = store.writer("small", "image/png").await.unwrap();
    small.write(Bytes::from_static(b"tiny")).await.unwrap();
    small.finish().await.unwrap();
    assert_eq!(store.get("small").await.unwrap().unwrap(), "tiny");

    let mut aborted = store.writer("aborted", "image/png").await.unwrap();
    for _ in 0..100 {
        aborted.write(Bytes::from(chunk.clone())).await.unwrap();
    }
    aborted.abort().await;
    assert!(!store.exists("aborted").await.unwrap());
    provision::teardown(&clients, &config).await.unwrap();
}
