//! A record of every AWS API call a process makes: an SDK interceptor on
//! each client, off unless asked for. The tests switch it on (through
//! `IMAGEFLEET_AWS_CALL_LOG` for the real binary, or [`CallLog::memory`] in
//! process) and check each call against the tier's IAM policy, so the
//! policies in worker/ami/iam/ are proven by what the code really does, not
//! by what someone thought it did. An operator can use the same switch to
//! see what a tier calls.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde::{Deserialize, Serialize};

/// The environment variable naming the file a process appends its calls to
/// (one JSON object a line).
pub const CALL_LOG_ENV: &str = "IMAGEFLEET_AWS_CALL_LOG";

/// Request bodies longer than this are not kept (only S3 object bodies get
/// near it, and those are skipped anyway).
const MAX_BODY: usize = 64 * 1024;

/// One attempt at one API call, as it went on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The SDK's service name, e.g. `sqs`, `s3`, `ec2`, `autoscaling`.
    pub service: String,
    /// The operation, e.g. `SendMessage`.
    pub operation: String,
    pub method: String,
    pub uri: String,
    /// `X-Amz-Target` (JSON protocols name the operation there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The request body when it is a query form or JSON (never an S3
    /// object's bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The HTTP status of the answer, if one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl Call {
    /// The request's form parameters (EC2 and Auto Scaling use query forms).
    pub fn form(&self) -> Vec<(String, String)> {
        let Some(body) = &self.body else {
            return Vec::new();
        };
        body.split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The first form parameter called `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The request body as JSON (SQS speaks JSON).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.body.as_deref()?).ok()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
enum Sink {
    File(Mutex<File>),
    Memory(Mutex<Vec<Call>>),
}

/// Where recorded calls go. Cloning shares the record.
#[derive(Debug, Clone)]
pub struct CallLog(Arc<Sink>);

impl CallLog {
    /// Calls kept in memory, read back with [`CallLog::calls`].
    pub fn memory() -> CallLog {
        CallLog(Arc::new(Sink::Memory(Mutex::new(Vec::new()))))
    }

    /// Calls appended to `path`, one JSON object a line (several processes
    /// may share one file: each line is one append).
    pub fn file(path: &Path) -> std::io::Result<CallLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(CallLog(Arc::new(Sink::File(Mutex::new(file)))))
    }

    /// The log `IMAGEFLEET_AWS_CALL_LOG` names, if it is set.
    pub fn from_env() -> Option<CallLog> {
        let path = PathBuf::from(std::env::var_os(CALL_LOG_ENV)?);
        match CallLog::file(&path) {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the AWS call log");
                None
            }
        }
    }

    fn push(&self, call: Call) {
        match &*self.0 {
            Sink::Memory(calls) => calls.lock().unwrap_or_else(|p| p.into_inner()).push(call),
            Sink::File(file) => {
                let mut line = serde_json::to_string(&call).expect("calls serialise");
                line.push('\n');
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = file.write_all(line.as_bytes()) {
                    tracing::warn!(error = %e, "cannot append to the AWS call log");
                }
            }
        }
    }

    /// The calls recorded in memory so far (a file log: none; use [`read`]).
    pub fn calls(&self) -> Vec<Call> {
        match &*self.0 {
            Sink::Memory(calls) => calls.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            Sink::File(_) => Vec::new(),
        }
    }

    /// The interceptor to put on a client's config.
    pub fn interceptor(&self) -> Recorder {
        Recorder { log: self.clone() }
    }
}

/// Reads a file written by [`CallLog::file`].
pub fn read(path: &Path) -> std::io::Result<Vec<Call>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// The SDK interceptor: notes each attempt's request just before it goes
/// (the HTTP client takes it then), and records it with the answer's
/// status once the attempt is over.
#[derive(Debug, Clone)]
pub struct Recorder {
    log: CallLog,
}

/// The request of the attempt in progress, kept in the call's config bag.
#[derive(Debug, Clone)]
struct Pending(Call);

impl Storable for Pending {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "imagefleet-call-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_owned(), m.name().to_owned()))
            .unwrap_or_default();
        let is_s3 = service.eq_ignore_ascii_case("s3");
        let body = request
            .body()
            .bytes()
            .filter(|b| !is_s3 && b.len() <= MAX_BODY)
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let call = Call {
            service,
            operation,
            method: request.method().to_owned(),
            uri: request.uri().to_owned(),
            target: request.headers().get("x-amz-target").map(str::to_owned),
            body,
            status: None,
        };
        cfg.interceptor_state().store_put(Pending(call));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // An attempt that failed before transmitting (no connection) has
        // nothing pending; a later one replaces what an earlier one left.
        if let Some(Pending(call)) = cfg.load::<Pending>().cloned() {
            self.log.push(Call {
                status: context.response().map(|r| r.status().as_u16()),
                ..call
            });
            cfg.interceptor_state().unset::<Pending>();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        let call = Call {
            service: "ec2".into(),
            operation: "RunInstances".into(),
            method: "POST".into(),
            uri: "/".into(),
            target: None,
            body: Some(
                "Action=RunInstances&TagSpecification.1.Tag.1.Key=imagefleet%3Afleet&X=a+b&E="
                    .into(),
            ),
            status: Some(200),
        };
        assert_eq!(call.param("Action").as_deref(), Some("RunInstances"));
        assert_eq!(
            call.param("TagSpecification.1.Tag.1.Key").as_deref(),
            Some("imagefleet:fleet")
        );
        assert_eq!(call.param("X").as_deref(), Some("a b"));
        assert_eq!(call.param("E").as_deref(), Some(""));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%2"), "%2");
    }
}
