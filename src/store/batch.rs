//! Whole-batch statements: one multi-row statement per table per batch instead of
//! one statement per row.
//!
//! Both backends take multi-row `INSERT ... VALUES (..), (..)` with bound
//! parameters. sqlx prepares and caches every distinct SQL text per connection, so a
//! batch of n rows is cut into chunks whose sizes are powers of two (n = 300 with a
//! cap of 256: 256 + 32 + 8 + 4): at most log2(cap) + 1 statement shapes per table
//! ever reach the statement cache, however the batches vary.

use std::ops::Range;

/// `<head> VALUES ($1, ..), ($k, ..), ... <tail>` for `rows` rows of `columns`
/// placeholders each, numbered row by row.
pub(crate) fn multi_row_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * columns * 6 + 16);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * columns + c + 1).to_string());
        }
        sql.push(')');
    }
    if !tail.is_empty() {
        sql.push(' ');
        sql.push_str(tail);
    }
    sql
}

/// `len` items cut into consecutive ranges whose lengths are powers of two, largest
/// first, none longer than `cap` (itself rounded down to a power of two).
pub(crate) fn pow2_chunks(len: usize, cap: usize) -> Vec<Range<usize>> {
    let cap = prev_power_of_two(cap.max(1));
    let mut out = Vec::new();
    let mut start = 0;
    while start < len {
        let size = prev_power_of_two(len - start).min(cap);
        out.push(start..start + size);
        start += size;
    }
    out
}

fn prev_power_of_two(n: usize) -> usize {
    debug_assert!(n > 0);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// Rows per statement at most: 256 events bind 2,304 parameters, far under SQLite's
/// 32,766 and PostgreSQL's 65,535.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_row_statement_numbers_its_placeholders_row_by_row() {
        assert_eq!(
            multi_row_sql("INSERT INTO t (a, b)", 2, 2, "ON CONFLICT (a) DO NOTHING"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT (a) DO NOTHING"
        );
        assert_eq!(
            multi_row_sql("INSERT INTO t (a)", 1, 1, ""),
            "INSERT INTO t (a) VALUES ($1)"
        );
    }

    #[test]
    fn a_batch_is_cut_into_power_of_two_chunks_that_cover_it_once() {
        let sizes =
            |n, cap| -> Vec<usize> { pow2_chunks(n, cap).iter().map(|r| r.len()).collect() };
        assert_eq!(sizes(300, 256), vec![256, 32, 8, 4]);
        assert_eq!(sizes(1, 256), vec![1]);
        assert_eq!(sizes(0, 256), Vec::<usize>::new());
        assert_eq!(sizes(7, 4), vec![4, 2, 1]);
        assert_eq!(sizes(600, 300), vec![256, 256, 64, 16, 8]);
        for n in 0..1_100 {
            let chunks = pow2_chunks(n, 256);
            let mut next = 0;
            for c in &chunks {
                assert_eq!(c.start, next, "contiguous");
                assert!(c.len().is_power_of_two() && c.len() <= 256);
                next = c.end;
            }
            assert_eq!(next, n, "covers all {n}");
        }
        // Few shapes whatever the batch size: the prepared-statement cache stays small.
        let shapes: std::collections::BTreeSet<usize> = (1..=1_000)
            .flat_map(|n| pow2_chunks(n, 256))
            .map(|r| r.len())
            .collect();
        assert_eq!(shapes.len(), 9);
    }
}
