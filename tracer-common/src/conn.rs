//! Connections: identity, role and addresses of a traced TCP socket.

use crate::event::EventHeader;

/// Key of the kernel's file descriptor cache: a file descriptor of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
}
crate::assert_size!(ConnKey, 8);

/// Role of the traced process on a connection.
pub mod role {
    /// Open before the tracer started: the traffic decides.
    pub const UNKNOWN: u8 = 0;
    /// The process called connect().
    pub const CLIENT: u8 = 1;
    /// The process got it from accept().
    pub const SERVER: u8 = 2;
}

/// What the kernel does with a connection's data syscalls. One state per protocol of
/// [`crate::classify::Protocol`]; a protocol's connections are captured only when the agent asks
/// for it (`Config::protocols`), else they become [`state::IGNORED`].
pub mod state {
    /// Not traced: not a TCP socket, filtered out, or not a protocol the agent parses.
    pub const IGNORED: u8 = 0;
    /// Traced TCP socket whose protocol is not known yet: the first messages are classified.
    pub const SNIFFING: u8 = 1;
    pub const HTTP1: u8 = 2;
    pub const HTTP2: u8 = 3;
    /// Redis (RESP): data is captured.
    pub const REDIS: u8 = 4;
    /// MySQL (the server's greeting): recognised, not captured yet.
    pub const MYSQL: u8 = 5;

    /// Whether data of a connection in state `s` is captured.
    #[inline(always)]
    pub const fn captured(s: u8) -> bool {
        s > SNIFFING
    }
}

/// Values of [`ConnState::announced`].
pub mod announced {
    /// Not yet: the protocol is undecided, or the open record was lost (it is sent again before
    /// the next record).
    pub const NO: u8 = 0;
    pub const YES: u8 = 1;
    /// The agent dropped the connection from its table while it was open: the next record is
    /// preceded by a new open record with the same connection id, so that the agent carries on
    /// with the connection where it left it.
    pub const AGAIN: u8 = 2;
}

/// Value of the kernel's file descriptor cache: the socket behind the fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdEntry {
    /// Address of the fd's `struct sock`, the key of the connection table; 0 when the fd is not
    /// a traced TCP socket (a file, a pipe, a UNIX socket, a filtered-out connection).
    pub sock: u64,
    /// One of [`role`]: how this process got the fd (accept, connect), for a connection that
    /// must be announced again.
    pub role: u8,
    pub _pad: [u8; 7],
}
crate::assert_size!(FdEntry, 16);

/// Fds per process that [`FdBits`] covers (0 to this − 1).
pub const BITMAP_FDS: usize = 1024;
/// Processes [`FdBits`] entries cover at once (a power of two): process `tgid` owns entry
/// `tgid % FD_BITS_PROCS` when it is free, or when it was forked after the tracer started.
pub const FD_BITS_PROCS: u32 = 4096;

/// What the fd cache knows of one process's fds, as bits: an array lookup, which the verifier
/// inlines, answers where the cache is a hash lookup. A file read or close then costs about what
/// an untraced syscall does. The bits mirror the cache and are written with it. An entry owned
/// by another process, or an fd past the bitmap, takes the cache's path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FdBits {
    /// The owner; 0 when free.
    pub tgid: u32,
    pub _pad: u32,
    /// Fds cached as traced sockets: a clear bit means the cache has no socket for the fd.
    /// Next to the owner, so that a close of a low fd reads one cache line.
    pub sockets: [u64; BITMAP_FDS / 64],
    /// Fds cached as not traced sockets (files, pipes, UNIX sockets, connections of a protocol
    /// not captured).
    pub plain: [u64; BITMAP_FDS / 64],
    /// The sockets of traced fds, direct-mapped by fd (`fd % SOCK_SLOTS`), each slot tagged
    /// with its fd in one word (see [`sock_slot`]): an entry program finds its socket here
    /// without the cache's hash lookup. A slot another fd took sends that fd to the cache.
    pub socks: [u64; SOCK_SLOTS],
}
crate::assert_size!(FdBits, 8 + BITMAP_FDS / 4 + 8 * SOCK_SLOTS);

/// Socket slots per process in [`FdBits`] (a power of two).
pub const SOCK_SLOTS: usize = 64;

/// The top 16 bits of the kernel addresses a socket slot holds: the direct map of x86-64 with
/// 4-level paging, and of arm64 with 48-bit addresses. Sockets elsewhere (5-level paging) are
/// not put in slots; the cache serves them.
const KERNEL_TOP: u64 = 0xffff;

/// The word a socket slot holds for socket `sock` at fd `fd`: the fd is folded into the top
/// 16 bits, which are all ones in the sockets that slots take. One aligned word is read and
/// written whole, so a reader never pairs one fd with another fd's socket. None when the
/// socket or the fd does not fit.
#[inline(always)]
pub const fn sock_slot(sock: u64, fd: i32) -> Option<u64> {
    if sock >> 48 != KERNEL_TOP || fd < 0 || fd > 0xffff {
        return None;
    }
    Some(sock ^ ((fd as u64) << 48))
}

/// The socket a slot's word `w` holds for fd `fd`, if it holds one for that fd (see
/// [`sock_slot`]): only that fd's tag restores the top bits.
#[inline(always)]
pub const fn slot_sock(w: u64, fd: i32) -> Option<u64> {
    if fd < 0 || fd > 0xffff {
        return None;
    }
    let sock = w ^ ((fd as u64) << 48);
    if w == 0 || sock >> 48 != KERNEL_TOP {
        return None;
    }
    Some(sock)
}

/// Address families as in `<sys/socket.h>`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Kernel-side per-connection state: the value of the connection table, keyed by socket (the
/// address of its `struct sock`), so that every fd of a socket, in any process (dup, fork,
/// SCM_RIGHTS, socket activation), is one connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    /// Unique for the agent's lifetime (fd reuse gets a new id); 0 for ignored fds.
    pub conn_id: u64,
    /// One of [`state`].
    pub state: u8,
    /// One of [`role`].
    pub role: u8,
    /// How many more segments may be sniffed before giving up.
    pub sniff_budget: u8,
    /// Non-zero when a record of this connection was lost (ring buffer full).
    pub lost: u8,
    /// One of [`announced`]: whether [`crate::event::kind::CONN_OPEN`] was sent.
    pub announced: u8,
    pub _pad: [u8; 3],
}
crate::assert_size!(ConnState, 16);

/// The first bytes of a connection's messages, per direction, while no verdict is reached
/// (value of the kernel's sniff table, keyed by socket). They are sent ahead of the message
/// that decides, as part of its record, so a request written in small pieces is not cut.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SniffBuf {
    /// Monotonic ns at the entry of the first syscall of each direction's bytes.
    pub ts_enter: [u64; 2],
    /// Bytes held, per direction (indexed by `crate::data::direction`).
    pub len: [u8; 2],
    pub _pad: [u8; 6],
    pub bytes: [[u8; crate::classify::PREFIX]; 2],
}
crate::assert_size!(SniffBuf, 24 + 2 * crate::classify::PREFIX);

/// Record for [`crate::event::kind::CONN_OPEN`] and [`crate::event::kind::CONN_CLOSE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnEvent {
    pub header: EventHeader,
    /// Monotonic ns.
    pub ts_ns: u64,
    pub conn_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// [`AF_INET`] or [`AF_INET6`]; IPv4 addresses sit in the first 4 bytes.
    pub family: u16,
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// One of [`role`].
    pub role: u8,
    /// The kernel state (protocol) of the connection when it was announced.
    pub state: u8,
    /// Inode number of the socket's network namespace (`ls -i /proc/PID/ns/net`); 0 if unknown.
    pub netns: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// Executable name (task comm), NUL padded.
    pub comm: [u8; 16],
    /// Key of the connection in the kernel's connection table (see [`FdEntry::sock`]): the
    /// agent marks that entry [`announced::AGAIN`] to have the connection announced again, or
    /// [`state::IGNORED`] to have it left alone.
    pub sock: u64,
}
crate::assert_size!(ConnEvent, 112);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FdEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SniffBuf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnEvent {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use rstest::rstest;

    use super::*;

    const SOCK: u64 = 0xffff_8880_1234_5680;

    /// (socket, fd stored, fd read back) and what the read finds.
    #[rstest]
    #[case::same_fd(SOCK, 7, 7, Some(SOCK))]
    #[case::another_fd_of_the_slot(SOCK, 7, 7 + SOCK_SLOTS as i32, None)]
    #[case::another_fd(SOCK, 7, 8, None)]
    #[case::fd_zero(SOCK, 0, 0, Some(SOCK))]
    #[case::highest_fd(SOCK, 0xffff, 0xffff, Some(SOCK))]
    #[case::highest_fd_read_as_zero(SOCK, 0xffff, 0, None)]
    fn a_slot_gives_its_socket_to_its_fd_only(
        #[case] sock: u64,
        #[case] stored: i32,
        #[case] read: i32,
        #[case] found: Option<u64>,
    ) {
        let w = sock_slot(sock, stored).unwrap();
        assert_eq!(slot_sock(w, read), found);
    }

    #[rstest]
    #[case::five_level_paging(0xff11_0000_1234_5680, 7)]
    #[case::user_address(0x0000_7fff_1234_5680, 7)]
    #[case::fd_too_large(SOCK, 0x10000)]
    #[case::negative_fd(SOCK, -1)]
    fn sockets_or_fds_that_do_not_fit_take_no_slot(#[case] sock: u64, #[case] fd: i32) {
        assert_eq!(sock_slot(sock, fd), None);
    }

    #[test]
    fn an_empty_slot_holds_nothing() {
        for fd in [0, 1, 63, 64, 1023, 0xfffe, 0xffff] {
            assert_eq!(slot_sock(0, fd), None, "fd {fd}");
        }
    }

    /// Every fd's tag differs from every other's in the top bits, so no slot word written for
    /// one fd restores a kernel address for another (checked over all pairs of one slot's fds).
    #[test]
    fn no_two_fds_share_a_tag() {
        let words: Vec<(i32, u64)> = (0..=0xffff)
            .step_by(SOCK_SLOTS)
            .map(|fd| (fd, sock_slot(SOCK, fd).unwrap()))
            .collect();
        for &(stored, w) in &words {
            for &(read, _) in &words {
                assert_eq!(slot_sock(w, read).is_some(), stored == read);
            }
        }
    }
}
