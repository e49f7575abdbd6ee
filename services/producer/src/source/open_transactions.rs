//! Lower bounds on the stamps of the changes capture cannot see yet, on MySQL/MariaDB, from two
//! live lists taken before every read: InnoDB's transactions (`SHOW ENGINE INNODB STATUS`,
//! section `TRANSACTIONS`) and the statements running on the server
//! (`information_schema.PROCESSLIST`). The parser and the bookkeeping, both pure (the queries
//! live in [`super::mysql`]).
//!
//! Why the status listing and not `information_schema.INNODB_TRX`: that table is served from a
//! cache that InnoDB refreshes only when it has **not been read for 0.1 s**, by anyone, so it can
//! be read fresh at most about nine times a second and a poller can freeze it. The status listing
//! is built live under InnoDB's transaction-list lock on every call.
//!
//! **Why statements too.** A row is stamped when its statement starts, but its transaction
//! appears in InnoDB's list only when the statement first touches an InnoDB table. A statement
//! that first waits for a metadata lock (behind `LOCK TABLES ... WRITE`, an `ALTER TABLE`) or the
//! global read lock (`FLUSH TABLES WITH READ LOCK`) is in no transaction list while it waits, and
//! afterwards its transaction looks younger than its rows. The process list shows it from its
//! start, with the time it has been running: MariaDB's `TIME_MS` (microseconds), MySQL's `TIME`
//! (whole seconds). Every running statement bounds the horizon while it runs, and the transaction
//! a connection opens is bounded by the statements that connection ran at that listing and the
//! previous one (an explicit transaction stays open after the statement that waited has ended).
//!
//! **Precision.** Ages come in whole seconds (`ACTIVE 3 sec`), which alone would floor the
//! horizon to the current second whenever a transaction is open. So each transaction and
//! statement carries the interval its start must lie in: its age gives one; one that was not
//! listed the previous time started after that listing, which was taken after the clock reading
//! `listed_after` before it. One listed again with an age consistent with the remembered
//! interval may be the same and keeps what was known of it; otherwise it is another one (a
//! connection runs one transaction and one statement at a time). Transactions are recognised by
//! their read-write id, which a transaction gets at its first write and keeps to its end (also
//! when a prepared XA transaction leaves its connection); before that, by their connection.
//!
//! **Text anyone controls.** The listing prints every running statement's text verbatim, any
//! user's, multi-line, and the latest deadlock report keeps its statements until the next
//! deadlock. Such text can imitate every line of the listing, so the parser never lets it end or
//! invalidate the list: the list runs from the first `LIST OF TRANSACTIONS FOR EACH SESSION:` to
//! the last `FILE I/O` section header (nothing anyone writes is printed after it), and every
//! `---TRANSACTION` line in between counts. Real transactions are therefore never missed; an
//! imitated one can only hold the horizon back, and one whose age stands still while the clock
//! moves is not the transaction it claims to be after about 2 s, so it delays capture by at most
//! that and never stops it. A listing that is too long is cut by the server at
//! [`MAX_STATUS_SIZE`] bytes; any output of that length is treated as cut (the last safe horizon
//! is kept), whatever text it contains.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{Duration, NaiveDateTime};

/// The server returns at most this many bytes less one of the status output: longer output is
/// cut (`MAX_STATUS_SIZE` in `innodb_show_status`, MySQL 8.4 and MariaDB alike).
pub const MAX_STATUS_SIZE: usize = 1_048_576;

const LIST_START: &str = "\nLIST OF TRANSACTIONS FOR EACH SESSION:\n";
/// The header of the section after the list. The sections after it print no user text, so its
/// last occurrence is the real one.
const LIST_END: &str = "\n--------\nFILE I/O\n--------\n";
/// The end of every complete output.
const TRAILER: &str = "\nEND OF INNODB MONITOR OUTPUT\n============================";
const TRANSACTION_HEADER: &str = "---TRANSACTION ";
/// Read-write ids are 6 bytes; MySQL prints a transaction that has not written as its address
/// with bit 48 set (`trx_get_id_for_print`), MariaDB as `(0x...)`.
const MAX_READ_WRITE_ID: u64 = (1 << 48) - 1;
/// `ACTIVE N sec` is whole seconds of the server clock.
const SECOND: Duration = Duration::seconds(1);

/// An open transaction, as one listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    /// The connection running it (`MySQL thread id` / `MariaDB thread id`); `None` for a
    /// transaction without one (e.g. a prepared XA transaction recovered after a crash).
    pub connection: Option<u64>,
    /// Its id as printed.
    pub id: String,
    /// Its read-write id, once it has written (`None`: a placeholder id).
    pub rw_id: Option<u64>,
    /// `ACTIVE N sec`: whole seconds since it started; `None` when the listing gives no age (a
    /// transaction committing or being rolled back: `COMMITTED IN MEMORY`, `forced rollback`).
    pub active_seconds: Option<u64>,
}

/// A statement running on another connection (the process list, `COMMAND` `Query` or
/// `Execute`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningStatement {
    pub connection: u64,
    /// How long it had been running when listed, as the server reports it.
    pub running_for: std::time::Duration,
    /// The unit of `running_for`: 1 ms for MariaDB's `TIME_MS` (rounded here), 1 s for MySQL's
    /// `TIME`.
    pub resolution: std::time::Duration,
}

/// One listing of the open transactions and running statements (other than the reader's own).
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// Database clock read before both lists were taken: whatever was open or running at this
    /// moment is listed.
    pub listed_after: NaiveDateTime,
    /// Database clock after both lists were complete, at the latest.
    pub listed_before: NaiveDateTime,
    pub statements: Vec<RunningStatement>,
    pub transactions: Vec<OpenTransaction>,
    /// When the server started, if the source asked because
    /// [`HorizonBounds::wants_server_start`] said so (`None`: not asked).
    pub server_start: Option<ServerStart>,
}

/// The interval the server's start lies in, from its `Uptime` (whole seconds) and the clock
/// read with it. A restart is the one event that resets a transaction's age: InnoDB gives a
/// transaction it recovers (a prepared XA transaction) the recovery time as its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStart {
    pub earliest: NaiveDateTime,
    pub latest: NaiveDateTime,
}

impl ServerStart {
    /// The start of a server up `uptime_seconds` at `clock` (both truncated to whole seconds by
    /// the server: a second either way).
    pub fn from_uptime(clock: NaiveDateTime, uptime_seconds: u64) -> Self {
        let uptime = seconds_or_max(uptime_seconds);
        Self {
            earliest: minus(clock, uptime.checked_add(&SECOND).unwrap_or(Duration::MAX)),
            latest: minus(clock, uptime.checked_sub(&SECOND).unwrap_or(uptime)),
        }
    }

    /// Whether this (later) reading is of a server started after `before`'s.
    fn restarted_since(self, before: Self) -> bool {
        self.earliest > before.latest
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("the InnoDB status output has no list of transactions")]
    NoTransactionList,
    #[error(
        "the InnoDB status output does not end with a FILE I/O section after the list of \
         transactions and the monitor's last line"
    )]
    Incomplete,
    /// The server cuts the output at [`MAX_STATUS_SIZE`] (e.g. with thousands of connections):
    /// transactions may be missing.
    #[error("the server cut the InnoDB status output at 1 MiB: transactions may be missing")]
    Truncated,
}

/// Parses the `Status` text of `SHOW ENGINE INNODB STATUS` (MariaDB 10.x and MySQL 5.7–8.x):
/// every transaction that is not `not started`, except those of `own_connection`. The text may
/// hold any bytes (statement text is printed as the client sent it).
pub fn parse_innodb_status(
    status: &[u8],
    own_connection: u64,
) -> Result<Vec<OpenTransaction>, ListingError> {
    if status.len() >= MAX_STATUS_SIZE - 1 {
        return Err(ListingError::Truncated);
    }
    let text: Cow<'_, str> = String::from_utf8_lossy(status);
    let start = text
        .find(LIST_START)
        .ok_or(ListingError::NoTransactionList)?
        + LIST_START.len()
        - 1;
    if !text.trim_end().ends_with(TRAILER) {
        return Err(ListingError::Incomplete);
    }
    let end = text
        .rfind(LIST_END)
        .filter(|&end| end >= start)
        .ok_or(ListingError::Incomplete)?;
    let mut open = Vec::new();
    let mut lines = text[start..end].lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(TRANSACTION_HEADER) else {
            continue;
        };
        let (id, state) = rest.split_once(", ").unwrap_or((rest, ""));
        // InnoDB prints at most two lines before the connection's (tables in use; locks, undo
        // entries), then the connection's line and its statement, if it has a connection.
        // Taking the connection only there keeps statement text from naming it.
        let mut connection = None;
        for _ in 0..3 {
            match lines.peek() {
                Some(next) if thread_id(next).is_some() => {
                    connection = thread_id(next);
                    lines.next();
                    break;
                }
                Some(next) if is_preamble(next) => {
                    lines.next();
                }
                _ => break,
            }
        }
        if state.starts_with("not started") || connection == Some(own_connection) {
            continue;
        }
        open.push(OpenTransaction {
            connection,
            id: id.to_owned(),
            rw_id: id.parse().ok().filter(|&n| n <= MAX_READ_WRITE_ID),
            active_seconds: active_seconds(state),
        });
    }
    Ok(open)
}

/// A line InnoDB prints between a transaction's header and its connection's line
/// (`trx_print_low`).
fn is_preamble(line: &str) -> bool {
    line.starts_with("mysql tables in use ")
        || line.contains(" lock struct(s), heap size ")
        || [
            "LOCK WAIT",
            "ROLLING BACK",
            "COMMITTING",
            "que state ",
            ", holds adaptive hash latch",
            ", undo log entries ",
        ]
        .iter()
        .any(|prefix| line.starts_with(prefix))
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
    let (number, _) = rest.split_once(", OS thread handle ")?;
    number.parse().ok()
}

/// The interval a start lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    lo: NaiveDateTime,
    hi: NaiveDateTime,
}

impl Span {
    /// The start of something listed `age` old (give or take `resolution`).
    fn aged(listing: &Listing, age: Duration, resolution: Duration) -> Self {
        Self {
            lo: minus(
                listing.listed_after,
                age.checked_add(&resolution).unwrap_or(Duration::MAX),
            ),
            hi: minus(
                listing.listed_before,
                age.checked_sub(&resolution).unwrap_or(age),
            ),
        }
    }

    fn meet(self, other: Self) -> Option<Self> {
        let span = Self {
            lo: self.lo.max(other.lo),
            hi: self.hi.min(other.hi),
        };
        (span.lo <= span.hi).then_some(span)
    }

    fn join(self, other: Self) -> Self {
        Self {
            lo: self.lo.min(other.lo),
            hi: self.hi.max(other.hi),
        }
    }
}

/// `n` seconds; a forged age too large for a `Duration` saturates.
fn seconds_or_max(n: u64) -> Duration {
    i64::try_from(n)
        .ok()
        .and_then(Duration::try_seconds)
        .unwrap_or(Duration::MAX)
}

fn minus(t: NaiveDateTime, d: Duration) -> NaiveDateTime {
    t.checked_sub_signed(d).unwrap_or(if d > Duration::zero() {
        NaiveDateTime::MIN
    } else {
        NaiveDateTime::MAX
    })
}

/// What is remembered of a transaction from the previous listing.
#[derive(Debug, Clone)]
struct SeenTransaction {
    connection: Option<u64>,
    id: String,
    rw_id: Option<u64>,
    /// Where InnoDB's start of it lies, to tell it apart from another one; `None` without an
    /// age (then it is never taken for the same one).
    span: Option<Span>,
    /// The earliest stamp its rows may carry. Not its age: a row is stamped when its statement
    /// starts, and a statement that first waits for a lock begins its transaction only
    /// afterwards.
    bound: NaiveDateTime,
}

impl SeenTransaction {
    /// Whether `now` may be this transaction again (its age aside).
    fn may_be(&self, now: &OpenTransaction) -> bool {
        match (now.rw_id, self.rw_id) {
            (Some(now_id), Some(id)) => now_id == id,
            // It got its read-write id since: the same connection's.
            (Some(_), None) => now.connection.is_some() && now.connection == self.connection,
            // A transaction never loses its read-write id.
            (None, Some(_)) => false,
            (None, None) => match now.connection {
                Some(_) => now.connection == self.connection,
                None => self.connection.is_none() && now.id == self.id,
            },
        }
    }

    /// Whether its read-write id is `now`'s but its age says another transaction: after a
    /// restart, a recovered transaction; otherwise statement text imitating one. (One without an
    /// age is committing: its rows are visible to the next read.)
    fn same_id_other_age(&self, now: &OpenTransaction, now_span: Option<Span>) -> bool {
        now.rw_id.is_some()
            && now.rw_id == self.rw_id
            && matches!((self.span, now_span), (Some(seen), Some(now)) if seen.meet(now).is_none())
    }
}

/// What is remembered of a running statement from the previous listing.
#[derive(Debug, Clone, Copy)]
struct SeenStatement {
    connection: u64,
    span: Span,
}

#[derive(Debug, Clone)]
struct Previous {
    listed_after: NaiveDateTime,
    transactions: Vec<SeenTransaction>,
    statements: Vec<SeenStatement>,
}

/// The bounds remembered between listings.
#[derive(Debug, Default, Clone)]
pub struct HorizonBounds {
    previous: Option<Previous>,
    /// The server's start, as last asked.
    server_start: Option<ServerStart>,
}

impl HorizonBounds {
    /// Whether the source should ask the server when it started and give the answer with
    /// `listing` ([`Listing::server_start`]): at the first listing, and when a read-write id seen
    /// before comes back with an age that does not fit (the server may have restarted). Never
    /// on the normal path.
    pub fn wants_server_start(&self, listing: &Listing) -> bool {
        let Some(previous) = &self.previous else {
            return true;
        };
        self.server_start.is_none()
            || listing.transactions.iter().any(|t| {
                let now = t
                    .active_seconds
                    .map(|n| Span::aged(listing, seconds_or_max(n), SECOND));
                previous
                    .transactions
                    .iter()
                    .any(|seen| seen.same_id_other_age(t, now))
            })
    }

    /// Takes in a listing and returns the earliest stamp a change not visible yet may carry
    /// (`None`: nothing is open or running). What is no longer listed is forgotten.
    ///
    /// A transaction not listed the previous time started after that listing's clock reading,
    /// or was begun by a statement that one of the two process lists shows: its rows are bounded
    /// by those, never by its age. At the first listing nothing bounds what is open: it holds
    /// capture where it is until it ends (or is told apart from what follows).
    pub fn observe(&mut self, listing: &Listing) -> Option<NaiveDateTime> {
        let previous = self.previous.take();
        let previous_after = previous.as_ref().map(|p| p.listed_after);
        let (seen_transactions, seen_statements) = previous
            .map(|p| (p.transactions, p.statements))
            .unwrap_or_default();
        let restarted = match (self.server_start, listing.server_start) {
            (Some(before), Some(now)) => now.restarted_since(before),
            _ => false,
        };
        if let Some(now) = listing.server_start {
            self.server_start = Some(now);
        }

        let mut seen_by_connection: HashMap<u64, Vec<Span>> = HashMap::new();
        for s in &seen_statements {
            seen_by_connection
                .entry(s.connection)
                .or_default()
                .push(s.span);
        }
        let mut statements = Vec::with_capacity(listing.statements.len());
        for s in &listing.statements {
            let age = Duration::from_std(s.running_for).unwrap_or(Duration::MAX);
            let resolution = Duration::from_std(s.resolution).unwrap_or(SECOND);
            let now = Span::aged(listing, age, resolution);
            let same = seen_by_connection
                .get(&s.connection)
                .into_iter()
                .flatten()
                .filter_map(|seen| seen.meet(now))
                .reduce(Span::join);
            let span = same.unwrap_or(match previous_after {
                // Not running at the previous listing: it started after it. (The process list
                // cannot be imitated, and a statement's time is its rows' stamp.)
                Some(after) if now.hi >= after => Span {
                    lo: now.lo.max(after),
                    hi: now.hi,
                },
                _ => now,
            });
            statements.push(SeenStatement {
                connection: s.connection,
                span,
            });
        }

        // The statements of a connection, at this listing and the previous one: the transaction
        // it has open may have been begun by one of them, which stamped its rows at its start.
        let mut statement_floor: HashMap<u64, NaiveDateTime> = HashMap::new();
        for s in seen_statements.iter().chain(&statements) {
            let floor = statement_floor
                .entry(s.connection)
                .or_insert(NaiveDateTime::MAX);
            *floor = (*floor).min(s.span.lo);
        }
        // A transaction without a connection (a prepared XA transaction whose client left) may
        // have been begun by any statement of the previous listing.
        let any_previous_statement = seen_statements
            .iter()
            .map(|s| s.span.lo)
            .min()
            .unwrap_or(NaiveDateTime::MAX);
        // What was not listed the previous time started after its clock reading; at the first
        // listing nothing is known.
        let since = previous_after.unwrap_or(NaiveDateTime::MIN);

        let mut oldest = statements
            .iter()
            .map(|s| s.span.lo)
            .min()
            .unwrap_or(NaiveDateTime::MAX);
        let mut transactions = Vec::with_capacity(listing.transactions.len());
        for t in &listing.transactions {
            let now = t
                .active_seconds
                .map(|n| Span::aged(listing, seconds_or_max(n), SECOND));
            let mut same: Option<(Option<Span>, NaiveDateTime)> = None;
            for seen in seen_transactions.iter().filter(|seen| seen.may_be(t)) {
                let meet = match (seen.span, now) {
                    (Some(seen_span), Some(now)) => seen_span.meet(now),
                    _ => None,
                };
                // A transaction recovered after a restart has a new age but keeps its id.
                let recovered = restarted && seen.same_id_other_age(t, now);
                if meet.is_none() && !recovered {
                    continue;
                }
                let span = meet.or(now);
                same = Some(match same {
                    None => (span, seen.bound),
                    Some((known, bound)) => (
                        match (known, span) {
                            (Some(a), Some(b)) => Some(a.join(b)),
                            (a, b) => a.or(b),
                        },
                        bound.min(seen.bound),
                    ),
                });
            }
            let (span, bound) = same.unwrap_or_else(|| {
                let span = now.map(|now| match previous_after {
                    None => now,
                    Some(after) if now.hi >= after => Span {
                        lo: now.lo.max(after),
                        hi: now.hi,
                    },
                    // Its age says it was open at the previous listing, which did not show it:
                    // statement text imitating a transaction (or one recovered after a restart
                    // that was never listed). Told apart at the next listing, so that a forged
                    // age cannot hold the horizon.
                    Some(after) => Span {
                        lo: after,
                        hi: after,
                    },
                });
                let bound = match t.connection {
                    Some(_) => since,
                    None => since.min(any_previous_statement),
                };
                (span, bound)
            });
            let bound = t
                .connection
                .and_then(|c| statement_floor.get(&c).copied())
                .map_or(bound, |statements| bound.min(statements));
            transactions.push(SeenTransaction {
                connection: t.connection,
                id: t.id.clone(),
                rw_id: t.rw_id,
                span,
                bound,
            });
            oldest = oldest.min(bound);
        }

        let open = !transactions.is_empty() || !statements.is_empty();
        self.previous = Some(Previous {
            listed_after: listing.listed_after,
            transactions,
            statements,
        });
        open.then_some(oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARIADB_LOCK_WAIT: &[u8] = include_bytes!("fixtures/mariadb-10.11-lock-wait.txt");
    const MARIADB_DEADLOCK: &[u8] = include_bytes!("fixtures/mariadb-10.11-deadlock-report.txt");
    const MARIADB_NOT_UTF8: &[u8] = include_bytes!("fixtures/mariadb-10.11-not-utf8.txt");
    const MYSQL8_MONITOR: &str = include_str!("fixtures/mysql-8.0-manual-monitor-output.txt");
    const MYSQL8_DEADLOCK_SECTIONS: &str =
        include_str!("fixtures/mysql-8.0-manual-deadlock-sections.txt");

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn seconds(n: u64) -> std::time::Duration {
        std::time::Duration::from_secs(n)
    }

    /// A transaction that has not written yet (placeholder id), on a connection.
    fn trx(connection: u64, active_seconds: u64) -> OpenTransaction {
        OpenTransaction {
            connection: Some(connection),
            id: format!("(0x{connection:x})"),
            rw_id: None,
            active_seconds: Some(active_seconds),
        }
    }

    /// A transaction that has written (read-write id), on a connection.
    fn rw(connection: u64, id: u64, active_seconds: u64) -> OpenTransaction {
        OpenTransaction {
            id: id.to_string(),
            rw_id: Some(id),
            ..trx(connection, active_seconds)
        }
    }

    /// A statement on `connection`, running for `micros` (MariaDB's precision).
    fn statement(connection: u64, micros: u64) -> RunningStatement {
        RunningStatement {
            connection,
            running_for: std::time::Duration::from_micros(micros),
            resolution: std::time::Duration::from_millis(1),
        }
    }

    /// A listing taken in 5 ms from `listed_after`.
    fn listing(listed_after: &str, transactions: &[OpenTransaction]) -> Listing {
        listing_with(listed_after, &[], transactions)
    }

    fn listing_with(
        listed_after: &str,
        statements: &[RunningStatement],
        transactions: &[OpenTransaction],
    ) -> Listing {
        let listed_after = t(listed_after);
        Listing {
            listed_after,
            listed_before: listed_after + Duration::milliseconds(5),
            statements: statements.to_vec(),
            transactions: transactions.to_vec(),
            server_start: None,
        }
    }

    /// The MySQL 8 manual's deadlock example inside the head and tail of its monitor example.
    fn mysql8_deadlock() -> String {
        let head_end = MYSQL8_MONITOR
            .find("------------------------\nLATEST FOREIGN")
            .unwrap();
        let tail_start = MYSQL8_MONITOR.find("--------\nFILE I/O\n").unwrap();
        format!(
            "{}{}\n{}",
            &MYSQL8_MONITOR[..head_end],
            MYSQL8_DEADLOCK_SECTIONS.trim_end(),
            &MYSQL8_MONITOR[tail_start..]
        )
    }

    #[test]
    fn every_transaction_of_a_real_mariadb_listing_with_a_lock_wait_and_imitating_text_is_read() {
        // Real: C (342, conn 80) waits for B's lock, its multi-line statement imitates the
        // listing; B (341, conn 79) holds the lock; A (340, conn 78) inserted first; R (conn 77)
        // only read. Imitations: entry 7 (conn 999, in the deadlock report), entry 5 (conn 1, in
        // C's statement). The dashes after C's lock wait, C's `FILE I/O` and `... truncated...`
        // lines and the trailer it imitates end nothing.
        let open = parse_innodb_status(MARIADB_LOCK_WAIT, 12345).unwrap();
        type Seen<'a> = (Option<u64>, &'a str, Option<u64>, Option<u64>);
        let seen: Vec<Seen<'_>> = open
            .iter()
            .map(|t| (t.connection, t.id.as_str(), t.rw_id, t.active_seconds))
            .collect();
        assert_eq!(
            seen,
            vec![
                (Some(999), "7", Some(7), Some(999_999)),
                (Some(80), "342", Some(342), Some(2)),
                (Some(1), "5", Some(5), Some(0)),
                (Some(79), "341", Some(341), Some(2)),
                (Some(78), "340", Some(340), Some(4)),
                (Some(77), "(0x7fcd00dd8b80)", None, Some(4)),
            ]
        );
        // The reader's own connection is left out, by its real line only.
        let without_a = parse_innodb_status(MARIADB_LOCK_WAIT, 78).unwrap();
        assert!(without_a.iter().all(|t| t.connection != Some(78)));
        assert_eq!(without_a.len(), 5);
        let without_imitated = parse_innodb_status(MARIADB_LOCK_WAIT, 1).unwrap();
        assert_eq!(
            without_imitated.len(),
            5,
            "only the imitated entry of conn 1"
        );
    }

    #[test]
    fn a_deadlock_report_imitating_the_list_does_not_hide_the_real_list() {
        let open = parse_innodb_status(MARIADB_DEADLOCK, 12345).unwrap();
        let connections: Vec<Option<u64>> = open.iter().map(|t| t.connection).collect();
        assert_eq!(
            connections,
            vec![Some(999), Some(84)],
            "the imitated entry and the real transaction"
        );
        assert_eq!(open[1].rw_id, Some(350));
    }

    #[test]
    fn statement_text_that_is_not_utf8_is_read_past() {
        let open = parse_innodb_status(MARIADB_NOT_UTF8, 12345).unwrap();
        assert!(
            open.iter()
                .any(|t| t.connection == Some(86) && t.rw_id.is_none()),
            "{open:?}"
        );
    }

    #[test]
    fn the_mysql8_manual_listing_with_a_lock_wait_is_read_whole() {
        let open = parse_innodb_status(MYSQL8_MONITOR.as_bytes(), 1).unwrap();
        assert_eq!(
            open,
            vec![OpenTransaction {
                connection: Some(9),
                id: "7747".into(),
                rw_id: Some(7747),
                active_seconds: Some(23),
            }],
            "the idle session (not started, placeholder id) is skipped"
        );
        // The same listing with an older transaction after the lock-waiting one: the old parser
        // stopped at the dashes closing the wait and lost it.
        let older = "---TRANSACTION 7001, ACTIVE 95 sec\n\
                     2 lock struct(s), heap size 1136, 1 row lock(s), undo log entries 1\n\
                     MySQL thread id 7, OS thread handle 140286987249409, query id 40 localhost root\n";
        let with_older = MYSQL8_MONITOR.replace(
            "--------\nFILE I/O\n",
            &format!("{older}--------\nFILE I/O\n"),
        );
        let open = parse_innodb_status(with_older.as_bytes(), 1).unwrap();
        assert_eq!(
            open.iter().map(|t| t.connection).collect::<Vec<_>>(),
            vec![Some(9), Some(7)]
        );
    }

    #[test]
    fn the_mysql8_manual_deadlock_example_is_read() {
        let status = mysql8_deadlock();
        let open = parse_innodb_status(status.as_bytes(), 1).unwrap();
        assert_eq!(
            open,
            vec![OpenTransaction {
                connection: Some(19),
                id: "43260".into(),
                rw_id: Some(43260),
                active_seconds: Some(219),
            }],
            "the deadlock report's TRANSACTION lines are not the list"
        );
    }

    #[test]
    fn multi_line_statement_text_imitating_the_listing_changes_nothing_real_in_mysql8_output() {
        // The manual's listing with its statement replaced by hostile text: InnoDB prints a
        // statement's text verbatim (`innobase_mysql_print_thd`).
        let hostile = "DELETE FROM t /*\n\
            ----------------------------------\n\
            ------------------\n\
            --------\nFILE I/O\n--------\n\
            ... truncated...\n...truncated...\n\
            ---TRANSACTION 421764459790001, not started\n\
            ---TRANSACTION 9, COMMITTED IN MEMORY\n\
            MySQL thread id 9, OS thread handle 1, query id 1 localhost root\n\
            ----------------------------\nEND OF INNODB MONITOR OUTPUT\n============================\n\
            */ WHERE i = 1";
        let status = MYSQL8_MONITOR.replace("DELETE FROM t WHERE i = 1", hostile);
        let open = parse_innodb_status(status.as_bytes(), 1).unwrap();
        assert_eq!(open.len(), 2, "{open:?}");
        assert_eq!(open[0].connection, Some(9));
        assert_eq!(open[0].active_seconds, Some(23));
        assert_eq!(
            (open[1].id.as_str(), open[1].active_seconds),
            ("9", None),
            "the imitated entry only adds a holder"
        );
    }

    #[test]
    fn an_output_of_the_servers_cut_length_is_treated_as_cut_whatever_it_says() {
        let mut long = MYSQL8_MONITOR.as_bytes().to_vec();
        long.resize(MAX_STATUS_SIZE - 1, b' ');
        assert_eq!(parse_innodb_status(&long, 1), Err(ListingError::Truncated));
        // Shorter output is never cut, even when a statement says so.
        let says_cut = MYSQL8_MONITOR.replace(
            "LIST OF TRANSACTIONS FOR EACH SESSION:\n",
            "LIST OF TRANSACTIONS FOR EACH SESSION:\n... truncated...\n",
        );
        assert!(parse_innodb_status(says_cut.as_bytes(), 1).is_ok());
    }

    #[test]
    fn an_output_without_its_list_or_its_end_is_an_error() {
        assert_eq!(
            parse_innodb_status(b"BUFFER POOL AND MEMORY\n", 1),
            Err(ListingError::NoTransactionList)
        );
        let cut_end = &MYSQL8_MONITOR[..MYSQL8_MONITOR.find("ROW OPERATIONS").unwrap()];
        assert_eq!(
            parse_innodb_status(cut_end.as_bytes(), 1),
            Err(ListingError::Incomplete)
        );
        let no_file_io = MYSQL8_MONITOR.replace("\nFILE I/O\n", "\nFILE IO\n");
        assert_eq!(
            parse_innodb_status(no_file_io.as_bytes(), 1),
            Err(ListingError::Incomplete)
        );
    }

    #[test]
    fn an_empty_list_is_no_open_transaction() {
        let empty = "\nTRANSACTIONS\n------------\nLIST OF TRANSACTIONS FOR EACH SESSION:\n--------\nFILE I/O\n--------\n\
                     ----------------------------\nEND OF INNODB MONITOR OUTPUT\n============================\n";
        assert_eq!(parse_innodb_status(empty.as_bytes(), 1), Ok(vec![]));
    }

    #[test]
    fn a_transaction_without_a_connection_line_has_no_connection() {
        // A recovered XA transaction: no thread line; a statement text line after it names none.
        let status = MYSQL8_MONITOR.replace(
            "--------\nFILE I/O\n",
            "---TRANSACTION 5601, ACTIVE (PREPARED) 12 sec recovered trx\n\
             1 lock struct(s), heap size 1128, 0 row lock(s), undo log entries 1\n\
             Trx read view will not see trx with id >= 5602, sees < 5602\n\
             MySQL thread id 77, OS thread handle 1, query id 1 localhost root\n\
             --------\nFILE I/O\n",
        );
        let open = parse_innodb_status(status.as_bytes(), 1).unwrap();
        assert_eq!(
            open[1],
            OpenTransaction {
                connection: None,
                id: "5601".into(),
                rw_id: Some(5601),
                active_seconds: Some(12),
            }
        );
    }

    #[test]
    fn the_first_listing_holds_what_is_open_until_it_is_told_apart() {
        // Nothing bounds the rows of a transaction open at the first listing: its statement may
        // have waited for a lock for any time before InnoDB's start of it (review finding 1).
        let mut bounds = HorizonBounds::default();
        let l = listing("2024-05-01 10:47:04.215", &[rw(7, 300, 2)]);
        assert_eq!(bounds.observe(&l), Some(NaiveDateTime::MIN));
        let l = listing("2024-05-01 10:47:05.500", &[rw(7, 300, 3)]);
        assert_eq!(
            bounds.observe(&l),
            Some(NaiveDateTime::MIN),
            "the same transaction: held while it is open"
        );
        // Once it has ended, what follows is bounded by the listings.
        let l = listing("2024-05-01 10:47:05.600", &[rw(7, 301, 0)]);
        assert_eq!(bounds.observe(&l), Some(t("2024-05-01 10:47:05.500")));
        // Running statements give their own start, at the first listing too.
        let mut bounds = HorizonBounds::default();
        let l = listing_with("2024-05-01 10:47:04.000", &[statement(9, 2_000_000)], &[]);
        assert_eq!(bounds.observe(&l), Some(t("2024-05-01 10:47:01.999")));
    }

    #[test]
    fn a_transaction_new_since_the_previous_listing_started_after_it() {
        let mut bounds = HorizonBounds::default();
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.100", &[])),
            None
        );
        let l = listing("2024-05-01 10:47:04.120", &[trx(7, 0)]);
        assert_eq!(
            bounds.observe(&l),
            Some(t("2024-05-01 10:47:04.100")),
            "not listed at 10:47:04.100, so it started after that"
        );
    }

    #[test]
    fn a_listed_transaction_keeps_its_first_bound_until_it_is_gone() {
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.000", &[]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.020", &[trx(7, 0)])),
            Some(t("2024-05-01 10:47:04.000"))
        );
        // Still open a second later (its age grew with the clock): the bound stays.
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:05.300", &[trx(7, 1), trx(8, 0)])),
            Some(t("2024-05-01 10:47:04.000"))
        );
        // Once it ends, it is forgotten and only the newer one counts.
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:05.320", &[trx(8, 0)])),
            Some(t("2024-05-01 10:47:04.020")),
            "transaction 8 keeps what was known when it appeared: not listed at 10:47:04.020, \
             so its rows are stamped after that (not after its age's 10:47:04.320)"
        );
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:05.340", &[])),
            None
        );
    }

    #[test]
    fn a_connection_listed_each_time_with_a_new_read_write_id_holds_a_new_transaction_each_time() {
        // A busy writer connection: autocommit statements, one open at every listing.
        let mut bounds = HorizonBounds::default();
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
        let mut bounds = HorizonBounds::default();
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
    fn a_prepared_xa_transaction_that_leaves_its_connection_keeps_its_bound() {
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.000", &[]));
        bounds.observe(&listing("2024-05-01 10:47:04.020", &[rw(7, 300, 0)]));
        let detached = OpenTransaction {
            connection: None,
            ..rw(7, 300, 1)
        };
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:05.500", &[detached])),
            Some(t("2024-05-01 10:47:04.000"))
        );
    }

    #[test]
    fn two_entries_naming_one_connection_keep_the_older_bound() {
        // An imitated entry naming the connection of a real old transaction must not replace
        // what is known of it.
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.000", &[]));
        bounds.observe(&listing("2024-05-01 10:47:04.020", &[rw(7, 300, 0)]));
        let fake = rw(7, 999, 0);
        for at in ["2024-05-01 10:47:04.040", "2024-05-01 10:47:04.060"] {
            for order in [[rw(7, 300, 0), fake.clone()], [fake.clone(), rw(7, 300, 0)]] {
                let mut b = bounds.clone();
                assert_eq!(
                    b.observe(&listing(at, &order)),
                    Some(t("2024-05-01 10:47:04.000"))
                );
                assert_eq!(
                    b.observe(&listing("2024-05-01 10:47:04.080", &[rw(7, 300, 0)])),
                    Some(t("2024-05-01 10:47:04.000"))
                );
            }
        }
    }

    #[test]
    fn an_imitated_entry_whose_age_stands_still_stops_holding_the_horizon_within_seconds() {
        // Entry 7 `ACTIVE 999999 sec` in a deadlock report is printed identically at every
        // listing; listings every 50 ms for 10 s.
        let fake = || OpenTransaction {
            connection: Some(999),
            id: "7".into(),
            rw_id: Some(7),
            active_seconds: Some(999_999),
        };
        let start = t("2024-05-01 10:00:00.000");
        let mut bounds = HorizonBounds::default();
        let mut worst_lag = Duration::zero();
        for i in 0..200 {
            let at = start + Duration::milliseconds(50 * i);
            let l = Listing {
                listed_after: at,
                listed_before: at + Duration::milliseconds(5),
                statements: vec![],
                transactions: vec![fake()],
                server_start: None,
            };
            let oldest = bounds.observe(&l).unwrap();
            if i >= 60 {
                worst_lag = worst_lag.max(at - oldest);
            }
        }
        assert!(
            worst_lag <= Duration::milliseconds(2_100),
            "held back by {worst_lag} after 3 s"
        );
    }

    #[test]
    fn a_listing_without_an_age_bounds_by_the_previous_listing_every_time() {
        // COMMITTED IN MEMORY: committing, nothing more to write; an imitated one must not
        // stick.
        let committing = OpenTransaction {
            active_seconds: None,
            ..rw(5, 77, 0)
        };
        let mut bounds = HorizonBounds::default();
        assert_eq!(
            bounds.observe(&listing(
                "2024-05-01 10:47:04.000",
                std::slice::from_ref(&committing)
            )),
            Some(NaiveDateTime::MIN),
            "first listing, no age: nothing bounds it"
        );
        assert_eq!(
            bounds.observe(&listing(
                "2024-05-01 10:47:04.050",
                std::slice::from_ref(&committing)
            )),
            Some(t("2024-05-01 10:47:04.000"))
        );
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.100", &[committing])),
            Some(t("2024-05-01 10:47:04.050"))
        );
    }

    #[test]
    fn a_connection_reappearing_after_being_forgotten_is_bounded_by_the_listing_before() {
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.100", &[trx(7, 0)]));
        bounds.observe(&listing("2024-05-01 10:47:04.300", &[]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.500", &[trx(7, 0)])),
            Some(t("2024-05-01 10:47:04.300"))
        );
    }

    #[test]
    fn a_transaction_new_since_a_listing_seconds_ago_is_bounded_by_that_listing_not_its_age() {
        // Review finding 1: listings 5 s apart (a catch-up read, Kafka backpressure, a failed
        // listing). InnoDB's age dates the transaction (started at least 3 s before 10:47:09),
        // but its first statement was stamped before it waited for a lock, possibly just after
        // 10:47:04.100, and no process list showed it.
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.100", &[]));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:09.000", &[rw(7, 300, 3)])),
            Some(t("2024-05-01 10:47:04.100"))
        );
        // And as long as it is open.
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:12.000", &[rw(7, 300, 6)])),
            Some(t("2024-05-01 10:47:04.100"))
        );
    }

    #[test]
    fn a_transaction_whose_client_left_is_bounded_by_every_statement_of_the_listing_before() {
        // A statement on connection 9 waited for a lock (running at 10:47:04.000), then its
        // transaction wrote, was prepared (XA) and its client disconnected, all before the next
        // listing: the transaction appears without a connection.
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing_with(
            "2024-05-01 10:47:04.000",
            &[statement(9, 2_000_000)],
            &[],
        ));
        let detached = OpenTransaction {
            connection: None,
            ..rw(9, 300, 0)
        };
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:04.500", &[detached])),
            Some(t("2024-05-01 10:47:01.999"))
        );
    }

    fn started(at: &str, uptime_seconds: u64) -> Option<ServerStart> {
        Some(ServerStart::from_uptime(t(at), uptime_seconds))
    }

    #[test]
    fn a_prepared_xa_transaction_recovered_after_a_server_restart_keeps_its_bound() {
        // Review finding 2: prepared XA 300 wrote a row stamped 10:00:00.5 and is listed; the
        // server crashes and recovers it with the recovery time as its start
        // (`trx_lists_init_at_db_start`), so its age no longer fits what was remembered.
        let mut bounds = HorizonBounds::default();
        let first = listing("2024-05-01 10:00:00.000", &[]);
        assert!(
            bounds.wants_server_start(&first),
            "asked once, at the start"
        );
        bounds.observe(&Listing {
            server_start: started("2024-05-01 10:00:00.000", 3_600),
            ..first
        });
        let before_crash = listing("2024-05-01 10:00:02.000", &[rw(7, 300, 1)]);
        assert!(
            !bounds.wants_server_start(&before_crash),
            "not on the normal path"
        );
        assert_eq!(
            bounds.observe(&before_crash),
            Some(t("2024-05-01 10:00:00.000"))
        );
        let recovered = OpenTransaction {
            connection: None,
            ..rw(7, 300, 0)
        };
        let after_recovery = listing("2024-05-01 10:00:40.000", std::slice::from_ref(&recovered));
        assert!(bounds.wants_server_start(&after_recovery));
        let after_recovery = Listing {
            server_start: started("2024-05-01 10:00:40.000", 1),
            ..after_recovery
        };
        assert_eq!(
            bounds.observe(&after_recovery),
            Some(t("2024-05-01 10:00:00.000")),
            "the bound it had before the restart"
        );
        // Its new age runs with the clock: the same transaction from now on.
        let later = listing(
            "2024-05-01 10:00:43.000",
            &[OpenTransaction {
                active_seconds: Some(3),
                ..recovered
            }],
        );
        assert!(!bounds.wants_server_start(&later));
        assert_eq!(bounds.observe(&later), Some(t("2024-05-01 10:00:00.000")));
    }

    #[test]
    fn the_server_start_is_asked_at_the_first_listing_and_never_on_the_normal_path() {
        let mut bounds = HorizonBounds::default();
        let first = listing("2024-05-01 10:00:00.000", &[rw(7, 300, 0)]);
        assert!(bounds.wants_server_start(&first));
        bounds.observe(&Listing {
            server_start: started("2024-05-01 10:00:00.000", 3_600),
            ..first
        });
        let committing = OpenTransaction {
            active_seconds: None,
            ..rw(7, 300, 0)
        };
        let steady = [
            listing("2024-05-01 10:00:00.100", &[rw(7, 300, 0), rw(8, 301, 0)]),
            listing("2024-05-01 10:00:01.150", &[rw(7, 300, 1), rw(8, 302, 0)]),
            // Caught while it commits (no age), then gone.
            listing("2024-05-01 10:00:01.250", &[committing, trx(9, 0)]),
            listing("2024-05-01 10:00:01.350", &[trx(9, 0)]),
        ];
        for l in steady {
            assert!(!bounds.wants_server_start(&l), "{l:?}");
            bounds.observe(&l);
        }
    }

    #[test]
    fn without_a_restart_an_entry_reusing_a_read_write_id_with_another_age_is_another_one() {
        // Statement text imitating transaction 300 with a frozen age: the server has not
        // restarted, so it is not the remembered transaction and cannot hold its bound.
        let mut bounds = HorizonBounds::default();
        bounds.observe(&Listing {
            server_start: started("2024-05-01 10:00:00.000", 3_600),
            ..listing("2024-05-01 10:00:00.000", &[])
        });
        bounds.observe(&listing("2024-05-01 10:00:02.000", &[rw(7, 300, 1)]));
        let imitated = OpenTransaction {
            connection: Some(999),
            ..rw(7, 300, 0)
        };
        let l = listing("2024-05-01 10:00:40.000", &[imitated]);
        assert!(bounds.wants_server_start(&l));
        let l = Listing {
            server_start: started("2024-05-01 10:00:40.000", 3_640),
            ..l
        };
        assert_eq!(bounds.observe(&l), Some(t("2024-05-01 10:00:02.000")));
    }

    #[test]
    fn a_server_start_is_known_to_a_second_either_way() {
        let before = ServerStart::from_uptime(t("2024-05-01 10:00:00.300"), 100);
        for (at, uptime) in [
            ("2024-05-01 10:00:00.900", 100),
            ("2024-05-01 10:00:01.100", 101),
            ("2024-05-01 11:00:00.300", 3_700),
        ] {
            let now = ServerStart::from_uptime(t(at), uptime);
            assert!(!now.restarted_since(before), "{at} up {uptime} s");
        }
        let now = ServerStart::from_uptime(t("2024-05-01 10:00:05.000"), 1);
        assert!(now.restarted_since(before));
    }

    #[test]
    fn a_running_statement_bounds_the_horizon_from_its_start() {
        let mut bounds = HorizonBounds::default();
        // Waiting for a metadata lock for 2.5 s: in no transaction list.
        let waiting = listing_with("2024-05-01 10:47:04.000", &[statement(9, 2_500_000)], &[]);
        assert_eq!(bounds.observe(&waiting), Some(t("2024-05-01 10:47:01.499")));
        // Still waiting: it keeps its start.
        let later = listing_with("2024-05-01 10:47:04.050", &[statement(9, 2_550_000)], &[]);
        assert_eq!(bounds.observe(&later), Some(t("2024-05-01 10:47:01.499")));
    }

    #[test]
    fn a_transaction_begun_by_a_statement_that_waited_is_bounded_by_that_statement() {
        // The statement waited 3 s, then began its transaction, ended, and left the explicit
        // transaction open: the transaction looks new, its row carries the statement's start.
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing_with(
            "2024-05-01 10:47:04.000",
            &[statement(9, 3_000_000)],
            &[],
        ));
        let after = listing("2024-05-01 10:47:04.050", &[rw(9, 500, 0)]);
        assert_eq!(bounds.observe(&after), Some(t("2024-05-01 10:47:00.999")));
        // And as long as that transaction is open.
        let still = listing("2024-05-01 10:47:06.000", &[rw(9, 500, 2)]);
        assert_eq!(bounds.observe(&still), Some(t("2024-05-01 10:47:00.999")));
        assert_eq!(
            bounds.observe(&listing("2024-05-01 10:47:06.050", &[])),
            None
        );
    }

    #[test]
    fn short_statements_one_after_another_do_not_hold_the_horizon() {
        // A busy connection, a new 1 ms statement at every listing (MariaDB's TIME_MS).
        let mut bounds = HorizonBounds::default();
        let start = t("2024-05-01 10:00:00.000");
        for i in 0..100 {
            let at = start + Duration::milliseconds(50 * i);
            let l = Listing {
                listed_after: at,
                listed_before: at + Duration::milliseconds(2),
                statements: vec![statement(5, 1_000)],
                transactions: vec![],
                server_start: None,
            };
            let oldest = bounds.observe(&l).unwrap();
            assert!(at - oldest <= Duration::milliseconds(3), "{i}: {oldest}");
        }
    }

    #[test]
    fn a_statement_with_whole_second_times_is_bounded_by_the_previous_listing() {
        // MySQL's TIME: 0 s says started within the last second; not running the previous time
        // says after that listing.
        let mut bounds = HorizonBounds::default();
        bounds.observe(&listing("2024-05-01 10:47:04.000", &[]));
        let l = listing_with(
            "2024-05-01 10:47:04.050",
            &[RunningStatement {
                connection: 3,
                running_for: seconds(0),
                resolution: seconds(1),
            }],
            &[],
        );
        assert_eq!(bounds.observe(&l), Some(t("2024-05-01 10:47:04.000")));
    }
}
