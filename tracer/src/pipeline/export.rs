//! Stage 5: export. A thread (exporters may block briefly) that batches spans and hands each
//! batch to every exporter: one conversion pipeline, many destinations.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::SpanRef;
use crate::{export::Exporter, stats::Stats};

/// Spans gathered for the exporters before handing them over (a batch may exceed it by one
/// upstream batch).
const BATCH: usize = 256;

/// Run until the input closes; stop after `limit` spans (then ask the agent to stop).
/// Returns the exporters' shutdown lines for the summary.
pub fn run(
    mut link_to_export: mpsc::Receiver<Vec<SpanRef>>,
    mut exporters: Vec<Box<dyn Exporter>>,
    stats: Arc<Stats>,
    limit: Option<u64>,
    stop: watch::Sender<bool>,
) -> Vec<String> {
    let mut total = 0u64;
    while let Some(mut batch) = link_to_export.blocking_recv() {
        while batch.len() < BATCH {
            match link_to_export.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if let Some(limit) = limit {
            let room = limit.saturating_sub(total) as usize;
            batch.truncate(room);
        }
        total += batch.len() as u64;
        stats.spans.add(batch.len() as u64);
        if !batch.is_empty() {
            for e in exporters.iter_mut() {
                e.export(&batch);
            }
        }
        if limit.is_some_and(|l| total >= l) {
            let _ = stop.send(true);
        }
    }
    exporters.iter_mut().filter_map(|e| e.shutdown()).collect()
}
