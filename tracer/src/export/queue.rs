//! The bounded queue between the export thread and a network exporter's own task, and the
//! task that drains it in batches. The export thread only ever pushes (never waits on I/O); a
//! slow or absent collector fills the queue up to its cap and further spans are dropped by the
//! configured [`Overflow`] policy, counted by reason.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::{
    span::SpanRecord,
    stats::{Counter, Gauge},
};

/// What to do with a span pushed into a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Overflow {
    /// Refuse the new span (what OpenTelemetry's batch processor does).
    #[default]
    DropNewest,
    /// Evict the oldest queued span to make room (fresher data during an outage).
    DropOldest,
}

/// Why a span accepted by an exporter was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full (collector slow or down).
    QueueFull,
    /// The collector refused the batch or could not be reached, retries included.
    ExportFailed,
    /// Still queued when the shutdown flush ran out of time.
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [Self::QueueFull, Self::ExportFailed, Self::Shutdown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::ExportFailed => "export_failed",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Counters of one exporter (shown in the exit summary and on /metrics).
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Export requests that failed after their retries.
    pub failures: Counter,
    /// Spans left out by the sampler (not a loss: a decision).
    pub sampled_out: Counter,
    /// Lost spans, by [`DropReason`] (index: position in `DropReason::ALL`).
    pub dropped: [Counter; DropReason::ALL.len()],
    pub queue_depth: Gauge,
    /// Spans in the batch being sent (lost if the shutdown flush times out).
    pub in_flight: Gauge,
}

impl ExportCounters {
    pub fn dropped(&self, r: DropReason) -> &Counter {
        let i = DropReason::ALL.iter().position(|x| *x == r).unwrap_or(0);
        &self.dropped[i]
    }

    /// One line for the exit summary.
    pub fn summary(&self, name: &str) -> String {
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .map(|r| format!("{}={}", r.as_str(), self.dropped(*r).get()))
            .collect();
        format!(
            "{name}: {} spans exported, {} failed exports, {} sampled out, dropped: {}",
            self.exported.get(),
            self.failures.get(),
            self.sampled_out.get(),
            drops.join(" ")
        )
    }
}

/// A bounded multi-producer queue with an async consumer.
pub struct Queue<T> {
    name: &'static str,
    items: Mutex<VecDeque<T>>,
    cap: usize,
    overflow: Overflow,
    /// Wake the consumer early when a full batch is waiting or on close.
    wake_at: usize,
    notify: Notify,
    closed: AtomicBool,
    warned: AtomicBool,
    counters: Arc<ExportCounters>,
}

impl<T> Queue<T> {
    pub fn new(
        name: &'static str,
        cap: usize,
        overflow: Overflow,
        wake_at: usize,
        counters: Arc<ExportCounters>,
    ) -> Self {
        let cap = cap.max(1);
        Self {
            name,
            items: Mutex::new(VecDeque::with_capacity(cap.min(4096))),
            cap,
            overflow,
            wake_at: wake_at.clamp(1, cap),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            counters,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        // A panic while holding the lock leaves a valid VecDeque: keep going.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dropped(&self, n: u64) {
        self.counters.dropped(DropReason::QueueFull).add(n);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "{}: export queue full ({} spans): dropping spans (collector slow or down); counted in the summary",
                self.name,
                self.cap
            );
        }
    }

    /// Enqueue without waiting; a full queue drops by the overflow policy.
    pub fn push_all(&self, new: impl IntoIterator<Item = T>) {
        let mut dropped = 0;
        let len = {
            let mut q = self.lock();
            for item in new {
                if q.len() < self.cap {
                    q.push_back(item);
                } else {
                    match self.overflow {
                        Overflow::DropNewest => {}
                        Overflow::DropOldest => {
                            q.pop_front();
                            q.push_back(item);
                        }
                    }
                    dropped += 1;
                }
            }
            q.len()
        };
        self.counters.queue_depth.set(len as u64);
        if dropped > 0 {
            self.dropped(dropped);
        }
        if len >= self.wake_at {
            self.notify.notify_one();
        }
    }

    /// Take up to `max` items from the front.
    pub fn drain(&self, max: usize) -> Vec<T> {
        let mut q = self.lock();
        let n = q.len().min(max);
        let out: Vec<T> = q.drain(..n).collect();
        self.counters.queue_depth.set(q.len() as u64);
        out
    }

    /// No more pushes will come: the consumer flushes what is left and stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Wait until a batch is due: `wake_at` items queued, `linger` elapsed, or closed.
    pub async fn ready(&self, linger: Duration) {
        if self.is_closed() || self.len() >= self.wake_at {
            return;
        }
        let _ = tokio::time::timeout(linger, self.notify.notified()).await;
    }
}

/// Where a network exporter's batches go. `send` does its own retries (bounded in time) and,
/// once it gives up, returns how many spans of the batch were lost and why.
pub trait BatchSink: Send + 'static {
    fn send(
        &mut self,
        batch: Vec<Arc<SpanRecord>>,
    ) -> impl Future<Output = Result<(), (u64, String)>> + Send;
}

/// Batching and pacing of a network exporter's task.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub max_batch: usize,
    /// Longest a span waits for a batch to fill.
    pub linger: Duration,
    /// Pause after a failed export, doubled per consecutive failure up to `max_backoff`
    /// (spans meanwhile queue up to the cap, then drop).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            linger: Duration::from_secs(1),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The consumer task: batches from the queue to the sink until the queue is closed and empty.
pub async fn run_sink<S: BatchSink>(
    name: &'static str,
    queue: Arc<Queue<Arc<SpanRecord>>>,
    mut sink: S,
    cfg: BatchConfig,
    counters: Arc<ExportCounters>,
) {
    let mut backoff = cfg.min_backoff;
    let mut failing = false;
    loop {
        queue.ready(cfg.linger).await;
        let batch = queue.drain(cfg.max_batch.max(1));
        if batch.is_empty() {
            if queue.is_closed() {
                return;
            }
            continue;
        }
        let n = batch.len() as u64;
        counters.in_flight.set(n);
        let sent = sink.send(batch).await;
        counters.in_flight.set(0);
        match sent {
            Ok(()) => {
                counters.exported.add(n);
                if failing {
                    tracing::info!("{name}: export works again");
                }
                failing = false;
                backoff = cfg.min_backoff;
            }
            Err((lost, e)) => {
                let lost = lost.min(n);
                counters.exported.add(n - lost);
                counters.failures.inc();
                counters.dropped(DropReason::ExportFailed).add(lost);
                if !failing {
                    tracing::warn!(
                        "{name}: export failed, dropping {lost} spans and retrying later: {e}"
                    );
                }
                failing = true;
                // While shutting down, don't wait: the flush has its own deadline.
                if !queue.is_closed() {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.max_backoff);
                }
            }
        }
    }
}

/// How big a network exporter's queue is and what it does when full.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub capacity: usize,
    pub overflow: Overflow,
    /// Longest `shutdown` waits for the queue to drain.
    pub flush_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 4096,
            overflow: Overflow::DropNewest,
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// An [`Exporter`](super::Exporter) in front of a [`BatchSink`]: samples, enqueues, and leaves
/// the I/O to a task on the tokio runtime.
pub struct QueuedExporter {
    name: &'static str,
    queue: Arc<Queue<Arc<SpanRecord>>>,
    sampler: super::sampler::Sampler,
    counters: Arc<ExportCounters>,
    task: Option<tokio::task::JoinHandle<()>>,
    rt: tokio::runtime::Handle,
    flush_timeout: Duration,
}

impl QueuedExporter {
    pub fn spawn<S: BatchSink>(
        name: &'static str,
        sink: S,
        sampler: super::sampler::Sampler,
        q: QueueConfig,
        batch: BatchConfig,
        rt: &tokio::runtime::Handle,
    ) -> Self {
        let counters = Arc::new(ExportCounters::default());
        let queue = Arc::new(Queue::new(
            name,
            q.capacity,
            q.overflow,
            batch.max_batch,
            counters.clone(),
        ));
        let task = rt.spawn(run_sink(name, queue.clone(), sink, batch, counters.clone()));
        Self {
            name,
            queue,
            sampler,
            counters,
            task: Some(task),
            rt: rt.clone(),
            flush_timeout: q.flush_timeout,
        }
    }

    pub fn counters(&self) -> Arc<ExportCounters> {
        self.counters.clone()
    }

    pub fn queue(&self) -> &Arc<Queue<Arc<SpanRecord>>> {
        &self.queue
    }
}

impl super::Exporter for QueuedExporter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn export(&mut self, spans: &[Arc<SpanRecord>]) {
        let before = spans.len();
        let kept: Vec<Arc<SpanRecord>> = spans
            .iter()
            .filter(|s| self.sampler.should_sample(s))
            .cloned()
            .collect();
        self.counters.sampled_out.add((before - kept.len()) as u64);
        if !kept.is_empty() {
            self.queue.push_all(kept);
        }
    }

    fn shutdown(&mut self) -> Option<String> {
        self.queue.close();
        if let Some(mut task) = self.task.take() {
            let timeout = self.flush_timeout;
            let done = self
                .rt
                .block_on(async { tokio::time::timeout(timeout, &mut task).await.is_ok() });
            if !done {
                task.abort();
                let left =
                    self.queue.drain(usize::MAX).len() as u64 + self.counters.in_flight.get();
                self.counters.dropped(DropReason::Shutdown).add(left);
            }
        }
        Some(self.counters.summary(self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_policies() {
        for (policy, kept) in [
            (Overflow::DropNewest, vec![0, 1, 2]),
            (Overflow::DropOldest, vec![2, 3, 4]),
        ] {
            let c = Arc::new(ExportCounters::default());
            let q = Queue::new("t", 3, policy, 2, c.clone());
            q.push_all(0..5);
            assert_eq!(q.len(), 3);
            assert_eq!(c.queue_depth.get(), 3);
            assert_eq!(c.dropped(DropReason::QueueFull).get(), 2);
            assert_eq!(q.drain(10), kept);
            assert_eq!(c.queue_depth.get(), 0);
        }
    }

    #[test]
    fn summary_line() {
        let c = ExportCounters::default();
        c.exported.add(7);
        c.dropped(DropReason::Shutdown).add(2);
        assert_eq!(
            c.summary("otlp"),
            "otlp: 7 spans exported, 0 failed exports, 0 sampled out, dropped: queue_full=0 export_failed=0 shutdown=2"
        );
    }
}
