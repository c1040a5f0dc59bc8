//! Data syscalls: save arguments at entry, copy the bytes moved at exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    programs::TracePointContext,
};
use tracer_common::{
    conn::{role, state, ConnKey, ConnState},
    data::{direction, flags, DataHeader, DataRecord, MAX_CAPTURE, MAX_IOV},
    event::{kind, EventHeader},
    stats,
};

use crate::{
    args::{src, Args},
    conn::{emit_open, process_allowed, track},
    inject,
    maps::{count, ARGS, CONFIG, CONNS, EVENTS, HEAD_PROG, SCRATCH},
};

/// Offset of syscall argument `i` in a `syscalls:sys_enter_*` record.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: the tracepoint record holds six 8-byte arguments from offset 16.
    unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0)
}

/// Return value in a `syscalls:sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: `long ret` sits at offset 16 of every sys_exit record.
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// State of a connection, tracking it on first sight. None when it is not traced.
#[inline(always)]
pub fn conn_state(key: &ConnKey) -> Result<u8, i64> {
    // SAFETY: read-only lookup of a plain value.
    match unsafe { CONNS.get(key) } {
        Some(st) => Ok(st.state),
        None => track(key, tracer_common::conn::role::UNKNOWN),
    }
}

/// Entry of a data syscall: remember where its bytes are if the fd is traced.
#[inline(always)]
pub fn enter(
    fd: u64,
    ptr: u64,
    len: u64,
    source: u8,
    syscall: u8,
    direction: u8,
) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !process_allowed(tgid) {
        return Ok(());
    }
    let key = ConnKey {
        tgid,
        fd: fd as i32,
    };
    if conn_state(&key)? == state::IGNORED {
        return Ok(());
    }
    let args = Args {
        // SAFETY: helper without arguments.
        ts_enter: unsafe { bpf_ktime_get_ns() },
        ptr,
        len,
        fd: fd as i32,
        src: source,
        syscall,
        direction,
        _pad: 0,
    };
    if ARGS.insert(pid_tgid, args, 0).is_err() {
        count(stats::ARGS_TABLE_FULL);
    }
    Ok(())
}

/// Take (and forget) the arguments saved at entry by the current thread.
#[inline(always)]
pub fn take_args() -> Option<(u64, Args)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup; the value is copied out before removal.
    let args = unsafe { ARGS.get(&pid_tgid) }.copied()?;
    let _ = ARGS.remove(&pid_tgid);
    Some((pid_tgid, args))
}

/// Copy `n` user bytes from `from` to `base + off`, clamped so the verifier sees the bounds.
/// Both go through a volatile read first: the compiler drops a clamp where it proved the value
/// small by comparing two variables (the iovec loop), and verifiers before 6.7 learn no bounds
/// from such comparisons ("R1 min value is negative" on 6.1).
#[inline(always)]
unsafe fn copy_user(base: *mut u8, off: usize, from: u64, n: usize) -> bool {
    let off = core::ptr::read_volatile(&off) & (MAX_CAPTURE - 1);
    let n = core::ptr::read_volatile(&n);
    let n = if n > MAX_CAPTURE { MAX_CAPTURE } else { n };
    let r = generated::bpf_probe_read_user(base.add(off).cast(), n as u32, from as *const _);
    if r != 0 {
        count(stats::READ_USER_ERRORS);
        return false;
    }
    true
}

/// Gather up to `want` bytes from an iovec array into `base`; returns how many were copied.
#[inline(always)]
unsafe fn copy_iov(base: *mut u8, iov: u64, iovcnt: u64, want: usize) -> usize {
    let mut total = 0usize;
    for i in 0..MAX_IOV {
        if i as u64 >= iovcnt || total >= want {
            break;
        }
        let Ok(v) = bpf_probe_read_user((iov + (i * 16) as u64) as *const Iovec) else {
            count(stats::READ_USER_ERRORS);
            break;
        };
        let room = want - total;
        let n = if (v.len as usize) < room {
            v.len as usize
        } else {
            room
        };
        if !copy_user(base, total, v.base, n) {
            break;
        }
        total += n;
    }
    if total < want && iovcnt > MAX_IOV as u64 {
        count(stats::IOV_TRUNCATED);
    }
    total
}

/// Whether `b`, the first four bytes of a connection's first message, start HTTP/1.x. Four
/// bytes tell a method or a status line apart, so heads written in small pieces are recognised.
#[inline(always)]
fn looks_http1(b: &[u8; 4]) -> bool {
    matches!(
        b,
        b"GET "
            | b"PUT "
            | b"POST"
            | b"HEAD"
            | b"DELE"
            | b"PATC"
            | b"OPTI"
            | b"CONN"
            | b"TRAC"
            | b"HTTP"
    )
}

/// Whether `b`, the first four bytes of a connection's first message, start a RESP command
/// array (`*<count>\r\n`), as every Redis client sends commands.
#[inline(always)]
fn looks_resp(b: &[u8; 4]) -> bool {
    b[0] == b'*' && b[1].is_ascii_digit() && (b[2].is_ascii_digit() || b[2] == b'\r')
}

/// `BPF_RB_*` flags of `bpf_ringbuf_output` / `bpf_ringbuf_query`.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Wake the agent only when enough is waiting (see `tracer_common::event::WAKEUP_BYTES`).
#[inline(always)]
fn wakeup_flag() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= tracer_common::event::WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Exit of a data syscall: capture its bytes into a ring-buffer record.
#[inline(always)]
pub fn exit(ctx: &TracePointContext) -> Result<(), i64> {
    let Some((pid_tgid, args)) = take_args() else {
        return Ok(());
    };
    let moved = ret(ctx);
    if moved <= 0 {
        return Ok(());
    }
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: args.fd,
    };
    // Unknown here when the entry was seeded by the agent (a read in flight at attach time) or
    // the connection aged out of the table since the entry.
    // SAFETY: read-only lookup of a plain value.
    if unsafe { CONNS.get(&key) }.is_none()
        && (!process_allowed(key.tgid) || track(&key, role::UNKNOWN)? == state::IGNORED)
    {
        return Ok(());
    }
    let Some(st) = CONNS.get_ptr_mut(&key) else {
        return Ok(());
    };
    // SAFETY: valid map value pointer; concurrent writers only race on advisory fields.
    let st: &mut ConnState = unsafe { &mut *st };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: per-CPU scratch value, exclusively ours for this program run.
    let rec: &mut DataRecord = unsafe { &mut *rec };
    let cap = CONFIG.load().capture_bytes as usize;
    let cap = if cap > MAX_CAPTURE { MAX_CAPTURE } else { cap };
    let want = if (moved as u64) < cap as u64 {
        moved as usize
    } else {
        cap
    };
    let base = rec.data.as_mut_ptr();

    let copied = match args.src {
        // SAFETY: user memory is only read through bpf_probe_read_user.
        src::BUF => {
            if unsafe { copy_user(base, 0, args.ptr, want) } {
                want
            } else {
                0
            }
        }
        src::IOV => unsafe { copy_iov(base, args.ptr, args.len, want) },
        src::MSG => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24 (userspace ABI).
            let iov = unsafe { bpf_probe_read_user((args.ptr + 16) as *const u64) }.unwrap_or(0);
            let cnt = unsafe { bpf_probe_read_user((args.ptr + 24) as *const u64) }.unwrap_or(0);
            if iov == 0 {
                0
            } else {
                unsafe { copy_iov(base, iov, cnt, want) }
            }
        }
        _ => 0,
    };

    if st.state == state::SNIFFING {
        let mut first = [0u8; 4];
        if copied >= 4 {
            first.copy_from_slice(&rec.data[..4]);
        }
        let sniffed = if copied < 4 {
            state::SNIFFING
        } else if looks_http1(&first) {
            state::HTTP1
        } else if looks_resp(&first) {
            state::REDIS
        } else {
            state::SNIFFING
        };
        if sniffed != state::SNIFFING {
            st.state = sniffed;
            emit_open(&key, st)?;
        } else {
            st.sniff_budget = st.sniff_budget.saturating_sub(1);
            if st.sniff_budget == 0 {
                st.state = state::IGNORED;
                count(stats::SNIFF_REJECTED);
            }
            return Ok(());
        }
    }

    let mut fl = 0u8;
    if (copied as u64) < moved as u64 {
        fl |= flags::TRUNCATED;
    }
    if args.src == src::NONE {
        fl |= flags::NO_PAYLOAD;
    }
    if st.lost != 0 {
        fl |= flags::LOST_BEFORE;
    }
    rec.header = DataHeader {
        header: EventHeader {
            kind: kind::DATA,
            _pad: 0,
        },
        ts_enter_ns: args.ts_enter,
        // SAFETY: helper without arguments.
        ts_exit_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: st.conn_id,
        ret_len: moved as u64,
        tgid: key.tgid,
        tid: pid_tgid as u32,
        fd: args.fd,
        cap_len: copied as u32,
        direction: args.direction,
        syscall: args.syscall,
        flags: fl,
        _pad: [0; 5],
        trace_id: [0; 16],
        span_id: [0; 8],
    };
    if CONFIG.load().inject != 0 {
        if args.direction == direction::EGRESS {
            if st.role == role::SERVER {
                inject::response_written(pid_tgid, st.conn_id);
            }
            if let Some(inj) = inject::take_injected(pid_tgid, args.ts_enter) {
                rec.header.trace_id = inj.trace_id;
                rec.header.span_id = inj.span_id;
                rec.header.flags |= flags::INJECTED;
            }
        } else if st.role == role::SERVER && copied >= 4 && request_start(&rec.data[..4]) {
            // Continues in `inject::inject_head`, which sends the record; falls through only if
            // that program is not loaded.
            // SAFETY: tail call with this program's own context.
            let _ = unsafe { HEAD_PROG.tail_call(ctx, 0) };
        }
    }
    st.lost = u8::from(!send(rec, copied));
    Ok(())
}

/// Whether `b` starts a request line.
#[inline(always)]
fn request_start(b: &[u8]) -> bool {
    let first = [b[0], b[1], b[2], b[3]];
    looks_http1(&first) && &first != b"HTTP"
}

/// Copy the header and `copied` captured bytes of `rec` to the ring buffer. False if it was full.
#[inline(always)]
pub fn send(rec: &DataRecord, copied: usize) -> bool {
    let size = core::mem::size_of::<DataHeader>() + (copied & (MAX_CAPTURE * 2 - 1));
    // SAFETY: `size` never exceeds the record.
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const DataRecord as *const u8, size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag()).is_err() {
        count(stats::RINGBUF_DROPS_DATA);
        false
    } else {
        count(stats::DATA_EVENTS);
        true
    }
}
