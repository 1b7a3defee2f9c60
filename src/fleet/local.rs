//! Workers as child processes of this machine (`imagefleet worker`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::{Child, Command};

use super::lock::FleetLock;
use super::registry::{InstanceRegistry, RegisteredInstance};
use super::{Fleet, FleetError, Instance, InstanceState};

/// How long workers get to finish their jobs when the service stops.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// The cap on local worker processes unless `--max-instances` says
/// otherwise: one per core, since each worker's inference runs on one
/// thread (`cargo bench --bench pipeline` found more workers than cores no
/// faster; docs/performance.md).
pub fn default_max_local_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// How to start one worker; the fleet appends `--instance-id ID`.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

pub struct LocalFleet {
    registry: Arc<InstanceRegistry>,
    command: WorkerCommand,
    /// Workers this process started (and so can reap). Adopted workers from
    /// an earlier run are tracked by pid only.
    children: Mutex<HashMap<String, Child>>,
    /// This process is the only one managing these workers.
    _lock: FleetLock,
}

impl LocalFleet {
    /// Takes the fleet's lock (refused while another controller holds it),
    /// opens the registry and adopts live workers left by an earlier run;
    /// records of dead ones are dropped.
    pub fn open(registry_path: &Path, command: WorkerCommand) -> anyhow::Result<LocalFleet> {
        let lock = FleetLock::acquire(&registry_path.with_extension("lock"))?;
        let registry = InstanceRegistry::open(registry_path).map_err(|e| {
            anyhow::anyhow!("opening fleet registry {}: {e}", registry_path.display())
        })?;
        let fleet = LocalFleet {
            registry: Arc::new(registry),
            command,
            children: Mutex::new(HashMap::new()),
            _lock: lock,
        };
        let adopted = fleet.reap()?;
        if !adopted.is_empty() {
            tracing::info!(count = adopted.len(), "adopted workers from an earlier run");
        }
        Ok(fleet)
    }

    /// Drops records of workers that have exited; returns the live ones.
    fn reap(&self) -> anyhow::Result<Vec<RegisteredInstance>> {
        let registered = self
            .registry
            .all()
            .map_err(|e| anyhow::anyhow!("reading fleet registry: {e}"))?;
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = Vec::with_capacity(registered.len());
        for record in registered {
            let id = &record.instance.id;
            let alive = match children.get_mut(id) {
                Some(child) => match child.try_wait() {
                    Ok(None) => true,
                    Ok(Some(status)) => {
                        if !status.success() && record.instance.state != InstanceState::Draining {
                            tracing::warn!(instance = %id, %status, "worker exited unexpectedly");
                        }
                        children.remove(id);
                        false
                    }
                    Err(_) => false,
                },
                None => is_our_worker(record.pid, id),
            };
            if alive {
                live.push(record);
            } else {
                let _ = self.registry.remove(id);
            }
        }
        Ok(live)
    }

    /// Terminates every worker and waits up to `grace` for them to finish
    /// their jobs; stragglers are killed.
    pub async fn shutdown(&self, grace: Duration) {
        let ids: Vec<String> = match self.list().await {
            Ok(instances) => instances.into_iter().map(|i| i.id).collect(),
            Err(_) => return,
        };
        let _ = self.terminate(&ids).await;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.reap() {
                Ok(live) if live.is_empty() => return,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        if let Ok(live) = self.reap() {
            for record in live {
                tracing::warn!(instance = %record.instance.id, "worker did not stop in time; killing it");
                signal(record.pid, libc::SIGKILL);
                let _ = self.registry.remove(&record.instance.id);
            }
        }
    }
}

/// True when `pid` is alive and is the worker started with this instance id
/// (guards against a recycled pid).
fn is_our_worker(pid: u32, id: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|b| *b == 0).any(|arg| arg == id.as_bytes()),
        Err(_) => false,
    }
}

fn signal(pid: u32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }
}

fn new_instance_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("w-{}", &uuid[..12])
}

#[async_trait]
impl Fleet for LocalFleet {
    async fn list(&self) -> Result<Vec<Instance>, FleetError> {
        self.reap()
            .map(|live| live.into_iter().map(|r| r.instance).collect())
            .map_err(|e| FleetError::List(format!("{e:#}")))
    }

    async fn launch(&self, count: usize) -> Result<Vec<String>, FleetError> {
        let mut launched = Vec::with_capacity(count);
        for _ in 0..count {
            let id = new_instance_id();
            let mut command = Command::new(&self.command.program);
            command
                .args(&self.command.args)
                .arg("--instance-id")
                .arg(&id)
                .arg("--parent-pid")
                .arg(std::process::id().to_string())
                .stdin(Stdio::null())
                // Its own process group: a Ctrl-C in the terminal reaches
                // the service, which stops its workers in order, not the
                // workers directly (they would leave open requests
                // unanswered while the service drains).
                .process_group(0);
            // SAFETY: prctl(2) is async-signal-safe and touches no memory
            // of the parent; this closure runs in the child before exec.
            unsafe {
                command.pre_exec(|| {
                    // SIGTERM when the service dies, however it dies: the
                    // worker finishes its job and exits instead of running
                    // on, unsupervised and uncounted.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn().map_err(|e| {
                FleetError::Launch(format!("{}: {e}", self.command.program.display()))
            })?;
            let pid = child.id().unwrap_or(0);
            self.registry
                .insert(&id, pid)
                .map_err(|e| FleetError::Launch(format!("recording worker {id}: {e}")))?;
            self.children
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), child);
            tracing::info!(instance = %id, pid, "worker launched");
            launched.push(id);
        }
        Ok(launched)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        let live = self
            .reap()
            .map_err(|e| FleetError::Terminate(format!("{e:#}")))?;
        for record in live.iter().filter(|r| ids.contains(&r.instance.id)) {
            self.registry
                .set_state(&record.instance.id, InstanceState::Draining)
                .map_err(|e| FleetError::Terminate(e.to_string()))?;
            // SIGTERM: the worker finishes its current job, hands back the
            // rest of its batch and exits.
            signal(record.pid, libc::SIGTERM);
            tracing::info!(instance = %record.instance.id, pid = record.pid, "worker told to stop");
        }
        Ok(())
    }
}
