//! Connections: from a file descriptor to its TCP socket (walking task -> files -> fdtable ->
//! file -> socket -> sock with offsets read from the running kernel's BTF, no compile-time
//! layouts), the fd cache in front of that walk, and the connection table keyed by socket.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
};
use tracer_common::{
    config::filter,
    conn::{announced, role, state, ConnEvent, ConnKey, ConnState, AF_INET, AF_INET6},
    event::{kind, EventHeader},
    offsets::Offsets,
    stats,
};

use crate::maps::{
    count, CONFIG, CONNS, CONN_IDS, EVENTS, FDS, FILTER_CGROUPS, FILTER_CHILDREN, FILTER_COMMS,
    FILTER_PIDS, FILTER_PORTS, OFFSETS, SNIFF,
};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u16 = 6;
/// TCP states (`include/net/tcp_states.h`).
pub const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
/// Messages classified on a new connection before it is ignored: enough for a request written
/// a few bytes at a time, in either direction.
const SNIFF_BUDGET_NEW: u8 = 8;

/// Addresses of a TCP socket.
pub struct SockInfo {
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

#[inline(always)]
pub unsafe fn read_at<T>(base: *const u8, off: u32) -> Result<T, i64> {
    bpf_probe_read_kernel(base.add(off as usize) as *const T).map_err(|e| {
        count(stats::READ_KERNEL_ERRORS);
        e as i64
    })
}

/// The `struct file *` behind `fd` of the current process, or None.
#[inline(always)]
unsafe fn file_of_fd(fd: i32) -> Result<Option<*const u8>, i64> {
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
    Ok((!file.is_null()).then_some(file))
}

/// The `struct sock *` behind `fd` of the current process if it is a TCP socket, else None.
#[inline(always)]
pub unsafe fn tcp_sock_of_fd(fd: i32) -> Result<Option<*const u8>, i64> {
    let Some(file) = file_of_fd(fd)? else {
        return Ok(None);
    };
    let o: Offsets = OFFSETS.load();
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

/// Whether closing `fd` of the current process drops the last reference to its file (then the
/// socket really closes). False when that cannot be told: TCP reaching CLOSE ends it then.
#[inline(always)]
pub unsafe fn last_reference(fd: i32) -> bool {
    let o: Offsets = OFFSETS.load();
    if o.file_count == Offsets::ABSENT {
        return false;
    }
    let Ok(Some(file)) = file_of_fd(fd) else {
        return false;
    };
    let Ok(n) = read_at::<i64>(file, o.file_count) else {
        return false;
    };
    if o.file_ref_zero_based != 0 {
        n == 0
    } else {
        n == 1
    }
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
    if f == 0 {
        return true;
    }
    if f & filter::PID != 0 && !pid_allowed(tgid) {
        return false;
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

/// `--pid`: the process itself or a process forked (at any depth) by one after the start.
#[inline(always)]
pub fn pid_allowed(tgid: u32) -> bool {
    // SAFETY: read-only lookups of plain values.
    unsafe { FILTER_PIDS.get(&tgid).is_some() || FILTER_CHILDREN.get(&tgid).is_some() }
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

/// Start a connection on socket `sk` (new, or seen for the first time): it is classified from
/// its next messages. Returns its entry, None when filtered out or the table refused it.
#[inline(always)]
fn start_conn(sk: *const u8, conn_role: u8) -> Result<Option<*mut ConnState>, i64> {
    // SAFETY: the socket is only read through bpf_probe_read_kernel.
    let info = unsafe { sock_info(sk)? };
    if !port_allowed(&info) {
        return Ok(None);
    }
    let st = ConnState {
        conn_id: next_conn_id(),
        state: state::SNIFFING,
        role: conn_role,
        sniff_budget: if conn_role == role::UNKNOWN {
            CONFIG.load().sniff_budget_existing.min(255) as u8
        } else {
            SNIFF_BUDGET_NEW
        },
        ..ConnState::default()
    };
    let key = sk as u64;
    let _ = SNIFF.remove(&key);
    if CONNS.insert(&key, &st, 0).is_err() {
        count(stats::CONN_TABLE_FULL);
        return Ok(None);
    }
    Ok(CONNS.get_ptr_mut(&key))
}

/// A process got `key.fd` from accept or connect: a new connection on its socket.
#[inline(always)]
pub fn track(key: &ConnKey, conn_role: u8) -> Result<(), i64> {
    // SAFETY: the walk only reads kernel memory through bpf_probe_read_kernel.
    let Some(sk) = (unsafe { tcp_sock_of_fd(key.fd)? }) else {
        crate::fds::remember(key, 0, conn_role);
        return Ok(());
    };
    let traced = start_conn(sk, conn_role)?.is_some();
    crate::fds::remember(key, if traced { sk as u64 } else { 0 }, conn_role);
    Ok(())
}

/// The socket behind `key` (from the fd cache, or by walking the fd table once) and its
/// connection, picking up connections the tracer has not seen open (older than the tracer,
/// inherited over fork or SCM_RIGHTS, or dropped by the agent). None when not traced.
#[inline(always)]
pub fn lookup(key: &ConnKey) -> Result<Option<(u64, *mut ConnState)>, i64> {
    // SAFETY: read-only lookup of a plain value.
    let cached = unsafe { FDS.get(key) }.copied();
    if let Some(e) = cached {
        if e.sock == 0 {
            return Ok(None);
        }
        if let Some(st) = CONNS.get_ptr_mut(&e.sock) {
            return Ok(Some((e.sock, st)));
        }
    }
    // Not cached, or its socket left the table: walk (the fd may hold another file by now).
    // SAFETY: as in `track`.
    let Some(sk) = (unsafe { tcp_sock_of_fd(key.fd)? }) else {
        crate::fds::remember(key, 0, role::UNKNOWN);
        return Ok(None);
    };
    let conn_role = match cached {
        Some(e) if e.sock == sk as u64 => e.role,
        _ => role::UNKNOWN,
    };
    if let Some(st) = CONNS.get_ptr_mut(&(sk as u64)) {
        crate::fds::remember(key, sk as u64, conn_role);
        return Ok(Some((sk as u64, st)));
    }
    let o: Offsets = OFFSETS.load();
    // SAFETY: as above.
    let tcp_state: u8 = unsafe { read_at(sk, o.skc_state)? };
    if tcp_state == TCP_CLOSE || tcp_state == TCP_LISTEN {
        crate::fds::remember(key, 0, conn_role);
        return Ok(None);
    }
    let st = start_conn(sk, conn_role)?;
    crate::fds::remember(key, if st.is_some() { sk as u64 } else { 0 }, conn_role);
    if cached.is_some_and(|e| e.sock == sk as u64) {
        count(stats::CONNS_READOPTED);
    }
    Ok(st.map(|st| (sk as u64, st)))
}

/// Announce a connection whose protocol was just recognised, as the current process sees it.
#[inline(always)]
pub fn emit_open(sock: u64, fd: i32, st: &mut ConnState) -> Result<(), i64> {
    let sk = sock as *const u8;
    // SAFETY: the socket is only read through bpf_probe_read_kernel.
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
        fd,
        family: info.family,
        local_port: info.local_port,
        remote_port: info.remote_port,
        role: st.role,
        state: st.state,
        netns,
        local_addr: info.local_addr,
        remote_addr: info.remote_addr,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        sock,
    };
    if EVENTS.output::<ConnEvent>(&ev, 0).is_err() {
        count(stats::RINGBUF_DROPS_CONN);
    } else {
        st.announced = announced::YES;
    }
    count(stats::CONNS_OPENED);
    Ok(())
}

/// Socket `sock` closed for good: tell the agent if it knew the connection, forget it.
#[inline(always)]
pub fn close_sock(sock: u64) {
    // SAFETY: read-only lookup; the value is copied before removal.
    let Some(st) = (unsafe { CONNS.get(&sock) }).copied() else {
        return;
    };
    let _ = CONNS.remove(&sock);
    let _ = SNIFF.remove(&sock);
    if st.announced == announced::NO {
        return;
    }
    count(stats::CONNS_CLOSED);
    let pid_tgid = bpf_get_current_pid_tgid();
    let ev = ConnEvent {
        header: EventHeader {
            kind: kind::CONN_CLOSE,
            _pad: 0,
        },
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: st.conn_id,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        role: st.role,
        state: st.state,
        sock,
        ..ConnEvent::default()
    };
    if EVENTS.output::<ConnEvent>(&ev, 0).is_err() {
        count(stats::RINGBUF_DROPS_CONN);
    }
}
