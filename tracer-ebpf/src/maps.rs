//! Maps and globals. Their names are the consts of `tracer_common::names` (checked by the agent
//! at load time).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf, SockHash},
    Global,
};
use tracer_common::{
    config::Config,
    conn::{ConnKey, ConnState, FdBits, FdEntry, SniffBuf},
    data::DataRecord,
    inject::{HeadInfo, Injected, MsgScratch, ProcModel, SockKey, SockState, ThreadCtx},
    offsets::Offsets,
    stats,
};

use crate::args::{ArgSlot, Args};

/// Sized by the agent at load time (`--ring-buffer-mib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Socket (`struct sock` address) -> connection state: every fd of a socket, in any process,
/// is one connection. Entries go when the socket's last fd is closed or TCP reaches CLOSE; LRU
/// for the rest.
#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// (tgid, fd) -> socket: the fd cache of the hot path, so the fd table is walked once per fd.
/// Non-socket fds are cached too and kept across close (a process opening and closing a file
/// per request then costs one lookup per syscall, not a walk plus an insert and a delete); an
/// fd number given a socket again comes through accept/connect (which overwrite) or dup2/dup3
/// (which forget it).
#[map]
pub static FDS: LruHashMap<ConnKey, FdEntry> = LruHashMap::with_max_entries(65536, 0);

/// tgid % FD_BITS_PROCS -> the fd cache of that process, as bits (see `FdBits`).
#[map]
pub static FD_BITS: Array<FdBits> = Array::with_max_entries(tracer_common::conn::FD_BITS_PROCS, 0);

/// Socket -> first bytes of its messages while its protocol is undecided.
#[map]
pub static SNIFF: LruHashMap<u64, SniffBuf> = LruHashMap::with_max_entries(8192, 0);

/// What a data exit hands to the programs it tail-calls.
#[derive(Clone, Copy)]
pub struct ExitCtx {
    pub pid_tgid: u64,
    pub moved: i64,
    pub args: Args,
    /// Connections being classified: bytes held from earlier messages, at the record's start.
    pub held: u64,
    /// Entry time of the first of those messages.
    pub held_ts: u64,
    /// Bytes in the record: held + captured.
    pub total: u64,
    /// What the classifier reads (in map memory: see `classify_sample`).
    pub sample: tracer_common::classify::Sample,
}

#[map]
pub static EXIT_CTX: PerCpuArray<ExitCtx> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: `exit_sniff`, tail-called for connections whose protocol is undecided.
#[map]
pub static SNIFF_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Processes forked by traced ones after the tracer started (`--pid` covers them).
#[map]
pub static FILTER_CHILDREN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// pid_tgid -> arguments saved at syscall entry, taken at exit. A plain preallocated hash: it is
/// written at every traced entry and emptied at every exit, and LRU bookkeeping on that path cost
/// more than the rest of the entry program. An entry stays only if its thread died inside the
/// syscall; the agent sweeps those (`Probes::sweep_args`), and a full table is counted.
#[map]
pub static ARGS: HashMap<u64, Args> = HashMap::with_max_entries(16384, 0);

/// tid % ARG_SLOTS -> the arguments of that thread's syscall under way (see `ArgSlot`); `ARGS`
/// takes what does not fit.
#[map]
pub static ARG_SLOTS: Array<ArgSlot> = Array::with_max_entries(tracer_common::args::ARG_SLOTS, 0);

/// tid % ARG_SLOTS -> whether that slot's threads ever had entries in `ARGS` (see
/// `tracer_common::args::SPILLED`).
#[map]
pub static ARG_SPILL: Array<u8> = Array::with_max_entries(tracer_common::args::ARG_SLOTS, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::COUNT, 0);

#[map]
pub static SCRATCH: PerCpuArray<DataRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counter for connection ids.
#[map]
pub static CONN_IDS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);
#[map]
pub static FILTER_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);
#[map]
pub static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);
#[map]
pub static FILTER_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

// Context injection (see `inject`).

/// Client sockets of traced processes, under the sk_msg program.
#[map]
pub static SOCKS: SockHash<SockKey> = SockHash::with_max_entries(65536, 0);
/// Request position of each socket in `SOCKS`.
#[map]
pub static SOCK_STATE: LruHashMap<SockKey, SockState> = LruHashMap::with_max_entries(65536, 0);
/// Sockets a traced process is connecting, until established.
#[map]
pub static PENDING_SOCKS: LruHashMap<SockKey, u8> = LruHashMap::with_max_entries(16384, 0);
/// pid_tgid -> the server requests the thread serves and their trace.
#[map]
pub static THREAD_CTX: LruHashMap<u64, ThreadCtx> = LruHashMap::with_max_entries(16384, 0);
/// pid_tgid -> ids the sk_msg program injected during the thread's current send.
#[map]
pub static INJECTED: LruHashMap<u64, Injected> = LruHashMap::with_max_entries(4096, 0);
/// conn_id -> thread that read the connection's last request head, until its response starts.
#[map]
pub static CONN_READER: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);
/// tgid -> how the process answers requests (see `tracer_common::inject::PROVEN_ANSWERS`).
#[map]
pub static PROC_MODEL: LruHashMap<u32, ProcModel> = LruHashMap::with_max_entries(16384, 0);
#[map]
pub static MSG_SCRATCH: PerCpuArray<MsgScratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static HEAD_INFO: PerCpuArray<HeadInfo> = PerCpuArray::with_max_entries(1, 0);
/// Slot 0: `inject_head`, set by the agent only when injection is on.
#[map]
pub static HEAD_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config::default_const());

#[unsafe(no_mangle)]
pub static OFFSETS: Global<Offsets> = Global::new(Offsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    file_f_inode: 0,
    inode_i_mode: 0,
    socket_type: 0,
    socket_sk: 0,
    skc_family: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    sk_protocol: Offsets::ABSENT,
    skc_net: Offsets::ABSENT,
    net_ns_inum: Offsets::ABSENT,
    task_tgid: 0,
    task_comm: 0,
    skc_state: 0,
    file_count: Offsets::ABSENT,
    file_ref_zero_based: 0,
    tp_state_skaddr: 8,
    tp_state_newstate: 20,
    tp_newtask_pid: 8,
    tp_newtask_flags: 32,
    sk_socket: 0,
});

/// Add one to a counter.
#[inline(always)]
pub fn count(id: u32) {
    if let Some(p) = STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU slot, valid map value pointer.
        unsafe { *p += 1 };
    }
}
