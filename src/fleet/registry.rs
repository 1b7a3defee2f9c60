//! The local fleet's record of its worker processes, in a SQLite table next
//! to the queues. Workers write their own state (ready, busy); the fleet
//! reads it. It outlives the controller, which is how a restarted
//! controller finds and adopts workers from its previous run.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection};

use super::{ActivityReporter, Instance, InstanceState};
use crate::job::unix_millis;

pub struct InstanceRegistry {
    connection: Mutex<Connection>,
}

#[derive(Debug, Clone)]
pub struct RegisteredInstance {
    pub instance: Instance,
    pub pid: u32,
}

impl InstanceRegistry {
    pub fn open(path: &Path) -> rusqlite::Result<InstanceRegistry> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(30))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS instances (
                 id TEXT PRIMARY KEY,
                 pid INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 busy INTEGER NOT NULL DEFAULT 0,
                 launched_at_ms INTEGER NOT NULL
             );",
        )?;
        Ok(InstanceRegistry {
            connection: Mutex::new(connection),
        })
    }

    fn with<T>(&self, op: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let guard = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        op(&guard)
    }

    pub fn insert(&self, id: &str, pid: u32) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO instances (id, pid, state, busy, launched_at_ms)
                 VALUES (?1, ?2, 'pending', 0, ?3)
                 ON CONFLICT (id) DO UPDATE SET pid = excluded.pid",
                params![id, pid, unix_millis() as i64],
            )
            .map(drop)
        })
    }

    /// Moves pending -> running; never un-drains an instance. The worker may
    /// get here before its launcher recorded it, hence the upsert.
    pub fn mark_ready(&self, id: &str, pid: u32) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO instances (id, pid, state, busy, launched_at_ms)
                 VALUES (?1, ?2, 'running', 0, ?3)
                 ON CONFLICT (id) DO UPDATE SET state = 'running' WHERE state = 'pending'",
                params![id, pid, unix_millis() as i64],
            )
            .map(drop)
        })
    }

    pub fn set_state(&self, id: &str, state: InstanceState) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE instances SET state = ?2 WHERE id = ?1",
                params![id, state.as_str()],
            )
            .map(drop)
        })
    }

    pub fn set_busy(&self, id: &str, busy: bool) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE instances SET busy = ?2 WHERE id = ?1",
                params![id, busy],
            )
            .map(drop)
        })
    }

    pub fn remove(&self, id: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM instances WHERE id = ?1", params![id])
                .map(drop)
        })
    }

    pub fn all(&self) -> rusqlite::Result<Vec<RegisteredInstance>> {
        self.with(|c| {
            let mut select = c.prepare(
                "SELECT id, pid, state, busy, launched_at_ms FROM instances ORDER BY launched_at_ms, id",
            )?;
            let rows = select.query_map([], |row| {
                let state: String = row.get(2)?;
                Ok(RegisteredInstance {
                    instance: Instance {
                        id: row.get(0)?,
                        state: InstanceState::parse(&state).unwrap_or(InstanceState::Draining),
                        busy: Some(row.get(3)?),
                        launched_at_ms: row.get::<_, i64>(4)? as u64,
                    },
                    pid: row.get(1)?,
                })
            })?;
            rows.collect()
        })
    }
}

/// What a worker process uses to tell the registry it is ready or busy.
pub struct RegistryActivity {
    registry: InstanceRegistry,
    id: String,
}

impl RegistryActivity {
    pub fn new(path: PathBuf, id: String) -> rusqlite::Result<RegistryActivity> {
        let registry = InstanceRegistry::open(&path)?;
        registry.mark_ready(&id, std::process::id())?;
        Ok(RegistryActivity { registry, id })
    }
}

impl ActivityReporter for RegistryActivity {
    fn busy(&self, busy: bool) {
        if let Err(e) = self.registry.set_busy(&self.id, busy) {
            tracing::warn!(error = %e, "cannot record worker activity");
        }
    }
}
