//! Trace-context injection (see `tracer_common::inject`).
//!
//! - `inject_sock_ops` (cgroup sock_ops): a client socket connected by a traced process is put in
//!   the `SOCKS` sockhash once established, with its request position at a boundary.
//! - `inject_sk_msg` (sk_msg on `SOCKS`): runs in the sending thread for each message written to
//!   such a socket; follows request boundaries (Content-Length bodies) and inserts `traceparent`
//!   after the request line of a head that lies wholly in the message and has no context header.
//!   Any doubt (chunked body, pipelining, split head, not HTTP/1.x) stops all editing on that
//!   socket. It always lets the message through.
//! - `inject_head` (tail-called from the read exits): a request head read on a server connection
//!   sets its thread's context: the trace of the request's traceparent, or a new trace.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{sk_action::SK_DROP, sk_action::SK_PASS, BPF_ANY},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_netns_cookie, bpf_get_prandom_u32,
        bpf_ktime_get_ns,
        generated::{
            bpf_msg_pop_data, bpf_msg_pull_data, bpf_msg_push_data, bpf_probe_read_kernel,
        },
    },
    macros::{sk_msg, sock_ops, tracepoint},
    programs::{SkMsgContext, SockOpsContext, TracePointContext},
};
use tracer_common::{
    classify::{Flow, Kind, Protocol, Verdict},
    conn::{AF_INET, AF_INET6},
    data::{flags, DataRecord},
    inject::{
        sock_mode, HeadInfo, Injected, ProcModel, SockKey, SockState, ThreadCtx, ACTIVE_SLOTS,
        ACTIVE_STALE_NS, HEADER_LEN, PROVEN_ANSWERS, SCAN_WINDOW,
    },
    stats,
};

use crate::{
    conn::passes_filters,
    maps::{
        count, CONNS, CONN_READER, EXIT_CTX, INJECTED, MSG_SCRATCH, OFFSETS, PENDING_SOCKS,
        PROC_MODEL, SCRATCH, SOCKS, SOCK_STATE, THREAD_CTX,
    },
    scan,
};

const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        // SAFETY: helper without arguments.
        let r = unsafe { bpf_get_prandom_u32() }.to_le_bytes();
        let mut k = 0;
        while k < 4 && i + k < N {
            out[i + k] = r[k];
            k += 1;
        }
        i += 4;
    }
    if out[0] == 0 {
        out[0] = 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Thread context

/// A request head was read on server connection `conn_id` by thread `pid_tgid`, its bytes in
/// `buf[..len]` (`whole`: the read moved no more than that). Returns the trace id the kernel
/// started for it (zero when none, or when the head goes on in a later read).
#[inline(always)]
pub fn request_head(
    pid_tgid: u64,
    conn_id: u64,
    buf: *const u8,
    len: usize,
    whole: bool,
) -> [u8; 16] {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if THREAD_CTX.get_ptr_mut(&pid_tgid).is_none() {
        let _ = THREAD_CTX.insert(&pid_tgid, &ThreadCtx::default(), 0);
    }
    let Some(t) = THREAD_CTX.get_ptr_mut(&pid_tgid) else {
        return [0; 16];
    };
    // SAFETY: valid map value pointer; only this thread writes its entry.
    let t: &mut ThreadCtx = unsafe { &mut *t };
    let _ = CONN_READER.insert(&conn_id, &(pid_tgid as u32), 0);
    let mut mine = ACTIVE_SLOTS;
    let mut free = ACTIVE_SLOTS;
    let mut others = 0;
    for k in 0..ACTIVE_SLOTS {
        if t.active[k] != 0 && now.saturating_sub(t.active_ts[k]) > ACTIVE_STALE_NS {
            t.active[k] = 0;
        }
        if t.active[k] == conn_id {
            mine = k;
        } else if t.active[k] == 0 {
            free = k;
        } else {
            others += 1;
        }
    }
    let slot = if mine < ACTIVE_SLOTS { mine } else { free };
    t.usable = 0;
    t.has_traceparent = 0;
    t.partial_head = 0;
    if slot >= ACTIVE_SLOTS {
        return [0; 16];
    }
    t.active[slot & (ACTIVE_SLOTS - 1)] = conn_id;
    t.active_ts[slot & (ACTIVE_SLOTS - 1)] = now;
    if others > 0 {
        // Several requests in flight on one thread: whose context an outgoing request carries
        // cannot be told.
        return [0; 16];
    }
    let Some(info) = scan::scan(scan::source::RECORD, len) else {
        return [0; 16];
    };
    head_part(t, conn_id, &info, buf, len, whole)
}

/// More of the request head that thread `pid_tgid` is reading on `conn_id`, if it is reading
/// one there (see `ThreadCtx::partial_head`). Returns as `request_head` does.
#[inline(always)]
pub fn request_head_continued(
    pid_tgid: u64,
    conn_id: u64,
    buf: *const u8,
    len: usize,
    whole: bool,
) -> [u8; 16] {
    let Some(t) = THREAD_CTX.get_ptr_mut(&pid_tgid) else {
        return [0; 16];
    };
    // SAFETY: valid map value pointer; only this thread writes its entry.
    let t: &mut ThreadCtx = unsafe { &mut *t };
    if t.partial_head != conn_id || conn_id == 0 {
        return [0; 16];
    }
    t.partial_head = 0;
    let Some(info) = scan::scan_continuation(len) else {
        return [0; 16];
    };
    head_part(t, conn_id, &info, buf, len, whole)
}

/// What a part of a request head (`info`, from `buf[..len]`) says about the thread's context.
/// The head's parts are the first read and the reads that continue it at line boundaries; when
/// the head ends, the thread carries the request's traceparent, or a trace the kernel starts.
#[inline(always)]
fn head_part(
    t: &mut ThreadCtx,
    conn_id: u64,
    info: &HeadInfo,
    buf: *const u8,
    len: usize,
    whole: bool,
) -> [u8; 16] {
    if info.other_context != 0 {
        return [0; 16];
    }
    if info.traceparent_at != 0 {
        if t.has_traceparent != 0 {
            // Two of them: the agent decides.
            return [0; 16];
        }
        // SAFETY: `buf` is the record scratch; reads are masked into it.
        let Some(tp) = (unsafe { scan::traceparent(buf, info.traceparent_at as usize, len) })
        else {
            return [0; 16];
        };
        t.trace_id = tp.trace_id;
        t.parent_id = tp.parent_id;
        t.trace_flags = tp.flags;
        t.has_traceparent = 1;
    }
    if info.head_end == 0 {
        // Goes on in the next read only if this one ended a line: a header split inside its
        // line cannot be told from here.
        // SAFETY: as above.
        if whole && len > 0 && len < SCAN_WINDOW && unsafe { scan::byte_at(buf, len - 1) } == b'\n'
        {
            t.partial_head = conn_id;
        }
        return [0; 16];
    }
    t.usable = 1;
    if t.has_traceparent != 0 {
        // The agent reads the header itself.
        return [0; 16];
    }
    let trace = random_bytes::<16>();
    t.trace_id = trace;
    t.parent_id = [0; 8];
    t.trace_flags = 1;
    trace
}

/// Thread `pid_tgid` wrote (the start of) the response on server connection `conn_id`.
#[inline(always)]
pub fn response_written(pid_tgid: u64, conn_id: u64) {
    // SAFETY: read-only lookup; the value is copied before removal.
    if let Some(reader) = unsafe { CONN_READER.get(&conn_id) }.copied() {
        let _ = CONN_READER.remove(&conn_id);
        let tgid = (pid_tgid >> 32) as u32;
        if PROC_MODEL.get_ptr_mut(&tgid).is_none() {
            let _ = PROC_MODEL.insert(&tgid, &ProcModel::default(), 0);
        }
        if let Some(pm) = PROC_MODEL.get_ptr_mut(&tgid) {
            // SAFETY: valid map value pointer; counters are advisory.
            unsafe {
                if reader == pid_tgid as u32 {
                    (*pm).same_thread = (*pm).same_thread.saturating_add(1);
                } else {
                    (*pm).moved = 1;
                }
            }
        }
    }
    let Some(t) = THREAD_CTX.get_ptr_mut(&pid_tgid) else {
        return;
    };
    // SAFETY: valid map value pointer; only this thread writes its entry.
    let t: &mut ThreadCtx = unsafe { &mut *t };
    for k in 0..ACTIVE_SLOTS {
        if t.active[k] == conn_id {
            t.active[k] = 0;
        }
    }
}

/// Whether the process answers each request on the thread that read it (see `PROVEN_ANSWERS`).
#[inline(always)]
fn proven(tgid: u32) -> bool {
    // SAFETY: read-only lookup of a plain value.
    match unsafe { PROC_MODEL.get(&tgid) } {
        Some(pm) => pm.moved == 0 && pm.same_thread >= PROVEN_ANSWERS,
        None => false,
    }
}

/// How many requests thread context `t` serves right now (stale slots do not count).
#[inline(always)]
fn active_requests(t: &ThreadCtx, now: u64) -> u32 {
    let mut active = 0;
    for k in 0..ACTIVE_SLOTS {
        if t.active[k] != 0 && now.saturating_sub(t.active_ts[k]) <= ACTIVE_STALE_NS {
            active += 1;
        }
    }
    active
}

/// Whether thread `pid_tgid`, serving `active` requests, may carry its served context on.
#[inline(always)]
fn carries(t: &ThreadCtx, active: u32, pid_tgid: u64) -> bool {
    active == 1 && t.usable != 0 && proven((pid_tgid >> 32) as u32)
}

/// The context an outgoing request of thread `pid_tgid` carries: the one server request it
/// serves, a new trace when it serves none, nothing when that cannot be told.
#[inline(always)]
fn outgoing_context(pid_tgid: u64, now: u64) -> Option<([u8; 16], u8)> {
    // SAFETY: read-only lookup; the value is copied.
    let Some(t) = (unsafe { THREAD_CTX.get(&pid_tgid) }).copied() else {
        return Some((random_bytes::<16>(), 1));
    };
    match active_requests(&t, now) {
        0 => Some((random_bytes::<16>(), 1)),
        n if carries(&t, n, pid_tgid) => Some((t.trace_id, t.trace_flags)),
        _ => None,
    }
}

/// The request thread `pid_tgid` serves, when it serves exactly one whose context it knows.
#[inline(always)]
fn served(pid_tgid: u64, now: u64) -> Option<ThreadCtx> {
    // SAFETY: read-only lookup; the value is copied.
    let t = unsafe { THREAD_CTX.get(&pid_tgid) }.copied()?;
    carries(&t, active_requests(&t, now), pid_tgid).then_some(t)
}

/// What the current thread's send injected, if it happened since `since` (its syscall entry);
/// forgotten once taken.
#[inline(always)]
pub fn take_injected(pid_tgid: u64, since: u64) -> Option<Injected> {
    // SAFETY: read-only lookup; the value is copied before removal.
    let inj = unsafe { INJECTED.get(&pid_tgid) }.copied()?;
    let _ = INJECTED.remove(&pid_tgid);
    (inj.ts_ns >= since).then_some(inj)
}

// ---------------------------------------------------------------------------------------------
// Read exits: request heads of server connections (tail call)

/// Tail-called by a read exit of a server connection with its record in `SCRATCH`: a request
/// head sets the thread's context; the record is sent either way. Returning from here ends the
/// exit program.
#[tracepoint]
pub fn inject_head(_ctx: TracePointContext) -> u32 {
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch filled by the exit program that tail-called this one.
    let rec: &mut DataRecord = unsafe { &mut *rec };
    let h = rec.header;
    let len = (h.cap_len as usize) & (2 * tracer_common::data::MAX_CAPTURE - 1);
    let pid_tgid = ((h.tgid as u64) << 32) | h.tid as u64;
    let whole = h.ret_len == len as u64;
    if crate::data::classify_record(rec, len, Flow::ToServer)
        == Verdict::Is(Protocol::Http1, Kind::Request)
    {
        let trace = request_head(pid_tgid, h.conn_id, rec.data.as_ptr(), len, whole);
        rec.header.trace_id = trace;
        rec.header.flags |= flags::KERNEL_TRACE;
    } else {
        let trace = request_head_continued(pid_tgid, h.conn_id, rec.data.as_ptr(), len, whole);
        if trace != [0; 16] {
            rec.header.trace_id = trace;
            rec.header.flags |= flags::KERNEL_TRACE;
        }
    }
    let ok = crate::data::send(rec, len);
    if let Some(x) = EXIT_CTX.get_ptr_mut(0) {
        // SAFETY: per-CPU value written by the exit that tail-called this program.
        let sock = unsafe { (*x).args.sock };
        if let Some(st) = CONNS.get_ptr_mut(&sock) {
            // SAFETY: valid map value pointer.
            unsafe { (*st).lost = u8::from(!ok) };
        }
    }
    0
}

// ---------------------------------------------------------------------------------------------
// sock_ops: which sockets the sk_msg program sees

/// The four words of an IPv6 address field of a program context, read one by one at constant
/// offsets: the verifier refuses reads through a moved context pointer. Callers are `unsafe`.
macro_rules! ip6_words {
    ($ctx:expr, $field:ident) => {
        [
            read_volatile(addr_of!((*$ctx).$field[0])),
            read_volatile(addr_of!((*$ctx).$field[1])),
            read_volatile(addr_of!((*$ctx).$field[2])),
            read_volatile(addr_of!((*$ctx).$field[3])),
        ]
    };
}

#[inline(always)]
fn ops_key(ctx: &SockOpsContext) -> Option<SockKey> {
    let family = ctx.family();
    let mut key = SockKey {
        family,
        local_port: ctx.local_port(),
        remote_port: ctx.remote_port(),
        // SAFETY: the helper takes the program's context.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.ops.cast()) },
        ..SockKey::default()
    };
    if family == AF_INET as u32 {
        key.local[0] = ctx.local_ip4();
        key.remote[0] = ctx.remote_ip4();
    } else if family == AF_INET6 as u32 {
        // SAFETY: fields of the program's context (see `ip6_words`).
        unsafe {
            let o = ctx.ops;
            key.local = ip6_words!(o, local_ip6);
            key.remote = ip6_words!(o, remote_ip6);
        }
    } else {
        return None;
    }
    Some(key)
}

/// Whether the current (connecting) process passes the filters. Its tgid and name are read from
/// its task: older kernels give sock_ops programs no pid / comm / cgroup helpers (6.1 refuses
/// `bpf_get_current_pid_tgid` there). The cgroup filter needs no check: with it, this program is
/// attached to the filter's cgroups only.
#[inline(always)]
fn connecting_process_allowed() -> bool {
    use aya_ebpf::helpers::bpf_probe_read_kernel as read;
    let o = OFFSETS.load();
    // SAFETY: helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: as above.
    let Ok(tgid) = (unsafe { read(task.add(o.task_tgid as usize) as *const i32) }) else {
        count(stats::READ_KERNEL_ERRORS);
        return false;
    };
    passes_filters(
        tgid as u32,
        // SAFETY: as above.
        || unsafe { read(task.add(o.task_comm as usize) as *const [u8; 16]) }.unwrap_or([0; 16]),
        || None,
    )
}

/// Cgroup sock_ops: a traced process's connect marks its socket; once established the socket
/// joins `SOCKS`, at a request boundary.
#[sock_ops]
pub fn inject_sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        // tcp_connect(): runs in the connecting thread.
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            if connecting_process_allowed() {
                if let Some(key) = ops_key(&ctx) {
                    let _ = PENDING_SOCKS.insert(&key, &1, 0);
                }
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            let Some(mut key) = ops_key(&ctx) else {
                return 1;
            };
            // SAFETY: read-only lookup.
            if unsafe { PENDING_SOCKS.get(&key) }.is_none() {
                return 1;
            }
            let _ = PENDING_SOCKS.remove(&key);
            if SOCK_STATE.insert(&key, &SockState::default(), 0).is_err() {
                count(stats::INJECT_ERRORS);
                return 1;
            }
            // SAFETY: the context's sock_ops, as the helper expects.
            let ops = unsafe { &mut *ctx.ops };
            if SOCKS.update(&mut key, ops, BPF_ANY as u64).is_err() {
                count(stats::INJECT_ERRORS);
            } else {
                count(stats::INJECT_SOCKETS);
            }
        }
        _ => {}
    }
    1
}

// ---------------------------------------------------------------------------------------------
// sk_msg: editing request heads

#[inline(always)]
fn msg_key(ctx: &SkMsgContext) -> SockKey {
    // SAFETY: fields of the program's context.
    unsafe {
        let md = &*ctx.msg;
        let mut key = SockKey {
            family: md.family,
            local_port: md.local_port,
            remote_port: md.remote_port,
            netns_cookie: bpf_get_netns_cookie(ctx.msg.cast()),
            ..SockKey::default()
        };
        if md.family == AF_INET as u32 {
            key.local[0] = md.local_ip4;
            key.remote[0] = md.remote_ip4;
        } else {
            let m = ctx.msg;
            key.local = ip6_words!(m, local_ip6);
            key.remote = ip6_words!(m, remote_ip6);
        }
        key
    }
}

/// First bytes of a request line of a method whose head may be edited (not CONNECT).
#[inline(always)]
fn request_method(b: &[u8]) -> bool {
    matches!(
        [b[0], b[1], b[2], b[3]],
        [b'G', b'E', b'T', b' ']
            | [b'P', b'U', b'T', b' ']
            | [b'P', b'O', b'S', b'T']
            | [b'H', b'E', b'A', b'D']
            | [b'D', b'E', b'L', b'E']
            | [b'P', b'A', b'T', b'C']
            | [b'O', b'P', b'T', b'I']
    )
}

#[inline(always)]
fn lose(st: &mut SockState) {
    if st.mode != sock_mode::LOST {
        st.mode = sock_mode::LOST;
        count(stats::INJECT_SOCK_LOST);
    }
}

/// Runs for every message sent on a socket in `SOCKS`, in the sending thread.
#[sk_msg]
pub fn inject_sk_msg(ctx: SkMsgContext) -> u32 {
    try_sk_msg(&ctx)
}

#[inline(always)]
fn try_sk_msg(ctx: &SkMsgContext) -> u32 {
    let key = msg_key(ctx);
    let Some(st) = SOCK_STATE.get_ptr_mut(&key) else {
        return SK_PASS;
    };
    // SAFETY: valid map value pointer; sends on one socket are serialised by its lock.
    let st: &mut SockState = unsafe { &mut *st };
    let size = ctx.size() as u64;
    match st.mode {
        sock_mode::BOUNDARY => {}
        sock_mode::BODY => {
            if size < st.remaining {
                st.remaining -= size;
            } else if size == st.remaining {
                st.mode = sock_mode::BOUNDARY;
                st.remaining = 0;
            } else {
                // The body ends inside this message and more follows: pipelined.
                lose(st);
            }
            return SK_PASS;
        }
        _ => return SK_PASS,
    }
    if size == 0 {
        return SK_PASS;
    }
    let n = if size > SCAN_WINDOW as u64 {
        SCAN_WINDOW as u32
    } else {
        size as u32
    };
    // SAFETY: helper on the program's context; linearises bytes [0, n) without changing them.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, n, 0) } != 0 {
        lose(st);
        return SK_PASS;
    }
    let Some(sc) = MSG_SCRATCH.get_ptr_mut(0) else {
        return SK_PASS;
    };
    // SAFETY: per-CPU scratch value.
    let sc = unsafe { &mut *sc };
    let (data, end) = (ctx.data(), ctx.data_end());
    let n = (n as usize) & (2 * SCAN_WINDOW - 1);
    if n > SCAN_WINDOW || data + n > end {
        lose(st);
        return SK_PASS;
    }
    // SAFETY: [data, data + n) checked against data_end; the scratch holds 2 * SCAN_WINDOW + 64.
    if unsafe { bpf_probe_read_kernel(sc.data.as_mut_ptr().cast(), n as u32, data as *const _) }
        != 0
    {
        lose(st);
        return SK_PASS;
    }
    if n < 16 || !request_method(&sc.data[..4]) {
        lose(st);
        return SK_PASS;
    }
    let buf = sc.data.as_ptr();
    let Some(info) = scan::scan(scan::source::MESSAGE, n) else {
        return SK_PASS;
    };
    let line1_end = info.line1_end as usize;
    // SAFETY: as above.
    if info.head_end == 0 || !unsafe { scan::http1_request_line(buf, line1_end) } {
        // Head split over several messages, longer than the window, or not HTTP/1.x.
        lose(st);
        return SK_PASS;
    }

    // Where the next request starts, from this head alone.
    let body_here = size - info.head_end as u64;
    if info.transfer_encoding != 0 || info.upgrade != 0 || info.content_lengths > 1 {
        lose(st);
    } else if info.content_lengths == 1 {
        // SAFETY: as above.
        match unsafe { scan::content_length(buf, info.content_length_at as usize, n) } {
            Some(cl) if body_here == cl => {}
            Some(cl) if body_here < cl => {
                st.mode = sock_mode::BODY;
                st.remaining = cl - body_here;
            }
            _ => lose(st),
        }
    } else if body_here != 0 {
        // Another request follows in the same message: pipelined.
        lose(st);
    }

    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if info.traceparent_at != 0 || info.other_context != 0 {
        if info.other_context == 0 {
            // SAFETY: as above.
            let tp = unsafe { scan::traceparent(buf, info.traceparent_at as usize, n) };
            if let (Some(tp), Some(t)) = (tp, served(pid_tgid, now)) {
                if t.parent_id != [0; 8] && t.trace_id == tp.trace_id && t.parent_id == tp.parent_id
                {
                    return forward(ctx, &tp, pid_tgid, now);
                }
            }
        }
        count(stats::INJECT_SKIP_HAS_CONTEXT);
        return SK_PASS;
    }
    let Some((trace, fl)) = outgoing_context(pid_tgid, now) else {
        count(stats::INJECT_SKIP_THREAD);
        return SK_PASS;
    };
    let span = random_bytes::<8>();
    scan::write_traceparent(&mut sc.header, &trace, &span, fl);
    insert(
        ctx,
        line1_end as u32,
        &sc.header,
        pid_tgid,
        Injected {
            trace_id: trace,
            span_id: span,
            ts_ns: now,
        },
    )
}

/// The request carries, unchanged, the traceparent of the request its thread serves (a proxy
/// forwarding it): its parent id becomes the client span's, in place (same length, same
/// message; the bytes [0, n) were pulled linear before the scan).
#[inline(always)]
fn forward(ctx: &SkMsgContext, tp: &scan::Traceparent, pid_tgid: u64, now: u64) -> u32 {
    let span = random_bytes::<8>();
    let mut hex = [0u8; 16];
    scan::write_span_hex(&mut hex, &span);
    let at = tp.parent_at & (SCAN_WINDOW - 1);
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + at + 16 > end {
        count(stats::INJECT_ERRORS);
        return SK_PASS;
    }
    let p = (data + at) as *mut u8;
    for (k, b) in hex.iter().enumerate() {
        // SAFETY: [data + at, data + at + 16) checked against data_end above.
        unsafe { *p.add(k) = *b };
    }
    let injected = Injected {
        trace_id: tp.trace_id,
        span_id: span,
        ts_ns: now,
    };
    let _ = INJECTED.insert(&pid_tgid, &injected, 0);
    count(stats::INJECT_FORWARDED);
    SK_PASS
}

/// Insert `header` at `at`. The inserted range is one fresh scatterlist element, so pulling it
/// copies nothing and cannot fail for want of memory; should writing it fail anyway, it is taken
/// out again, and only if that fails too is the message dropped rather than sent with bytes
/// nobody wrote.
#[inline(always)]
fn insert(
    ctx: &SkMsgContext,
    at: u32,
    header: &[u8; HEADER_LEN + 2],
    pid_tgid: u64,
    injected: Injected,
) -> u32 {
    let len = HEADER_LEN as u32;
    // SAFETY: helpers on the program's context.
    if unsafe { bpf_msg_push_data(ctx.msg, at, len, 0) } != 0 {
        count(stats::INJECT_ERRORS);
        return SK_PASS;
    }
    // SAFETY: as above.
    let pulled = unsafe { bpf_msg_pull_data(ctx.msg, at, at + len, 0) } == 0;
    let (data, end) = (ctx.data(), ctx.data_end());
    if !pulled || data + HEADER_LEN > end {
        count(stats::INJECT_ERRORS);
        // SAFETY: as above.
        if unsafe { bpf_msg_pop_data(ctx.msg, at, len, 0) } != 0 {
            return SK_DROP;
        }
        return SK_PASS;
    }
    let p = data as *mut u8;
    for k in 0..HEADER_LEN {
        // SAFETY: [data, data + HEADER_LEN) checked against data_end above.
        unsafe { *p.add(k) = header[k] };
    }
    let _ = INJECTED.insert(&pid_tgid, &injected, 0);
    count(stats::INJECT_DONE);
    SK_PASS
}
