//! Lower bounds on the start of the open transactions, from successive listings of InnoDB's
//! transactions (`SHOW ENGINE INNODB STATUS`, section `TRANSACTIONS`): the parser and the
//! bookkeeping, both pure (the queries live in [`super::mysql`]).
//!
//! Why that listing and not `information_schema.INNODB_TRX`: the table is served from a cache
//! that InnoDB refreshes only when it has **not been read for 0.1 s**, by anyone, so it can be
//! read fresh at most about nine times a second and a poller can freeze it. The status listing is
//! built live under InnoDB's transaction-list lock on every call: a listing taken after the
//! database clock read `listed_after` shows every transaction open at that moment.
//!
//! Both give a transaction's start only to the whole second (`ACTIVE 3 sec`). Taken alone, that
//! floors the horizon to the start of the current second whenever any transaction is open. So:
//! a transaction listed now but not in the previous listing was not open when the previous listing
//! was taken, which was after that listing's `listed_after`; it started after that, so its start
//! is at least the previous `listed_after`. Listings can be taken as often as reads happen, so
//! under a steady write load a new transaction's bound is only one read period old.
//!
//! Telling a new transaction from one seen before: transactions are listed per connection. A
//! transaction that has written has a read-write id (a number below the listing's `Trx id
//! counter`) that it keeps until it ends; one that has not written yet shows a placeholder (an
//! address in MariaDB, a large made-up number in MySQL) that the connection reuses. So a
//! connection listed again holds a *new* transaction when it had a read-write id before and now
//! shows another id; otherwise (same id, or a placeholder before) it may be the same transaction
//! and keeps the bound computed when it was first seen (the lower one: safe).

use std::collections::HashMap;

use chrono::{Duration, NaiveDateTime};

/// Who holds an open transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A client connection (`MySQL thread id` / `MariaDB thread id`).
    Connection(u64),
    /// A transaction without a connection (e.g. a prepared XA transaction recovered after a
    /// crash), by its transaction id text.
    Transaction(String),
}

/// An open transaction, as one listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    pub holder: Holder,
    /// Its read-write transaction id, once it has written (`None`: a placeholder id).
    pub rw_id: Option<u64>,
    /// `ACTIVE N sec`: whole seconds since it started, rounded by the server; `None` when the
    /// listing does not say (then nothing but the previous listing bounds its start).
    pub active_seconds: Option<u64>,
}

/// One listing of the open transactions (other than the reader's own connection).
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// Database clock read before the listing: every transaction open at this moment is listed.
    pub listed_after: NaiveDateTime,
    pub open: Vec<OpenTransaction>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("the status output has no TRANSACTIONS list")]
    NoTransactionList,
    /// The server cut the status output short (MySQL truncates it at about 1 MB, e.g. with
    /// thousands of connections): transactions may be missing.
    #[error("the server truncated the transaction list")]
    Truncated,
}

const COUNTER: &str = "Trx id counter ";
const LIST_START: &str = "LIST OF TRANSACTIONS FOR EACH SESSION:";
const TRANSACTION_HEADER: &str = "---TRANSACTION ";

/// Parses the `Status` text of `SHOW ENGINE INNODB STATUS` (MariaDB 10.x and MySQL 5.7–8.x
/// formats): every transaction that is not `not started`, except those of `own_connection`.
pub fn parse_innodb_status(
    status: &str,
    own_connection: u64,
) -> Result<Vec<OpenTransaction>, ListingError> {
    let Some(start) = status.find(LIST_START) else {
        return Err(ListingError::NoTransactionList);
    };
    // Ids at or above the counter are placeholders (MySQL prints made-up ones for transactions
    // that have not written). Without a counter, no id is trusted as read-write.
    let counter: u64 = status
        .find(COUNTER)
        .and_then(|at| {
            let rest = &status[at + COUNTER.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let mut open = Vec::new();
    // (transaction id text, active seconds, connection), for the transaction being read.
    let mut current: Option<(String, Option<u64>, Option<u64>)> = None;
    let mut finish = |current: &mut Option<(String, Option<u64>, Option<u64>)>| {
        if let Some((id, active_seconds, connection)) = current.take() {
            if connection == Some(own_connection) {
                return;
            }
            let rw_id = id.parse::<u64>().ok().filter(|&n| n < counter);
            let holder = match connection {
                Some(c) => Holder::Connection(c),
                None => Holder::Transaction(id),
            };
            open.push(OpenTransaction {
                holder,
                rw_id,
                active_seconds,
            });
        }
    };
    for line in status[start + LIST_START.len()..].lines() {
        let line = line.trim_end();
        if line.contains("...truncated...") {
            return Err(ListingError::Truncated);
        }
        if !line.is_empty() && line.chars().all(|c| c == '-') {
            break; // the next section's rule
        }
        if let Some(rest) = line.strip_prefix(TRANSACTION_HEADER) {
            finish(&mut current);
            let (id, state) = rest.split_once(", ").unwrap_or((rest, ""));
            if state.starts_with("not started") {
                continue;
            }
            current = Some((id.to_owned(), active_seconds(state), None));
        } else if let Some((_, _, connection)) = current.as_mut() {
            if connection.is_none() {
                *connection = thread_id(line);
            }
        }
    }
    finish(&mut current);
    Ok(open)
}

/// `ACTIVE 3 sec ...` or `ACTIVE (PREPARED) 3 sec ...` → 3.
fn active_seconds(state: &str) -> Option<u64> {
    let rest = state.strip_prefix("ACTIVE")?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("(PREPARED)").unwrap_or(rest).trim_start();
    let (number, unit) = rest.split_once(' ')?;
    unit.starts_with("sec").then_some(())?;
    number.parse().ok()
}

/// `MySQL thread id 42, OS thread handle ...` (or `MariaDB thread id 42, ...`) → 42.
fn thread_id(line: &str) -> Option<u64> {
    let rest = line
        .strip_prefix("MySQL thread id ")
        .or_else(|| line.strip_prefix("MariaDB thread id "))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What is remembered of a holder's transaction.
#[derive(Debug, Clone, Copy)]
struct Known {
    rw_id: Option<u64>,
    bound: NaiveDateTime,
}

/// The bounds remembered between listings.
#[derive(Debug, Default, Clone)]
pub struct TransactionBounds {
    previous_listed_after: Option<NaiveDateTime>,
    known: HashMap<Holder, Known>,
}

impl TransactionBounds {
    /// Takes in a listing and returns the earliest moment an open transaction may have started
    /// (`None`: no transaction is open). Holders no longer listed are forgotten.
    pub fn observe(&mut self, listing: &Listing) -> Option<NaiveDateTime> {
        let previous = self.previous_listed_after;
        let mut known = HashMap::with_capacity(listing.open.len());
        for trx in &listing.open {
            // `ACTIVE N sec` is rounded; one more second keeps the estimate below the start.
            let by_age = trx.active_seconds.map_or(NaiveDateTime::MIN, |n| {
                let age = Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2) + 1);
                listing
                    .listed_after
                    .checked_sub_signed(age)
                    .unwrap_or(NaiveDateTime::MIN)
            });
            let bound = match self.known.get(&trx.holder) {
                // Maybe the transaction seen before: both bounds hold for it.
                Some(seen) if seen.rw_id.is_none() || seen.rw_id == trx.rw_id => {
                    seen.bound.max(by_age)
                }
                // New since the previous listing (the earlier one had a read-write id, which a
                // transaction keeps until it ends, and this is another one).
                _ => previous.map_or(by_age, |p| p.max(by_age)),
            };
            known.insert(
                trx.holder.clone(),
                Known {
                    rw_id: trx.rw_id,
                    bound,
                },
            );
        }
        self.known = known;
        self.previous_listed_after = Some(listing.listed_after);
        self.known.values().map(|k| k.bound).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    /// A transaction that has not written yet (placeholder id).
    fn trx(connection: u64, active_seconds: u64) -> OpenTransaction {
        OpenTransaction {
            holder: Holder::Connection(connection),
            rw_id: None,
            active_seconds: Some(active_seconds),
        }
    }

    /// A transaction that has written (read-write id).
    fn rw(connection: u64, id: u64, active_seconds: u64) -> OpenTransaction {
        OpenTransaction {
            rw_id: Some(id),
            ..trx(connection, active_seconds)
        }
    }

    fn listing(listed_after: &str, open: &[OpenTransaction]) -> Listing {
        Listing {
            listed_after: t(listed_after),
            open: open.to_vec(),
        }
    }

    /// Captured from MariaDB 10.11: a writing transaction (numeric id) and one that only read.
    const MARIADB: &str = "\
=====================================
2026-11-23 12:31:58 0x7f167c1f86c0 INNODB MONITOR OUTPUT
=====================================
------------
TRANSACTIONS
------------
Trx id counter 20
Purge done for trx's n:o < 19 undo n:o < 0 state: running but idle
History list length 0
LIST OF TRANSACTIONS FOR EACH SESSION:
---TRANSACTION (0x7f16819aa680), ACTIVE 2 sec
0 lock struct(s), heap size 1128, 0 row lock(s)
MariaDB thread id 11, OS thread handle 139734617806528, query id 20 localhost root User sleep
SELECT SLEEP(3)
Trx read view will not see trx with id >= 19, sees < 19
---TRANSACTION 19, ACTIVE 2 sec
1 lock struct(s), heap size 1128, 0 row lock(s), undo log entries 1
MariaDB thread id 10, OS thread handle 139734618113728, query id 18 localhost root User sleep
SELECT SLEEP(3)
---TRANSACTION 18, ACTIVE 0 sec
MariaDB thread id 7, OS thread handle 1, query id 3 localhost root
--------
FILE I/O
--------
I/O thread 0 state: waiting for completed aio requests (insert buffer thread)
";

    /// The MySQL 8 shape: idle sessions are listed as `not started`; a recovered XA transaction
    /// has no thread.
    const MYSQL8: &str = "\
------------
TRANSACTIONS
------------
Trx id counter 5650
LIST OF TRANSACTIONS FOR EACH SESSION:
---TRANSACTION 421623101063384, not started
0 lock struct(s), heap size 1128, 0 row lock(s)
---TRANSACTION 5644, ACTIVE 3 sec inserting
mysql tables in use 1, locked 1
2 lock struct(s), heap size 1128, 1 row lock(s), undo log entries 1
MySQL thread id 9, OS thread handle 140107364177664, query id 34 localhost root update
---TRANSACTION 5601, ACTIVE (PREPARED) 12 sec recovered trx
1 lock struct(s), heap size 1128, 0 row lock(s), undo log entries 1
--------
FILE I/O
--------
";

    #[test]
    fn parses_mariadb_listings_without_the_readers_own_connection() {
        let open = parse_innodb_status(MARIADB, 7).unwrap();
        assert_eq!(open, vec![trx(11, 2), rw(10, 19, 2)]);
    }

    #[test]
    fn parses_mysql8_listings_skipping_idle_sessions() {
        let open = parse_innodb_status(MYSQL8, 1).unwrap();
        assert_eq!(
            open,
            vec![
                rw(9, 5644, 3),
                OpenTransaction {
                    holder: Holder::Transaction("5601".into()),
                    rw_id: Some(5601),
                    active_seconds: Some(12),
                }
            ]
        );
    }

    #[test]
    fn an_empty_list_is_no_open_transaction() {
        let status = "TRANSACTIONS\n------------\nLIST OF TRANSACTIONS FOR EACH SESSION:\n--------\nFILE I/O\n";
        assert_eq!(parse_innodb_status(status, 1), Ok(vec![]));
    }

    #[test]
    fn an_unreadable_or_truncated_listing_is_an_error() {
        assert_eq!(
            parse_innodb_status("BUFFER POOL AND MEMORY\n", 1),
            Err(ListingError::NoTransactionList)
        );
        let truncated = MYSQL8.replace("--------\nFILE I/O", "...truncated...\n--------\nFILE I/O");
        assert_eq!(
            parse_innodb_status(&truncated, 1),
            Err(ListingError::Truncated)
        );
    }

    #[test]
    fn an_unknown_state_has_no_age_and_is_bounded_by_the_previous_listing_alone() {
        let status = "LIST OF TRANSACTIONS FOR EACH SESSION:\n---TRANSACTION 77, COMMITTED IN MEMORY\nMySQL thread id 5, OS thread handle 1\n--------\n";
        let open = parse_innodb_status(status, 1).unwrap();
        assert_eq!(
            open,
            vec![OpenTransaction {
                holder: Holder::Connection(5),
                rw_id: None,
                active_seconds: None
            }]
        );
        let mut bounds = TransactionBounds::default();
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.000", &open)),
            Some(NaiveDateTime::MIN),
            "first listing, no age: nothing bounds it"
        );
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.050", &open)),
            Some(NaiveDateTime::MIN),
            "still the same transaction: it keeps its first bound"
        );
    }

    #[test]
    fn the_first_listing_trusts_the_age_plus_a_second() {
        let mut bounds = TransactionBounds::default();
        let l = listing("2024-05-01 10:47:04.215", &[trx(7, 2)]);
        assert_eq!(bounds.observe(&l), Some(t("2024-05-01 10:47:01.215")));
    }

    #[test]
    fn a_transaction_new_since_the_previous_listing_started_after_it() {
        let mut bounds = TransactionBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.100", &[]));
        let l = listing("2024-05-01 10:47:04.120", &[trx(7, 0)]);
        assert_eq!(
            bounds.observe(&l),
            Some(t("2024-05-01 10:47:04.100")),
            "not listed at 10:47:04.100, so it started after that"
        );
    }

    #[test]
    fn a_listed_connection_keeps_its_first_bound_until_it_is_gone() {
        let mut bounds = TransactionBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.000", &[]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.020", &[trx(7, 0)])),
            Some(t("2024-05-01 10:47:04.000"))
        );
        // Still open a second later: the bound must not move up with the listings.
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:05.300", &[trx(7, 1), trx(8, 0)])),
            Some(t("2024-05-01 10:47:04.000"))
        );
        // Once it ends, it is forgotten and only the newer one counts.
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:05.320", &[trx(8, 0)])),
            Some(t("2024-05-01 10:47:04.320")),
            "transaction 8 is listed aged 0 s at 10:47:05.320: it started after 10:47:04.320"
        );
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:05.340", &[])),
            None
        );
    }

    #[test]
    fn a_connection_listed_each_time_with_a_new_read_write_id_holds_a_new_transaction_each_time() {
        // A busy writer connection: autocommit statements, one open at every listing.
        let mut bounds = TransactionBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.000", &[rw(7, 100, 0)]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.020", &[rw(7, 101, 0)])),
            Some(t("2024-05-01 10:47:04.000"))
        );
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.040", &[rw(7, 102, 0)])),
            Some(t("2024-05-01 10:47:04.020")),
            "the bound follows the listings instead of sticking to the first transaction"
        );
    }

    #[test]
    fn a_transaction_that_starts_writing_keeps_its_first_bound() {
        // A long statement listed before its first write (placeholder id), then with its
        // read-write id: it may be the same transaction, whose rows are stamped at its start.
        let mut bounds = TransactionBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.000", &[]));
        bounds.observe(&listing("2024-05-01 10:47:04.020", &[trx(7, 0)]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.900", &[rw(7, 300, 0)])),
            Some(t("2024-05-01 10:47:04.000"))
        );
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.950", &[rw(7, 300, 0)])),
            Some(t("2024-05-01 10:47:04.000")),
            "same read-write id: same transaction"
        );
    }

    #[test]
    fn a_connection_reappearing_after_being_forgotten_is_bounded_by_the_listing_before() {
        let mut bounds = TransactionBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.100", &[trx(7, 0)]));
        bounds.observe(&listing("2024-05-01 10:47:04.300", &[]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.500", &[trx(7, 0)])),
            Some(t("2024-05-01 10:47:04.300"))
        );
    }

    #[test]
    fn an_old_age_bounds_a_transaction_below_the_previous_listing() {
        // Both the age and the previous listing are lower bounds on the start: the later wins.
        let mut bounds = TransactionBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.100", &[]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:09.000", &[trx(7, 3)])),
            Some(t("2024-05-01 10:47:05.000")),
            "started at least 4 s before 10:47:09 and after 10:47:04.100: the later of the two"
        );
    }
}
