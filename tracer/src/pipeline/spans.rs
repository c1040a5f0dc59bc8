//! The spans stage. Each exchange record turns itself into its span (see
//! [`crate::protocol::ExchangeRecord::to_span`]); this stage adds what linking needs, kept
//! apart from the exported span.

use super::Parsed;
use crate::{
    clock::Clock,
    protocol::Role,
    span::{LinkHints, ThreadUse, Unlinked},
};

pub use crate::span::SpanOptions;

pub fn build(p: &Parsed, clock: &Clock, opts: SpanOptions) -> Unlinked {
    let info = p.record.info();
    let span = p.record.to_span(&p.meta, clock, opts);
    let thread_use = if info.role != Role::Server {
        ThreadUse::Own
    } else if info.response_tid != 0 && info.response_tid != info.request_tid {
        ThreadUse::Moved
    } else if p.thread_shared {
        ThreadUse::Shared
    } else {
        ThreadUse::Own
    };
    Unlinked {
        span,
        hints: LinkHints {
            exchange: p.exchange,
            start_mono_ns: info.start_ns,
            end_mono_ns: info.end_ns.max(info.start_ns),
            context: p.record.context(),
            thread_parent: p.thread_parent,
            conn_parent: p.conn_parent,
            thread_use,
            kernel: p.kernel,
            via_injected: p.via_injected,
        },
    }
}
