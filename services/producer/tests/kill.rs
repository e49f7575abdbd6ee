//! The real `producer` binary, killed with SIGKILL in the middle of producing and restarted:
//! nothing is lost, and the read-back after each restart keeps duplicates away.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use producer::watermark::Watermark;
use support::{count_versions, insert_products, table_versions, TestBed};

const ROWS: i32 = 30_000;
const KILLS: usize = 4;

/// The producer process; killed when dropped, so a failing test leaves none behind.
struct ProducerProcess(Child);

impl Drop for ProducerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_producer(bed: &TestBed, log: &Path) -> ProducerProcess {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_producer"))
        .env_clear()
        .envs(bed.env())
        .env("BATCH_SIZE", "500")
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map(ProducerProcess)
        .expect("start the producer binary")
}

/// The watermark's id, or 0 before the first batch was acknowledged.
fn watermark_progress(path: &Path) -> i64 {
    match Watermark::load(path) {
        Ok(Some(w)) => w.position.and_then(|p| p.id).map_or(0, |id| match id {
            producer::position::RowKey::Int(id) => id,
            other => panic!("integer id expected, got {other}"),
        }),
        _ => 0,
    }
}

/// Waits until the watermark reaches id `target`; on timeout fails with the producer's log.
async fn wait_for_progress(path: &Path, target: i64, log: &Path) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let progress = watermark_progress(path);
        if progress >= target {
            return progress;
        }
        if std::time::Instant::now() > deadline {
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log_text.lines().rev().take(40).collect();
            panic!(
                "no watermark progress to {target} within 60 s; producer log (last lines first):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing_and_the_read_back_prevents_duplicates() {
    let bed = TestBed::new().await;
    let log = bed.dir.path().join("producer.log");
    let mut conn = bed.connect().await;
    // 30 000 rows in statements of 1 000: long runs of equal timestamps across batches of 500.
    insert_products(&mut conn, 1, ROWS, 1000).await;

    let watermark_path = bed.watermark_path();
    let mut last_progress = 0;
    for kill in 0..KILLS {
        let mut child = spawn_producer(&bed, &log);
        // Kill once the watermark moved on (more batches are in flight by then), at a varying
        // extra delay so the kills land at different points of a batch.
        let target = last_progress + 1;
        let progressed = wait_for_progress(&watermark_path, target, &log).await;
        tokio::time::sleep(Duration::from_millis(37 * kill as u64)).await;
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reaped");
        last_progress = watermark_progress(&watermark_path);
        eprintln!(
            "kill {kill}: watermark was at id {progressed}, is at {last_progress} after the kill"
        );
        // Meanwhile the table changes: updates of rows already produced.
        sqlx::query(&format!(
            "UPDATE product SET price = price + 1 WHERE id % 97 = {kill}"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }

    // A last run to the end, stopped gracefully.
    let mut child = spawn_producer(&bed, &log);
    let expected = table_versions(&mut conn).await;
    let expected_count = expected.len();
    let received = loop {
        // Done when the topic holds every current row version.
        let received = bed.read(expected_count).await;
        let have: HashSet<(i32, i64)> = received.iter().map(support::Received::version).collect();
        if expected.iter().all(|v| have.contains(v)) {
            break received;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "producer exited early; see {}",
            log.display()
        );
        let present = expected.iter().filter(|v| have.contains(v)).count();
        eprintln!("waiting: {present} of {expected_count} current versions in the topic");
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");

    let counts = count_versions(&received);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let lost: Vec<_> = expected
        .iter()
        .filter(|v| !counts.contains_key(v))
        .collect();
    let updates = received.len() - duplicates - ROWS as usize;
    eprintln!(
        "after {KILLS} SIGKILLs: {} records, {ROWS} rows + {updates} update versions, {duplicates} duplicates, {} lost",
        received.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost row versions: {lost:?}");
    if duplicates > 0 {
        let mut twice: Vec<_> = received
            .iter()
            .filter(|r| counts[&r.version()] > 1)
            .map(|r| (r.version(), r.partition, r.offset))
            .collect();
        twice.sort();
        eprintln!("duplicated versions (version, partition, offset): {twice:?}");
        eprintln!("producer log:\n{}", std::fs::read_to_string(&log).unwrap());
    }
    // What the read-back found on each start: rows that had reached the topic beyond the durable
    // watermark when the producer was killed (each would have been a duplicate without it).
    let log_text = std::fs::read_to_string(&log).unwrap();
    let found: Vec<u64> = log_text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "read back the topic after the watermark")
        .map(|event| event["rows_already_in_topic"].as_u64().expect("count"))
        .collect();
    eprintln!("read-back on each start found {found:?} rows already in the topic");
    assert_eq!(found.len(), KILLS + 1, "one read-back per start");
    assert_eq!(
        duplicates, 0,
        "the read-back after each restart prevents duplicates"
    );
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_to_start_on_a_corrupt_watermark_and_says_which_file() {
    let bed = TestBed::new().await;
    let path = bed.watermark_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "not json").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_producer"))
        .env_clear()
        .envs(bed.env())
        .output()
        .expect("run the producer binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("corrupt"),
        "{stderr}"
    );
    bed.drop_database().await;
}
