//! The statements of installing and diagnosing a database (`aex init`, the embedded cluster,
//! `aex doctor`): creating the `aex` database, the runtime role of SPEC §10, and which
//! migrations are applied. The pool and the migrations themselves are `db`'s.

use sqlx::{PgConnection, PgPool};

/// Creates the `aex` database unless it exists (on a connection to another database).
pub async fn create_aex_database(pool: &PgPool) -> Result<(), sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'aex')")
            .fetch_one(pool)
            .await?;
    if !exists {
        sqlx::query("CREATE DATABASE aex").execute(pool).await?;
    }
    Ok(())
}

/// The versions of the migrations applied successfully, in order; none when the migrations
/// table does not exist yet.
pub async fn applied_migrations(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
    {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(Vec::new()),
        applied => applied,
    }
}

/// The connected database's name, and whether the connected role may create roles.
pub async fn database_and_may_create_roles(
    conn: &mut PgConnection,
) -> Result<(String, bool), sqlx::Error> {
    sqlx::query_as(
        "SELECT current_database(), rolcreaterole OR rolsuper FROM pg_roles \
         WHERE rolname = current_user",
    )
    .fetch_one(conn)
    .await
}

/// Creates the login role `role` with `password`, or gives it that password when it exists.
pub async fn set_login_role(
    conn: &mut PgConnection,
    role: &str,
    password: &str,
) -> Result<(), sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    // Postgres quotes the name and the password itself (`%I`, `%L`).
    let statement: String = sqlx::query_scalar(
        "SELECT format(CASE WHEN $3 THEN 'ALTER ROLE %I LOGIN PASSWORD %L' \
                            ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END, $1::text, $2::text)",
    )
    .bind(role)
    .bind(password)
    .bind(exists)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::raw_sql(&statement).execute(conn).await?;
    Ok(())
}
