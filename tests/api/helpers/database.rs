//! A fresh Postgres database per test, dropped when the test ends.

use std::time::Duration;

use sqlx::PgPool;

/// The server every test database is created on: `TEST_DATABASE_URL`, else the local one.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test and dropped when the test ends (even if it fails).
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The server's admin URL the database was created through (and is dropped through).
    admin: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        Self::create_on(&admin_database_url()).await
    }

    /// A database on the server at `admin` (a URL naming any database the user may connect to).
    pub async fn create_on(admin: &str) -> TestDb {
        let name = format!("aex_test_{}", uuid::Uuid::new_v4().simple());
        let pool = PgPool::connect(admin)
            .await
            .expect("connect to the test Postgres server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .expect("url has a database");
        TestDb {
            url: format!("{base}/{name}"),
            name,
            admin: admin.to_owned(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                // Bounded: a server a fault test left stopped must not hold the test up.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(3))
                    .connect(&admin)
                    .await;
                if let Ok(pool) = pool {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                    // The runtime role a test (or `aex init`) made for it: roles are
                    // cluster-wide.
                    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {name}_runtime"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}
