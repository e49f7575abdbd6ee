//! A consumer group against the real broker: five consumers share ten partitions, a sixth joins,
//! one leaves; every record lands in the logs exactly once, transformed.

mod support;

use std::collections::BTreeSet;

use support::{assignments, covers_exactly, Bed, LONG};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_consumers_share_ten_partitions_then_scale_out_and_in() {
    common::telemetry::init(&common::config::Env::from_pairs([(
        "RUST_LOG",
        "info,librdkafka=warn",
    )]))
    .unwrap();
    let bed = Bed::new(10).await;
    bed.produce_products(1..=1000).await;

    // Five consumers: each ends up with exactly two partitions, together all ten.
    let mut apps = Vec::new();
    for _ in 0..5 {
        apps.push(bed.spawn_app().await);
    }
    let slots: Vec<_> = apps.iter().map(|a| a.slot.clone()).collect();
    assert_eq!(
        slots,
        [
            "consumer_1",
            "consumer_2",
            "consumer_3",
            "consumer_4",
            "consumer_5"
        ]
    );
    let ports: Vec<u16> = apps.iter().map(|a| a.port).collect();
    let settled = testkit::wait_until(LONG, "five consumers with two partitions each", || async {
        let all = assignments(&ports).await?;
        (all.iter().all(|a| a.partitions.len() == 2) && covers_exactly(&all, 10)).then_some(all)
    })
    .await;
    for (assignment, slot) in settled.iter().zip(&slots) {
        assert_eq!(&assignment.slot, slot);
        assert_eq!(assignment.group, bed.group);
    }
    // The member ids are filled in once the group description names them.
    let with_members = testkit::wait_until(LONG, "member ids in /assignments", || async {
        let all = assignments(&ports).await?;
        all.iter().all(|a| a.member_id.is_some()).then_some(all)
    })
    .await;
    let member_ids: BTreeSet<_> = with_members.iter().map(|a| a.member_id.clone()).collect();
    assert_eq!(member_ids.len(), 5, "distinct member ids: {with_members:?}");
    bed.wait_for_ids(&(1..=1000).collect(), LONG).await;

    // A sixth joins and takes partitions; nobody owns a partition twice.
    apps.push(bed.spawn_app().await);
    assert_eq!(apps[5].slot, "consumer_6");
    let ports: Vec<u16> = apps.iter().map(|a| a.port).collect();
    let after_join = testkit::wait_until(LONG, "the sixth consumer owning partitions", || async {
        let all = assignments(&ports).await?;
        (!all[5].partitions.is_empty() && covers_exactly(&all, 10)).then_some(all)
    })
    .await;
    assert!(
        after_join.iter().all(|a| a.partitions.len() <= 2),
        "{after_join:?}"
    );
    bed.produce_products(1001..=2000).await;
    bed.wait_for_ids(&(1..=2000).collect(), LONG).await;

    // One leaves (graceful stop: it writes and commits, then leaves the group): the other five
    // take its partitions over.
    let leaving = apps.remove(1);
    let left_partitions = support::assignment(leaving.port).await.unwrap().partitions;
    leaving.stop().await;
    let ports: Vec<u16> = apps.iter().map(|a| a.port).collect();
    let after_leave = testkit::wait_until(
        LONG,
        "the remaining five owning all ten partitions",
        || async {
            let all = assignments(&ports).await?;
            covers_exactly(&all, 10).then_some(all)
        },
    )
    .await;
    println!("consumer_2 owned {left_partitions:?}; afterwards: {after_leave:?}");
    bed.produce_products(2001..=3000).await;
    bed.wait_for_ids(&(1..=3000).collect(), LONG).await;

    for app in apps {
        app.stop().await;
    }

    // Exactly once, across all logs, with the transform applied.
    let lines = bed.log_lines();
    let counts = support::count_by_id(&lines);
    let duplicates: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated ids: {duplicates:?}");
    assert_eq!(counts.len(), 3000, "every record exactly once");
    assert_eq!(lines.len(), 3000);
    let positions: BTreeSet<_> = lines.iter().map(|l| (l.partition, l.offset)).collect();
    assert_eq!(positions.len(), 3000, "no (partition, offset) twice");
    for line in &lines {
        let original = Bed::product(line.id);
        assert_eq!(line.topic, bed.topic.name);
        assert_eq!(
            line.category,
            original.category.as_ref().map(|c| c.to_uppercase())
        );
        assert_eq!(line.price, original.price);
        let expected_discount = (original.category.as_deref() == Some("Cat_5"))
            .then(|| consumer::transform::round_to_cents(original.price * 0.8));
        assert_eq!(line.discount_price, expected_discount, "id {}", line.id);
        assert_eq!(
            line.partition,
            common::kafka::partition_for_key(line.id.to_string().as_bytes(), 10),
            "key {} landed on its murmur2 partition",
            line.id
        );
    }
    let slots_used: BTreeSet<_> = lines.iter().map(|l| l.slot.clone()).collect();
    assert!(
        slots_used.len() >= 5,
        "records spread over the replicas' logs: {slots_used:?}"
    );
}
