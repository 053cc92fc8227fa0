//! The statements the writer and the readers run for every event, every pruning step and
//! every pull are planned once: binding new values does not make SQLite prepare them again.

use rusqlite::types::Value;
use rusqlite::{Connection, StatementStatus};

use super::schema::{self, Check};
use super::{SyncMode, log, oldest};

fn store_connection(dir: &tempfile::TempDir) -> Connection {
    let connection =
        schema::open_writer(&dir.path().join("herald.db"), SyncMode::Normal, Check::Skip).unwrap();
    for seq in 1..=20i64 {
        connection
            .execute(
                "INSERT INTO events (origin, seq, id, hlc, channel, kind, payload, idempotency_key)
                 VALUES (?1, ?2, ?3, ?2, ?4, 't', '{}', ?5)",
                rusqlite::params![
                    format!("n{}", seq % 2),
                    seq,
                    format!("id{seq}"),
                    format!("ch{}", seq % 3),
                    format!("key{seq}"),
                ],
            )
            .unwrap();
    }
    connection
}

/// How often `sql` was prepared again while run once with each binding of `bindings`, taken
/// from the statement cache each time as the store does (a statement put back has its
/// bindings cleared).
fn reprepared(connection: &Connection, sql: &str, bindings: &[Vec<Value>]) -> i32 {
    for binding in bindings {
        let mut statement = connection.prepare_cached(sql).unwrap();
        let mut rows = statement
            .query(rusqlite::params_from_iter(binding.iter()))
            .unwrap();
        while rows.next().unwrap().is_some() {}
    }
    let statement = connection.prepare_cached(sql).unwrap();
    statement.get_status(StatementStatus::RePrepare)
}

fn text(value: &str) -> Value {
    Value::Text(value.to_string())
}

#[test]
fn hot_statements_are_not_prepared_again_for_new_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let connection = store_connection(&dir);
    let cases: Vec<(&str, &str, Vec<Vec<Value>>)> = vec![
        (
            "the next origin in a channel (pruning)",
            oldest::NEXT_ORIGIN_SQL,
            [("ch0", ""), ("ch1", "n0"), ("ch2", "")]
                .iter()
                .map(|(c, o)| vec![text(c), text(o)])
                .collect(),
        ),
        (
            "an origin's oldest events in a channel (pruning)",
            oldest::ORIGIN_OLDEST_SQL,
            [("ch0", "n0"), ("ch1", "n1"), ("ch2", "n0")]
                .iter()
                .map(|(c, o)| vec![text(c), text(o), Value::Integer(5)])
                .collect(),
        ),
        (
            "an origin's range (pulls, log walks)",
            log::RANGE_ROWS_SQL,
            ["n0", "n1", "n0"]
                .iter()
                .map(|o| {
                    vec![
                        text(o),
                        Value::Integer(0),
                        Value::Integer(100),
                        Value::Integer(10),
                    ]
                })
                .collect(),
        ),
        (
            "an origin's highest seq",
            log::HIGHEST_SEQ_SQL,
            ["n0", "n1", "n0"].iter().map(|o| vec![text(o)]).collect(),
        ),
        (
            "an idempotency key (publishes with keys)",
            log::BY_IDEMPOTENCY_KEY_SQL,
            [("ch1", "key1"), ("ch2", "key2"), ("ch0", "key3")]
                .iter()
                .map(|(c, k)| vec![text(c), text(k)])
                .collect(),
        ),
    ];
    let history = log::history_sql(1, 1);
    let history_bindings: Vec<Vec<Value>> = ["n0", "n1", "n0"]
        .iter()
        .map(|o| {
            vec![
                text("ch1"),
                text("ch"),
                text("ci"),
                text(o),
                Value::Integer(0),
                Value::Integer(100),
                Value::Integer(10),
            ]
        })
        .collect();
    let cases = cases.into_iter().chain([(
        "a resuming subscription's history",
        history.as_str(),
        history_bindings,
    )]);
    for (what, sql, bindings) in cases {
        assert_eq!(
            reprepared(&connection, sql, &bindings),
            0,
            "{what}: prepared again on new bindings"
        );
    }
}

#[test]
fn without_the_binary_collation_sqlite_prepares_such_statements_again() {
    // What the test above guards against: if this stops holding (a newer SQLite), the
    // `COLLATE BINARY` marks are no longer needed.
    let dir = tempfile::tempdir().unwrap();
    let connection = store_connection(&dir);
    let bindings: Vec<Vec<Value>> = ["ch0", "ch1", "ch2"]
        .iter()
        .map(|c| vec![text(c), text("")])
        .collect();
    assert!(
        reprepared(
            &connection,
            "SELECT origin FROM events WHERE channel = ?1 AND origin > ?2 ORDER BY origin LIMIT 1",
            &bindings
        ) > 0
    );
}
