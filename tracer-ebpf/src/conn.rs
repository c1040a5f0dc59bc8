//! Connection discovery: from a file descriptor to a TCP socket's addresses, by walking
//! task -> files -> fdtable -> file -> socket -> sock with offsets read from the running kernel's
//! BTF (no compile-time layouts).

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
};
use tracer_common::{
    config::filter,
    conn::{role, state, ConnEvent, ConnKey, ConnState, AF_INET, AF_INET6},
    event::{kind, EventHeader},
    offsets::Offsets,
    stats,
};

use crate::maps::{
    count, CONFIG, CONNS, CONN_IDS, EVENTS, FILTER_CGROUPS, FILTER_COMMS, FILTER_PIDS,
    FILTER_PORTS, OFFSETS,
};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u16 = 6;
/// Segments sniffed on a new connection before it is ignored.
const SNIFF_BUDGET_NEW: u8 = 2;

/// Addresses of a TCP socket.
pub struct SockInfo {
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

#[inline(always)]
unsafe fn read_at<T>(base: *const u8, off: u32) -> Result<T, i64> {
    bpf_probe_read_kernel(base.add(off as usize) as *const T).map_err(|e| {
        count(stats::READ_KERNEL_ERRORS);
        e as i64
    })
}

/// The `struct sock *` behind `fd` of the current process if it is a TCP socket, else None.
#[inline(always)]
pub unsafe fn tcp_sock_of_fd(fd: i32) -> Result<Option<*const u8>, i64> {
    if fd < 0 {
        return Ok(None);
    }
    let o: Offsets = OFFSETS.load();
    let task = bpf_get_current_task() as *const u8;
    let files: *const u8 = read_at(task, o.task_files)?;
    let fdt: *const u8 = read_at(files, o.files_fdt)?;
    let max_fds: u32 = read_at(fdt, o.fdt_max_fds)?;
    if fd as u32 >= max_fds {
        return Ok(None);
    }
    let fd_array: *const u8 = read_at(fdt, o.fdt_fd)?;
    let file: *const u8 = read_at(fd_array, (fd as u32) * 8)?;
    if file.is_null() {
        return Ok(None);
    }
    let inode: *const u8 = read_at(file, o.file_f_inode)?;
    let mode: u16 = read_at(inode, o.inode_i_mode)?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(None);
    }
    let socket: *const u8 = read_at(file, o.file_private_data)?;
    let sock_type: u16 = read_at(socket, o.socket_type)?;
    if sock_type != SOCK_STREAM {
        return Ok(None);
    }
    let sk: *const u8 = read_at(socket, o.socket_sk)?;
    if sk.is_null() {
        return Ok(None);
    }
    let family: u16 = read_at(sk, o.skc_family)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    if o.sk_protocol != Offsets::ABSENT {
        let proto: u16 = read_at(sk, o.sk_protocol)?;
        if proto != IPPROTO_TCP {
            return Ok(None);
        }
    }
    Ok(Some(sk))
}

/// Inode number of the network namespace of socket `sk`; 0 when the kernel has none.
#[inline(always)]
pub unsafe fn sock_netns(sk: *const u8) -> Result<u32, i64> {
    let o: Offsets = OFFSETS.load();
    if o.skc_net == Offsets::ABSENT || o.net_ns_inum == Offsets::ABSENT {
        return Ok(0);
    }
    let net: *const u8 = read_at(sk, o.skc_net)?;
    if net.is_null() {
        return Ok(0);
    }
    read_at(net, o.net_ns_inum)
}

#[inline(always)]
pub unsafe fn sock_info(sk: *const u8) -> Result<SockInfo, i64> {
    let o: Offsets = OFFSETS.load();
    let family: u16 = read_at(sk, o.skc_family)?;
    let mut info = SockInfo {
        family,
        local_port: read_at::<u16>(sk, o.skc_num)?,
        remote_port: u16::from_be(read_at::<u16>(sk, o.skc_dport)?),
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    if family == AF_INET {
        let l: [u8; 4] = read_at(sk, o.skc_rcv_saddr)?;
        let r: [u8; 4] = read_at(sk, o.skc_daddr)?;
        info.local_addr[..4].copy_from_slice(&l);
        info.remote_addr[..4].copy_from_slice(&r);
    } else {
        info.local_addr = read_at(sk, o.skc_v6_rcv_saddr)?;
        info.remote_addr = read_at(sk, o.skc_v6_daddr)?;
    }
    Ok(info)
}

/// Whether the current process passes the pid / comm / cgroup filters.
#[inline(always)]
pub fn process_allowed(tgid: u32) -> bool {
    passes_filters(
        tgid,
        || bpf_get_current_comm().unwrap_or([0; 16]),
        // SAFETY: helper without arguments.
        || Some(unsafe { bpf_get_current_cgroup_id() }),
    )
}

/// Whether process `tgid`, named `comm()`, in cgroup `cgroup()`, passes the filters; each is
/// asked only when a filter needs it. `cgroup()` is None for programs attached to the filter's
/// cgroups only.
#[inline(always)]
pub fn passes_filters(
    tgid: u32,
    comm: impl FnOnce() -> [u8; 16],
    cgroup: impl FnOnce() -> Option<u64>,
) -> bool {
    let cfg = CONFIG.load();
    if tgid == cfg.self_tgid {
        return false;
    }
    let f = cfg.filters;
    if f & filter::PID != 0 {
        // SAFETY: read-only lookup of a plain value.
        if unsafe { FILTER_PIDS.get(&tgid) }.is_none() {
            return false;
        }
    }
    if f & filter::COMM != 0 {
        let comm = comm();
        // SAFETY: as above.
        if unsafe { FILTER_COMMS.get(&comm) }.is_none() {
            return false;
        }
    }
    if f & filter::CGROUP != 0 {
        if let Some(cg) = cgroup() {
            // SAFETY: as above.
            if unsafe { FILTER_CGROUPS.get(&cg) }.is_none() {
                return false;
            }
        }
    }
    true
}

#[inline(always)]
fn port_allowed(info: &SockInfo) -> bool {
    if CONFIG.load().filters & filter::PORT == 0 {
        return true;
    }
    // SAFETY: read-only lookups of plain values.
    unsafe {
        FILTER_PORTS.get(&info.local_port).is_some()
            || FILTER_PORTS.get(&info.remote_port).is_some()
    }
}

#[inline(always)]
fn next_conn_id() -> u64 {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    match CONN_IDS.get_ptr_mut(0) {
        Some(p) => {
            // SAFETY: per-CPU slot of a valid map value.
            unsafe {
                *p += 1;
                (*p << 12) | (cpu & 0xfff)
            }
        }
        None => 0,
    }
}

/// Classify `fd` of the current process and record it in the connection table.
/// Returns the state it got.
#[inline(always)]
pub fn track(key: &ConnKey, conn_role: u8) -> Result<u8, i64> {
    // SAFETY: the walk only reads kernel memory through bpf_probe_read_kernel.
    let sk = unsafe { tcp_sock_of_fd(key.fd)? };
    let mut st = ConnState::default();
    if let Some(sk) = sk {
        // SAFETY: as above.
        let info = unsafe { sock_info(sk)? };
        if port_allowed(&info) {
            st.state = state::SNIFFING;
            st.role = conn_role;
            st.conn_id = next_conn_id();
            st.sniff_budget = if conn_role == role::UNKNOWN {
                CONFIG.load().sniff_budget_existing.min(255) as u8
            } else {
                SNIFF_BUDGET_NEW
            };
        }
    }
    if CONNS.insert(key, &st, 0).is_err() {
        count(stats::CONN_TABLE_FULL);
    }
    Ok(st.state)
}

/// Announce a connection whose protocol was just recognised.
#[inline(always)]
pub fn emit_open(key: &ConnKey, st: &ConnState) -> Result<(), i64> {
    // SAFETY: as in `track`.
    let Some(sk) = (unsafe { tcp_sock_of_fd(key.fd)? }) else {
        return Ok(());
    };
    // SAFETY: as above.
    let info = unsafe { sock_info(sk)? };
    // SAFETY: as above.
    let netns = unsafe { sock_netns(sk)? };
    let pid_tgid = bpf_get_current_pid_tgid();
    let ev = ConnEvent {
        header: EventHeader {
            kind: kind::CONN_OPEN,
            _pad: 0,
        },
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: st.conn_id,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd: key.fd,
        family: info.family,
        local_port: info.local_port,
        remote_port: info.remote_port,
        role: st.role,
        _pad: 0,
        netns,
        local_addr: info.local_addr,
        remote_addr: info.remote_addr,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if EVENTS.output::<ConnEvent>(&ev, 0).is_err() {
        count(stats::RINGBUF_DROPS_CONN);
    }
    count(stats::CONNS_OPENED);
    Ok(())
}

/// Tell the agent a traced connection closed.
#[inline(always)]
pub fn emit_close(key: &ConnKey, st: &ConnState) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ev = ConnEvent {
        header: EventHeader {
            kind: kind::CONN_CLOSE,
            _pad: 0,
        },
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: st.conn_id,
        tgid: key.tgid,
        tid: pid_tgid as u32,
        fd: key.fd,
        role: st.role,
        ..ConnEvent::default()
    };
    if EVENTS.output::<ConnEvent>(&ev, 0).is_err() {
        count(stats::RINGBUF_DROPS_CONN);
    }
}
