//! The fd cache: (process, fd) -> socket, in front of the fd-table walk; and, in front of the
//! cache, the same knowledge as per-process bits and socket slots (see `FdBits`). Every write
//! of the cache goes through here, so they agree.

use tracer_common::{
    conn::{
        role, slot_sock, sock_slot, ConnKey, FdBits, FdEntry, BITMAP_FDS, FD_BITS_PROCS, SOCK_SLOTS,
    },
    stats,
};

use crate::maps::{count, FDS, FD_BITS};

/// Which of an entry's bitmaps.
#[derive(Clone, Copy)]
enum Map {
    Plain,
    Sockets,
}

/// The entry of `key`'s process, if it owns it (or, with `claim`, takes it while free).
#[inline(always)]
fn entry(key: &ConnKey, claim: bool) -> Option<*mut FdBits> {
    if key.fd as u32 as usize >= BITMAP_FDS {
        return None;
    }
    let e = FD_BITS.get_ptr_mut(key.tgid & (FD_BITS_PROCS - 1))?;
    // SAFETY: valid map value pointer; the owner field is read and written in place.
    unsafe {
        let owner = core::ptr::addr_of_mut!((*e).tgid);
        let current = core::ptr::read_volatile(owner);
        if current != key.tgid {
            if !claim || current != 0 {
                return None;
            }
            core::ptr::write_volatile(owner, key.tgid);
        }
    }
    Some(e)
}

/// The word of `key`'s fd in bitmap `m` of entry `e`, and its bit.
#[inline(always)]
fn word(e: *mut FdBits, m: Map, key: &ConnKey) -> (*mut u64, u64) {
    let fd = key.fd as u32;
    let i = ((fd >> 6) as usize) & (BITMAP_FDS / 64 - 1);
    // SAFETY: valid map value pointer; `i` is in bounds.
    let w = unsafe {
        match m {
            Map::Plain => core::ptr::addr_of_mut!((*e).plain[i]),
            Map::Sockets => core::ptr::addr_of_mut!((*e).sockets[i]),
        }
    };
    (w, 1u64 << (fd & 63))
}

#[inline(always)]
fn test(key: &ConnKey, m: Map) -> Option<bool> {
    let e = entry(key, false)?;
    let (w, bit) = word(e, m, key);
    // SAFETY: valid map value pointer.
    Some((unsafe { core::ptr::read_volatile(w) } & bit) != 0)
}

/// Whether `key`'s fd is cached as not a traced socket: one inlined array lookup.
#[inline(always)]
pub fn known_plain(key: &ConnKey) -> bool {
    test(key, Map::Plain) == Some(true)
}

/// Whether the cache surely holds no socket for `key`'s fd (a file, or an fd never seen):
/// one inlined array lookup.
#[inline(always)]
pub fn surely_no_socket(key: &ConnKey) -> bool {
    test(key, Map::Sockets) == Some(false)
}

/// The socket slot of `key`'s fd in entry `e`.
#[inline(always)]
fn slot(e: *mut FdBits, key: &ConnKey) -> *mut u64 {
    let i = (key.fd as u32 as usize) & (SOCK_SLOTS - 1);
    // SAFETY: valid map value pointer; `i` is in bounds.
    unsafe { core::ptr::addr_of_mut!((*e).socks[i]) }
}

/// The socket cached for `key`, from its process's socket slots: an inlined array lookup and
/// one word, where the cache costs a hash lookup. None when the slot holds another fd (or
/// nothing), or the entry is another process's.
#[inline(always)]
pub fn cached_sock(key: &ConnKey) -> Option<u64> {
    let e = entry(key, false)?;
    // SAFETY: valid map value pointer; the slot is one aligned word, written whole.
    let w = unsafe { core::ptr::read_volatile(slot(e, key)) };
    let sock = slot_sock(w, key.fd)?;
    // The entry may have changed hands since the owner check: a new owner's slot is not ours.
    // SAFETY: valid map value pointer.
    if unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*e).tgid)) } != key.tgid {
        return None;
    }
    Some(sock)
}

/// Put `sock` in `key`'s socket slot (0: empty the slot if it holds `key`'s fd).
#[inline(always)]
fn set_slot(key: &ConnKey, sock: u64) {
    let Some(e) = entry(key, false) else {
        return;
    };
    let s = slot(e, key);
    // SAFETY: valid map value pointer; one aligned word, read and written whole.
    unsafe {
        match sock_slot(sock, key.fd) {
            Some(w) if sock != 0 => core::ptr::write_volatile(s, w),
            _ => {
                if slot_sock(core::ptr::read_volatile(s), key.fd).is_some() {
                    core::ptr::write_volatile(s, 0);
                }
                return;
            }
        }
        // As in `set_bits`: an entry that changed hands meanwhile gets its slot back empty (a
        // new owner reading the slot for this very fd in between is the one race left: one
        // syscall's bytes then go to this process's connection).
        if core::ptr::read_volatile(core::ptr::addr_of!((*e).tgid)) != key.tgid {
            core::ptr::write_volatile(s, 0);
        }
    }
}

/// Cache that `key` holds socket `sock` (0: not a traced socket), got the way `role` says.
#[inline(always)]
pub fn remember(key: &ConnKey, sock: u64, role: u8) {
    // The bits first: a socket's bit must be set before its entry can be found.
    set_bits(key, sock == 0, sock != 0);
    set_slot(key, sock);
    let e = FdEntry {
        sock,
        role,
        _pad: [0; 7],
    };
    if FDS.insert(key, &e, 0).is_err() {
        count(stats::CONN_TABLE_FULL);
    }
}

/// Cache that `key` is not traced, so its next syscalls cost one lookup.
#[inline(always)]
pub fn ignore(key: &ConnKey) {
    remember(key, 0, role::UNKNOWN);
}

/// Forget `key` (its fd number now holds another file, or will).
#[inline(always)]
pub fn forget(key: &ConnKey) {
    set_slot(key, 0);
    let _ = FDS.remove(key);
    set_bits(key, false, false);
}

#[inline(always)]
fn set_bits(key: &ConnKey, plain: bool, socket: bool) {
    let Some(e) = entry(key, plain || socket) else {
        return;
    };
    put(e, Map::Plain, key, plain);
    put(e, Map::Sockets, key, socket);
    // SAFETY: valid map value pointer. The one race is the entry changing hands (`new_process`,
    // or two processes claiming a free entry at once) between the owner check and the writes:
    // the plain bit is then taken back, and the other process lost at most one syscall's
    // capture for this fd's number. (A stray socket bit only sends a close to the cache.)
    if plain && unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*e).tgid)) } != key.tgid {
        put(e, Map::Plain, key, false);
    }
}

#[inline(always)]
fn put(e: *mut FdBits, m: Map, key: &ConnKey, on: bool) {
    let (w, bit) = word(e, m, key);
    // SAFETY: valid map value pointer; only the owner's threads write its bits.
    unsafe {
        let v = core::ptr::read_volatile(w);
        core::ptr::write_volatile(w, if on { v | bit } else { v & !bit });
    }
}

/// A new process (forked, not a thread) takes its entry afresh: a recycled process id must not
/// inherit a dead process's bits, and an older owner of the entry falls back to the cache.
#[inline(always)]
pub fn new_process(tgid: u32) {
    let Some(e) = FD_BITS.get_ptr_mut(tgid & (FD_BITS_PROCS - 1)) else {
        return;
    };
    // SAFETY: valid map value pointer. The owner is written first, so an old owner setting a
    // plain bit meanwhile sees the change and takes it back (`set_bits`).
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*e).tgid), tgid);
        for i in 0..BITMAP_FDS / 64 {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*e).plain[i]), 0);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*e).sockets[i]), 0);
        }
        for i in 0..SOCK_SLOTS {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*e).socks[i]), 0);
        }
    }
}
