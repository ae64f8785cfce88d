//! The cluster's shared store: PostgreSQL (`[store] url`), beside each
//! node's own SQLite outbox, which stays the node's journal.
//!
//! - **Shipping** (`ship`): every event a node commits to its outbox has a
//!   delivery for the `postgres` sink, delivered like any other: into the
//!   shared `events` table, once by id, with one row in `deliveries` per
//!   shared sink (webhooks, text-backs) that takes it. PostgreSQL away, the
//!   events wait in the outbox in order and go when it is back.
//! - **Delivering** (`queue`): any live node's worker claims due shared
//!   deliveries (`FOR UPDATE SKIP LOCKED` and a lease), a call's events in
//!   order; a node that dies mid-delivery loses its lease to the others.
//! - **Following** (`replica`): each node applies every other node's events
//!   to its own lead store, so the inbox, the API, the report and the
//!   callback clock of any node see every lead.
//! - **Heartbeats** (`nodes`): a node silent past `dead_after` is claimed by
//!   exactly one survivor, which closes the calls it had open as
//!   `interrupted`.
//!
//! Everything published from here is keyed (`Event::keyed`): a reminder,
//! an interrupted lead or a transfer's `lead.handled` that two nodes both
//! publish is one row in `events`, delivered once.

pub mod migrate;
pub mod nodes;
pub mod queue;
pub mod recordings;
pub mod replica;
pub mod ship;

use crate::config::SharedStore;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;

/// The outbox sink that ships events to PostgreSQL. Its name cannot be a
/// webhook's (their names are URLs) or a file's (`file:`).
pub const SHIP_SINK: &str = "postgres";

/// One error type for the shared store.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL pool setup: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("an event in PostgreSQL cannot be read: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("PostgreSQL took longer than {} s; abandoned", TRANSACTION_TIMEOUT.as_secs())]
    TooLong,
}

impl ClusterError {
    /// PostgreSQL refused the data itself (SQLSTATE classes 22, data
    /// exception, and 23, integrity): trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClusterError::Db(e) => e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
            ClusterError::Unreadable(_) => true,
            _ => false,
        }
    }
}

/// A text column's value as PostgreSQL takes it: without NUL characters,
/// which a `text` cannot hold (a Call-ID is the caller's to choose). Only
/// the columns a query groups by; the event's JSON escapes them.
pub(crate) fn text_value(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') { s.replace('\0', "").into() } else { s.into() }
}

/// A connection pool to the shared store, and who this node is.
#[derive(Clone)]
pub struct Cluster {
    pool: Pool,
    /// Two connections of their own for the heartbeat and the reaping: a
    /// pool busy with deliveries never makes a live node miss heartbeats.
    control: Pool,
    pub node: String,
    pub settings: SharedStore,
    /// The shared sinks' pending and dead deliveries, cluster-wide, as
    /// last read (`nodes::run`), for the metrics.
    figures: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, Figures)>>>,
}

/// Each shared sink's name, pending and dead deliveries.
pub type Figures = Vec<(String, u64, u64)>;

/// Shared figures older than this are not reported.
const FIGURES_STALE: Duration = Duration::from_secs(20);

/// How long getting a connection may take before the operation fails (and
/// is retried by its loop): a dead database never blocks a worker for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a statement, or a wait in a transaction, may take.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a transaction that inserts events may run before it is
/// abandoned, well under the followers' `replica::HOLE_WAIT`: an event does
/// not commit long after it took its number. (The commit itself, once
/// sent, may still land later; the followers' 30 s allow for most of that.)
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// A pool for `store` (no connection is made yet).
    pub fn new(store: &SharedStore) -> Result<Cluster, ClusterError> {
        let mut pg: tokio_postgres::Config = store.url.parse()?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.application_name(format!("backstop {}", store.node));
        // No statement runs, and no transaction idles, past these (the
        // transactions that insert events are bounded as a whole too,
        // `TRANSACTION_TIMEOUT`).
        pg.options(format!(
            "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms} -c lock_timeout={ms}",
            ms = STATEMENT_TIMEOUT.as_millis()
        ));
        let pool = |size: usize| {
            let manager = Manager::from_config(
                pg.clone(),
                tokio_postgres::NoTls,
                ManagerConfig { recycling_method: RecyclingMethod::Fast },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(CONNECT_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
        };
        Ok(Cluster {
            pool: pool(16)?,
            control: pool(2)?,
            node: store.node.clone(),
            settings: store.clone(),
            figures: Default::default(),
        })
    }

    /// Bring the schema up to date (`migrate`).
    pub async fn migrate(&self) -> Result<usize, ClusterError> {
        let mut client = self.client().await?;
        migrate::run(&mut client).await
    }

    /// At the start: migrate now, or, with the database away, every 5 s in
    /// the background until it is back (calls go on; events wait in the
    /// outbox meanwhile, as in any outage).
    pub async fn migrate_or_later(self: &std::sync::Arc<Self>) {
        match self.migrate().await {
            Ok(_) => tracing::info!(node = %self.node, "shared store ready"),
            Err(e) => {
                tracing::error!(error = %e, "shared store: not reachable at the start; calls go on, events wait in the outbox, trying again every 5 s");
                let me = self.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        if me.migrate().await.is_ok() {
                            tracing::info!(node = %me.node, "shared store ready");
                            return;
                        }
                    }
                });
            }
        }
    }

    /// Each shared sink's pending and dead deliveries across the cluster,
    /// when read in the last 20 s.
    pub fn shared_figures(&self) -> Option<Vec<(String, u64, u64)>> {
        let last = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().filter(|(at, _)| at.elapsed() < FIGURES_STALE).map(|(_, f)| f.clone())
    }

    /// Read the shared sinks' figures (`shared_figures`) now.
    pub async fn read_figures(&self) -> Result<(), ClusterError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT sink, COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'dead')
                 FROM deliveries WHERE state IN ('pending', 'dead') GROUP BY sink ORDER BY sink",
                &[],
            )
            .await?;
        let figures = rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64)).collect();
        *self.figures.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), figures));
        Ok(())
    }

    /// A connection for the heartbeat and the reaping.
    pub(crate) async fn control(&self) -> Result<deadpool_postgres::Object, ClusterError> {
        Ok(self.control.get().await?)
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, ClusterError> {
        Ok(self.pool.get().await?)
    }
}
