//! `CONSUMER_SINK=stage` (prototype 002's batch consumption into a warehouse stage): batches land
//! as whole JSON Lines files named by partition and offsets, a restart resumes after them, and a
//! failed write commits nothing.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Bed, LONG};

/// One stage file, read back.
#[derive(Debug)]
struct StageFile {
    name: String,
    /// The topic id in the name (none in names given before ids were recorded).
    topic_id: Option<String>,
    partition: i32,
    first: i64,
    last: i64,
    lines: Vec<serde_json::Value>,
}

fn read_stage(dir: &Path) -> Vec<StageFile> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let stem = name
            .strip_suffix(".jsonl.gz")
            .or_else(|| name.strip_suffix(".jsonl"))
            .unwrap_or_else(|| panic!("unexpected file in the stage: {name}"));
        let (offsets, topic_id) = match stem.split_once('.') {
            Some((offsets, id)) => (offsets, Some(id.to_owned())),
            None => (stem, None),
        };
        let parts: Vec<i64> = offsets.split('-').map(|p| p.parse().unwrap()).collect();
        let mut text = String::new();
        let file = std::fs::File::open(entry.path()).unwrap();
        if name.ends_with(".gz") {
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .unwrap();
        } else {
            std::io::BufReader::new(file)
                .read_to_string(&mut text)
                .unwrap();
        }
        files.push(StageFile {
            topic_id,
            partition: i32::try_from(parts[0]).unwrap(),
            first: parts[1],
            last: parts[2],
            lines: text
                .lines()
                .map(|l| serde_json::from_str(l).expect("every line is complete JSON"))
                .collect(),
            name,
        });
    }
    files.sort_by_key(|f| (f.partition, f.first));
    files
}

fn ids_in(files: &[StageFile]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for file in files {
        for line in &file.lines {
            *counts.entry(line["id"].as_i64().unwrap()).or_default() += 1;
        }
    }
    counts
}

async fn wait_for_ids(dir: &Path, ids: usize) -> Vec<StageFile> {
    testkit::wait_until(LONG, &format!("{ids} ids in the stage"), || async {
        let files = read_stage(dir);
        (ids_in(&files).len() >= ids).then_some(files)
    })
    .await
}

/// Every file: its name matches its lines (partition, first and last offset, consecutive
/// offsets), it holds at most `max` lines, and the lines carry the transform.
fn check_files(files: &[StageFile], max: usize) {
    for file in files {
        assert!(
            !file.lines.is_empty() && file.lines.len() <= max,
            "{}: {} lines",
            file.name,
            file.lines.len()
        );
        let offsets: Vec<i64> = file
            .lines
            .iter()
            .map(|l| l["offset"].as_i64().unwrap())
            .collect();
        assert_eq!(offsets.first(), Some(&file.first), "{}", file.name);
        assert_eq!(offsets.last(), Some(&file.last), "{}", file.name);
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "{}: offsets {offsets:?}",
            file.name
        );
        for line in &file.lines {
            assert_eq!(line["partition"], file.partition);
            let category = line["category"].as_str().unwrap();
            assert_eq!(category, category.to_uppercase());
            assert_eq!(
                line["discount_price"].is_null(),
                category != "CAT_5",
                "{line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_land_as_whole_files_and_a_restart_resumes_after_them() {
    let bed = Bed::new(2).await;
    let stage_root = bed.logs_dir().join("stage");
    let stage_dir = stage_root.join(&bed.topic.name);
    let settings = [
        ("CONSUMER_SINK", "stage"),
        ("STAGE_DIR", stage_root.to_str().unwrap()),
        ("BATCH_MAX_RECORDS", "100"),
        ("BATCH_MAX_SECONDS", "1"),
    ];
    bed.produce_products(1..=250).await;
    let app = bed.spawn_app_with(&settings).await;
    let files = wait_for_ids(&stage_dir, 250).await;
    app.stop().await;
    let files_before = read_stage(&stage_dir);
    assert!(files_before.len() >= files.len());
    check_files(&files_before, 100);
    assert!(
        ids_in(&files_before).values().all(|&n| n == 1),
        "each id once"
    );
    assert!(
        files_before.len() >= 3,
        "250 records in batches of at most 100: {} files",
        files_before.len()
    );

    // More records while it is stopped; the restarted consumer writes only those.
    bed.produce_products(251..=300).await;
    let app = bed.spawn_app_with(&settings).await;
    wait_for_ids(&stage_dir, 300).await;
    app.stop().await;
    let files = read_stage(&stage_dir);
    check_files(&files, 100);
    let ids = ids_in(&files);
    assert_eq!(ids.len(), 300);
    assert!(
        ids.values().all(|&n| n == 1),
        "no id written twice: {ids:?}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&stage_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );

    // gzip: the same lines, compressed.
    bed.produce_products(301..=310).await;
    let mut gzip = settings.to_vec();
    gzip.push(("STAGE_GZIP", "true"));
    let app = bed.spawn_app_with(&gzip).await;
    let files = wait_for_ids(&stage_dir, 310).await;
    app.stop().await;
    assert!(files.iter().any(|f| f.name.ends_with(".jsonl.gz")));
    check_files(&files, 100);
    assert!(ids_in(&files).values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_write_commits_nothing_and_the_batch_is_written_after_a_restart() {
    let bed = Bed::new(2).await;
    let stage_root = bed.logs_dir().join("stage");
    let stage_dir = stage_root.join(&bed.topic.name);
    let moved_away: PathBuf = bed.logs_dir().join("stage-away");
    let settings = [
        ("CONSUMER_SINK", "stage"),
        ("STAGE_DIR", stage_root.to_str().unwrap()),
        ("BATCH_MAX_SECONDS", "1"),
    ];
    bed.produce_products(1..=40).await;
    let app = bed.spawn_app_with(&settings).await;
    wait_for_ids(&stage_dir, 40).await;

    // The stage becomes unwritable: its directory is replaced by a file.
    std::fs::rename(&stage_dir, &moved_away).unwrap();
    std::fs::write(&stage_dir, "not a directory").unwrap();
    bed.produce_products(41..=60).await;
    let error = app
        .exited(LONG)
        .await
        .expect_err("a failed write stops the consumer")
        .to_string();
    assert!(
        error.contains(&bed.topic.name),
        "the error names the path: {error}"
    );

    // Repaired; the batch that failed was not committed, so the restarted consumer writes it.
    std::fs::remove_file(&stage_dir).unwrap();
    std::fs::rename(&moved_away, &stage_dir).unwrap();
    let app = bed.spawn_app_with(&settings).await;
    let files = wait_for_ids(&stage_dir, 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.stop().await;
    let files_after = read_stage(&stage_dir);
    assert!(files_after.len() >= files.len());
    check_files(&files_after, 100);
    let ids = ids_in(&files_after);
    assert_eq!(
        ids.keys().copied().collect::<BTreeSet<_>>(),
        (1..=60).collect()
    );
    assert!(
        ids.values().all(|&n| n == 1),
        "no id written twice: {ids:?}"
    );
}

/// The stage's files (not the hidden ones) and their bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

/// The topic is deleted and created again under the same name between two runs of a stage
/// consumer (as `docker compose down && up` does to a broker without a volume): its offsets start
/// again at 0. The stage's positions did not record the topic id, so the consumer resumed at the
/// old topic's positions and skipped the new topic's records; reading it from its beginning
/// instead would have given its files the old files' names (`<partition>-<first>-<last>.jsonl`)
/// and overwritten them. Now the consumer says so, naming each partition and both ids, stages the
/// new topic from its beginning in files named with its id, and leaves every old file as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_created_again_is_staged_from_its_beginning_and_no_file_is_overwritten() {
    let bed = Bed::new(2).await;
    let stage_root = bed.logs_dir().join("stage");
    let stage_dir = stage_root.join(&bed.topic.name);
    let settings = [
        ("CONSUMER_SINK", "stage"),
        ("STAGE_DIR", stage_root.to_str().unwrap()),
        ("BATCH_MAX_RECORDS", "10"),
        ("BATCH_MAX_SECONDS", "1"),
    ];
    bed.produce_products(1..=100).await;
    let app = bed.spawn_app_with(&settings).await;
    wait_for_ids(&stage_dir, 100).await;
    app.stop().await;
    let old_files = snapshot(&stage_dir);
    let old_ids: BTreeSet<Option<String>> = read_stage(&stage_dir)
        .into_iter()
        .map(|f| f.topic_id)
        .collect();
    assert_eq!(old_ids.len(), 1, "one topic id: {old_ids:?}");

    bed.recreate_topic().await;
    // Fewer records than before: every new offset is below the old positions, and the new
    // topic's first batches cover the offsets of the old one's.
    bed.produce_products(101..=130).await;
    let port = support::free_port();
    let mut consumer = bed.spawn_binary_with("after-recreate", port, &settings);
    wait_for_ids(&stage_dir, 130).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // anything extra would show by now
    consumer.0.kill().unwrap();
    consumer.0.wait().unwrap();

    for (name, bytes) in &old_files {
        let now = std::fs::read(stage_dir.join(name)).unwrap_or_default();
        assert!(now == *bytes, "{name} was overwritten or removed");
    }
    let files = read_stage(&stage_dir);
    check_files(&files, 10);
    let ids = ids_in(&files);
    assert_eq!(
        ids.len(),
        130,
        "the old topic's files stay, the new one's follow"
    );
    assert!(ids.values().all(|&n| n == 1), "each record once: {ids:?}");
    let new_files: Vec<&StageFile> = files
        .iter()
        .filter(|f| !old_files.contains_key(&f.name))
        .collect();
    assert!(
        new_files.iter().any(|f| f.first == 0),
        "the new topic is read from its beginning"
    );
    for file in &new_files {
        assert!(
            file.topic_id.is_some() && !old_ids.contains(&file.topic_id),
            "{} is named with the new topic's id",
            file.name
        );
        assert!(
            file.lines.iter().all(|l| l["id"].as_i64().unwrap() > 100),
            "{} holds the new topic's records",
            file.name
        );
    }
    support::assert_warned_for_each_partition(
        &bed.logs_dir().join("after-recreate.stderr"),
        "written for another topic of this name",
        2,
        &["stage_topic_id=", " topic_id="],
    );
}
