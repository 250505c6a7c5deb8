//! The two database roles of SPEC §10, as `aex init` sets them up: the role it was given (or the
//! embedded cluster's superuser) owns the tables and runs migrations (`migration_database_url`);
//! a login role made here, `<database>_runtime`, is what the server connects as
//! (`database_url`). It is granted what the server needs by `aex_grant_runtime` after every
//! migration run, and owns nothing, so it cannot disable the ledger's triggers, alter a table,
//! or delete, update or truncate the ledger.

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use crate::store::setup;

/// Creates (or, when it exists, gives a new password to) the runtime role of the database at
/// `owner_url`; the URL to connect as it. `None` when the owner may not create roles: the
/// server then runs as the owner and says so at startup.
pub async fn ensure_runtime_role(
    owner_url: &str,
    password: &str,
) -> anyhow::Result<Option<String>> {
    let mut conn = PgConnection::connect(owner_url)
        .await
        .context("cannot connect to the database")?;
    let (database, may_create) = setup::database_and_may_create_roles(&mut conn).await?;
    if !may_create {
        return Ok(None);
    }
    let role = runtime_role_name(&database);
    setup::set_login_role(&mut conn, &role, password)
        .await
        .with_context(|| format!("creating the runtime role {role}"))?;
    conn.close().await?;
    Ok(Some(with_user(owner_url, &role, password)?))
}

/// The runtime role of a database: unique per database, since roles are cluster-wide.
pub fn runtime_role_name(database: &str) -> String {
    // Postgres names are at most 63 bytes.
    let base: String = database.chars().take(50).collect();
    format!("{base}_runtime")
}

/// `url` with its user and password replaced (`password` is alphanumeric: no escaping needed).
fn with_user(url: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("the database URL has no scheme")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let user = user
        .replace('%', "%25")
        .replace('@', "%40")
        .replace(':', "%3A");
    Ok(format!("{scheme}://{user}:{password}@{host}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_url_keeps_host_database_and_options() {
        assert_eq!(
            with_user(
                "postgres://owner:pw@db:5432/aex?sslmode=require",
                "aex_runtime",
                "s3"
            )
            .unwrap(),
            "postgres://aex_runtime:s3@db:5432/aex?sslmode=require"
        );
        assert_eq!(
            with_user("postgres://127.0.0.1/aex", "r", "p").unwrap(),
            "postgres://r:p@127.0.0.1/aex"
        );
    }
}
