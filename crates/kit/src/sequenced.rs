//! Rows appended to a record's numbered list (its documents, its case-file entries): each
//! `(parent, seq, time, body)`, `seq` counting on from the last one the record has.

use fengqiao_store::Tx;
use fengqiao_store::sqlx;

use crate::error::Error;

/// Appends `rows` (`(time, sealed body)`, in order) to the list in `table` of the record
/// `parent.1` (column `parent.0`), the time in `time_column`, in one statement: each row is
/// numbered after the record's last entry (`INSERT … SELECT … UNION ALL …`; the last number is
/// read once, before any row is inserted, on both backends — SQLite evaluates a SELECT that
/// reads the table being inserted into in full first). One write transaction keeps the numbers
/// gapless (SQLite serialises writers; a concurrent PostgreSQL writer fails on the table's
/// primary key instead of sharing a number).
pub async fn append(
    tx: &mut Tx,
    table: &str,
    parent: (&str, &str),
    time_column: &str,
    rows: Vec<(i64, Vec<u8>)>,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (column, id) = parent;
    let mut sql = format!("INSERT INTO {table} ({column}, seq, {time_column}, body) ");
    for i in 0..rows.len() {
        if i > 0 {
            sql.push_str(" UNION ALL ");
        }
        let (t, b) = (2 * i + 2, 2 * i + 3);
        sql.push_str(&format!(
            "SELECT $1, m.n + {}, ${t}, ${b} FROM (SELECT COALESCE(MAX(seq), 0) AS n \
             FROM {table} WHERE {column} = $1) m",
            i + 1
        ));
    }
    let mut q = sqlx::query(&sql).bind(id.to_owned());
    for (time, body) in rows {
        q = q.bind(time).bind(body);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_store::sqlx::Row as _;
    use fengqiao_store::{Backend, Store, both_backends};

    both_backends!(
        rows_are_numbered_on_from_the_last_one_of_their_record,
        |store: Store| async move {
            let mut tx = store.write().await?;
            let blob = if Backend::of(&tx) == Backend::Postgres {
                "BYTEA"
            } else {
                "BLOB"
            };
            sqlx::query(&format!(
                "CREATE TABLE docs (owner TEXT NOT NULL, seq BIGINT NOT NULL, \
                 added BIGINT NOT NULL, body {blob} NOT NULL, PRIMARY KEY (owner, seq))"
            ))
            .execute(&mut *tx)
            .await?;
            let a = ("owner", "a");
            append(
                &mut tx,
                "docs",
                a,
                "added",
                vec![(1, vec![1]), (2, vec![2])],
            )
            .await?;
            append(&mut tx, "docs", ("owner", "b"), "added", vec![(3, vec![3])]).await?;
            append(&mut tx, "docs", a, "added", vec![(4, vec![4])]).await?;
            append(&mut tx, "docs", a, "added", Vec::new()).await?;
            let rows = sqlx::query("SELECT owner, seq, added, body FROM docs ORDER BY owner, seq")
                .fetch_all(&mut *tx)
                .await?;
            let mut got: Vec<(String, i64, i64, Vec<u8>)> = Vec::new();
            for r in &rows {
                got.push((
                    r.try_get("owner")?,
                    r.try_get("seq")?,
                    r.try_get("added")?,
                    r.try_get("body")?,
                ));
            }
            assert_eq!(
                got,
                [
                    ("a".into(), 1, 1, vec![1]),
                    ("a".into(), 2, 2, vec![2]),
                    ("a".into(), 3, 4, vec![4]),
                    ("b".into(), 1, 3, vec![3]),
                ]
            );
            tx.rollback().await?;
            Ok::<_, Error>(())
        }
    );
}
