//! Data syscalls: save arguments at entry, copy the bytes moved at exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    programs::TracePointContext,
    EbpfContext,
};
use tracer_common::{
    classify::{classify_sample, Flow, Kind, Sample, Verdict, PREFIX},
    conn::{announced, role, state, ConnKey, ConnState, SniffBuf},
    data::{direction, flags, DataHeader, DataRecord, MAX_CAPTURE, MAX_IOV},
    event::{kind, EventHeader},
    stats,
};

use crate::{
    args::{src, ArgSlot, Args},
    conn::{emit_open, lookup, process_allowed},
    fds, inject,
    maps::{
        count, ExitCtx, ARGS, ARG_SLOTS, ARG_SPILL, CONFIG, CONNS, EVENTS, EXIT_CTX, FDS,
        HEAD_PROG, SCRATCH, SNIFF, SNIFF_PROG,
    },
};

/// Syscall argument `i` (< 6) of a `syscalls:sys_enter_*` record: six 8-byte arguments from
/// offset 16. Read straight from the record (a tracepoint program may load its context at
/// constant offsets), not through a helper call: this runs for every read and write on the host.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: constant, aligned offset within the record (i < 6 at every call site).
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u64).add(2 + i)) }
}

/// Return value in a `syscalls:sys_exit_*` record (`long ret` at offset 16), read as `arg`.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as in `arg`.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const i64).add(2)) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Entry of a data syscall: remember where its bytes are if the fd is a traced connection.
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
    // A plain fd (a file, mostly) costs one inlined array lookup, not a hash lookup; so does a
    // socket in its process's slot. A cached socket is not looked up in the connection table
    // here: the exit does it, once (and caches the fd as untraced when its connection is).
    let sock = if fds::known_plain(&key) {
        0
    } else if let Some(sock) = fds::cached_sock(&key) {
        sock
    } else {
        // SAFETY: read-only lookup of a plain value.
        match unsafe { FDS.get(&key) } {
            Some(e) => e.sock,
            None => match lookup(&key)? {
                // SAFETY: valid map value pointer.
                Some((sock, st)) if unsafe { (*st).state } != state::IGNORED => sock,
                Some(_) => {
                    fds::ignore(&key);
                    0
                }
                None => 0,
            },
        }
    };
    if sock == 0 {
        if source == src::MSG && direction == direction::INGRESS {
            watch_fd_passing(pid_tgid, fd, ptr, syscall);
        }
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
        flags: 0,
        sock,
    };
    save_args(pid_tgid, args);
    Ok(())
}

/// The slot of thread `tid` in `ARG_SLOTS`.
#[inline(always)]
fn slot(tid: u32) -> Option<*mut ArgSlot> {
    ARG_SLOTS.get_ptr_mut(tid & (tracer_common::args::ARG_SLOTS - 1))
}

/// The spill mark of thread `tid`'s slot (see `ARG_SPILL`).
#[inline(always)]
fn spill_mark(tid: u32) -> Option<*mut u8> {
    ARG_SPILL.get_ptr_mut(tid & (tracer_common::args::ARG_SLOTS - 1))
}

/// Save a syscall's arguments for its exit: in the thread's slot, or in the `ARGS` hash when
/// another thread holds the slot.
#[inline(always)]
pub fn save_args(pid_tgid: u64, args: Args) {
    let tid = pid_tgid as u32;
    if let Some(s) = slot(tid) {
        // SAFETY: valid map value pointer. Only the slot's owner writes it until its exit frees
        // it; two threads claiming a free slot at the same instant is the one race, and it costs
        // one syscall's capture (the loser finds the winner's tid at its exit).
        let s = unsafe { &mut *s };
        if s.tid == 0 || s.tid == tid {
            s.args = args;
            s.tid = tid;
            return;
        }
        count(stats::ARGS_SLOT_TAKEN);
    }
    if ARGS.insert(pid_tgid, args, 0).is_err() {
        count(stats::ARGS_TABLE_FULL);
    } else if let Some(m) = spill_mark(tid) {
        // SAFETY: valid map value pointer; a byte store, the same value from every writer.
        unsafe { core::ptr::write_volatile(m, tracer_common::args::SPILLED) };
    }
}

/// A recvmsg on an untraced fd (a UNIX socket, usually) with a control buffer may receive file
/// descriptors: their numbers may be cached as something else (see `maps::FDS`), so the exit
/// forgets them. `msg` is the `struct user_msghdr`.
#[inline(always)]
fn watch_fd_passing(pid_tgid: u64, fd: u64, msg: u64, syscall: u8) {
    // struct user_msghdr: msg_control at 32 (userspace ABI).
    // SAFETY: user memory read through the helper.
    let control = unsafe { bpf_probe_read_user((msg + 32) as *const u64) }.unwrap_or(0);
    if control == 0 {
        return;
    }
    let args = Args {
        ptr: msg,
        fd: fd as i32,
        src: src::MSG,
        syscall,
        direction: direction::INGRESS,
        flags: tracer_common::args::flags::FDS_MAY_ARRIVE,
        ..Args::default()
    };
    save_args(pid_tgid, args);
}

/// Most fds forgotten from one `SCM_RIGHTS` message.
const MAX_PASSED_FDS: usize = 16;
const SOL_SOCKET: i32 = 1;
const SCM_RIGHTS: i32 = 1;

/// After a recvmsg of [`watch_fd_passing`]: the fds of its first control message, if
/// `SCM_RIGHTS`, are forgotten by the fd cache.
#[inline(always)]
fn forget_passed_fds(pid_tgid: u64, msg: u64) {
    // SAFETY: user memory read through the helper.
    let control = unsafe { bpf_probe_read_user((msg + 32) as *const u64) }.unwrap_or(0);
    // SAFETY: as above.
    let control_len = unsafe { bpf_probe_read_user((msg + 40) as *const u64) }.unwrap_or(0);
    if control == 0 || control_len < 16 {
        return;
    }
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; int fds[]; }
    // SAFETY: as above.
    let (len, level, ty) = unsafe {
        (
            bpf_probe_read_user(control as *const u64).unwrap_or(0),
            bpf_probe_read_user((control + 8) as *const i32).unwrap_or(0),
            bpf_probe_read_user((control + 12) as *const i32).unwrap_or(0),
        )
    };
    if level != SOL_SOCKET || ty != SCM_RIGHTS || len < 16 {
        return;
    }
    let n = ((len.min(control_len) - 16) / 4) as usize;
    let tgid = (pid_tgid >> 32) as u32;
    for i in 0..MAX_PASSED_FDS {
        if i >= n {
            break;
        }
        // SAFETY: as above.
        if let Ok(fd) = unsafe { bpf_probe_read_user((control + 16 + 4 * i as u64) as *const i32) }
        {
            fds::forget(&ConnKey { tgid, fd });
        }
    }
}

/// Take (and forget) the arguments saved at entry by the current thread: from its slot, else
/// from the `ARGS` hash (a taken slot, or an entry the agent seeded for a read in flight).
#[inline(always)]
pub fn take_args() -> Option<(u64, Args)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if let Some(s) = slot(tid) {
        // SAFETY: valid map value pointer; this thread owns the slot if it holds its tid.
        let s = unsafe { &mut *s };
        if s.tid == tid {
            let args = s.args;
            s.tid = 0;
            return Some((pid_tgid, args));
        }
    }
    // SAFETY: valid map value pointer.
    if unsafe { core::ptr::read_volatile(spill_mark(tid)?) } == 0 {
        return None;
    }
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

/// Copy up to `want` of the syscall's bytes to `base`; returns how many were copied.
#[inline(always)]
unsafe fn capture(base: *mut u8, args: &Args, want: usize) -> usize {
    match args.src {
        src::BUF => {
            if copy_user(base, 0, args.ptr, want) {
                want
            } else {
                0
            }
        }
        src::IOV => copy_iov(base, args.ptr, args.len, want),
        src::MSG => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24 (userspace ABI).
            let iov = bpf_probe_read_user((args.ptr + 16) as *const u64).unwrap_or(0);
            let cnt = bpf_probe_read_user((args.ptr + 24) as *const u64).unwrap_or(0);
            if iov == 0 {
                0
            } else {
                copy_iov(base, iov, cnt, want)
            }
        }
        _ => 0,
    }
}

/// The configured capture size.
#[inline(always)]
fn capture_size() -> usize {
    let cap = CONFIG.load().capture_bytes as usize;
    if cap > MAX_CAPTURE {
        MAX_CAPTURE
    } else {
        cap
    }
}

#[inline(always)]
fn min(a: u64, b: usize) -> usize {
    if a < b as u64 {
        a as usize
    } else {
        b
    }
}

/// `BPF_RB_*` flags of `bpf_ringbuf_output` / `bpf_ringbuf_query`.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Wake the agent once per `WAKEUP_BYTES` written (see `tracer_common::event::WAKEUP_BYTES`):
/// when this record of `size` bytes takes the waiting data across a multiple of it. Not on every
/// record past the threshold: each forced wake-up is an irq_work, a self-IPI (a VM exit under a
/// hypervisor), and while the agent has not drained yet every record would raise one. Two CPUs
/// racing over one multiple may both miss it; the next multiple, or the agent's poll interval,
/// covers that.
#[inline(always)]
fn wakeup_flag(size: usize) -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    let w = tracer_common::event::WAKEUP_BYTES;
    if (avail + size as u64) / w != avail / w {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Hand the exit's context to a tail-called program (which starts with nothing known about
/// these values: the verifier checks it once, not once per path that led here).
#[inline(always)]
fn stash(ctx: ExitCtx) -> bool {
    let Some(x) = EXIT_CTX.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, ours for this program run (and the programs it tail-calls).
    unsafe { *x = ctx };
    true
}

/// Exit of a data syscall: capture its bytes into a ring-buffer record.
#[inline(always)]
pub fn exit(ctx: &TracePointContext) -> Result<(), i64> {
    let Some((pid_tgid, mut args)) = take_args() else {
        return Ok(());
    };
    let moved = ret(ctx);
    if args.flags & tracer_common::args::flags::FDS_MAY_ARRIVE != 0 {
        if moved >= 0 {
            forget_passed_fds(pid_tgid, args.ptr);
        }
        return Ok(());
    }
    if moved <= 0 {
        return Ok(());
    }
    // Unknown at entry when the entry was seeded by the agent (a read in flight at attach
    // time), or gone since (the agent dropped the connection while this read was blocked: it is
    // picked up again here, so the bytes read are not lost).
    let mut st = if args.sock != 0 {
        CONNS.get_ptr_mut(&args.sock)
    } else {
        None
    };
    if st.is_none() {
        let key = ConnKey {
            tgid: (pid_tgid >> 32) as u32,
            fd: args.fd,
        };
        if !process_allowed(key.tgid) {
            return Ok(());
        }
        st = lookup(&key)?.map(|(sock, st)| {
            args.sock = sock;
            st
        });
    }
    let Some(st) = st else {
        return Ok(());
    };
    // SAFETY: valid map value pointer; concurrent writers only race on advisory fields.
    let st: &mut ConnState = unsafe { &mut *st };
    let sniffing = st.state == state::SNIFFING;
    if !sniffing && !state::captured(st.state) {
        fds::ignore(&ConnKey {
            tgid: (pid_tgid >> 32) as u32,
            fd: args.fd,
        });
        return Ok(());
    }
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: per-CPU scratch value, exclusively ours for this program run.
    let rec: &mut DataRecord = unsafe { &mut *rec };
    // Undecided connections: the bytes held from earlier messages of this direction go first.
    let mut held = 0usize;
    let mut held_ts = args.ts_enter;
    if sniffing {
        if let Some(b) = SNIFF.get_ptr_mut(&args.sock) {
            // SAFETY: valid map value pointer.
            let b: &SniffBuf = unsafe { &*b };
            let dir = (args.direction & 1) as usize;
            held = (b.len[dir] as usize) & (PREFIX - 1);
            if held > 0 {
                held_ts = b.ts_enter[dir];
            }
            // All of it: the bytes past `held` are overwritten or zeroed before classifying.
            rec.data[..PREFIX].copy_from_slice(&b.bytes[dir]);
        }
    }
    let want = min(moved as u64, capture_size() - held);
    // SAFETY: user memory is only read through bpf_probe_read_user; `held` < PREFIX and the
    // record has PREFIX bytes of room past twice the capture size.
    let copied = unsafe { capture(rec.data.as_mut_ptr().add(held), &args, want) };
    if sniffing {
        let x = ExitCtx {
            pid_tgid,
            moved,
            args,
            held: held as u64,
            held_ts,
            total: (held + copied) as u64,
            sample: Sample::default(),
        };
        if stash(x) {
            // Continues in `exit_sniff`.
            // SAFETY: tail call with this program's own context.
            let _ = unsafe { SNIFF_PROG.tail_call(ctx, 0) };
        }
        return Ok(());
    }
    if st.announced != announced::YES {
        // The agent dropped the connection from its table (or never got its open record): it
        // learns it again before this record, under the same id.
        if st.announced == announced::AGAIN {
            count(stats::CONNS_READOPTED);
        }
        emit_open(args.sock, args.fd, st)?;
    }
    emit(ctx, pid_tgid, &args, moved as u64, st, rec, copied);
    Ok(())
}

/// Exit of a data syscall on a connection whose protocol is undecided (tail-called by the data
/// exit): the bytes held from its earlier messages in the same direction and this syscall's
/// are classified together. A verdict sends them as one record (after the connection's open
/// record); too few bytes to tell are held for the next message; a connection that keeps
/// saying nothing known is ignored.
#[inline(always)]
pub fn sniff(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(x) = EXIT_CTX.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: per-CPU value written by the exit that tail-called this program.
    let ExitCtx {
        pid_tgid,
        moved,
        args,
        held,
        held_ts,
        total,
        ..
    } = unsafe { *x };
    let sock = args.sock;
    let Some(st) = CONNS.get_ptr_mut(&sock) else {
        return Ok(());
    };
    // SAFETY: as in `exit`.
    let st: &mut ConnState = unsafe { &mut *st };
    if st.state != state::SNIFFING {
        return Ok(());
    }
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: per-CPU scratch value filled by the exit that tail-called this program.
    let rec: &mut DataRecord = unsafe { &mut *rec };
    let dir = (args.direction & 1) as usize;
    let total = (total as usize) & (2 * MAX_CAPTURE - 1);
    let buf = SNIFF.get_ptr_mut(&sock);
    let verdict = classify_record(rec, total, Flow::of(st.role, args.direction));
    let verdict = match verdict {
        // Frame shapes are for connections joined mid-stream only.
        Verdict::Is(_, Kind::Frame) if st.role != role::UNKNOWN => Verdict::Unknown,
        v => v,
    };
    match verdict {
        Verdict::Is(proto, _) => {
            if buf.is_some() {
                let _ = SNIFF.remove(&sock);
            }
            if CONFIG.load().protocols & proto.bit() == 0 {
                st.state = state::IGNORED;
                count(stats::SNIFF_NOT_CAPTURED);
                return Ok(());
            }
            st.state = proto.state();
            emit_open(sock, args.fd, st)?;
            let first = Args {
                ts_enter: held_ts,
                ..args
            };
            emit(ctx, pid_tgid, &first, held + moved as u64, st, rec, total);
        }
        Verdict::NeedMore => {
            if spend(st) {
                let _ = SNIFF.remove(&sock);
                return Ok(());
            }
            let b = match buf {
                Some(b) => b,
                None => {
                    let _ = SNIFF.insert(&sock, &SniffBuf::default(), 0);
                    let Some(b) = SNIFF.get_ptr_mut(&sock) else {
                        return Ok(());
                    };
                    b
                }
            };
            // SAFETY: valid map value pointer.
            let b: &mut SniffBuf = unsafe { &mut *b };
            b.len[dir] = total as u8;
            b.ts_enter[dir] = held_ts;
            // NeedMore: fewer than PREFIX bytes, zeros after them.
            b.bytes[dir].copy_from_slice(&rec.data[..PREFIX]);
            count(stats::SNIFF_HELD);
        }
        Verdict::Unknown => {
            if let Some(b) = buf {
                // SAFETY: valid map value pointer.
                unsafe { (*b).len[dir] = 0 };
            }
            if spend(st) {
                let _ = SNIFF.remove(&sock);
            }
        }
    }
    Ok(())
}

/// Classify the first `len` bytes of `rec` (leaves zeros after them, up to PREFIX).
#[inline(always)]
pub fn classify_record(rec: &mut DataRecord, len: usize, flow: Flow) -> Verdict {
    // The classifier wants zeros past the bytes; `len` is at most the capture size, so the
    // masked index never wraps.
    for k in 0..PREFIX {
        rec.data[(len + k) & (2 * MAX_CAPTURE - 1)] = 0;
    }
    let Some(x) = EXIT_CTX.get_ptr_mut(0) else {
        return Verdict::Unknown;
    };
    // SAFETY: per-CPU value, ours for this program run.
    let sample = unsafe { &mut (*x).sample };
    sample.bytes.copy_from_slice(&rec.data[..PREFIX]);
    sample.len = if len < PREFIX {
        len as u32
    } else {
        PREFIX as u32
    };
    classify_sample(sample, flow)
}

/// One message of the sniff budget spent; true when none is left (the connection is ignored).
#[inline(always)]
fn spend(st: &mut ConnState) -> bool {
    st.sniff_budget = st.sniff_budget.saturating_sub(1);
    if st.sniff_budget == 0 {
        st.state = state::IGNORED;
        count(stats::SNIFF_REJECTED);
        return true;
    }
    false
}

/// Send the record of `copied` captured bytes of a syscall that moved `moved`.
#[inline(always)]
fn emit(
    ctx: &TracePointContext,
    pid_tgid: u64,
    args: &Args,
    moved: u64,
    st: &mut ConnState,
    rec: &mut DataRecord,
    copied: usize,
) {
    let mut fl = 0u8;
    if (copied as u64) < moved {
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
        ret_len: moved,
        tgid: (pid_tgid >> 32) as u32,
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
    if CONFIG.load().inject != 0 && st.state == state::HTTP1 {
        if args.direction == direction::EGRESS {
            if st.role == role::SERVER {
                inject::response_written(pid_tgid, st.conn_id);
            }
            if let Some(inj) = inject::take_injected(pid_tgid, args.ts_enter) {
                rec.header.trace_id = inj.trace_id;
                rec.header.span_id = inj.span_id;
                rec.header.flags |= flags::INJECTED;
            }
        } else if st.role == role::SERVER
            && copied >= 4
            && stash(ExitCtx {
                pid_tgid,
                moved: moved as i64,
                args: *args,
                held: 0,
                held_ts: 0,
                total: copied as u64,
                sample: Sample::default(),
            })
        {
            // Continues in `inject::inject_head`, which sends the record if it starts a
            // request head; falls through only if that program is not loaded.
            // SAFETY: tail call with this program's own context.
            let _ = unsafe { HEAD_PROG.tail_call(ctx, 0) };
        }
    }
    st.lost = u8::from(!send(rec, copied));
}

/// Copy the header and `copied` captured bytes of `rec` to the ring buffer. False if it was full.
#[inline(always)]
pub fn send(rec: &DataRecord, copied: usize) -> bool {
    let size = core::mem::size_of::<DataHeader>() + (copied & (MAX_CAPTURE * 2 - 1));
    // SAFETY: `size` never exceeds the record.
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const DataRecord as *const u8, size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag(size)).is_err() {
        count(stats::RINGBUF_DROPS_DATA);
        false
    } else {
        count(stats::DATA_EVENTS);
        true
    }
}
