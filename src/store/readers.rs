//! A small pool of read-only connections, used from tokio's blocking pool.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;

use super::{StoreError, schema};

pub(super) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl ReaderPool {
    pub(super) fn new(path: PathBuf, keep: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `query` on an idle connection (opening one if none is idle), then returns it to
    /// the pool unless the pool already keeps enough.
    pub(super) fn with_connection<T>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => schema::open_reader(&self.path)?,
        };
        let result = query(&connection);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(connection);
        }
        result
    }
}
