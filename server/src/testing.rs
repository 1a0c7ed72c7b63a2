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

/// A private schema in a PostgreSQL database. [`PostgresSchema::drop`]
/// removes it once its users are done; a schema never dropped that way (a
/// test that panicked or returned early) is dropped when the value is.
pub struct PostgresSchema {
    admin_url: String,
    schema: String,
    /// A database URL whose connections use only this schema.
    pub url: String,
    dropped: bool,
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
            dropped: false,
        })
    }

    /// Drops the schema and everything in it; a failure is printed with the
    /// schema's name, for whoever cleans up by hand.
    pub async fn drop(mut self) {
        self.dropped = true;
        if let Err(error) = drop_schema(&self.admin_url, &self.schema).await {
            eprintln!("could not drop test schema {}: {error}", self.schema);
        }
    }
}

impl Drop for PostgresSchema {
    /// The fallback for a schema whose owner never reached
    /// [`PostgresSchema::drop`]: the same statement, run to completion on a
    /// thread of its own, since a destructor cannot await (and may run while
    /// a panic unwinds through an async test).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, schema) = (self.admin_url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(drop_schema(&admin_url, &schema))
                .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.schema);
        }
    }
}

/// `DROP SCHEMA … CASCADE`, giving up after [`DROP_LOCK_TIMEOUT`] rather
/// than waiting forever on a lock a server under test still holds.
async fn drop_schema(admin_url: &str, schema: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET lock_timeout = '{}s'",
        DROP_LOCK_TIMEOUT.as_secs()
    )))
    .execute(&mut admin)
    .await?;
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// How long dropping a test schema waits for the locks it needs.
const DROP_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a schema of this name exists on the test server.
    async fn schema_exists(name: &str) -> bool {
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)",
        )
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_whose_test_panicked_is_dropped_all_the_same() {
        let (name_tx, name_rx) = tokio::sync::oneshot::channel();
        let test = tokio::spawn(async move {
            let Some(schema) = PostgresSchema::create().await else {
                return;
            };
            name_tx.send(schema.schema.clone()).unwrap();
            panic!("a failing assertion, before the test reached schema.drop()");
        });
        assert!(test.await.unwrap_err().is_panic());
        let Ok(name) = name_rx.await else {
            return; // PostgreSQL unreachable and not required: skipped.
        };
        assert!(!schema_exists(&name).await, "{name} was left behind");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_dropped_explicitly_is_gone() {
        let Some(schema) = PostgresSchema::create().await else {
            return;
        };
        let name = schema.schema.clone();
        assert!(schema_exists(&name).await);
        schema.drop().await;
        assert!(!schema_exists(&name).await, "{name} was left behind");
    }
}
