//! Test and benchmark support: a fresh, private PostgreSQL schema per test,
//! so tests run in parallel against the real server without seeing each
//! other's rows, and [`on_every_backend!`](crate::on_every_backend), which
//! runs a test on SQLite and on PostgreSQL: the storage suite and the
//! integration tests use the same one.
//!
//! The server is found through `TASKPLANE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached
//! the PostgreSQL half of a suite is skipped with a printed line — unless
//! `TASKPLANE_REQUIRE_POSTGRES=1` (set by `.ci/run`), which makes that a
//! failure.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The test PostgreSQL server: `TASKPLANE_TEST_POSTGRES_URL`, or the local one.
pub fn admin_url() -> String {
    std::env::var("TASKPLANE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A private schema in a PostgreSQL database.
pub struct PostgresSchema {
    admin_url: String,
    schema: String,
    /// A database URL whose connections use only this schema.
    pub url: String,
}

impl PostgresSchema {
    /// Creates a fresh schema in the test database, or returns `None` (after
    /// printing why) when PostgreSQL is unreachable and not required.
    pub async fn create() -> Option<Self> {
        let admin_url = admin_url();
        match Self::create_in(&admin_url).await {
            Ok(schema) => Some(schema),
            Err(error) => {
                assert!(
                    std::env::var("TASKPLANE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                    "PostgreSQL is required (TASKPLANE_REQUIRE_POSTGRES=1) but {admin_url} is unreachable: {error}"
                );
                println!("SKIPPED postgres half: {admin_url} is unreachable ({error})");
                None
            }
        }
    }

    /// Creates a fresh schema in the database at `admin_url`.
    pub async fn create_in(admin_url: &str) -> Result<Self, sqlx::Error> {
        let mut admin = PgConnection::connect(admin_url).await?;
        let schema = format!("taskplane_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await?;
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options[search_path]={schema}");
        Ok(PostgresSchema {
            admin_url: admin_url.to_owned(),
            schema,
            url,
        })
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await;
        }
    }
}

/// The database a test runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A fresh SQLite file in a directory the test owns.
    Sqlite,
    /// A private schema in the test PostgreSQL database (this URL).
    Postgres(String),
}

impl Backend {
    /// The database URL for a server whose data directory is `dir`.
    pub fn database_url(&self, dir: &std::path::Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", dir.join("taskplane.db").display()),
            Backend::Postgres(url) => url.clone(),
        }
    }
}

/// Runs each named test body, an `async fn(Backend)`, once on SQLite and
/// once on a private PostgreSQL schema dropped afterwards (skipped with a
/// printed line when PostgreSQL is unreachable and not required, see
/// [`PostgresSchema::create`]). Attributes before a name apply to both runs.
#[macro_export]
macro_rules! on_every_backend {
    ($($(#[$meta:meta])* $test:ident),* $(,)?) => {
        mod sqlite {
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::testing::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(schema) = $crate::testing::PostgresSchema::create().await else { return };
                    super::$test($crate::testing::Backend::Postgres(schema.url.clone())).await;
                    schema.drop().await;
                }
            )*
        }
    };
}
