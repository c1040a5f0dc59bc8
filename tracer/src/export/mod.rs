//! Exporters: where finished spans go. All sit behind one trait; the export stage fans each
//! batch out to every configured exporter, so work is shared, not repeated per exporter.

pub mod config;
pub mod otlp;
pub mod prometheus;
pub mod queue;
pub mod sampler;
pub mod stdout;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod testutil;
pub mod zipkin;

use std::sync::Arc;

use crate::span::SpanRecord;

/// A destination for spans. Implementations must not block the caller for long: slow I/O
/// belongs in their own task behind a bounded queue (see [`crate::queue`]).
pub trait Exporter: Send {
    fn name(&self) -> &'static str;
    /// Take a batch of finished spans.
    fn export(&mut self, spans: &[Arc<SpanRecord>]);
    /// Flush what is buffered; called at shutdown. Returns a line for the exit summary, if any.
    fn shutdown(&mut self) -> Option<String> {
        None
    }
}
