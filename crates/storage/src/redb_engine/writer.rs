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
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use redb::{Database, WriteTransaction};

use crate::error::{Error, Result};
use crate::options::Durability;

/// Runs once a job's batch has been committed (`Ok`) or abandoned (`Err`, the batch's error).
pub(crate) type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// What a job's closure gets: the batch's write transaction and a way to poison the batch.
pub(crate) struct Batch<'t> {
    /// The one write transaction shared by every job of the batch (`None` if it could not start).
    txn: Option<&'t WriteTransaction>,
    /// The first backend failure; once set the batch is aborted and nothing in it is committed.
    failed: Option<Error>,
}

impl<'t> Batch<'t> {
    /// The batch's transaction, or the error that already doomed the batch.
    pub(crate) fn txn(&self) -> Result<&'t WriteTransaction> {
        match (&self.failed, self.txn) {
            (Some(err), _) => Err(err.clone()),
            (None, Some(txn)) => Ok(txn),
            (None, None) => Err(Error::Closed),
        }
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

/// Messages to the writer thread.
enum Msg {
    /// Apply a write.
    Job(Job),
    /// Make every commit so far durable, then answer.
    Flush(Sender<Result<()>>),
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
    /// The thread, joined on close.
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread for `db`.
    pub(crate) fn start(db: Arc<Database>, config: WriterConfig) -> Result<Writer> {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_depth.max(1));
        let thread = std::thread::Builder::new()
            .name("dynamo-storage-writer".into())
            .spawn(move || WriterLoop::new(db, rx, config).run())?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a job, blocking while the queue is full. `Err(Closed)` if the writer is gone.
    pub(crate) fn submit(&self, job: Job) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        match tx.try_send(Msg::Job(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => tx.send(msg).map_err(|_| Error::Closed),
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }

    /// Runs `f` inside a group-commit batch and returns its value once the batch is committed
    /// with at least `durability`.
    ///
    /// `f` must do all validation before its first write; a backend or I/O error it returns
    /// poisons the batch (the batch is aborted), any other error only fails this call.
    pub(crate) fn run<T, F>(&self, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded::<Result<T>>(1);
        let apply: ApplyFn = Box::new(move |batch: &mut Batch<'_>| {
            let outcome = batch.txn().and_then(f);
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
                // The caller may have gone away; then nobody needs the answer.
                let _ = reply_tx.send(answer);
            })
        });
        self.submit(Job { durability, apply })?;
        reply_rx.recv().map_err(|_| Error::Closed)?
    }

    /// Makes every write acknowledged so far durable (one fsync if anything is unflushed).
    pub(crate) fn flush(&self) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        tx.send(Msg::Flush(reply_tx)).map_err(|_| Error::Closed)?;
        reply_rx.recv().map_err(|_| Error::Closed)?
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
    /// Some commit since the last fsync was not durable.
    unflushed: bool,
    /// When the oldest unflushed buffered commit must be fsynced by.
    flush_due: Option<Instant>,
}

impl WriterLoop {
    fn new(db: Arc<Database>, rx: Receiver<Msg>, config: WriterConfig) -> Self {
        WriterLoop {
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
            let _ = reply.send(result.clone());
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
            failed: None,
        };
        let completions: Vec<Completion> = jobs
            .into_iter()
            .map(|job| (job.apply)(&mut batch))
            .collect();
        let result = match batch.failed.take() {
            Some(err) => {
                if let Err(abort_err) = txn.abort() {
                    tracing::error!(error = %abort_err, "aborting a failed group commit failed");
                }
                Err(err)
            }
            None => txn.commit().map_err(Error::from),
        };
        if result.is_ok() {
            self.note_commit(durability);
        }
        for complete in completions {
            complete(result.clone());
        }
        result
    }

    /// Records what a successful commit of `durability` means for pending flushes.
    fn note_commit(&mut self, durability: Durability) {
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
