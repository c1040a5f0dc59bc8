//! Kernel struct field offsets, read from the running kernel's BTF by the agent at load time
//! (no compile-time kernel layouts): walking task -> fd table -> socket -> sock; and field
//! offsets of the non-syscall tracepoint records, read from their tracefs `format` files.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub skc_family: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `sock.sk_protocol` when it is a plain u16 (kernels >= 5.6); [`Offsets::ABSENT`] otherwise.
    pub sk_protocol: u32,
    /// `sock_common.skc_net` (a `struct net *`); [`Offsets::ABSENT`] without network namespaces.
    pub skc_net: u32,
    /// `net.ns.inum`, the namespace's inode number; [`Offsets::ABSENT`] as `skc_net`.
    pub net_ns_inum: u32,
    /// `task_struct.tgid` and `.comm`: the process of a program type without the current-task
    /// helpers (6.1's sock_ops), read from `bpf_get_current_task()`.
    pub task_tgid: u32,
    pub task_comm: u32,
    /// `sock_common.skc_state` (u8, TCP states).
    pub skc_state: u32,
    /// The reference count of `struct file`: `f_ref` (6.13+, 0 means one reference) or
    /// `f_count` (1 means one); see [`Offsets::file_ref_zero_based`].
    pub file_count: u32,
    /// Non-zero when [`Offsets::file_count`] is a `file_ref_t` (counts from 0).
    pub file_ref_zero_based: u32,
    /// `sock:inet_sock_set_state` record: `skaddr` and `newstate`.
    pub tp_state_skaddr: u32,
    pub tp_state_newstate: u32,
    /// `task:task_newtask` record: `pid` and `clone_flags`.
    pub tp_newtask_pid: u32,
    pub tp_newtask_flags: u32,
    /// `sock.sk_socket`: NULL once the socket is orphaned (no file refers to it any more).
    pub sk_socket: u32,
}
crate::assert_size!(Offsets, 116);

impl Offsets {
    pub const ABSENT: u32 = u32::MAX;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), every bit pattern valid.
    unsafe impl aya::Pod for super::Offsets {}
}
