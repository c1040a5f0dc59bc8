//! The agent's one-way pipeline; every stage is built before any runs:
//!
//! ring buffer -> conns (reassembly + protocol parse) -> spans (span build) -> link (trace
//! linking) -> `link_to_export` -> export
//!
//! The stages up to link run in order on one thread (`data`), handing each other batches; the
//! bounded `link_to_export` channel joins it to the export thread. A full channel slows the data
//! thread and the kernel's ring buffer then counts its losses; the export fan-out drops and
//! counts instead, so a slow exporter never stalls capture.

pub mod conns;
pub mod data;
pub mod export;
pub mod link;
pub mod pairs;
pub mod ringbuf;
pub mod shed;
pub mod spans;
pub mod threads;

use std::sync::Arc;

use tracer_common::{conn::ConnEvent, data::DataHeader};

use crate::{
    conn::ConnMeta,
    protocol::Message,
    span::{ExchangeKey, KernelIds, SpanRecord},
};

/// A decoded ring-buffer record, borrowing the ring buffer's memory: parsers read the captured
/// bytes where the kernel wrote them.
#[derive(Debug, Clone, Copy)]
pub enum RawEvent<'a> {
    Open(ConnEvent),
    Close { conn_id: u64, ts_ns: u64 },
    Data(DataEvent<'a>),
}

/// One data syscall's record: its header and the captured bytes.
#[derive(Debug, Clone, Copy)]
pub struct DataEvent<'a> {
    pub header: DataHeader,
    pub bytes: &'a [u8],
}

/// A finished exchange with its connection and what linking needs to know.
#[derive(Debug)]
pub struct Parsed {
    pub meta: Arc<ConnMeta>,
    pub record: Message,
    pub exchange: ExchangeKey,
    pub thread_parent: Option<ExchangeKey>,
    pub conn_parent: Option<ExchangeKey>,
    /// Server exchanges: the thread that read the request moved server bytes of other
    /// connections before it was answered.
    pub thread_shared: bool,
    /// Ids the kernel chose for this exchange (context injection).
    pub kernel: Option<KernelIds>,
    /// Server exchanges: the request's traceparent was inserted by this tracer.
    pub via_injected: bool,
}

/// Stages hand each other batches (a `Vec` per send), not single items: one wake-up per batch
/// instead of one per record kept the agent's threads switching more than working.
/// Most items a stage puts in one batch.
pub const BATCH: usize = 256;

/// Capacity of the channel from the data thread to the export thread, in batches (so at most
/// `BATCH` times as many spans wait in it).
pub const LINK_TO_EXPORT: usize = 32;

/// A finished span on its way to the exporters.
pub type SpanRef = Arc<SpanRecord>;
