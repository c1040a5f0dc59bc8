//! Kernel-side counters: a per-CPU array indexed by these ids, summed by the agent.

pub const RINGBUF_DROPS_DATA: u32 = 0;
pub const RINGBUF_DROPS_CONN: u32 = 1;
pub const READ_USER_ERRORS: u32 = 2;
pub const READ_KERNEL_ERRORS: u32 = 3;
pub const CONN_TABLE_FULL: u32 = 4;
pub const ARGS_TABLE_FULL: u32 = 5;
pub const SENDMMSG_CALLS: u32 = 6;
pub const RECVMMSG_CALLS: u32 = 7;
pub const SENDFILE_CALLS: u32 = 8;
pub const DATA_EVENTS: u32 = 9;
pub const CONNS_OPENED: u32 = 10;
pub const SNIFF_REJECTED: u32 = 11;
pub const IOV_TRUNCATED: u32 = 12;
/// Request heads a traceparent was inserted into.
pub const INJECT_DONE: u32 = 13;
/// Request heads left alone: they carried a context header already.
pub const INJECT_SKIP_HAS_CONTEXT: u32 = 14;
/// Request heads left alone: their thread served several requests at once, or a context the
/// kernel does not read.
pub const INJECT_SKIP_THREAD: u32 = 15;
/// Sockets whose request boundaries were lost (chunked bodies, pipelining, split heads): not
/// edited again.
pub const INJECT_SOCK_LOST: u32 = 16;
/// Injections that failed in the kernel (the message went out unchanged).
pub const INJECT_ERRORS: u32 = 17;
/// Client sockets put under the injection program.
pub const INJECT_SOCKETS: u32 = 18;
/// Forwarded traceparents (an outgoing request carrying the very traceparent of the request its
/// thread serves, as proxies do) whose parent id was set to the client span's.
pub const INJECT_FORWARDED: u32 = 19;
/// Messages held back (their first bytes kept) while the connection's protocol is undecided.
pub const SNIFF_HELD: u32 = 20;
/// Connections classified as a protocol the agent does not capture.
pub const SNIFF_NOT_CAPTURED: u32 = 21;
/// Traced connections whose socket closed (last fd closed, or TCP reached CLOSE).
pub const CONNS_CLOSED: u32 = 22;
/// Connections announced again after the agent dropped them from its table.
pub const CONNS_READOPTED: u32 = 23;
/// Processes traced because their parent is (`--pid` covers the children forked later).
pub const CHILDREN_TRACED: u32 = 24;
/// Syscall entries saved in the `ARGS` hash because their thread's slot was taken.
pub const ARGS_SLOT_TAKEN: u32 = 25;
/// Number of counters (size of the map).
pub const COUNT: u32 = 26;

/// Names for display, indexed by id.
pub const NAMES: [&str; COUNT as usize] = [
    "ringbuf_drops_data",
    "ringbuf_drops_conn",
    "read_user_errors",
    "read_kernel_errors",
    "conn_table_full",
    "args_table_full",
    "sendmmsg_calls",
    "recvmmsg_calls",
    "sendfile_calls",
    "data_events",
    "conns_opened",
    "sniff_rejected",
    "iov_truncated",
    "inject_done",
    "inject_skip_has_context",
    "inject_skip_thread",
    "inject_sock_lost",
    "inject_errors",
    "inject_sockets",
    "inject_forwarded",
    "sniff_held",
    "sniff_not_captured",
    "conns_closed",
    "conns_readopted",
    "children_traced",
    "args_slot_taken",
];
