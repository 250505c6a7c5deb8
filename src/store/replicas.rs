//! Server instances and their heartbeats.

use sqlx::PgConnection;

use crate::domain::ReplicaId;

pub async fn register(
    conn: &mut PgConnection,
    id: ReplicaId,
    hostname: &str,
    version: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO replicas (id, hostname, version) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(hostname)
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn heartbeat(conn: &mut PgConnection, id: ReplicaId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE replicas SET heartbeat_at = now() WHERE id = $1 AND stopped_at IS NULL")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn deregister(conn: &mut PgConnection, id: ReplicaId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE replicas SET stopped_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
