//! Names of maps and globals, used by both sides.

pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_CONNS: &str = "CONNS";
pub const MAP_FDS: &str = "FDS";
pub const MAP_FD_BITS: &str = "FD_BITS";
pub const MAP_SNIFF: &str = "SNIFF";
pub const MAP_EXIT_CTX: &str = "EXIT_CTX";
pub const MAP_SNIFF_PROG: &str = "SNIFF_PROG";
pub const MAP_FILTER_CHILDREN: &str = "FILTER_CHILDREN";
pub const MAP_ARGS: &str = "ARGS";
pub const MAP_ARG_SLOTS: &str = "ARG_SLOTS";
pub const MAP_ARG_SPILL: &str = "ARG_SPILL";
pub const MAP_STATS: &str = "STATS";
pub const MAP_SCRATCH: &str = "SCRATCH";
pub const MAP_CONN_IDS: &str = "CONN_IDS";
pub const MAP_FILTER_PIDS: &str = "FILTER_PIDS";
pub const MAP_FILTER_COMMS: &str = "FILTER_COMMS";
pub const MAP_FILTER_CGROUPS: &str = "FILTER_CGROUPS";
pub const MAP_FILTER_PORTS: &str = "FILTER_PORTS";

pub const MAP_SOCKS: &str = "SOCKS";
pub const MAP_SOCK_STATE: &str = "SOCK_STATE";
pub const MAP_PENDING_SOCKS: &str = "PENDING_SOCKS";
pub const MAP_THREAD_CTX: &str = "THREAD_CTX";
pub const MAP_INJECTED: &str = "INJECTED";
pub const MAP_MSG_SCRATCH: &str = "MSG_SCRATCH";
pub const MAP_HEAD_INFO: &str = "HEAD_INFO";
pub const MAP_CONN_READER: &str = "CONN_READER";
pub const MAP_PROC_MODEL: &str = "PROC_MODEL";
pub const MAP_HEAD_PROG: &str = "HEAD_PROG";

/// Programs of context injection: sock_ops on the cgroup, sk_msg on [`MAP_SOCKS`].
pub const PROG_SOCK_OPS: &str = "inject_sock_ops";
pub const PROG_SK_MSG: &str = "inject_sk_msg";
/// Tail-called by the data exit for request heads of server connections.
pub const PROG_HEAD: &str = "inject_head";

pub const GLOBAL_CONFIG: &str = "CONFIG";
pub const GLOBAL_OFFSETS: &str = "OFFSETS";

/// The one exit program of every data syscall (they share a record layout).
pub const PROG_EXIT_DATA: &str = "exit_data";
/// Tail-called by the data exit for connections whose protocol is not decided yet.
pub const PROG_SNIFF: &str = "exit_sniff";

/// Every syscall tracepoint (category `syscalls`) with the kernel program attached to it; a
/// program may serve several.
pub const TRACEPOINTS: &[(&str, &str)] = &[
    ("enter_read", "sys_enter_read"),
    (PROG_EXIT_DATA, "sys_exit_read"),
    ("enter_write", "sys_enter_write"),
    (PROG_EXIT_DATA, "sys_exit_write"),
    ("enter_readv", "sys_enter_readv"),
    (PROG_EXIT_DATA, "sys_exit_readv"),
    ("enter_writev", "sys_enter_writev"),
    (PROG_EXIT_DATA, "sys_exit_writev"),
    ("enter_recvfrom", "sys_enter_recvfrom"),
    (PROG_EXIT_DATA, "sys_exit_recvfrom"),
    ("enter_sendto", "sys_enter_sendto"),
    (PROG_EXIT_DATA, "sys_exit_sendto"),
    ("enter_recvmsg", "sys_enter_recvmsg"),
    (PROG_EXIT_DATA, "sys_exit_recvmsg"),
    ("enter_sendmsg", "sys_enter_sendmsg"),
    (PROG_EXIT_DATA, "sys_exit_sendmsg"),
    ("enter_sendfile", "sys_enter_sendfile64"),
    (PROG_EXIT_DATA, "sys_exit_sendfile64"),
    ("enter_recvmmsg", "sys_enter_recvmmsg"),
    ("enter_sendmmsg", "sys_enter_sendmmsg"),
    ("enter_connect", "sys_enter_connect"),
    ("exit_connect", "sys_exit_connect"),
    ("exit_accept", "sys_exit_accept"),
    ("exit_accept", "sys_exit_accept4"),
    ("enter_close", "sys_enter_close"),
    // A fd number given a new file by dup2/dup3/dup is forgotten by the fd cache.
    ("exit_dup", "sys_exit_dup"),
    ("exit_dup", "sys_exit_dup2"),
    ("exit_dup", "sys_exit_dup3"),
];

/// Tracepoints of other categories: (program, category, tracepoint).
pub const OTHER_TRACEPOINTS: &[(&str, &str, &str)] = &[
    // A TCP socket reaching CLOSE ends its connection (whoever held its fds).
    ("sock_state", "sock", "inet_sock_set_state"),
    // `--pid` covers children forked later (inetd-style servers).
    ("new_task", "task", "task_newtask"),
];
