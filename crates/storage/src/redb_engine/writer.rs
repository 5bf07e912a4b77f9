//! Group commit: one writer thread applies queued writes in batches, one transaction and at most
//! one fsync per batch.
//!
//! Callers hand the writer a [`Job`]: a closure that does its reads and writes inside the batch's
//! write transaction and returns a [`Completion`] to run once the batch's fate is known. The writer
//! takes the first queued job, then whatever else is already queued (up to `max_batch`), applies
//! them in queue order inside ONE transaction, commits once, and only then runs every completion,
//! so nobody is answered before their write is as durable as they asked.
//!
//! No artificial delay is added to gather a batch: while one commit's fsync runs, the next batch
//! queues up by itself, so batches grow exactly as fast as the disk is slow.
//!
//! Durability of a batch is the strongest any of its jobs asked for. Commits without fsync
//! ([`Durability::Buffered`] and [`Durability::None`]) leave the writer "unflushed"; buffered ones
//! also arm a deadline, and when it passes with no durable commit in between the writer commits an
//! empty transaction with fsync, which makes every earlier commit durable. The same happens on
//! [`Writer::flush`] and when the writer shuts down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};
use redb::{Database, Table, WriteTransaction};

use super::format::OBJECTS;
use crate::error::{Error, Result};
use crate::options::Durability;

/// Runs once a job's batch has been committed (`Ok`) or abandoned (`Err`, the batch's error).
pub(crate) type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// What a job's closure gets: the batch's write transaction, its objects table (opened once
/// per batch, not once per write), and a way to poison the batch.
pub(crate) struct Batch<'t> {
    /// The one write transaction shared by every job of the batch (`None` if it could not start).
    txn: Option<&'t WriteTransaction>,
    /// The objects table, opened on first use and kept open for the rest of the batch.
    objects: Option<ObjectsTable<'t>>,
    /// The first backend failure; once set the batch is aborted and nothing in it is committed.
    failed: Option<Error>,
}

/// The objects table as a batch holds it open.
pub(crate) type ObjectsTable<'t> = Table<'t, &'static [u8], &'static [u8]>;

impl<'t> Batch<'t> {
    /// `Err` with the batch's failure if an earlier job doomed it.
    fn check(&self) -> Result<()> {
        match (&self.failed, self.txn) {
            (Some(err), _) => Err(err.clone()),
            (None, Some(_)) => Ok(()),
            (None, None) => Err(Error::Closed),
        }
    }

    /// The batch's transaction, for tables other than the objects table (which must be reached
    /// through [`Batch::objects`]: redb allows one open handle per table).
    pub(crate) fn txn(&self) -> Result<&'t WriteTransaction> {
        self.check()?;
        self.txn.ok_or(Error::Closed)
    }

    /// The objects table of the batch's transaction.
    pub(crate) fn objects(&mut self) -> Result<&mut ObjectsTable<'t>> {
        self.check()?;
        if self.objects.is_none() {
            let txn = self.txn.ok_or(Error::Closed)?;
            self.objects = Some(txn.open_table(OBJECTS)?);
        }
        self.objects.as_mut().ok_or(Error::Closed)
    }

    /// Marks the batch failed: the transaction may hold a partial write, so it will be aborted.
    /// The first failure wins.
    pub(crate) fn fail(&mut self, err: Error) {
        if self.failed.is_none() {
            self.failed = Some(err);
        }
    }
}

/// The closure of a job; see [`Job`].
type ApplyFn = Box<dyn FnOnce(&mut Batch<'_>) -> Completion + Send>;

/// One queued write.
pub(crate) struct Job {
    /// How durable the caller needs this write to be before its completion runs with `Ok`.
    pub(crate) durability: Durability,
    /// Applies the write. It must validate before writing; any error it meets after writing
    /// must be reported with [`Batch::fail`] so the whole batch is abandoned. If the batch is
    /// already failed ([`Batch::txn`] is `Err`) it writes nothing and just returns a completion.
    pub(crate) apply: ApplyFn,
}

/// Counters of the writer's work (see [`WriterStats`]).
#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    failed_batches: AtomicU64,
}

/// What the group-commit writer has done since the engine opened: `writes / commits` is the
/// mean batch size, and `fsyncs` against `writes` shows how well group commit amortises fsync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Write requests (updates, removals, hint and metadata writes) answered by a successful
    /// commit; an update refused by its own function counts too.
    pub writes: u64,
    /// Transactions committed (with or without fsync), empty flush commits included.
    pub commits: u64,
    /// Commits that were fsynced.
    pub fsyncs: u64,
    /// Batches abandoned because of a backend failure.
    pub failed_batches: u64,
}

/// Messages to the writer thread.
enum Msg {
    /// Apply a write.
    Job(Job),
    /// Make every commit so far durable, then answer.
    Flush(ReplySender<Result<()>>),
}

/// Settings of the writer thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterConfig {
    /// Most jobs in one transaction.
    pub(crate) max_batch: usize,
    /// Capacity of the queue in front of the writer.
    pub(crate) queue_depth: usize,
    /// Longest a buffered commit waits for its fsync.
    pub(crate) flush_interval: Duration,
}

/// Handle on the writer thread. Dropping it flushes and joins the thread.
pub(crate) struct Writer {
    /// Queue to the thread; `None` once closed.
    tx: Option<Sender<Msg>>,
    /// Counters the thread updates.
    stats: Arc<Counters>,
    /// The thread, joined on close.
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread for `db`.
    pub(crate) fn start(db: Arc<Database>, config: WriterConfig) -> Result<Writer> {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_depth.max(1));
        let stats = Arc::new(Counters::default());
        let counters = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("dynamo-storage-writer".into())
            .spawn(move || WriterLoop::new(db, rx, config, counters).run())?;
        Ok(Writer {
            tx: Some(tx),
            stats,
            thread: Some(thread),
        })
    }

    /// What the writer has done so far.
    pub(crate) fn stats(&self) -> WriterStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WriterStats {
            writes: load(&self.stats.writes),
            commits: load(&self.stats.commits),
            fsyncs: load(&self.stats.fsyncs),
            failed_batches: load(&self.stats.failed_batches),
        }
    }

    /// Queues a job, blocking while the queue is full. `Err(Closed)` if the writer is gone.
    pub(crate) fn submit(&self, job: Job) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        tx.send(Msg::Job(job)).map_err(|_| Error::Closed)
    }

    /// Runs `f` inside a group-commit batch and returns its value once the batch is committed
    /// with at least `durability`.
    ///
    /// `f` must do all validation before its first write; a backend or I/O error it returns
    /// poisons the batch (the batch is aborted), any other error only fails this call.
    pub(crate) fn run<T, F>(&self, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::<Result<T>>();
        self.run_then(durability, f, move |answer| reply_tx.send(answer))?;
        reply_rx.wait().ok_or(Error::Closed)?
    }

    /// Like [`Writer::run`], but instead of waiting, hands the answer to `done` on the writer
    /// thread once the batch is committed. Returns `Err` (and never calls `done`) only when the
    /// job could not be queued; blocks while the queue is full (back pressure).
    pub(crate) fn run_then<T, F, D>(&self, durability: Durability, f: F, done: D) -> Result<()>
    where
        T: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> Result<T> + Send + 'static,
        D: FnOnce(Result<T>) + Send + 'static,
    {
        let apply: ApplyFn = Box::new(move |batch: &mut Batch<'_>| {
            let outcome = batch.check().and_then(|()| f(batch));
            if let Err(err) = &outcome
                && err.is_retryable()
            {
                batch.fail(err.clone());
            }
            Box::new(move |committed: Result<()>| {
                let answer = match (committed, outcome) {
                    (Err(batch_err), _) => Err(batch_err),
                    (Ok(()), outcome) => outcome,
                };
                done(answer);
            })
        });
        self.submit(Job { durability, apply })
    }

    /// Makes every write acknowledged so far durable (one fsync if anything is unflushed).
    pub(crate) fn flush(&self) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        let (reply_tx, reply_rx) = oneshot();
        tx.send(Msg::Flush(reply_tx)).map_err(|_| Error::Closed)?;
        reply_rx.wait().ok_or(Error::Closed)?
    }

    /// Flushes, stops the thread and waits for it. Idempotent.
    pub(crate) fn close(&mut self) -> Result<()> {
        let flushed = match self.tx.as_ref() {
            Some(_) => self.flush(),
            None => Ok(()),
        };
        // Dropping the sender ends the thread's loop once the queue is drained.
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            return Err(Error::Closed);
        }
        flushed
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            tracing::error!(error = %err, "storage writer did not flush cleanly on close");
        }
    }
}

/// State of the writer thread.
struct WriterLoop {
    db: Arc<Database>,
    rx: Receiver<Msg>,
    config: WriterConfig,
    stats: Arc<Counters>,
    /// Some commit since the last fsync was not durable.
    unflushed: bool,
    /// When the oldest unflushed buffered commit must be fsynced by.
    flush_due: Option<Instant>,
}

impl WriterLoop {
    fn new(
        db: Arc<Database>,
        rx: Receiver<Msg>,
        config: WriterConfig,
        stats: Arc<Counters>,
    ) -> Self {
        WriterLoop {
            stats,
            db,
            rx,
            config,
            unflushed: false,
            flush_due: None,
        }
    }

    fn run(mut self) {
        loop {
            let first = match self.flush_due {
                None => match self.rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(wait) {
                        Ok(msg) => msg,
                        Err(RecvTimeoutError::Timeout) => {
                            if let Err(err) = self.sync() {
                                tracing::error!(error = %err, "background flush of buffered writes failed");
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            self.handle_batch(first);
        }
        if let Err(err) = self.sync() {
            tracing::error!(error = %err, "final flush of the storage writer failed");
        }
    }

    /// Gathers what is queued behind `first` and processes it as one batch.
    fn handle_batch(&mut self, first: Msg) {
        let mut jobs = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Job(job) => jobs.push(job),
                Msg::Flush(reply) => flushes.push(reply),
            }
            if jobs.len() < self.config.max_batch.max(1) {
                next = self.rx.try_recv().ok();
            }
        }
        let mut durability = jobs
            .iter()
            .map(|j| j.durability)
            .max()
            .unwrap_or(Durability::None);
        if !flushes.is_empty() {
            durability = Durability::Sync;
        }
        let result = if jobs.is_empty() {
            self.sync()
        } else {
            self.commit_jobs(jobs, durability)
        };
        for reply in flushes {
            reply.send(result.clone());
        }
    }

    /// Applies `jobs` in one transaction, commits it with `durability` and runs the completions.
    fn commit_jobs(&mut self, jobs: Vec<Job>, durability: Durability) -> Result<()> {
        let mut txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(err) => return fail_all(jobs, Error::from(err)),
        };
        if durability != Durability::Sync
            && let Err(err) = txn.set_durability(redb::Durability::None)
        {
            return fail_all(jobs, Error::from(err));
        }
        let mut batch = Batch {
            txn: Some(&txn),
            objects: None,
            failed: None,
        };
        let completions: Vec<Completion> = jobs
            .into_iter()
            .map(|job| (job.apply)(&mut batch))
            .collect();
        let failed = batch.failed.take();
        // Closes the objects table before the transaction ends.
        drop(batch);
        let result = match failed {
            Some(err) => {
                if let Err(abort_err) = txn.abort() {
                    tracing::error!(error = %abort_err, "aborting a failed group commit failed");
                }
                Err(err)
            }
            None => txn.commit().map_err(Error::from),
        };
        match result {
            Ok(()) => {
                let stats = &self.stats;
                stats
                    .writes
                    .fetch_add(completions.len() as u64, Ordering::Relaxed);
                self.note_commit(durability);
            }
            Err(_) => {
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
        for complete in completions {
            complete(result.clone());
        }
        result
    }

    /// Records what a successful commit of `durability` means for pending flushes.
    fn note_commit(&mut self, durability: Durability) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        if durability == Durability::Sync {
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        match durability {
            Durability::Sync => {
                self.unflushed = false;
                self.flush_due = None;
            }
            Durability::Buffered => {
                self.unflushed = true;
                if self.flush_due.is_none() {
                    self.flush_due = Some(Instant::now() + self.config.flush_interval);
                }
            }
            Durability::None => self.unflushed = true,
        }
    }

    /// Makes every earlier commit durable with an empty fsynced commit, if any is unflushed.
    fn sync(&mut self) -> Result<()> {
        if !self.unflushed {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        txn.commit()?;
        self.note_commit(Durability::Sync);
        Ok(())
    }
}

/// Answers every job of a batch whose transaction could not even start with `err`.
fn fail_all(jobs: Vec<Job>, err: Error) -> Result<()> {
    tracing::error!(error = %err, "group commit could not start a write transaction");
    let mut batch = Batch {
        txn: None,
        objects: None,
        failed: Some(err.clone()),
    };
    let completions: Vec<Completion> = jobs
        .into_iter()
        .map(|job| (job.apply)(&mut batch))
        .collect();
    for complete in completions {
        complete(Err(err.clone()));
    }
    Err(err)
}

/// State of a [`oneshot`] reply slot.
enum Slot<T> {
    /// Nothing sent yet.
    Empty,
    /// The answer.
    Full(T),
    /// The sender was dropped without answering (the writer is gone).
    Abandoned,
}

/// Shared part of a [`oneshot`].
struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// Sends the one answer of a [`oneshot`]; dropping it unsent wakes the receiver with nothing.
pub(crate) struct ReplySender<T>(Option<Arc<Shared<T>>>);

/// Waits for the one answer of a [`oneshot`].
pub(crate) struct ReplyReceiver<T>(Arc<Shared<T>>);

/// A single-use reply slot. The waiting caller parks at once instead of spinning as a channel
/// receiver does: with dozens of callers blocked on group commits and two cores, spinning
/// waiters would steal the CPU the writer thread needs.
fn oneshot<T>() -> (ReplySender<T>, ReplyReceiver<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot::Empty),
        ready: Condvar::new(),
    });
    (
        ReplySender(Some(Arc::clone(&shared))),
        ReplyReceiver(shared),
    )
}

impl<T> ReplySender<T> {
    /// Delivers the answer (dropped if the receiver is gone).
    pub(crate) fn send(mut self, value: T) {
        self.fill(Slot::Full(value));
    }

    fn fill(&mut self, state: Slot<T>) {
        if let Some(shared) = self.0.take() {
            *shared.slot.lock() = state;
            shared.ready.notify_one();
        }
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        self.fill(Slot::Abandoned);
    }
}

impl<T> ReplyReceiver<T> {
    /// Blocks until the answer arrives; `None` if the sender was dropped without one.
    pub(crate) fn wait(self) -> Option<T> {
        let mut slot = self.0.slot.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Empty) {
                Slot::Full(value) => return Some(value),
                Slot::Abandoned => return None,
                Slot::Empty => self.0.ready.wait(&mut slot),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_oneshot_delivers_across_threads() {
        let (tx, rx) = oneshot();
        let sender = std::thread::spawn(move || tx.send(42));
        assert_eq!(rx.wait(), Some(42));
        sender.join().unwrap();
    }

    #[test]
    fn a_dropped_sender_wakes_the_receiver_with_nothing() {
        let (tx, rx) = oneshot::<u8>();
        let dropper = std::thread::spawn(move || drop(tx));
        assert_eq!(rx.wait(), None);
        dropper.join().unwrap();
    }
}
