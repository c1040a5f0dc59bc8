//! Stage 2: connections. Keeps the connection table, turns data records into ordered segments
//! per connection and direction (with what was not captured), and feeds the protocol parser.
//! Reassembly and parsing share this stage because they share per-connection state. It also
//! notes what trace linking needs, by the exchange ids the protocol reports: the server request
//! its thread was serving when a client request started, and the other end of a connection when
//! both ends are traced on this host. It never looks inside a protocol's records.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use tracer_common::data::{direction, flags, DataHeader};

use super::{
    pairs::Pairs,
    shed::{self, Shedder},
    threads::Threads,
    DataEvent, Parsed, RawEvent,
};
use crate::{
    conn::{comm_str, Conn, ConnMeta, ConnTable},
    context,
    hash::{self, FastLru},
    lean,
    process::ProcessCache,
    protocol::{self, Direction, Outcome, ParseError, ParseOutput, Role, Segment, Started},
    span::{ExchangeKey, KernelIds},
    stats::Stats,
};

#[derive(Debug, Clone, Copy)]
pub struct ConnsConfig {
    pub max_connections: usize,
    pub request_timeout_ns: u64,
    pub idle_timeout_ns: u64,
    /// Cores the agent may use before it sheds connections (see `shed`).
    pub cpu_budget: f64,
}

/// Where parser output goes: numbering, linking hints, error accounting.
struct Sink {
    stats: Arc<Stats>,
    logged: HashSet<ParseError>,
    scratch: ParseOutput,
    /// Server exchanges started and not yet reported, by the thread that read the request.
    threads: Threads,
    /// Span ids of traceparent headers the kernel inserted lately (to tell `injected` links).
    injected: FastLru<[u8; 8], ()>,
}

/// Injected span ids remembered: far more than requests in flight between two hosts' ends.
const INJECTED_REMEMBERED: usize = 65536;

/// Kernel-chosen ids a data record carries: `Some(None)` when it says there are none.
fn kernel_ids(h: &DataHeader) -> Option<Option<KernelIds>> {
    if h.flags & flags::INJECTED != 0 {
        Some(Some(KernelIds::Injected {
            trace_id: h.trace_id,
            span_id: h.span_id,
        }))
    } else if h.flags & flags::KERNEL_TRACE != 0 {
        Some((h.trace_id != [0; 16]).then_some(KernelIds::Trace(h.trace_id)))
    } else {
        None
    }
}

/// Started exchanges remembered per connection for their completion (thread parents, kernel
/// ids); beyond it the oldest are forgotten (their spans lose those hints, nothing else).
const STARTED_REMEMBERED: usize = 4096;

/// Remember `v` for exchange `id`, within the bound.
fn remember<T>(list: &mut VecDeque<(u64, T)>, id: u64, v: T) {
    if list.len() >= STARTED_REMEMBERED {
        list.pop_front();
    }
    lean::push(list, (id, v));
}

/// Take what was remembered for exchange `id`. In-order protocols complete the oldest first, so
/// the search usually stops at the front.
fn take<T>(list: &mut VecDeque<(u64, T)>, id: u64) -> Option<T> {
    let at = list.iter().position(|(i, _)| *i == id)?;
    let v = list.remove(at).map(|(_, v)| v);
    lean::settle(list);
    v
}

impl Sink {
    /// Move the scratch output of `conn` to `out`: note exchanges that started, attach linking
    /// hints to finished ones, count (and log once per kind) parse errors.
    fn collect(&mut self, conn: &mut Conn, out: &mut Vec<Parsed>) {
        // Taken out and put back, so that its buffer is reused.
        let mut started = std::mem::take(&mut self.scratch.started);
        for s in started.drain(..) {
            self.started(conn, s);
        }
        self.scratch.started = started;
        let meta = &conn.meta;
        for record in self.scratch.messages.drain(..) {
            let info = record.info();
            let exchange = ExchangeKey {
                conn_id: meta.conn_id,
                id: info.id,
            };
            let kernel = take(&mut conn.kernel_ids, info.id);
            let via_injected = info.role == Role::Server
                && record.context().is_some_and(|c| {
                    c.format == context::Format::W3c && self.injected.contains(&c.span_id)
                });
            if info.outcome != Outcome::Complete {
                self.stats.requests_unanswered.inc();
            }
            if info.truncated {
                self.stats.exchanges_truncated.inc();
            }
            let (thread_parent, conn_parent, thread_shared) = match info.role {
                Role::Client => (
                    take(&mut conn.thread_parents, info.id).flatten(),
                    None,
                    false,
                ),
                _ => (
                    None,
                    conn.mirror.map(|m| ExchangeKey {
                        conn_id: m,
                        id: info.id,
                    }),
                    self.threads
                        .server_done(meta.tgid, info.request_tid, exchange),
                ),
            };
            out.push(Parsed {
                meta: meta.clone(),
                record,
                exchange,
                thread_parent,
                conn_parent,
                thread_shared,
                kernel,
                via_injected,
            });
        }
        for e in self.scratch.errors.drain(..) {
            self.stats.parse_error(e).inc();
            if self.logged.insert(e) {
                tracing::warn!(
                    "unparsable traffic ({}) on a connection of pid {}; counted, further ones of this kind not logged",
                    e.as_str(),
                    meta.tgid
                );
            }
        }
    }

    /// An exchange's request is complete: a server one is in flight on the thread that read it;
    /// a client one gets the one server request its thread was serving, if exactly one (see
    /// `threads`).
    fn started(&mut self, conn: &mut Conn, s: Started) {
        if let Some(k) = conn.kernel_next.take() {
            remember(&mut conn.kernel_ids, s.id, k);
        }
        let tgid = conn.meta.tgid;
        match conn.meta.role {
            Role::Server => {
                let key = ExchangeKey {
                    conn_id: conn.meta.conn_id,
                    id: s.id,
                };
                self.threads.server_started(tgid, s.tid, key);
            }
            Role::Client => {
                let parent = self.threads.client_started(tgid, s.tid);
                remember(&mut conn.thread_parents, s.id, parent);
            }
            Role::Unknown => {}
        }
    }

    /// Forget in-flight requests of a connection that left the table.
    fn forget(&mut self, conn: &Conn) {
        self.threads.forget(conn.meta.tgid, conn.meta.conn_id);
    }
}

/// What the conns stage asks of the kernel's connection table, by a connection's socket key
/// (`ConnEvent::sock`).
pub trait KernelConns: Send {
    /// Announce connection `conn_id` again (same id) before its next record: the agent dropped
    /// it from its table while open.
    fn announce_again(&mut self, sock: u64, conn_id: u64);
    /// Capture nothing more of connection `conn_id`: its syscalls then cost one lookup. A
    /// socket that carries another connection by now (closed, its memory reused) is left alone.
    fn ignore(&mut self, sock: u64, conn_id: u64);
}

pub struct ConnsStage {
    cfg: ConnsConfig,
    kernel: Option<Box<dyn KernelConns>>,
    shedder: Shedder,
    /// Connections shed (see `shed`), out of the table: their records still on their way are
    /// discarded.
    shed: FastLru<u64, ()>,
    /// Connections dropped from the table while open, by id: records of theirs the kernel sent
    /// before it was asked to announce them again (asynchronously) pick them up again.
    dropped: FastLru<u64, (Arc<ConnMeta>, u64)>,
    table: ConnTable,
    processes: ProcessCache,
    sink: Sink,
    /// Connections by their ends, to find both ends of one TCP connection on this host.
    pairs: Pairs,
}

/// Fewest dropped connections remembered (see `ConnsStage::dropped`).
const DROPPED_REMEMBERED: usize = 4096;

impl ConnsStage {
    pub fn new(cfg: ConnsConfig, stats: Arc<Stats>) -> Self {
        Self {
            cfg,
            kernel: None,
            shedder: Shedder::new(cfg.cpu_budget),
            shed: hash::lru(cfg.max_connections.max(DROPPED_REMEMBERED)),
            // Records in flight when the agent drops a connection are many when a small table
            // churns: remember at least DROPPED_REMEMBERED (metadata only, a few hundred bytes).
            dropped: hash::lru(cfg.max_connections.max(DROPPED_REMEMBERED)),
            table: ConnTable::new(cfg.max_connections),
            processes: ProcessCache::new(4096),
            sink: Sink {
                stats,
                logged: HashSet::new(),
                scratch: ParseOutput::default(),
                threads: Threads::default(),
                injected: hash::lru(INJECTED_REMEMBERED),
            },
            pairs: Pairs::default(),
        }
    }

    /// Connections dropped from the table while still open are announced again by the kernel
    /// when next used; shed ones are ignored by it.
    pub fn with_kernel(&mut self, k: Box<dyn KernelConns>) {
        self.kernel = Some(k);
    }

    /// The ring buffer is `used` full (0 to 1) at monotonic `now` (see `shed`).
    pub fn observe_fill(&mut self, used: f64, now: u64) {
        if let Some(level) = self.shedder.observe_fill(used, now) {
            self.shed_level(level);
        }
    }

    /// The agent used `cores` over the window ending at monotonic `now` (see `shed`).
    pub fn observe_cpu(&mut self, cores: f64, now: u64) {
        if let Some(level) = self.shedder.observe_cpu(cores, now) {
            self.shed_level(level);
        }
    }

    /// The overload level changed to `level`: shed the connections it covers now.
    fn shed_level(&mut self, level: u8) {
        self.stats().shed_level.set(u64::from(level));
        let doomed: Vec<u64> = self
            .table
            .iter()
            .filter(|c| self.shedder.sheds(&c.meta))
            .map(|c| c.meta.conn_id)
            .collect();
        if !doomed.is_empty() {
            if self.stats().conns_shed.get() == 0 {
                tracing::warn!(
                    "overload: the agent falls behind or is over its --cpu-budget; a share of connections is no longer captured (counted in the summary and /metrics, further changes logged at debug level)"
                );
            }
            tracing::debug!(
                "overload: {} more connections are no longer captured (level {level} of {})",
                doomed.len(),
                shed::BUCKETS
            );
        }
        for id in doomed {
            if let Some(mut conn) = self.table.remove(id) {
                self.shed_conn(&mut conn);
            }
        }
        self.stats().conns_active.set(self.table.len() as u64);
    }

    /// Stop capturing `conn` (out of the table): the kernel ignores it from now on; its records
    /// still on their way and its requests still waiting are dropped and counted.
    fn shed_conn(&mut self, conn: &mut Conn) {
        self.stats().conns_shed.inc();
        if let Some(p) = conn.parser.take() {
            self.sink.stats.requests_shed.add(p.pending_count() as u64);
        }
        if let Some(k) = self.kernel.as_mut() {
            k.ignore(conn.sock, conn.meta.conn_id);
        }
        self.shed.put(conn.meta.conn_id, ());
        self.sink.forget(conn);
        self.pairs.remove(&conn.meta);
    }

    fn stats(&self) -> &Stats {
        &self.sink.stats
    }

    /// Handle one record; parsed messages are appended to `out`.
    pub fn handle(&mut self, ev: RawEvent<'_>, out: &mut Vec<Parsed>) {
        match ev {
            RawEvent::Open(ev) if self.table.get_mut(ev.conn_id).is_some() => {
                // Announced again (see `drop_open`) after its records on their way picked it up
                // again: it carries on.
            }
            RawEvent::Open(ev) => {
                // Announced again, or new.
                self.dropped.pop(&ev.conn_id);
                tracing::trace!(
                    conn = ev.conn_id,
                    pid = ev.tgid,
                    fd = ev.fd,
                    role = ev.role,
                    "open"
                );
                let process = self.processes.get(ev.tgid, &comm_str(&ev.comm));
                let mut conn = Conn::new(Arc::new(ConnMeta::from_event(&ev, process)), ev.ts_ns);
                conn.sock = ev.sock;
                if self.shedder.sheds(&conn.meta) {
                    self.shed_conn(&mut conn);
                    return;
                }
                self.pair(&mut conn);
                if let Some(mut evicted) = self.table.insert(conn) {
                    self.stats().conns_evicted_lru.inc();
                    self.drop_open(&mut evicted);
                }
            }
            RawEvent::Close { conn_id, ts_ns } => {
                self.dropped.pop(&conn_id);
                self.shed.pop(&conn_id);
                if let Some(mut conn) = self.table.remove(conn_id) {
                    self.finish(&mut conn, ts_ns, out);
                }
            }
            RawEvent::Data(d) => self.data(d, out),
        }
        self.stats().conns_active.set(self.table.len() as u64);
    }

    fn data(&mut self, d: DataEvent<'_>, out: &mut Vec<Parsed>) {
        let h = &d.header;
        tracing::trace!(
            conn = h.conn_id,
            pid = h.tgid,
            dir = h.direction,
            syscall = h.syscall,
            moved = h.ret_len,
            captured = h.cap_len,
            flags = h.flags,
            "data"
        );
        if self.table.peek_mut(h.conn_id).is_none() {
            if self.shed.contains(&h.conn_id) {
                self.sink.stats.records_shed.inc();
                return;
            }
            let Some((meta, sock)) = self.dropped.pop(&h.conn_id) else {
                self.sink.stats.data_unknown_conn.inc();
                return;
            };
            let mut conn = Conn::new(meta, h.ts_enter_ns);
            conn.sock = sock;
            self.pair(&mut conn);
            if let Some(mut evicted) = self.table.insert(conn) {
                self.sink.stats.conns_evicted_lru.inc();
                self.drop_open(&mut evicted);
            }
        }
        let Some(conn) = self.table.get_mut(h.conn_id) else {
            self.sink.stats.data_unknown_conn.inc();
            return;
        };
        conn.last_seen = h.ts_exit_ns;
        if let Some(k) = kernel_ids(h) {
            if let Some(KernelIds::Injected { span_id, .. }) = k {
                self.sink.injected.put(span_id, ());
            }
            conn.kernel_next = k;
        }
        let seg = Segment {
            dir: if h.direction == direction::INGRESS {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            bytes: d.bytes,
            missing: h.ret_len.saturating_sub(d.bytes.len() as u64),
            lost_before: h.flags & flags::LOST_BEFORE != 0,
            ts_enter: h.ts_enter_ns,
            ts_exit: h.ts_exit_ns,
            tid: h.tid,
        };
        if conn.parser.is_none() {
            // The kernel sniffed the protocol already; here the parser itself is chosen.
            match protocol::detect(seg.bytes, seg.dir, conn.meta.role) {
                Some(p) => conn.parser = Some(p.parser(conn.meta.role)),
                None => return,
            }
        }
        if let Some(parser) = conn.parser.as_mut() {
            parser.feed(&seg, &mut self.sink.scratch);
        }
        if conn.meta.role == Role::Server {
            self.sink.threads.server_io(h.tgid, h.tid, h.conn_id);
        }
        self.sink.collect(conn, out);
    }

    /// Find the other end of `conn` among traced connections (both ends on this host, possibly
    /// in different network namespaces of this kernel) and remember it (see `pairs`).
    fn pair(&mut self, conn: &mut Conn) {
        for (server, client) in self.pairs.add(&conn.meta) {
            if server == conn.meta.conn_id {
                conn.mirror = client;
            } else if let Some(s) = self.table.peek_mut(server) {
                s.mirror = client;
            }
        }
    }

    /// A connection left the table: report what its close completes, forget its links.
    fn finish(&mut self, conn: &mut Conn, ts: u64, out: &mut Vec<Parsed>) {
        if let Some(p) = conn.parser.as_mut() {
            p.close(ts, &mut self.sink.scratch);
        }
        self.sink.collect(conn, out);
        self.sink.forget(conn);
        self.pairs.remove(&conn.meta);
    }

    /// An open connection leaves the table (full, or idle): the kernel announces it again (same
    /// id) before its next record. Its requests still waiting are dropped and counted, not
    /// reported as unanswered: their responses may well come, on the connection announced again.
    fn drop_open(&mut self, conn: &mut Conn) {
        if let Some(p) = conn.parser.as_ref() {
            self.sink
                .stats
                .requests_dropped_evicted
                .add(p.pending_count() as u64);
        }
        if let Some(k) = self.kernel.as_mut() {
            k.announce_again(conn.sock, conn.meta.conn_id);
        }
        self.dropped
            .put(conn.meta.conn_id, (conn.meta.clone(), conn.sock));
        self.sink.forget(conn);
        self.pairs.remove(&conn.meta);
    }

    /// Periodic work at monotonic `now`: report requests that waited too long, forget idle
    /// connections.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Parsed>) {
        let timeout = self.cfg.request_timeout_ns;
        for conn in self.table.with_pending() {
            if let Some(p) = conn.parser.as_mut() {
                p.expire(now, timeout, &mut self.sink.scratch);
            }
            self.sink.collect(conn, out);
        }
        for id in self
            .table
            .idle_since(now.saturating_sub(self.cfg.idle_timeout_ns))
        {
            if let Some(mut conn) = self.table.remove(id) {
                self.sink.stats.conns_expired_idle.inc();
                self.drop_open(&mut conn);
            }
        }
        self.stats().conns_active.set(self.table.len() as u64);
    }

    /// Requests still waiting at shutdown (counted, not reported as spans).
    pub fn pending_at_exit(&mut self) -> u64 {
        self.table.with_pending().count() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracer_common::{
        conn::{role, ConnEvent, AF_INET},
        data::syscall,
        event::{kind, EventHeader},
    };

    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

    /// A request to the kernel: (announce or ignore, socket, connection id).
    type Request = (&'static str, u64, u64);

    /// What the stage asked of the kernel.
    #[derive(Clone, Default)]
    struct Asked(Arc<Mutex<Vec<Request>>>);

    impl KernelConns for Asked {
        fn announce_again(&mut self, sock: u64, conn_id: u64) {
            self.0.lock().unwrap().push(("announce", sock, conn_id));
        }
        fn ignore(&mut self, sock: u64, conn_id: u64) {
            self.0.lock().unwrap().push(("ignore", sock, conn_id));
        }
    }

    fn open(conn_id: u64, remote_port: u16) -> RawEvent<'static> {
        let mut ev = ConnEvent {
            header: EventHeader {
                kind: kind::CONN_OPEN,
                _pad: 0,
            },
            conn_id,
            tgid: 1,
            fd: 5,
            family: AF_INET,
            local_port: 8080,
            remote_port,
            role: role::SERVER,
            sock: 0x1000 + conn_id,
            ..Default::default()
        };
        ev.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.remote_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        RawEvent::Open(ev)
    }

    fn data(conn_id: u64, dir: u8, bytes: &'static [u8], ts: u64) -> RawEvent<'static> {
        RawEvent::Data(DataEvent {
            header: DataHeader {
                header: EventHeader {
                    kind: kind::DATA,
                    _pad: 0,
                },
                ts_enter_ns: ts,
                ts_exit_ns: ts + 1,
                conn_id,
                ret_len: bytes.len() as u64,
                tgid: 1,
                tid: 1,
                fd: 5,
                cap_len: bytes.len() as u32,
                direction: dir,
                syscall: syscall::READ,
                ..Default::default()
            },
            bytes,
        })
    }

    fn stage(max_connections: usize, stats: Arc<Stats>) -> ConnsStage {
        ConnsStage::new(
            ConnsConfig {
                max_connections,
                request_timeout_ns: u64::MAX,
                idle_timeout_ns: u64::MAX,
                cpu_budget: 1.0,
            },
            stats,
        )
    }

    /// Connection 1 is pushed out of a 2-slot table: the kernel is asked to announce it again.
    /// A request of it may have been on its way then (`in_flight`), picking it up again; the
    /// kernel's new open record comes before its request (unless in flight) and its response,
    /// or not at all (`announced`: the connection stayed out of the kernel's table since, its
    /// response on its way too). Its exchange completes either way.
    #[rstest::rstest]
    #[case::request_in_flight(true, true)]
    #[case::nothing_in_flight(false, true)]
    #[case::all_in_flight(true, false)]
    fn a_connection_dropped_from_the_table_carries_on(
        #[case] in_flight: bool,
        #[case] announced: bool,
    ) {
        let stats = Arc::new(Stats::default());
        let mut stage = stage(2, stats.clone());
        let asked = Asked::default();
        stage.with_kernel(Box::new(asked.clone()));
        let mut out = Vec::new();
        for id in 1..=3 {
            stage.handle(open(id, 40000 + id as u16), &mut out);
        }
        assert_eq!(*asked.0.lock().unwrap(), vec![("announce", 0x1001, 1)]);
        if in_flight {
            stage.handle(data(1, direction::INGRESS, REQUEST, 100), &mut out);
        }
        if announced {
            stage.handle(open(1, 40001), &mut out);
        }
        if !in_flight {
            stage.handle(data(1, direction::INGRESS, REQUEST, 100), &mut out);
        }
        stage.handle(data(1, direction::EGRESS, RESPONSE, 200), &mut out);
        let ids: Vec<u64> = out.iter().map(|p| p.exchange.conn_id).collect();
        assert_eq!(ids, vec![1]);
        assert_eq!(stats.data_unknown_conn.get(), 0);
        assert_eq!(stats.requests_dropped_evicted.get(), 0);
    }

    /// One request and its response on `conn_id`; returns how many exchanges came out.
    fn exchange(stage: &mut ConnsStage, conn_id: u64, ts: u64) -> usize {
        let mut out = Vec::new();
        stage.handle(data(conn_id, direction::INGRESS, REQUEST, ts), &mut out);
        stage.handle(
            data(conn_id, direction::EGRESS, RESPONSE, ts + 10),
            &mut out,
        );
        out.len()
    }

    #[test]
    fn shed_connections_are_ignored_by_the_kernel_and_their_records_discarded() {
        let stats = Arc::new(Stats::default());
        let mut stage = stage(16, stats.clone());
        let asked = Asked::default();
        stage.with_kernel(Box::new(asked.clone()));
        let mut out = Vec::new();
        stage.handle(open(7, 40000), &mut out);
        assert_eq!(exchange(&mut stage, 7, 100), 1);

        // The ring buffer nearly full, twice a step apart: everything is shed, the kernel told.
        stage.observe_fill(0.99, shed::STEP_NS);
        stage.observe_fill(0.99, 2 * shed::STEP_NS);
        assert_eq!(stage.shedder.level(), shed::BUCKETS);
        assert_eq!(*asked.0.lock().unwrap(), vec![("ignore", 0x1007, 7)]);
        assert_eq!(exchange(&mut stage, 7, 2_000), 0);
        assert_eq!(stats.records_shed.get(), 2);

        // A connection opened now is shed at once.
        stage.handle(open(8, 40001), &mut out);
        assert_eq!(exchange(&mut stage, 8, 3_000), 0);
        assert_eq!(stats.conns_shed.get(), 2);
        assert_eq!(stats.records_shed.get(), 4);
        assert_eq!(stage.table.len(), 0);

        // Once closed, a shed connection is forgotten: later records are of no connection.
        stage.handle(
            RawEvent::Close {
                conn_id: 7,
                ts_ns: 4_000,
            },
            &mut out,
        );
        assert_eq!(exchange(&mut stage, 7, 5_000), 0);
        assert_eq!(stats.records_shed.get(), 4);
        assert_eq!(stats.data_unknown_conn.get(), 2);
    }
}
