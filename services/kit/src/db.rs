//! The database connection: connect with retry and backoff, apply migrations, notice
//! when the connection is lost, and reconnect by itself.
//!
//! One supervisor task owns the connection. Request handlers borrow the current
//! client through [`Database::client`]; while there is none, they answer 503.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{watch, RwLock};
use tokio_postgres::{Client, NoTls};

use crate::config::DbSettings;

/// The first and the longest wait between connection attempts. The cap keeps
/// recovery after an outage well under five seconds.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One versioned schema change. Applied once, in order, inside a transaction.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database is configured")]
    NotConfigured,
    #[error("the database is not reachable right now")]
    Unavailable,
    #[error("database query failed")]
    Query(#[from] tokio_postgres::Error),
}

/// What `/db-status` reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DbStatus {
    pub configured: bool,
    pub connected: bool,
    pub version: Option<String>,
    pub tables_count: Option<i64>,
    pub last_check: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Default)]
struct Shared {
    client: RwLock<Option<Arc<Client>>>,
    status: RwLock<DbStatus>,
}

/// Handle to the service's database (or to its absence). Cheap to clone.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Shared>,
    configured: bool,
    // Dropping the last handle stops the supervisor.
    _stop: Option<Arc<watch::Sender<()>>>,
}

impl Database {
    /// A service without a database.
    pub fn none() -> Self {
        Self { shared: Arc::default(), configured: false, _stop: None }
    }

    /// Starts the supervisor: it connects in the background and keeps reconnecting.
    /// Returns at once; the service serves (degraded) while the database is away.
    pub fn start(settings: DbSettings, migrations: &'static [Migration]) -> Self {
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = watch::channel(());
        tokio::spawn(supervise(settings, migrations, Arc::clone(&shared), stop_rx));
        Self { shared, configured: true, _stop: Some(Arc::new(stop_tx)) }
    }

    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// The connected client, or why there is none.
    pub async fn client(&self) -> Result<Arc<Client>, DbError> {
        if !self.configured {
            return Err(DbError::NotConfigured);
        }
        match &*self.shared.client.read().await {
            Some(client) if !client.is_closed() => Ok(Arc::clone(client)),
            _ => Err(DbError::Unavailable),
        }
    }

    pub async fn is_connected(&self) -> bool {
        self.client().await.is_ok()
    }

    /// Asks the server for its version and table count now, and records the check.
    pub async fn check(&self) -> DbStatus {
        if !self.configured {
            return DbStatus { error: Some(DbError::NotConfigured.to_string()), ..DbStatus::default() };
        }
        let now = Utc::now();
        let result = match self.client().await {
            Ok(client) => probe(&client).await.map_err(|e| describe(&e)),
            Err(e) => Err(e.to_string()),
        };
        let mut status = self.shared.status.write().await;
        status.configured = true;
        status.last_check = Some(now);
        match result {
            Ok((version, tables)) => {
                status.connected = true;
                status.version = Some(version);
                status.tables_count = Some(tables);
                status.error = None;
            }
            Err(message) => {
                status.connected = false;
                status.tables_count = None;
                status.error = Some(message);
            }
        }
        status.clone()
    }

    /// The last recorded status, without asking the server.
    pub async fn last_status(&self) -> DbStatus {
        let mut status = self.shared.status.read().await.clone();
        status.configured = self.configured;
        status.connected = self.is_connected().await;
        status
    }
}

async fn probe(client: &Client) -> Result<(String, i64), tokio_postgres::Error> {
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await?
        .get(0);
    Ok((version, tables))
}

/// A database error's message without the connection details.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

async fn supervise(
    settings: DbSettings,
    migrations: &'static [Migration],
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
) {
    let mut config = settings.config;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    let mut backoff = BACKOFF_START;
    loop {
        let attempt = async {
            let (client, connection) = config.connect(NoTls).await?;
            let connection = tokio::spawn(connection);
            migrate(&client, migrations).await?;
            Ok::<_, tokio_postgres::Error>((client, connection))
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = stop.changed() => return,
        };
        match outcome {
            Ok((client, connection)) => {
                backoff = BACKOFF_START;
                *shared.client.write().await = Some(Arc::new(client));
                tracing::info!("database connected");
                tokio::select! {
                    ended = connection => {
                        let reason = match ended {
                            Ok(Ok(())) => "closed".to_owned(),
                            Ok(Err(e)) => describe(&e),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(%reason, "database connection lost; reconnecting");
                        shared.status.write().await.error = Some(format!("connection lost: {reason}"));
                    }
                    _ = stop.changed() => return,
                }
                *shared.client.write().await = None;
            }
            Err(e) => {
                let message = describe(&e);
                tracing::warn!(error = %message, retry_in_ms = backoff.as_millis() as u64, "database not reachable");
                shared.status.write().await.error = Some(message);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Applies the migrations not yet recorded in `schema_migrations`, each in its own
/// transaction, under an advisory lock so that replicas starting together agree.
pub async fn migrate(client: &Client, migrations: &[Migration]) -> Result<(), tokio_postgres::Error> {
    const LOCK_KEY: i64 = 0x5354_414e_445f_4d47; // "STAND_MG"
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
               version integer PRIMARY KEY, \
               name text NOT NULL, \
               applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
    let result = async {
        for migration in migrations {
            let done = client
                .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&migration.version])
                .await?
                .is_some();
            if done {
                continue;
            }
            client.batch_execute("BEGIN").await?;
            let applied = async {
                client.batch_execute(migration.sql).await?;
                client
                    .execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        &[&migration.version, &migration.name],
                    )
                    .await?;
                client.batch_execute("COMMIT").await
            }
            .await;
            if let Err(e) = applied {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
            tracing::info!(version = migration.version, name = migration.name, "migration applied");
        }
        Ok(())
    }
    .await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    result.and(unlocked.map(|_| ()))
}
