//! Recordings in the shared store (`[store] recordings = "database"`, the
//! default): each recording a lead names goes into the `recordings` table
//! in the transaction that ships the event naming it (`ship`), and a node
//! asked for a recording it has not got (a signed link, the inbox's player)
//! fetches it from there into its own recordings directory first.
//! They are small: 16 kB/s as 16-bit PCM, 8 kB/s as μ-law.

use super::{Cluster, ClusterError};
use crate::sink::event::Event;
use std::path::{Path, PathBuf};

/// The recording files `event`'s lead names (the whole call's, each voice answer's).
pub fn named(event: &Event) -> Vec<String> {
    let lead = &event.lead;
    lead.recording.iter().chain(lead.answers.values().filter_map(|a| a.recording.as_ref())).cloned().collect()
}

/// Upload the recordings `event` names that are under `dir`, inside `tx`.
/// One that is not there (never written, removed) is skipped with a warning.
pub async fn upload(
    tx: &tokio_postgres::Transaction<'_>,
    cluster: &Cluster,
    dir: &Path,
    event: &Event,
) -> Result<(), ClusterError> {
    for file in named(event) {
        if !crate::http::recordings::plain_name(&file) {
            continue;
        }
        let exists = tx.query_opt("SELECT 1 FROM recordings WHERE file = $1", &[&file]).await?.is_some();
        if exists {
            continue;
        }
        let path = dir.join(&file);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "shared store: a recording the lead names cannot be read; not uploaded");
                continue;
            }
        };
        tx.execute(
            "INSERT INTO recordings (file, node, bytes) VALUES ($1, $2, $3) ON CONFLICT (file) DO NOTHING",
            &[&file, &cluster.node, &bytes],
        )
        .await?;
    }
    Ok(())
}

/// Make sure `file` is under `dir`, fetching it from the shared store when
/// it is not. Returns its path, or `None` when the store has not got it either.
pub async fn fetch(cluster: &Cluster, dir: &Path, file: &str) -> Result<Option<PathBuf>, ClusterError> {
    let path = dir.join(file);
    if tokio::fs::symlink_metadata(&path).await.is_ok_and(|m| m.is_file()) {
        return Ok(Some(path));
    }
    let client = cluster.client().await?;
    let Some(row) = client.query_opt("SELECT bytes FROM recordings WHERE file = $1", &[&file]).await? else {
        return Ok(None);
    };
    let bytes: Vec<u8> = row.get(0);
    // Written aside and renamed: a concurrent request never serves half a file.
    let part = dir.join(format!(".{file}.{}.part", uuid::Uuid::new_v4().simple()));
    let written = async {
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::write(&part, &bytes).await?;
        tokio::fs::rename(&part, &path).await
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&part).await;
        tracing::warn!(file = %path.display(), error = %e, "shared store: a fetched recording could not be kept here");
        return Ok(None);
    }
    Ok(Some(path))
}
