//! The tracepoint programs. Each is a thin wrapper: it extracts the syscall's arguments and
//! hands them to `data` or `conn`; failures are counted in `STATS`, never propagated.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{
    conn::{role, state, ConnKey},
    data::{direction, syscall},
    stats,
};

use crate::{
    args::src,
    conn::{emit_close, process_allowed, track},
    data::{arg, enter, exit, ret, take_args},
    maps::{count, CONNS},
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
    if let Some(st) = unsafe { CONNS.get(&key) } {
        if st.state != state::IGNORED {
            count(id);
        }
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
        _pad: 0,
    };
    if crate::maps::ARGS.insert(pid_tgid, args, 0).is_err() {
        count(stats::ARGS_TABLE_FULL);
    }
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
    track(&key, role::CLIENT).map(|_| ())
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
    .map(|_| ())
}

// int close(int fd);
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    body!(on_close(arg(&ctx, 0)))
}

#[inline(always)]
fn on_close(fd: u64) -> Result<(), i64> {
    let key = ConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: fd as i32,
    };
    // SAFETY: read-only lookup; the value is copied before removal.
    let Some(st) = (unsafe { CONNS.get(&key) }).copied() else {
        return Ok(());
    };
    if state::captured(st.state) {
        emit_close(&key, &st);
    }
    let _ = CONNS.remove(&key);
    Ok(())
}
