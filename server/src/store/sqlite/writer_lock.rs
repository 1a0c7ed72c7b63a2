//! The one write lock of a SQLite store, and the sqlx writer connection it
//! guards. The writer thread takes the same lock, so the two writers never
//! overlap.
//!
//! The lock also heals the connection. When a write fails because the disk
//! is full (or on an I/O error), SQLite rolls the transaction back by
//! itself. sqlx's ROLLBACK then fails ("no transaction is active") and sqlx
//! still counts the transaction as open, so it refuses every later `BEGIN`
//! until the process restarts. The connection holds nothing of ours between
//! writes, so [`WriterLock::hold`] replaces such a connection with a new one.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::Result;

/// The write lock and the sqlx writer connection behind it.
pub struct WriterLock {
    connection: Mutex<SqliteConnection>,
    /// How to open a replacement connection.
    options: SqliteConnectOptions,
}

impl WriterLock {
    /// Guards `connection`, opened with `options`.
    pub fn new(connection: SqliteConnection, options: SqliteConnectOptions) -> Self {
        WriterLock {
            connection: Mutex::new(connection),
            options,
        }
    }

    /// Waits for the lock and returns the writer connection, outside any
    /// transaction: one that sqlx still believes to be inside one is
    /// replaced first (see the module's documentation).
    pub async fn hold(&self) -> Result<MutexGuard<'_, SqliteConnection>> {
        let mut connection = self.connection.lock().await;
        if connection.is_in_transaction() {
            tracing::warn!(
                "the SQLite writer connection could not end its last transaction \
                 (the disk was full, or an I/O error); opening a new one"
            );
            let mut fresh = SqliteConnection::connect_with(&self.options).await?;
            super::keep_plans_stable(&mut fresh).await?;
            let stuck = std::mem::replace(&mut *connection, fresh);
            // Closing ends whatever transaction SQLite may still hold on it.
            drop(stuck);
        }
        Ok(connection)
    }

    /// Takes the lock from a thread outside the runtime (the writer
    /// thread), for as long as the guard lives.
    pub fn blocking_hold(&self) -> MutexGuard<'_, SqliteConnection> {
        self.connection.blocking_lock()
    }
}
