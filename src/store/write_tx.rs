//! The writer's transactions, begun and committed with cached statements.
//!
//! `rusqlite::Transaction` runs `BEGIN` and `COMMIT` through `execute_batch`, which parses the
//! SQL each time; the writer opens hundreds of transactions a second, so it keeps both
//! prepared. Like `rusqlite::Transaction`, a transaction dropped without a commit (an error on
//! the way, or a failed `COMMIT`) is rolled back.

use std::ops::Deref;

use rusqlite::Connection;

use super::StoreError;

/// An open `BEGIN DEFERRED` transaction on `connection`.
pub(super) struct WriteTx<'c> {
    connection: &'c Connection,
    open: bool,
}

impl<'c> WriteTx<'c> {
    pub(super) fn begin(connection: &'c Connection) -> Result<Self, StoreError> {
        connection.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        Ok(Self {
            connection,
            open: true,
        })
    }

    pub(super) fn commit(mut self) -> Result<(), StoreError> {
        self.connection.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl Deref for WriteTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        // Still open after a failed COMMIT too (SQLite keeps the transaction then).
        if self.open && !self.connection.is_autocommit() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        connection
    }

    fn rows(connection: &Connection) -> i64 {
        connection
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_committed_transaction_keeps_its_writes() {
        let connection = connection();
        for _ in 0..3 {
            let tx = WriteTx::begin(&connection).unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(rows(&connection), 3);
        assert!(connection.is_autocommit());
    }

    #[test]
    fn a_dropped_transaction_is_rolled_back() {
        let connection = connection();
        {
            let tx = WriteTx::begin(&connection).unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        }
        assert_eq!(rows(&connection), 0);
        assert!(connection.is_autocommit());
        // And the cached BEGIN works again afterwards.
        let tx = WriteTx::begin(&connection).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(rows(&connection), 1);
    }
}
