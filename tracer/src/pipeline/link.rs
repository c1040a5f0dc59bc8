//! Stage 4: trace linking. Gives every span its ids and its parent, and says how the parent was
//! found (`tracer.link`):
//! - `header`: the request carried a trace context (W3C, B3, Jaeger, Datadog);
//! - `connection`: a server span whose client is a traced process on this host: the client span
//!   at the other end of the same TCP connection, request for request;
//! - `thread`: a client span whose request started while its thread was serving exactly one
//!   request: that server span, provided that thread served it alone from request to answer
//!   and the process is not one that moves requests between threads (see `threads`). This
//!   holds too for a client request that carries exactly the context its server request
//!   received (a proxy forwarding `traceparent` unchanged): that context names the server
//!   span's parent, so taken as a header it would make the two spans siblings;
//! - `injected`: a server span whose request carried a traceparent this tracer inserted (the
//!   client span at the other end has the span id the header names);
//! - `root`: none of these (or the expected parent never came within the hold bound).
//!
//! With context injection on, the kernel chooses some ids itself (`KernelIds`): the trace of a
//! server request that came without context (requests its thread sends meanwhile carry it), and
//! the trace and span id of each client request it inserted a header into. Those are kept, and a
//! client span with injected ids is a thread child only of a server span in the same trace.
//!
//! A parent finishes after its children, so a child waits (bounded by `hold_ns`) for its
//! parent's trace id; span ids are allocated per exchange when first referenced, so a child can
//! name its parent before the parent exists.

use std::{collections::VecDeque, time::Duration};

use rand::Rng;

use crate::{
    context::RemoteContext,
    hash::{self, FastLru, FastMap},
    span::{ExchangeKey, KernelIds, LinkHints, LinkKind, SpanRecord, ThreadUse, Unlinked},
};

/// Timing slack when checking that a child lies inside its parent (same kernel clock).
const TOLERANCE_NS: u64 = 1_000_000;

struct Waiting {
    span: Unlinked,
    link: LinkKind,
    /// A client span forwarding a context: linked by thread only if its parent received
    /// exactly this context, else by the header.
    forwarded: Option<RemoteContext>,
}

#[derive(Default)]
struct Node {
    span_id: [u8; 8],
    /// Known once the exchange's own span is linked.
    trace_id: Option<[u8; 16]>,
    /// Monotonic start/end of the exchange's span, once it arrived.
    interval: Option<(u64, u64)>,
    /// Whether the span's thread served it alone (a server span may be a thread parent).
    own_thread: bool,
    /// The context the exchange's request carried, once its span is linked.
    received: Option<RemoteContext>,
    waiters: Vec<Waiting>,
}

/// Exchange nodes, at most `cap`, the oldest replaced first: a ring of slots and an index from
/// key to slot. Under load the table is always full, and every span adds a node: an LRU list
/// cost three lookups and pointer-chasing through cold nodes per span (11% of the agent); this
/// costs one lookup and one removal.
struct Nodes {
    index: FastMap<ExchangeKey, u32>,
    slots: Vec<(ExchangeKey, Node)>,
    /// The slot the next new node takes once the ring is full.
    next: usize,
    cap: usize,
}

impl Nodes {
    fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, u32::MAX as usize);
        Self {
            index: FastMap::with_capacity_and_hasher(cap, Default::default()),
            slots: Vec::with_capacity(cap),
            next: 0,
            cap,
        }
    }

    fn get_mut(&mut self, key: &ExchangeKey) -> Option<&mut Node> {
        let i = *self.index.get(key)? as usize;
        self.slots.get_mut(i).map(|(_, n)| n)
    }

    /// The node in slot `i`, as `slot` returned it (slots are never removed).
    fn at(&mut self, i: usize) -> &mut Node {
        &mut self.slots[i].1
    }

    /// The slot of `key`, holding a node made by `make` if it had none; and the node that slot
    /// held before, if this replaced one.
    fn slot(&mut self, key: ExchangeKey, make: impl FnOnce() -> Node) -> (usize, Option<Node>) {
        if let Some(&i) = self.index.get(&key) {
            return (i as usize, None);
        }
        let node = make();
        let (i, old) = if self.slots.len() < self.cap {
            self.slots.push((key, node));
            (self.slots.len() - 1, None)
        } else {
            let i = self.next;
            self.next = (i + 1) % self.cap;
            let old = self
                .slots
                .get_mut(i)
                .map(|s| std::mem::replace(s, (key, node)));
            if let Some((old_key, _)) = &old {
                self.index.remove(old_key);
            }
            (i, old.map(|(_, n)| n))
        };
        self.index.insert(key, i as u32);
        (i, old)
    }
}

pub struct Linker<R: Rng> {
    rng: R,
    nodes: Nodes,
    /// (deadline, parent) of waiting children, in arrival order (deadlines are monotonic).
    deadlines: VecDeque<(u64, ExchangeKey)>,
    /// The same for children that began waiting since the last `expire`: most of their parents
    /// come within milliseconds, so only those still awaited then join `deadlines`, which would
    /// otherwise hold every wait of the last `hold` (200,000 entries at 40,000 spans/s).
    recent: Vec<(u64, ExchangeKey)>,
    hold_ns: u64,
    /// Processes seen answering a request on another thread than the one that read it: their
    /// threads do not serve one request at a time, so none of their client spans is linked by
    /// thread (even to a server span that looked served alone).
    moved: FastLru<u32, ()>,
    /// Children released as roots because their parent never came.
    pub timed_out: u64,
}

/// A random span id (never all zeros).
fn new_span_id(rng: &mut impl Rng) -> [u8; 8] {
    let mut s = [0u8; 8];
    while s == [0; 8] {
        rng.fill(&mut s);
    }
    s
}

/// Processes remembered as moving requests between threads.
const MOVED_PROCESSES: usize = 4096;

impl<R: Rng> Linker<R> {
    pub fn new(rng: R, capacity: usize, hold: Duration) -> Self {
        Self {
            rng,
            nodes: Nodes::new(capacity),
            deadlines: VecDeque::new(),
            recent: Vec::new(),
            moved: hash::lru(MOVED_PROCESSES),
            hold_ns: hold.as_nanos() as u64,
            timed_out: 0,
        }
    }

    fn trace_id(&mut self) -> [u8; 16] {
        let mut t = [0u8; 16];
        while t == [0; 16] {
            self.rng.fill(&mut t);
        }
        t
    }

    /// The node of `key`, created with a fresh span id. A replaced node's waiters are released.
    fn node(&mut self, key: ExchangeKey, out: &mut Vec<SpanRecord>) -> &mut Node {
        let rng = &mut self.rng;
        let (i, replaced) = self.nodes.slot(key, || Node {
            span_id: new_span_id(rng),
            ..Node::default()
        });
        if let Some(old) = replaced {
            for w in old.waiters {
                self.release(w, out);
            }
        }
        // Releasing only resolves spans (it adds no node): `i` is still `key`'s slot.
        self.nodes.at(i)
    }

    /// Link one span; finished spans (this one and any it unblocks) are appended to `out`.
    pub fn link(&mut self, mut u: Unlinked, now: u64, out: &mut Vec<SpanRecord>) {
        if u.hints.thread_use == ThreadUse::Moved {
            self.moved.put(u.span.process.pid, ());
        }
        if let Some(KernelIds::Injected { trace_id, span_id }) = u.hints.kernel {
            // Downstream already has these ids: the span must carry them.
            u.span.span_id = span_id;
            self.node(u.hints.exchange, out).span_id = span_id;
            return self.link_injected(u, trace_id, now, out);
        }
        let received = u.hints.context;
        let node = self.node(u.hints.exchange, out);
        u.span.span_id = node.span_id;
        node.received = received;
        if let Some(ctx) = received {
            if let (Some(pkey), None) = (u.hints.thread_parent, u.hints.conn_parent) {
                return self.link_forwarded(u, ctx, pkey, now, out);
            }
            u.span.parent_span_id = Some(ctx.span_id);
            u.span.parent_sampled = Some(ctx.sampled);
            let link = if u.hints.via_injected {
                LinkKind::Injected
            } else {
                LinkKind::Header
            };
            return self.resolve(u, ctx.trace_id, link, out);
        }
        let parent = match (u.hints.conn_parent, u.hints.thread_parent) {
            (Some(p), _) => Some((p, LinkKind::Connection)),
            (None, Some(p)) => Some((p, LinkKind::Thread)),
            (None, None) => None,
        };
        let Some((pkey, link)) = parent else {
            let t = self.root_trace(&u);
            return self.resolve(u, t, LinkKind::Root, out);
        };
        let moved = self.moved.contains(&u.span.process.pid);
        let pnode = self.node(pkey, out);
        u.span.parent_span_id = Some(pnode.span_id);
        match (pnode.trace_id, pnode.interval) {
            (Some(trace), Some(iv)) if fits(&u.hints, link, iv, pnode.own_thread, moved) => {
                self.resolve(u, trace, link, out)
            }
            (Some(_), _) => self.release_as_root(u, out),
            (None, _) => {
                pnode.waiters.push(Waiting {
                    span: u,
                    link,
                    forwarded: None,
                });
                self.waits_since(now, pkey);
            }
        }
    }

    /// A client span that carries context `ctx` and has a thread parent: a child of that
    /// server span (by thread) if the server request received exactly `ctx` (forwarded
    /// unchanged), else linked by its header.
    fn link_forwarded(
        &mut self,
        mut u: Unlinked,
        ctx: RemoteContext,
        pkey: ExchangeKey,
        now: u64,
        out: &mut Vec<SpanRecord>,
    ) {
        let moved = self.moved.contains(&u.span.process.pid);
        let pnode = self.node(pkey, out);
        match (pnode.trace_id, pnode.interval) {
            (Some(trace), Some(iv))
                if pnode.received == Some(ctx)
                    && fits(&u.hints, LinkKind::Thread, iv, pnode.own_thread, moved) =>
            {
                u.span.parent_span_id = Some(pnode.span_id);
                self.resolve(u, trace, LinkKind::Thread, out)
            }
            (Some(_), _) => self.release_as_header(u, ctx, out),
            (None, _) => {
                u.span.parent_span_id = Some(pnode.span_id);
                pnode.waiters.push(Waiting {
                    span: u,
                    link: LinkKind::Thread,
                    forwarded: Some(ctx),
                });
                self.waits_since(now, pkey);
            }
        }
    }

    /// A client span whose request carried a traceparent the kernel inserted: its trace is
    /// fixed, so it is linked to the server span its thread was serving only if that span is in
    /// the same trace (the kernel took the trace from that request), else it stays a root.
    fn link_injected(
        &mut self,
        mut span: Unlinked,
        trace: [u8; 16],
        now: u64,
        out: &mut Vec<SpanRecord>,
    ) {
        let Some(pkey) = span.hints.thread_parent else {
            return self.resolve(span, trace, LinkKind::Root, out);
        };
        let pnode = self.node(pkey, out);
        match pnode.trace_id {
            Some(t) if t == trace => {
                span.span.parent_span_id = Some(pnode.span_id);
                self.resolve(span, trace, LinkKind::Thread, out)
            }
            Some(_) => self.resolve(span, trace, LinkKind::Root, out),
            None => {
                span.span.parent_span_id = Some(pnode.span_id);
                pnode.waiters.push(Waiting {
                    span,
                    link: LinkKind::Thread,
                    forwarded: None,
                });
                self.waits_since(now, pkey);
            }
        }
    }

    /// The trace a span starts when it has no parent: the kernel's, if it chose one (requests
    /// downstream carry it), else a new one.
    fn root_trace(&mut self, span: &Unlinked) -> [u8; 16] {
        match span.hints.kernel {
            Some(KernelIds::Trace(t)) | Some(KernelIds::Injected { trace_id: t, .. }) => t,
            None => self.trace_id(),
        }
    }

    fn release_as_root(&mut self, mut span: Unlinked, out: &mut Vec<SpanRecord>) {
        span.span.parent_span_id = None;
        let t = self.root_trace(&span);
        self.resolve(span, t, LinkKind::Root, out);
    }

    fn release_as_header(
        &mut self,
        mut u: Unlinked,
        ctx: RemoteContext,
        out: &mut Vec<SpanRecord>,
    ) {
        u.span.parent_span_id = Some(ctx.span_id);
        u.span.parent_sampled = Some(ctx.sampled);
        self.resolve(u, ctx.trace_id, LinkKind::Header, out);
    }

    /// A waiting span whose parent will not come: linked by its own header if it has one.
    fn release(&mut self, w: Waiting, out: &mut Vec<SpanRecord>) {
        match w.forwarded {
            Some(ctx) => self.release_as_header(w.span, ctx, out),
            None => self.release_as_root(w.span, out),
        }
    }

    /// Give `span` its trace, emit it, then release the children that waited for it.
    fn resolve(
        &mut self,
        span: Unlinked,
        trace: [u8; 16],
        link: LinkKind,
        out: &mut Vec<SpanRecord>,
    ) {
        // The usual span has no waiting children: the stack then never allocates.
        let mut next = Some((span, trace, link));
        let mut stack = Vec::new();
        while let Some((Unlinked { mut span, hints }, trace, link)) =
            next.take().or_else(|| stack.pop())
        {
            span.trace_id = trace;
            span.link = link;
            if !matches!(link, LinkKind::Header | LinkKind::Injected) {
                span.parent_sampled = None;
            }
            let iv = (hints.start_mono_ns, hints.end_mono_ns);
            let own = hints.thread_use == ThreadUse::Own;
            let (waiters, received) = match self.nodes.get_mut(&hints.exchange) {
                Some(n) => {
                    n.trace_id = Some(trace);
                    n.interval = Some(iv);
                    n.own_thread = own;
                    (std::mem::take(&mut n.waiters), n.received)
                }
                None => (Vec::new(), None),
            };
            out.push(span);
            for w in waiters {
                let moved = self.moved.contains(&w.span.span.process.pid);
                let linked = match w.span.hints.kernel {
                    Some(KernelIds::Injected { trace_id, .. }) => trace_id == trace,
                    _ => fits(&w.span.hints, w.link, iv, own, moved),
                };
                let linked = linked && w.forwarded.is_none_or(|c| received == Some(c));
                if linked {
                    stack.push((w.span, trace, w.link));
                } else if let Some(ctx) = w.forwarded {
                    let mut child = w.span;
                    child.span.parent_span_id = Some(ctx.span_id);
                    child.span.parent_sampled = Some(ctx.sampled);
                    stack.push((child, ctx.trace_id, LinkKind::Header));
                } else {
                    let mut child = w.span;
                    child.span.parent_span_id = None;
                    let t = self.root_trace(&child);
                    stack.push((child, t, LinkKind::Root));
                }
            }
        }
    }

    /// A child began waiting for `pkey` at `now`.
    fn waits_since(&mut self, now: u64, pkey: ExchangeKey) {
        self.recent.push((now.saturating_add(self.hold_ns), pkey));
    }

    /// Release children whose parent has not come by their deadline.
    pub fn expire(&mut self, now: u64, out: &mut Vec<SpanRecord>) {
        // Later than every deadline already queued: the order stays monotonic.
        let mut recent = std::mem::take(&mut self.recent);
        for (deadline, pkey) in recent.drain(..) {
            if self
                .nodes
                .get_mut(&pkey)
                .is_some_and(|n| !n.waiters.is_empty())
            {
                self.deadlines.push_back((deadline, pkey));
            }
        }
        self.recent = recent;
        while let Some(&(deadline, pkey)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let waiters = self
                .nodes
                .get_mut(&pkey)
                .map(|n| std::mem::take(&mut n.waiters))
                .unwrap_or_default();
            for w in waiters {
                self.timed_out += 1;
                self.release(w, out);
            }
        }
    }

    /// Release everything still waiting (shutdown).
    pub fn flush(&mut self, out: &mut Vec<SpanRecord>) {
        self.expire(u64::MAX, out);
    }
}

/// Whether the child span lies within its parent's interval (with slack).
fn inside(child: &LinkHints, (start, end): (u64, u64)) -> bool {
    child.start_mono_ns.saturating_add(TOLERANCE_NS) >= start
        && child.end_mono_ns <= end.saturating_add(TOLERANCE_NS)
}

/// Whether `child` may be linked (by `link`) to a parent with interval `iv` whose thread served
/// it alone (`own_thread`); `moved`: the child's process moves requests between threads.
/// A server span linked by its connection only has to start inside its client's span: the exit
/// of the server's last write can come well after the client read the bytes it wrote (the writer
/// is preempted by the woken reader on a busy or single-CPU host).
fn fits(child: &LinkHints, link: LinkKind, iv: (u64, u64), own_thread: bool, moved: bool) -> bool {
    match link {
        LinkKind::Connection => starts_inside(child, iv),
        LinkKind::Thread => inside(child, iv) && own_thread && !moved,
        _ => inside(child, iv),
    }
}

/// Whether the child span starts within its parent's interval (with slack).
fn starts_inside(child: &LinkHints, (start, end): (u64, u64)) -> bool {
    child.start_mono_ns.saturating_add(TOLERANCE_NS) >= start
        && child.start_mono_ns <= end.saturating_add(TOLERANCE_NS)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use rstest::rstest;

    use super::*;
    use crate::span::{Endpoints, SpanKind, SpanStatus, SpanSummary};

    /// A span of exchange `id` on connection `conn`; its thread id is `conn`, to tell spans apart.
    fn span(conn: u64, id: u64, kind: SpanKind, start: u64, end: u64) -> Unlinked {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Unlinked {
            span: SpanRecord {
                trace_id: [0; 16],
                span_id: [0; 8],
                parent_span_id: None,
                link: LinkKind::Root,
                parent_sampled: None,
                name: "GET /".into(),
                kind,
                start_unix_ns: start,
                end_unix_ns: end,
                status: SpanStatus::Unset,
                attributes: vec![],
                summary: SpanSummary::Http {
                    method: "GET".into(),
                    path: "/".into(),
                    status_code: Some(200),
                },
                process: Default::default(),
                tid: conn as u32,
                endpoints: Endpoints {
                    local: (ip, 1),
                    remote: (ip, 2),
                },
            },
            hints: LinkHints {
                exchange: ExchangeKey { conn_id: conn, id },
                start_mono_ns: start,
                end_mono_ns: end,
                ..LinkHints::default()
            },
        }
    }

    fn linker() -> Linker<rand::rngs::StdRng> {
        Linker::new(
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7),
            1024,
            Duration::from_secs(5),
        )
    }

    fn key(conn: u64, id: u64) -> ExchangeKey {
        ExchangeKey { conn_id: conn, id }
    }

    #[test]
    fn chain_resolves_when_root_arrives() {
        // curl(c1) -> nginx server(c2) -> nginx client(c3) -> python server(c4); inner ones finish first.
        let mut l = linker();
        let mut out = vec![];
        let mut py = span(4, 0, SpanKind::Server, 40, 50);
        py.hints.conn_parent = Some(key(3, 0));
        let mut ngc = span(3, 0, SpanKind::Client, 30, 60);
        ngc.hints.thread_parent = Some(key(2, 0));
        let mut ngs = span(2, 0, SpanKind::Server, 20, 70);
        ngs.hints.conn_parent = Some(key(1, 0));
        let curl = span(1, 0, SpanKind::Client, 10, 80);
        l.link(py, 0, &mut out);
        l.link(ngc, 0, &mut out);
        l.link(ngs, 0, &mut out);
        assert!(out.is_empty(), "children wait for their parents");
        l.link(curl, 0, &mut out);
        assert_eq!(out.len(), 4);
        let by = |c: u64| out.iter().find(|s| s.tid == c as u32).unwrap();
        let trace = by(1).trace_id;
        assert!(out.iter().all(|s| s.trace_id == trace));
        assert_eq!(by(1).link, LinkKind::Root);
        assert_eq!(by(1).parent_span_id, None);
        assert_eq!(by(2).parent_span_id, Some(by(1).span_id));
        assert_eq!(by(2).link, LinkKind::Connection);
        assert_eq!(by(3).parent_span_id, Some(by(2).span_id));
        assert_eq!(by(3).link, LinkKind::Thread);
        assert_eq!(by(4).parent_span_id, Some(by(3).span_id));
        assert_eq!(by(4).link, LinkKind::Connection);
    }

    #[test]
    fn child_outside_parent_window_is_not_linked() {
        let mut l = linker();
        let mut out = vec![];
        let mut child = span(2, 0, SpanKind::Server, 100_000_000, 200_000_000);
        child.hints.conn_parent = Some(key(1, 0));
        l.link(child, 0, &mut out);
        l.link(span(1, 0, SpanKind::Client, 10, 20), 0, &mut out);
        let c = out.iter().find(|s| s.tid == 2).unwrap();
        assert_eq!(c.link, LinkKind::Root);
        assert_eq!(c.parent_span_id, None);
        assert_ne!(
            c.trace_id,
            out.iter().find(|s| s.tid == 1).unwrap().trace_id
        );
    }

    #[test]
    fn connection_child_may_end_after_its_parent() {
        // The server's last write returned 7 ms after the client read its bytes.
        let mut l = linker();
        let mut out = vec![];
        let mut child = span(2, 0, SpanKind::Server, 3_000_000, 13_000_000);
        child.hints.conn_parent = Some(key(1, 0));
        l.link(child, 0, &mut out);
        l.link(span(1, 0, SpanKind::Client, 0, 6_000_000), 0, &mut out);
        let c = out.iter().find(|s| s.tid == 2).unwrap();
        assert_eq!(c.link, LinkKind::Connection);
        assert_eq!(
            c.parent_span_id,
            Some(out.iter().find(|s| s.tid == 1).unwrap().span_id)
        );
    }

    #[test]
    fn missing_parent_times_out_as_root() {
        let mut l = linker();
        let mut out = vec![];
        let mut child = span(2, 0, SpanKind::Server, 10, 20);
        child.hints.conn_parent = Some(key(1, 0));
        l.link(child, 1_000, &mut out);
        l.expire(1_000 + 4_000_000_000, &mut out);
        assert!(out.is_empty());
        l.expire(1_000 + 5_000_000_001, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].link, LinkKind::Root);
        assert_eq!(out[0].parent_span_id, None);
        assert_eq!(l.timed_out, 1);
    }

    #[test]
    fn header_context_wins() {
        let mut l = linker();
        let mut out = vec![];
        let mut s = span(1, 0, SpanKind::Server, 10, 20);
        s.hints.context = crate::context::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        s.hints.conn_parent = Some(key(9, 0));
        l.link(s, 0, &mut out);
        assert_eq!(out[0].link, LinkKind::Header);
        assert_eq!(out[0].trace_id[0], 0x4b);
        assert_eq!(
            out[0].parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
    }

    #[test]
    fn bounded_nodes_release_waiters() {
        let mut l = Linker::new(
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
            2,
            Duration::from_secs(5),
        );
        let mut out = vec![];
        let mut child = span(2, 0, SpanKind::Server, 10, 20);
        child.hints.conn_parent = Some(key(1, 0));
        l.link(child, 0, &mut out);
        for c in 10..20 {
            l.link(span(c, 0, SpanKind::Client, 1, 2), 0, &mut out);
        }
        assert!(out.iter().any(|s| s.tid == 2 && s.link == LinkKind::Root));
        assert_eq!(out.len(), 11);
    }

    /// nginx-like: the client span started while its thread served one request.
    fn thread_child_of(parent_use: ThreadUse) -> SpanRecord {
        let mut l = linker();
        let mut out = vec![];
        let mut child = span(2, 0, SpanKind::Client, 20, 30);
        child.hints.thread_parent = Some(key(1, 0));
        l.link(child, 0, &mut out);
        let mut parent = span(1, 0, SpanKind::Server, 10, 40);
        parent.hints.thread_use = parent_use;
        l.link(parent, 0, &mut out);
        out.into_iter().find(|s| s.tid == 2).unwrap()
    }

    #[test]
    fn thread_parent_must_have_had_its_thread_alone() {
        assert_eq!(thread_child_of(ThreadUse::Own).link, LinkKind::Thread);
        for other in [ThreadUse::Shared, ThreadUse::Moved] {
            let c = thread_child_of(other);
            assert_eq!(
                (c.link, c.parent_span_id),
                (LinkKind::Root, None),
                "{other:?}"
            );
        }
    }

    #[test]
    fn no_thread_links_in_a_process_that_moves_requests_between_threads() {
        let mut l = linker();
        let mut out = vec![];
        // A request of the process answered on another thread than the one that read it...
        let mut moved = span(9, 0, SpanKind::Server, 1, 2);
        moved.hints.thread_use = ThreadUse::Moved;
        l.link(moved, 0, &mut out);
        // ...so a later thread parent that looked served alone is not trusted either.
        let mut child = span(2, 0, SpanKind::Client, 20, 30);
        child.hints.thread_parent = Some(key(1, 0));
        l.link(child, 0, &mut out);
        l.link(span(1, 0, SpanKind::Server, 10, 40), 0, &mut out);
        let c = out.iter().find(|s| s.tid == 2).unwrap();
        assert_eq!((c.link, c.parent_span_id), (LinkKind::Root, None));
        // Connection links are not affected.
        let mut server = span(3, 0, SpanKind::Server, 21, 29);
        server.hints.conn_parent = Some(key(2, 0));
        l.link(server, 0, &mut out);
        assert_eq!(out.last().unwrap().link, LinkKind::Connection);
    }

    const SERVED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const NEW_SPAN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    fn with_context(mut s: Unlinked, traceparent: Option<&str>) -> Unlinked {
        s.hints.context = traceparent.and_then(crate::context::parse_traceparent);
        s
    }

    /// nginx-like: a server span that received `served`, and a client span its thread sent
    /// with `sent`.
    #[rstest]
    #[case::forwarded_unchanged(Some(SERVED), SERVED, ThreadUse::Own, LinkKind::Thread)]
    #[case::new_span_id(Some(SERVED), NEW_SPAN, ThreadUse::Own, LinkKind::Header)]
    #[case::other_flags(Some(SERVED), UNSAMPLED, ThreadUse::Own, LinkKind::Header)]
    #[case::server_request_without_context(None, SERVED, ThreadUse::Own, LinkKind::Header)]
    #[case::thread_not_served_alone(Some(SERVED), SERVED, ThreadUse::Shared, LinkKind::Header)]
    fn a_forwarded_context_makes_a_thread_child(
        #[case] served: Option<&str>,
        #[case] sent: &str,
        #[case] parent_use: ThreadUse,
        #[case] want: LinkKind,
        #[values(true, false)] parent_first: bool,
    ) {
        let mut l = linker();
        let mut out = vec![];
        let mut parent = with_context(span(1, 0, SpanKind::Server, 10, 40), served);
        parent.hints.thread_use = parent_use;
        let mut child = with_context(span(2, 0, SpanKind::Client, 20, 30), Some(sent));
        child.hints.thread_parent = Some(key(1, 0));
        if parent_first {
            l.link(parent, 0, &mut out);
            l.link(child, 0, &mut out);
        } else {
            l.link(child, 0, &mut out);
            assert!(out.is_empty(), "the child waits for its possible parent");
            l.link(parent, 0, &mut out);
        }
        let by = |c: u32| out.iter().find(|s| s.tid == c).unwrap();
        let (p, c) = (by(1), by(2));
        let ctx = crate::context::parse_traceparent(sent).unwrap();
        assert_eq!(c.link, want);
        assert_eq!(c.trace_id, ctx.trace_id);
        let parent_id = match want {
            LinkKind::Thread => p.span_id,
            _ => ctx.span_id,
        };
        assert_eq!(c.parent_span_id, Some(parent_id));
    }

    #[test]
    fn a_forwarded_context_whose_thread_parent_never_comes_is_linked_by_header() {
        let mut l = linker();
        let mut out = vec![];
        let mut child = with_context(span(2, 0, SpanKind::Client, 20, 30), Some(SERVED));
        child.hints.thread_parent = Some(key(1, 0));
        l.link(child, 1_000, &mut out);
        l.expire(1_000 + 5_000_000_001, &mut out);
        let ctx = crate::context::parse_traceparent(SERVED).unwrap();
        assert_eq!(
            (out[0].link, out[0].trace_id, out[0].parent_span_id),
            (LinkKind::Header, ctx.trace_id, Some(ctx.span_id))
        );
        assert_eq!(l.timed_out, 1);
    }
}
