//! The `Queue` seam on Amazon SQS. Standard queues by default; on a FIFO
//! queue every job gets its own message group (so workers still take jobs in
//! parallel) and the job id is the deduplication id.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use aws_sdk_sqs::Client;

use super::{check_batch, Queue, QueueDepth, QueueError, ReceivedMessage, MAX_RECEIVE_BATCH};
use crate::aws::clients::{describe, is_not_found};

/// SQS's limits on long polling and on the visibility timeout.
const MAX_WAIT: Duration = Duration::from_secs(20);
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    name: String,
    url: String,
    fifo: bool,
}

impl SqsQueue {
    /// An existing queue, by name (`imagefleet aws setup` creates them).
    pub async fn open(client: Client, name: &str) -> Result<SqsQueue, QueueError> {
        let url = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable {
                queue: name.to_owned(),
                message: format!(
                    "cannot find the queue (did `imagefleet aws setup` run?): {}",
                    describe(&e)
                ),
            })?
            .queue_url
            .ok_or_else(|| QueueError::Unavailable {
                queue: name.to_owned(),
                message: "GetQueueUrl returned no URL".into(),
            })?;
        Ok(SqsQueue {
            client,
            name: name.to_owned(),
            fifo: name.ends_with(".fifo"),
            url,
        })
    }

    /// An existing queue, or `None` when there is no queue of that name
    /// (any other failure, such as a denied request, is an error).
    pub async fn open_if_exists(
        client: Client,
        name: &str,
    ) -> Result<Option<SqsQueue>, QueueError> {
        match client.get_queue_url().queue_name(name).send().await {
            Ok(output) => Ok(output.queue_url.map(|url| SqsQueue {
                client,
                name: name.to_owned(),
                fifo: name.ends_with(".fifo"),
                url,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(QueueError::Unavailable {
                queue: name.to_owned(),
                message: format!("GetQueueUrl: {}", describe(&e)),
            }),
        }
    }

    /// Creates a standard queue with these attributes and tags (or opens it
    /// if it already exists with the same attributes, as SQS does).
    pub async fn create(
        client: Client,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
        tags: HashMap<String, String>,
    ) -> Result<SqsQueue, QueueError> {
        let url = client
            .create_queue()
            .queue_name(name)
            .set_attributes((!attributes.is_empty()).then_some(attributes))
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| QueueError::Unavailable {
                queue: name.to_owned(),
                message: format!("CreateQueue: {}", describe(&e)),
            })?
            .queue_url
            .ok_or_else(|| QueueError::Unavailable {
                queue: name.to_owned(),
                message: "CreateQueue returned no URL".into(),
            })?;
        Ok(SqsQueue {
            client,
            name: name.to_owned(),
            fifo: name.ends_with(".fifo"),
            url,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `body`; `Ok(false)` when the queue no longer exists.
    pub async fn send_if_exists(&self, body: &str) -> Result<bool, QueueError> {
        match self.send_request(body)?.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.unavailable("SendMessage", e)),
        }
    }

    /// Sets (adds or replaces) one tag on the queue.
    pub async fn tag(&self, key: &str, value: &str) -> Result<(), QueueError> {
        self.client
            .tag_queue()
            .queue_url(&self.url)
            .tags(key, value)
            .send()
            .await
            .map_err(|e| self.unavailable("TagQueue", e))?;
        Ok(())
    }

    /// The queue's tags.
    pub async fn tags(&self) -> Result<HashMap<String, String>, QueueError> {
        let output = self
            .client
            .list_queue_tags()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(|e| self.unavailable("ListQueueTags", e))?;
        Ok(output.tags.unwrap_or_default())
    }

    /// Deletes the queue itself, with whatever it holds.
    pub async fn delete_queue(&self) -> Result<(), QueueError> {
        match self.client.delete_queue().queue_url(&self.url).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.unavailable("DeleteQueue", e)),
        }
    }

    /// The names of the queues whose names start with `prefix`.
    pub async fn list_names(client: &Client, prefix: &str) -> Result<Vec<String>, QueueError> {
        let mut pages = client
            .list_queues()
            .queue_name_prefix(prefix)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| QueueError::Unavailable {
                queue: format!("{prefix}*"),
                message: format!("ListQueues: {}", describe(&e)),
            })?;
            names.extend(
                page.queue_urls()
                    .iter()
                    .filter_map(|url| url.rsplit('/').next())
                    .map(str::to_owned),
            );
        }
        names.sort();
        Ok(names)
    }

    fn send_request(
        &self,
        body: &str,
    ) -> Result<aws_sdk_sqs::operation::send_message::builders::SendMessageFluentBuilder, QueueError>
    {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        if self.fifo {
            let id = job_id_of(body).ok_or_else(|| QueueError::Invalid {
                queue: self.name.clone(),
                message: "a FIFO queue needs a JSON body with a job_id".into(),
            })?;
            request = request.message_group_id(&id).message_deduplication_id(&id);
        }
        Ok(request)
    }

    fn unavailable<E: std::error::Error>(&self, action: &str, e: E) -> QueueError {
        QueueError::Unavailable {
            queue: self.name.clone(),
            message: format!("{action}: {}", describe(&e)),
        }
    }

    /// A receipt SQS no longer honours (the message was redelivered,
    /// deleted, or its visibility ran out) is a stale receipt, not an outage.
    fn receipt_error<E>(&self, action: &str, e: aws_sdk_sqs::error::SdkError<E>) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
        if code.contains("ReceiptHandleIsInvalid")
            || code.contains("MessageNotInflight")
            || code.contains("InvalidParameterValue")
        {
            QueueError::StaleReceipt {
                queue: self.name.clone(),
            }
        } else {
            self.unavailable(action, e)
        }
    }

    /// Deletes up to ten received messages in one call. The trait's
    /// `delete` handles one; this saves round trips for batch consumers.
    pub async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        for chunk in receipts.chunks(MAX_RECEIVE_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .expect("id and receipt are set")
                })
                .collect();
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.unavailable("DeleteMessageBatch", e))?;
            if let Some(failed) = output.failed.first() {
                return Err(QueueError::Invalid {
                    queue: self.name.clone(),
                    message: format!(
                        "{} of {} deletes failed, first: {} {}",
                        output.failed.len(),
                        chunk.len(),
                        failed.code,
                        failed.message.as_deref().unwrap_or("")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The job id in a request or result body; FIFO queues need it.
fn job_id_of(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let id = value.get("job_id").or_else(|| value.get("id"))?;
    id.as_str().map(str::to_owned)
}

fn clamp_secs(duration: Duration, max: Duration) -> i32 {
    duration.min(max).as_secs() as i32
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &str) -> Result<(), QueueError> {
        self.send_request(body)?
            .send()
            .await
            .map_err(|e| self.unavailable("SendMessage", e))?;
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        check_batch(&self.name, max)?;
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(clamp_secs(wait, MAX_WAIT))
            .visibility_timeout(clamp_secs(visibility, MAX_VISIBILITY))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.unavailable("ReceiveMessage", e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(ReceivedMessage {
                    body: m.body?,
                    receipt: m.receipt_handle?,
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.receipt_error("DeleteMessage", e))?;
        Ok(())
    }

    async fn extend_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(clamp_secs(visibility, MAX_VISIBILITY))
            .send()
            .await
            .map_err(|e| self.receipt_error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// SQS counts every receive and has no way to take one back, so the
    /// message is sent again as a new one (receive count zero) and the
    /// delivery deleted. A crash between the two leaves a duplicate, never a
    /// loss; results are written once, so a duplicate only costs work.
    async fn release(&self, message: &ReceivedMessage) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(&message.body);
        if self.fifo {
            // A fresh deduplication id: the job's own would make SQS drop the
            // copy as a duplicate of the delivery being released.
            let id = job_id_of(&message.body).unwrap_or_else(|| "released".to_owned());
            let dedup = uuid::Uuid::new_v4().simple().to_string();
            request = request
                .message_group_id(&id)
                .message_deduplication_id(dedup);
        }
        request
            .send()
            .await
            .map_err(|e| self.unavailable("SendMessage (release)", e))?;
        self.delete(&message.receipt).await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| self.unavailable("GetQueueAttributes", e))?;
        let attributes = output.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_ids_come_from_the_body() {
        assert_eq!(
            job_id_of(r#"{"job_id":"abc","input_key":"abc"}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(
            job_id_of(r#"{"id":"r1","label":"x"}"#).as_deref(),
            Some("r1")
        );
        assert_eq!(job_id_of("not json"), None);
        assert_eq!(job_id_of(r#"{"job_id":7}"#), None);
    }

    #[test]
    fn durations_are_clamped_to_sqs_limits() {
        assert_eq!(clamp_secs(Duration::from_secs(60), MAX_WAIT), 20);
        assert_eq!(clamp_secs(Duration::from_millis(500), MAX_WAIT), 0);
        assert_eq!(clamp_secs(Duration::from_secs(30), MAX_VISIBILITY), 30);
    }
}
