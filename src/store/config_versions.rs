//! Versions of the routing table.

use sqlx::PgConnection;

/// The channel on which a new active config version is announced.
pub const CONFIG_CHANNEL: &str = "aex_config";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConfigVersionRow {
    pub version: i64,
    pub content: String,
    pub content_hash: String,
    pub source: String,
    pub created_by: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn get_active(conn: &mut PgConnection) -> Result<Option<ConfigVersionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, content, content_hash, source, created_by, created_at \
         FROM config_versions ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await
}

pub async fn list_versions(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<ConfigVersionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, '' AS content, content_hash, source, created_by, created_at \
         FROM config_versions ORDER BY version DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Stores a new active version and announces it (delivered when the caller commits).
pub async fn insert_version(
    conn: &mut PgConnection,
    content: &str,
    content_hash: &str,
    source: &str,
    created_by: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO config_versions (content, content_hash, source, created_by) \
         VALUES ($1, $2, $3, $4) RETURNING version",
    )
    .bind(content)
    .bind(content_hash)
    .bind(source)
    .bind(created_by)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CONFIG_CHANNEL)
        .bind(version.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(version)
}
