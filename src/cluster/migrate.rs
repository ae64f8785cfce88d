//! The shared store's schema: the SQL files in `migrations/postgres/`,
//! applied in order, each once, in its own transaction, while an advisory
//! lock keeps two nodes starting together from applying one twice.

use super::ClusterError;

/// Every migration, in order: (version, SQL). Never edit one that shipped; add the next.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/postgres/0001_cluster.sql"))];

/// The advisory lock's key ("backstop" in ASCII, truncated).
const LOCK: i64 = 0x6261_636b_7374_6f70;

/// Apply what is missing. Returns how many were applied.
pub async fn run(client: &mut tokio_postgres::Client) -> Result<usize, ClusterError> {
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        // The lock first: two nodes starting together create nothing twice.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS backstop_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        let done = tx.query_opt("SELECT 1 FROM backstop_migrations WHERE version = $1", &[version]).await?.is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO backstop_migrations (version) VALUES ($1)", &[version]).await?;
            applied += 1;
            tracing::info!(version, "shared store: migration applied");
        }
        tx.commit().await?;
    }
    Ok(applied)
}
