//! The verdict, from the database's final rows and the consumers' log files alone (never the
//! services' metrics):
//!
//! - every log line is a JSON object with the product fields and where it came from;
//! - **lost**: a product of the table that no log holds, a product whose final row (its
//!   `(id, last_updated)` version) no log holds, or an insert the database acknowledged that is
//!   not in the table;
//! - **duplicated**: an `(id, last_updated)` version logged more than once, over all logs;
//! - **out of order**: per product, in the order the lines were written (`written_at`, then the
//!   line's place in its file), a version older than one logged before it;
//! - **mismatched**: the last line of a product has its final version but other field values, or a
//!   product is logged with a version newer than its final row;
//! - **phantom**: a logged product that is not in the table (e.g. from a rolled-back transaction).
//!
//! Several changes of one product between two captures may reach the logs as one line (the
//! latest state): versions in between are not required.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use chrono::DateTime;

/// A row of the table at the end of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct DbRow {
    pub id: i64,
    pub name: String,
    pub category: Option<String>,
    pub price_cents: i64,
    pub micros: i64,
}

/// Where a log line is: the slot's log file and its line number (from 1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub slot: String,
    pub line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/consumer_log.json:{}", self.slot, self.line)
    }
}

/// One valid log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub place: Place,
    pub id: i64,
    pub name: String,
    pub category: Option<String>,
    pub price: f64,
    pub micros: i64,
    pub partition: i64,
    pub offset: i64,
    pub written_micros: i64,
}

impl Logged {
    fn short(&self) -> String {
        format!(
            "{} (version {}, partition {} offset {}, written {})",
            self.place,
            micros_text(self.micros),
            self.partition,
            self.offset,
            micros_text(self.written_micros)
        )
    }
}

pub fn micros_text(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

/// Parses one line; `Err` says what is wrong with it.
pub fn parse_line(place: Place, line: &str) -> Result<Logged, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let int = |key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_i64)
            .ok_or(format!("`{key}` missing or not an integer"))
    };
    let text = |key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .ok_or(format!("`{key}` missing or not a string"))
    };
    let id = int("id")?;
    let name = text("name")?.to_owned();
    let category = match object.get("category") {
        Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => return Err("`category` missing or not a string or null".into()),
    };
    let written = text("written_at")?;
    let written_micros = DateTime::parse_from_rfc3339(written)
        .map_err(|e| format!("`written_at` {written:?} is not RFC 3339 ({e})"))?
        .timestamp_micros();
    text("last_updated")?;
    Ok(Logged {
        id,
        name,
        category,
        price: object
            .get("price")
            .and_then(serde_json::Value::as_f64)
            .ok_or("`price` missing or not a number")?,
        micros: int("last_updated_micros")?,
        partition: int("partition")?,
        offset: int("offset")?,
        written_micros,
        place,
    })
}

/// Everything read from the logs.
#[derive(Debug, Default)]
pub struct Logs {
    pub lines: Vec<Logged>,
    /// Lines that are not valid: where, why, and the line (cut).
    pub invalid: Vec<(Place, String, String)>,
    /// Files read, with their line counts.
    pub files: BTreeMap<String, usize>,
}

/// Reads every `consumer_*/consumer_log.json` under `root`.
pub fn read_logs(root: &Path) -> std::io::Result<Logs> {
    let mut logs = Logs::default();
    let mut slots: Vec<String> = std::fs::read_dir(root)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("consumer_"))
        .collect();
    slots.sort();
    for slot in slots {
        let path = root.join(&slot).join("consumer_log.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // The empty piece after the final newline is not a line; an empty line elsewhere is.
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let mut count = 0;
        for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
            if bytes.is_empty() {
                break;
            }
            count += 1;
            let place = Place {
                slot: slot.clone(),
                line: i + 1,
            };
            let parsed = std::str::from_utf8(raw)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(|line| parse_line(place.clone(), line));
            match parsed {
                Ok(line) => logs.lines.push(line),
                Err(why) => {
                    let shown: String = String::from_utf8_lossy(raw).chars().take(200).collect();
                    logs.invalid.push((place, why, shown));
                }
            }
        }
        logs.files.insert(slot, count);
    }
    Ok(logs)
}

/// What the check found; every list holds readable details.
#[derive(Debug, Default)]
pub struct Findings {
    pub products: usize,
    pub lines: usize,
    pub invalid: Vec<String>,
    pub lost: Vec<Lost>,
    pub duplicated: Vec<String>,
    /// Extra copies over all duplicated versions (a version logged 3 times counts 2).
    pub duplicate_copies: usize,
    pub out_of_order: Vec<String>,
    pub mismatched: Vec<String>,
    pub phantom: Vec<String>,
}

/// A lost product or version, with the times that help find the cause.
#[derive(Debug, Clone)]
pub struct Lost {
    pub id: i64,
    /// The version that should be in the logs (`None`: the database lost an acknowledged insert).
    pub micros: Option<i64>,
    pub detail: String,
}

impl Findings {
    pub fn failed(&self) -> bool {
        !(self.invalid.is_empty()
            && self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.out_of_order.is_empty()
            && self.mismatched.is_empty()
            && self.phantom.is_empty())
    }
}

fn cents(price: f64) -> i64 {
    (price * 100.0).round() as i64
}

/// The check. `acknowledged` are inserts the database acknowledged (they must be in `db`);
/// `rolled_back` ids must appear nowhere.
pub fn analyze(db: &[DbRow], logs: &Logs, acknowledged: &[i32], rolled_back: &[i32]) -> Findings {
    let mut findings = Findings {
        products: db.len(),
        lines: logs.lines.len() + logs.invalid.len(),
        ..Findings::default()
    };
    for (place, why, line) in &logs.invalid {
        findings.invalid.push(format!("{place}: {why}: {line}"));
    }

    // Per product, its lines in the order they were written.
    let mut by_id: HashMap<i64, Vec<&Logged>> = HashMap::new();
    for line in &logs.lines {
        by_id.entry(line.id).or_default().push(line);
    }
    for lines in by_id.values_mut() {
        lines.sort_by(|a, b| {
            (a.written_micros, &a.place.slot, a.place.line).cmp(&(
                b.written_micros,
                &b.place.slot,
                b.place.line,
            ))
        });
    }

    // Duplicates: the same version more than once anywhere.
    let mut ids: Vec<i64> = by_id.keys().copied().collect();
    ids.sort_unstable();
    for id in &ids {
        let mut versions: BTreeMap<i64, Vec<&Logged>> = BTreeMap::new();
        for line in &by_id[id] {
            versions.entry(line.micros).or_default().push(line);
        }
        for (micros, copies) in versions {
            if copies.len() > 1 {
                findings.duplicate_copies += copies.len() - 1;
                let same_record = copies
                    .iter()
                    .map(|l| (l.partition, l.offset))
                    .collect::<BTreeSet<_>>()
                    .len()
                    == 1;
                findings.duplicated.push(format!(
                    "id {id} version {} logged {} times ({}): {}",
                    micros_text(micros),
                    copies.len(),
                    if same_record {
                        "the same Kafka record written again: a consumer-side duplicate"
                    } else {
                        "different Kafka records: produced more than once"
                    },
                    copies
                        .iter()
                        .map(|l| l.short())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
    }

    // Order: never a version older than one already logged.
    for id in &ids {
        let mut newest: Option<&Logged> = None;
        for line in &by_id[id] {
            match newest {
                Some(before) if line.micros < before.micros => {
                    findings.out_of_order.push(format!(
                        "id {id}: {} logged after {}",
                        line.short(),
                        before.short()
                    ));
                }
                Some(before) if line.micros == before.micros => {}
                _ => newest = Some(line),
            }
        }
    }

    // The final rows.
    let table: HashMap<i64, &DbRow> = db.iter().map(|r| (r.id, r)).collect();
    let mut rows: Vec<&DbRow> = db.iter().collect();
    rows.sort_by_key(|r| r.id);
    for row in rows {
        let Some(lines) = by_id.get(&row.id) else {
            findings.lost.push(Lost {
                id: row.id,
                micros: Some(row.micros),
                detail: format!(
                    "id {} (final version {}) is in no log",
                    row.id,
                    micros_text(row.micros)
                ),
            });
            continue;
        };
        let newest = lines.iter().max_by_key(|l| l.micros).expect("non-empty");
        let last = lines.last().expect("non-empty");
        if !lines.iter().any(|l| l.micros == row.micros) {
            findings.lost.push(Lost {
                id: row.id,
                micros: Some(row.micros),
                detail: format!(
                    "id {}: final version {} is in no log; the newest logged is {}",
                    row.id,
                    micros_text(row.micros),
                    newest.short()
                ),
            });
        } else if last.micros == row.micros {
            let expected_category = row.category.as_ref().map(|c| c.to_uppercase());
            if last.name != row.name
                || last.category != expected_category
                || cents(last.price) != row.price_cents
            {
                findings.mismatched.push(format!(
                    "id {}: {} has name {:?} category {:?} price {}, the table has {:?} {:?} {}.{:02}",
                    row.id,
                    last.short(),
                    last.name,
                    last.category,
                    last.price,
                    row.name,
                    expected_category,
                    row.price_cents / 100,
                    (row.price_cents % 100).abs()
                ));
            }
        }
        if newest.micros > row.micros {
            findings.mismatched.push(format!(
                "id {}: {} is newer than the table's final version {}",
                row.id,
                newest.short(),
                micros_text(row.micros)
            ));
        }
    }
    let table_ids: HashSet<i64> = table.keys().copied().collect();
    let mut missing_inserts: Vec<i32> = acknowledged
        .iter()
        .filter(|id| !table_ids.contains(&i64::from(**id)))
        .copied()
        .collect();
    missing_inserts.sort_unstable();
    missing_inserts.dedup();
    for id in missing_inserts {
        findings.lost.push(Lost {
            id: i64::from(id),
            micros: None,
            detail: format!(
                "id {id}: its insert was acknowledged by the database but the row is not in the table (the database lost it)"
            ),
        });
    }
    let rolled_back: HashSet<i64> = rolled_back.iter().map(|id| i64::from(*id)).collect();
    for id in &ids {
        if !table_ids.contains(id) {
            let lines = &by_id[id];
            findings.phantom.push(format!(
                "id {id} is logged ({} lines, first {}) but not in the table{}",
                lines.len(),
                lines[0].short(),
                if rolled_back.contains(id) {
                    ": its transaction was rolled back"
                } else {
                    ""
                }
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, micros: i64, price_cents: i64) -> DbRow {
        DbRow {
            id,
            name: format!("Product_{id}"),
            category: Some("Cat_5".into()),
            price_cents,
            micros,
        }
    }

    fn line(id: i64, micros: i64, offset: i64, written: i64) -> String {
        serde_json::json!({
            "id": id, "name": format!("Product_{id}"), "category": "CAT_5",
            "price": 12.34, "last_updated": "2026-12-04 10:00:00",
            "last_updated_micros": micros, "discount_price": 9.87,
            "topic": "t", "partition": id % 10, "offset": offset,
            "written_at": micros_text(written),
        })
        .to_string()
    }

    fn write_logs(files: &[(&str, Vec<String>)]) -> (tempfile::TempDir, Logs) {
        let dir = tempfile::tempdir().unwrap();
        for (slot, lines) in files {
            std::fs::create_dir_all(dir.path().join(slot)).unwrap();
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            std::fs::write(dir.path().join(slot).join("consumer_log.json"), text).unwrap();
        }
        let logs = read_logs(dir.path()).unwrap();
        (dir, logs)
    }

    #[test]
    fn a_clean_run_passes() {
        let db = [row(1, 2_000, 1234), row(2, 3_000, 1234)];
        let (_d, logs) = write_logs(&[
            (
                "consumer_1",
                vec![line(1, 1_000, 0, 10), line(1, 2_000, 1, 20)],
            ),
            ("consumer_2", vec![line(2, 3_000, 0, 15)]),
        ]);
        let findings = analyze(&db, &logs, &[1, 2], &[]);
        assert!(!findings.failed(), "{findings:#?}");
        assert_eq!(findings.lines, 3);
        assert_eq!(logs.files["consumer_1"], 2);
    }

    #[test]
    fn loss_of_a_product_and_of_a_final_version_and_of_an_acknowledged_insert() {
        let db = [row(1, 2_000, 1234), row(2, 3_000, 1234)];
        let (_d, logs) = write_logs(&[("consumer_1", vec![line(1, 1_000, 0, 10)])]);
        let findings = analyze(&db, &logs, &[1, 2, -7], &[]);
        let lost: Vec<(i64, Option<i64>)> =
            findings.lost.iter().map(|l| (l.id, l.micros)).collect();
        assert_eq!(lost, [(1, Some(2_000)), (2, Some(3_000)), (-7, None)]);
        assert!(findings.duplicated.is_empty() && findings.out_of_order.is_empty());
    }

    #[test]
    fn duplicates_across_logs_are_counted_and_told_apart() {
        let db = [row(1, 2_000, 1234)];
        let (_d, logs) = write_logs(&[
            ("consumer_1", vec![line(1, 2_000, 5, 10)]),
            // The same record in another slot (a consumer-side duplicate), then the same
            // version at another offset (produced twice).
            (
                "consumer_2",
                vec![line(1, 2_000, 5, 11), line(1, 2_000, 9, 12)],
            ),
        ]);
        let findings = analyze(&db, &logs, &[], &[]);
        assert_eq!(findings.duplicate_copies, 2);
        assert_eq!(findings.duplicated.len(), 1);
        assert!(findings.duplicated[0].contains("produced more than once"));
        assert!(findings.out_of_order.is_empty() && findings.lost.is_empty());
    }

    #[test]
    fn an_older_version_written_later_is_out_of_order_even_in_another_file() {
        let db = [row(1, 3_000, 1234)];
        let (_d, logs) = write_logs(&[
            (
                "consumer_1",
                vec![line(1, 1_000, 0, 10), line(1, 3_000, 2, 30)],
            ),
            ("consumer_2", vec![line(1, 2_000, 1, 40)]),
        ]);
        let findings = analyze(&db, &logs, &[], &[]);
        assert_eq!(findings.out_of_order.len(), 1, "{findings:#?}");
        assert!(findings.out_of_order[0].contains("consumer_2/consumer_log.json:1"));
        // The final version is logged, but not last: the last line is not the final row.
        assert!(findings.lost.is_empty());
        assert!(findings.failed());
    }

    #[test]
    fn within_one_file_the_line_order_decides_when_written_at_ties() {
        let db = [row(1, 2_000, 1234)];
        let (_d, logs) = write_logs(&[(
            "consumer_1",
            vec![line(1, 2_000, 1, 10), line(1, 1_000, 0, 10)],
        )]);
        let findings = analyze(&db, &logs, &[], &[]);
        assert_eq!(findings.out_of_order.len(), 1);
    }

    #[test]
    fn invalid_lines_are_reported_with_their_place() {
        let db = [row(1, 1_000, 1234)];
        let (_d, logs) = write_logs(&[(
            "consumer_3",
            vec![
                line(1, 1_000, 0, 10),
                "{\"id\":1,\"name\":\"Prod".into(),
                "{\"id\":2}".into(),
            ],
        )]);
        let findings = analyze(&db, &logs, &[], &[]);
        assert_eq!(findings.invalid.len(), 2, "{findings:#?}");
        assert!(findings.invalid[0].starts_with("consumer_3/consumer_log.json:2: not JSON"));
        assert!(findings.invalid[1].contains("`name` missing"));
        // An empty line in the middle is a line, and invalid.
        let (_d, logs) = write_logs(&[(
            "consumer_1",
            vec![line(1, 1_000, 0, 10), String::new(), line(1, 1_000, 0, 10)],
        )]);
        assert_eq!(logs.invalid.len(), 1);
    }

    #[test]
    fn wrong_values_a_version_from_the_future_and_phantoms_are_reported() {
        let db = [row(1, 2_000, 9999), row(2, 1_000, 1234)];
        let (_d, logs) = write_logs(&[(
            "consumer_1",
            vec![
                line(1, 2_000, 0, 10),
                line(2, 1_000, 0, 10),
                line(2, 5_000, 1, 11),
                line(-4, 1_000, 0, 12),
            ],
        )]);
        let findings = analyze(&db, &logs, &[], &[-4]);
        assert_eq!(findings.mismatched.len(), 2, "{findings:#?}");
        assert!(findings.mismatched[0].contains("price 12.34"));
        assert!(findings.mismatched[1].contains("newer than the table's final version"));
        assert_eq!(findings.phantom.len(), 1);
        assert!(findings.phantom[0].contains("rolled back"));
    }
}
