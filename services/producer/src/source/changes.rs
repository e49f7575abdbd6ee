//! A read of changes in progress. A [`ChangeReader`] hands over the batches a task reads, in
//! order, while the capture loop produces the earlier ones: the task reads ahead by up to
//! [`READ_AHEAD`] batches. Sources that read one batch per query use [`read_batch_by_batch`];
//! the MySQL source streams one query's rows and cuts them into batches as they arrive.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Batch, SourceError};
use crate::position::Position;

/// Batches a reader may hold ready for the capture loop.
pub const READ_AHEAD: usize = 2;

/// How long a reader waits for the capture loop to take a batch before it stops; the loop then
/// reads again from the end of the last batch it took. The loop stops taking batches while too
/// many wait for Kafka's acks; a query kept open that long would hold its connection and
/// snapshot, and MySQL cuts a result nobody reads after `net_write_timeout` (60 s by default).
pub const STALL_LIMIT: Duration = Duration::from_secs(2);

type Item = Result<Batch, SourceError>;

/// The batches of one read, in `(last_updated, id)` order. The read ends after a batch with
/// [`Batch::caught_up`] set, after an error (the last item), or early, when the loop did not take
/// a batch within [`STALL_LIMIT`] (the channel then closes without a caught-up batch). Dropping
/// the reader stops its task.
pub struct ChangeReader {
    batches: mpsc::Receiver<Item>,
    /// Taken once the read has ended.
    task: Option<JoinHandle<()>>,
}

impl ChangeReader {
    /// Runs `read` on its own task; it hands each batch to the [`BatchSender`] and returns when
    /// it is done. An error it returns becomes the reader's last item.
    pub fn spawn<F, Fut>(read: F) -> Self
    where
        F: FnOnce(BatchSender) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), SourceError>> + Send + 'static,
    {
        let (sender, batches) = mpsc::channel(READ_AHEAD);
        let errors = sender.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = read(BatchSender(sender)).await {
                // Nobody to tell if the loop is gone.
                let _ = errors.send(Err(e)).await;
            }
        });
        Self {
            batches,
            task: Some(task),
        }
    }

    /// The next batch, or `None` once the read has ended. A panic of the reading task is
    /// raised here.
    pub async fn next(&mut self) -> Option<Item> {
        let item = self.batches.recv().await;
        if item.is_none() {
            if let Some(task) = self.task.take() {
                // The channel closed: the task has ended or is about to.
                if let Err(e) = task.await {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
        }
        item
    }
}

impl Drop for ChangeReader {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The reading task's end of a [`ChangeReader`].
pub struct BatchSender(mpsc::Sender<Item>);

impl BatchSender {
    /// Hands a batch over. Returns false when the read should stop: the reader was dropped, or
    /// the loop did not take the batch within [`STALL_LIMIT`] (the batch is then dropped; the
    /// loop reads its rows again).
    pub async fn send(&self, batch: Batch) -> bool {
        match tokio::time::timeout(STALL_LIMIT, self.0.send(Ok(batch))).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::debug!(
                    stall_limit = ?STALL_LIMIT,
                    "the capture loop takes no batch (Kafka is slow to acknowledge); the read stops and starts again later"
                );
                false
            }
        }
    }
}

/// A read made of one query per batch: `read(after)` returns the batch after `after` (each with
/// its own horizon); the reader goes on from the end of each batch until one is caught up.
pub fn read_batch_by_batch<R>(after: Option<Position>, read: R) -> ChangeReader
where
    R: Fn(Option<Position>) -> BoxFuture<'static, Item> + Send + 'static,
{
    ChangeReader::spawn(move |out| async move {
        let mut after = after;
        loop {
            let batch = read(after.clone()).await?;
            let caught_up = batch.caught_up;
            if let Some(end) = batch.end() {
                after = Some(end);
            }
            if !out.send(batch).await || caught_up {
                return Ok(());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use chrono::NaiveDateTime;
    use futures::FutureExt;

    use super::*;
    use crate::source::{HorizonBound, SourceRow};

    fn at(second: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(10, 0, second)
            .unwrap()
    }

    /// Rows `ids`, all stamped at second 0, as one batch.
    fn batch(ids: std::ops::Range<i64>, caught_up: bool) -> Batch {
        Batch {
            rows: ids
                .map(|id| SourceRow {
                    id: id.into(),
                    name: Some(format!("product {id}")),
                    category: Some("Cat_1".into()),
                    price: Some(1.0),
                    last_updated: at(0),
                })
                .collect(),
            horizon: at(5),
            bound: HorizonBound::Window,
            caught_up,
            read_time: Duration::ZERO,
        }
    }

    fn ids(batch: &Batch) -> Vec<i64> {
        batch
            .rows
            .iter()
            .map(|row| match row.id {
                crate::position::RowKey::Int(id) => id,
                ref other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn batch_by_batch_reads_go_on_from_each_end_until_a_batch_is_caught_up() {
        // Three queries: ids 1-3, 4-6, then a short one (7) that is caught up.
        let asked_after = Arc::new(Mutex::new(Vec::new()));
        let asked = asked_after.clone();
        let mut reader = read_batch_by_batch(None, move |after: Option<Position>| {
            let start = after.as_ref().map_or(1, |p| match p.id {
                Some(crate::position::RowKey::Int(id)) => id + 1,
                _ => panic!("{p:?}"),
            });
            asked.lock().unwrap().push(after);
            let end = (start + 3).min(8);
            async move { Ok(batch(start..end, end - start < 3)) }.boxed()
        });
        let mut got = Vec::new();
        while let Some(item) = reader.next().await {
            let batch = item.unwrap();
            got.push((ids(&batch), batch.caught_up));
        }
        assert_eq!(
            got,
            [
                (vec![1, 2, 3], false),
                (vec![4, 5, 6], false),
                (vec![7], true)
            ]
        );
        assert_eq!(
            *asked_after.lock().unwrap(),
            [
                None,
                Some(Position::new(at(0), 3)),
                Some(Position::new(at(0), 6))
            ]
        );
    }

    #[tokio::test]
    async fn an_error_is_the_last_item_of_a_read() {
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let mut reader = read_batch_by_batch(None, move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Ok(batch(1..3, false))
                } else {
                    Err(SourceError::Table("gone".into()))
                }
            }
            .boxed()
        });
        assert_eq!(ids(&reader.next().await.unwrap().unwrap()), [1, 2]);
        let error = reader.next().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "gone");
        assert!(reader.next().await.is_none(), "nothing after the error");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_whose_batches_are_not_taken_stops_after_the_stall_limit() {
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let mut reader = read_batch_by_batch(None, move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst) as i64;
            async move { Ok(batch(n * 10..n * 10 + 10, false)) }.boxed()
        });
        // Nothing is taken: the reader fills its channel, waits and gives up.
        tokio::time::sleep(STALL_LIMIT * 2).await;
        let stalled_reads = reads.load(Ordering::SeqCst);
        assert_eq!(
            stalled_reads,
            READ_AHEAD + 1,
            "the channel's batches and the one that waited"
        );
        let mut taken = Vec::new();
        while let Some(item) = reader.next().await {
            taken.extend(ids(&item.unwrap()));
        }
        assert_eq!(
            taken,
            (0..READ_AHEAD as i64 * 10).collect::<Vec<_>>(),
            "the batches in the channel, in order, then the end: the one that waited is dropped"
        );
        assert_eq!(reads.load(Ordering::SeqCst), stalled_reads);
    }

    #[tokio::test]
    async fn dropping_the_reader_stops_its_task() {
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let flag = Flag(dropped.clone());
        let (started, wait_started) = tokio::sync::oneshot::channel();
        let reader = ChangeReader::spawn(move |_out| async move {
            let _flag = flag;
            let _ = started.send(());
            std::future::pending::<()>().await;
            Ok(())
        });
        wait_started.await.unwrap();
        drop(reader);
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the reading task was not stopped");
    }
}
