//! The tracepoint programs. Each is a thin wrapper: it extracts the syscall's arguments and
//! hands them to `data` or `conn`; failures are counted in `STATS`, never propagated.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{
    config::filter,
    conn::{role, ConnKey},
    data::{direction, syscall},
    offsets::Offsets,
    stats,
};

use crate::{
    args::src,
    conn::{close_sock, last_reference, pid_allowed, process_allowed, track, TCP_CLOSE},
    data::{arg, enter, exit, ret, sniff, take_args},
    fds::{forget, new_process, surely_no_socket},
    maps::{count, CONFIG, FDS, FILTER_CHILDREN, OFFSETS},
};

/// EINPROGRESS: a non-blocking connect under way still binds the local address.
const EINPROGRESS: i64 = 115;

/// Run a probe body unless built as the no-op floor for benchmarks.
macro_rules! body {
    ($e:expr) => {{
        #[cfg(feature = "noop")]
        {
            0
        }
        #[cfg(not(feature = "noop"))]
        {
            let _: Result<(), i64> = $e;
            0
        }
    }};
}

/// A data syscall's entry: `enter_X` saves (fd, pointer, length) for [`exit_data`].
macro_rules! data_probe {
    ($enter:ident, $ptr_arg:expr, $len_arg:expr, $src:expr, $sys:expr, $dir:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            body!(enter(
                arg(&ctx, 0),
                arg(&ctx, $ptr_arg),
                arg(&ctx, $len_arg),
                $src,
                $sys,
                $dir
            ))
        }
    };
}

/// The exit of every data syscall: one program attached to each `sys_exit_X`, so the verifier
/// checks the capture path once, not once per syscall (it is the costliest program to verify).
/// All `sys_exit_*` records share one layout, and the saved arguments say which syscall it was.
#[tracepoint]
pub fn exit_data(ctx: TracePointContext) -> u32 {
    body!(exit(&ctx))
}

/// Tail-called by [`exit_data`] while a connection's protocol is undecided.
#[tracepoint]
pub fn exit_sniff(ctx: TracePointContext) -> u32 {
    body!(sniff(&ctx))
}

// ssize_t read(int fd, void *buf, size_t count);
data_probe!(
    enter_read,
    1,
    2,
    src::BUF,
    syscall::READ,
    direction::INGRESS
);
// ssize_t write(int fd, const void *buf, size_t count);
data_probe!(
    enter_write,
    1,
    2,
    src::BUF,
    syscall::WRITE,
    direction::EGRESS
);
// ssize_t readv(int fd, const struct iovec *iov, int iovcnt);
data_probe!(
    enter_readv,
    1,
    2,
    src::IOV,
    syscall::READV,
    direction::INGRESS
);
// ssize_t writev(int fd, const struct iovec *iov, int iovcnt);
data_probe!(
    enter_writev,
    1,
    2,
    src::IOV,
    syscall::WRITEV,
    direction::EGRESS
);
// ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src, socklen_t *alen);
data_probe!(
    enter_recvfrom,
    1,
    2,
    src::BUF,
    syscall::RECVFROM,
    direction::INGRESS
);
// ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *dst, socklen_t alen);
data_probe!(
    enter_sendto,
    1,
    2,
    src::BUF,
    syscall::SENDTO,
    direction::EGRESS
);
// ssize_t recvmsg(int fd, struct msghdr *msg, int flags);
data_probe!(
    enter_recvmsg,
    1,
    0,
    src::MSG,
    syscall::RECVMSG,
    direction::INGRESS
);
// ssize_t sendmsg(int fd, const struct msghdr *msg, int flags);
data_probe!(
    enter_sendmsg,
    1,
    0,
    src::MSG,
    syscall::SENDMSG,
    direction::EGRESS
);
// ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count): bytes invisible, count kept.
data_probe!(
    enter_sendfile,
    2,
    3,
    src::NONE,
    syscall::SENDFILE,
    direction::EGRESS
);

/// Count a batch syscall on a traced connection (its messages are not captured).
#[inline(always)]
fn count_batch(fd: u64, id: u32) -> Result<(), i64> {
    let key = ConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: fd as i32,
    };
    // SAFETY: read-only lookup of a plain value.
    if !surely_no_socket(&key) && unsafe { FDS.get(&key) }.is_some_and(|e| e.sock != 0) {
        count(id);
    }
    Ok(())
}

// int recvmmsg(int fd, struct mmsghdr *msgvec, unsigned int vlen, int flags, struct timespec *timeout);
#[tracepoint]
pub fn enter_recvmmsg(ctx: TracePointContext) -> u32 {
    body!(count_batch(arg(&ctx, 0), stats::RECVMMSG_CALLS))
}

// int sendmmsg(int fd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
#[tracepoint]
pub fn enter_sendmmsg(ctx: TracePointContext) -> u32 {
    body!(count_batch(arg(&ctx, 0), stats::SENDMMSG_CALLS))
}

// int connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    body!(enter_conn(arg(&ctx, 0)))
}

#[inline(always)]
fn enter_conn(fd: u64) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !process_allowed((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let args = crate::args::Args {
        ts_enter: 0,
        ptr: 0,
        len: 0,
        fd: fd as i32,
        src: src::NONE,
        syscall: 0,
        direction: 0,
        flags: 0,
        sock: 0,
    };
    crate::data::save_args(pid_tgid, args);
    Ok(())
}

#[tracepoint]
pub fn exit_connect(ctx: TracePointContext) -> u32 {
    body!(exit_conn(&ctx))
}

#[inline(always)]
fn exit_conn(ctx: &TracePointContext) -> Result<(), i64> {
    let Some((pid_tgid, args)) = take_args() else {
        return Ok(());
    };
    let r = ret(ctx);
    if r != 0 && r != -EINPROGRESS {
        return Ok(());
    }
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: args.fd,
    };
    track(&key, role::CLIENT)
}

// int accept(int fd, struct sockaddr *addr, socklen_t *addrlen);
// int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
// Both return the new fd: one program attached to both exits.
#[tracepoint]
pub fn exit_accept(ctx: TracePointContext) -> u32 {
    body!(exit_acc(&ctx))
}

#[inline(always)]
fn exit_acc(ctx: &TracePointContext) -> Result<(), i64> {
    let fd = ret(ctx);
    if fd < 0 {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !process_allowed(tgid) {
        return Ok(());
    }
    track(
        &ConnKey {
            tgid,
            fd: fd as i32,
        },
        role::SERVER,
    )
}

// int close(int fd);
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    body!(on_close(arg(&ctx, 0)))
}

/// A socket's fd is forgotten by the fd cache (other fds are kept: see `maps::FDS`); the
/// connection ends if this was the socket's last fd.
#[inline(always)]
fn on_close(fd: u64) -> Result<(), i64> {
    let key = ConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: fd as i32,
    };
    if surely_no_socket(&key) {
        return Ok(());
    }
    // SAFETY: read-only lookup; the value is copied.
    let Some(e) = (unsafe { FDS.get(&key) }).copied() else {
        return Ok(());
    };
    if e.sock == 0 {
        return Ok(());
    }
    forget(&key);
    // SAFETY: the fd table is only read through bpf_probe_read_kernel.
    if unsafe { last_reference(key.fd) } {
        close_sock(e.sock);
    }
    Ok(())
}

// int dup(int oldfd); int dup2(int oldfd, int newfd); int dup3(int oldfd, int newfd, int flags);
// The returned fd holds another file now: forgotten by the fd cache.
#[tracepoint]
pub fn exit_dup(ctx: TracePointContext) -> u32 {
    body!(on_dup(&ctx))
}

#[inline(always)]
fn on_dup(ctx: &TracePointContext) -> Result<(), i64> {
    let fd = ret(ctx);
    if fd < 0 {
        return Ok(());
    }
    let key = ConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: fd as i32,
    };
    forget(&key);
    Ok(())
}

/// `sock:inet_sock_set_state`: a TCP socket reaching CLOSE ends its connection, whoever holds
/// its fds (a process that exited without closing them, a child that inherited them).
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    body!(on_sock_state(&ctx))
}

#[inline(always)]
fn on_sock_state(ctx: &TracePointContext) -> Result<(), i64> {
    let o: Offsets = OFFSETS.load();
    // SAFETY: offsets of the record's fields, read from its tracefs format by the agent.
    let new_state: i32 = unsafe { ctx.read_at(o.tp_state_newstate as usize) }?;
    if new_state != i32::from(TCP_CLOSE) {
        return Ok(());
    }
    // SAFETY: as above.
    let sk: u64 = unsafe { ctx.read_at(o.tp_state_skaddr as usize) }?;
    // A socket some fd still refers to is not done: after a FIN it can still hold data the
    // process has yet to read (a client that shut down its side reads the answer after CLOSE).
    // Its last close ends it; an orphaned one (its process exited) ends here.
    // SAFETY: kernel memory is only read through bpf_probe_read_kernel.
    let owner: u64 = unsafe { crate::conn::read_at(sk as *const u8, o.sk_socket) }?;
    if owner != 0 {
        return Ok(());
    }
    close_sock(sk);
    Ok(())
}

const CLONE_THREAD: u64 = 0x10000;

/// `task:task_newtask` (runs in the parent): with `--pid`, a process forked by a traced one is
/// traced too (inetd-style servers answer from a child).
#[tracepoint]
pub fn new_task(ctx: TracePointContext) -> u32 {
    body!(on_new_task(&ctx))
}

#[inline(always)]
fn on_new_task(ctx: &TracePointContext) -> Result<(), i64> {
    let o: Offsets = OFFSETS.load();
    // SAFETY: offsets of the record's fields, read from its tracefs format by the agent.
    let flags: u64 = unsafe { ctx.read_at(o.tp_newtask_flags as usize) }?;
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let child: u32 = unsafe { ctx.read_at(o.tp_newtask_pid as usize) }?;
    new_process(child);
    if CONFIG.load().filters & filter::PID == 0
        || !pid_allowed((bpf_get_current_pid_tgid() >> 32) as u32)
    {
        return Ok(());
    }
    if FILTER_CHILDREN.insert(&child, &1, 0).is_ok() {
        count(stats::CHILDREN_TRACED);
    }
    Ok(())
}
