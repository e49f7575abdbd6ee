//! A background thread that makes batches durable ([`Sink::write`]: write + fsync + checkpoint),
//! so the poll thread decodes the next batch while the previous one is being fsync'd. At most
//! one batch is in flight; its offsets are committed by the poll thread only once the writer
//! reports it durable. The writer also observes the batch's end-to-end latencies and drops its
//! records, so freeing them does not cost the poll thread (the busier of the two).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::fence::Fence;
use crate::sink::{Positions, Sink, SinkBatch, SinkError, SinkRecord};

/// A batch to write.
#[derive(Debug)]
pub struct WriteJob {
    pub records: Vec<SinkRecord>,
    pub next_offsets: Positions,
    pub written_at: DateTime<Utc>,
    /// The write fences of the batch's partitions (those of `next_offsets`), in partition order.
    pub fences: Vec<Arc<Fence>>,
}

/// A batch after its write: the job back (to commit its offsets and reuse its buffer, now
/// empty) and how the write went.
#[derive(Debug)]
pub struct WriteDone {
    pub job: WriteJob,
    pub result: Result<(), SinkError>,
    pub duration: Duration,
    /// Records the batch held per partition (empty when the write failed).
    pub per_partition: Vec<(i32, u64)>,
    /// Partitions another replica took over meanwhile: their records were not written, and
    /// their offsets must not be committed.
    pub fenced: Vec<i32>,
}

/// The sink, shared between the writer thread and the poll thread (which asks it for resume
/// positions on assignment; that waits for a write in progress).
pub type SharedSink = Arc<Mutex<Box<dyn Sink>>>;

pub fn lock(sink: &SharedSink) -> MutexGuard<'_, Box<dyn Sink>> {
    sink.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Writer {
    jobs: Option<mpsc::Sender<WriteJob>>,
    done: mpsc::Receiver<WriteDone>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
}

impl Writer {
    /// `latency` gets each written record's end-to-end latency (`written_at` − change time).
    pub fn spawn(sink: SharedSink, latency: prometheus::Histogram) -> Self {
        let (jobs, job_rx) = mpsc::channel::<WriteJob>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                // After a failed write nothing more is written: a later batch would store
                // positions past the failed one (the pipeline stops too; this is the last guard).
                let mut failed = false;
                for mut job in job_rx {
                    let started = Instant::now();
                    let (result, fenced) = if failed {
                        (Err(SinkError::AfterFailure), Vec::new())
                    } else {
                        write_fenced(&sink, &mut job)
                    };
                    failed |= result.is_err();
                    let duration = started.elapsed();
                    let per_partition = if result.is_ok() {
                        summarize(&job, &latency)
                    } else {
                        Vec::new()
                    };
                    job.records.clear();
                    job.fences.clear();
                    let done = WriteDone {
                        job,
                        result,
                        duration,
                        per_partition,
                        fenced,
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the log writer thread");
        Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: false,
        }
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Hands `job` to the writer thread. Call only when nothing is in flight.
    pub fn submit(&mut self, job: WriteJob) {
        assert!(!self.in_flight, "one batch in flight at a time");
        self.jobs
            .as_ref()
            .expect("writer is running")
            .send(job)
            .expect("the log writer thread is alive while the writer exists");
        self.in_flight = true;
    }

    /// The batch in flight once it is written: waits for it with `block`, else returns `None`
    /// while it is still being written (or when nothing is in flight).
    pub fn completed(&mut self, block: bool) -> Option<WriteDone> {
        if !self.in_flight {
            return None;
        }
        let done = if block {
            self.done.recv().ok()
        } else {
            self.done.try_recv().ok()
        };
        if done.is_some() {
            self.in_flight = false;
        }
        done
    }
}

/// Writes `job` holding its partitions' fences (see [`crate::fence`]): only the partitions still
/// ours are written, and no other replica takes one over until they are durable. Returns the
/// partitions that were taken over (left out).
fn write_fenced(sink: &SharedSink, job: &mut WriteJob) -> (Result<(), SinkError>, Vec<i32>) {
    // Fences are locked in partition order by every writer, so two never wait for each other.
    let mut held = Vec::with_capacity(job.fences.len());
    let mut fenced = Vec::new();
    for fence in &job.fences {
        match fence.hold() {
            Ok(Some(guard)) => held.push(guard),
            Ok(None) => fenced.push(fence.partition()),
            Err(e) => return (Err(e.into()), fenced),
        }
    }
    if !fenced.is_empty() {
        let before = job.records.len();
        job.records.retain(|r| !fenced.contains(&r.partition));
        job.next_offsets.retain(|p, _| !fenced.contains(p));
        tracing::warn!(
            partitions = ?fenced,
            dropped = before - job.records.len(),
            "another replica took these partitions over: their records are not written (the new owner writes them)"
        );
    }
    let result = lock(sink).write(&SinkBatch {
        records: &job.records,
        next_offsets: &job.next_offsets,
        written_at: job.written_at,
    });
    drop(held); // only now may a new owner read where the partitions end
    (result, fenced)
}

/// Observes the latencies of a written batch's records; returns its record count per partition.
fn summarize(job: &WriteJob, latency: &prometheus::Histogram) -> Vec<(i32, u64)> {
    let written_at = job.written_at.timestamp_micros();
    // Observed locally (no atomic operations per record), merged into the histogram once.
    let latency = latency.local();
    let mut per_partition: Vec<(i32, u64)> = Vec::new();
    for record in &job.records {
        match per_partition
            .iter_mut()
            .find(|(p, _)| *p == record.partition)
        {
            Some((_, count)) => *count += 1,
            None => per_partition.push((record.partition, 1)),
        }
        if let Some(changed_at) = record.changed_at_micros {
            latency.observe((written_at - changed_at).max(0) as f64 / 1e6);
        }
    }
    latency.flush();
    per_partition
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take()); // ends the thread's loop once it finished its job
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
