//! The allocator the binary installs (mimalloc): start-up's memory, and what a burst of traffic
//! freed, go back to the system.
//!
//! mimalloc keeps freed pages for reuse, purging them only after a delay (1 s) and lazily. Start-up
//! (BTF parsing, the programs' ELF and relocations) frees some 30 MiB that the data path never
//! needs again; kept, they would stay resident for the whole run. So start-up runs with
//! immediate purging, and the default delay comes back once the agent is ready, so that the
//! data path keeps its reuse.
//!
//! Transparent huge pages are off for the process: mimalloc asks for them on its arenas, and one
//! 2 MiB page then backs a few KiB in use (an idle agent measured 30 MiB resident with them, 19
//! without).

use libmimalloc_sys::{mi_collect, mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc's `mi_option_e`, which the bindings do not name (their
/// test below fails if it moves).
const PURGE_DELAY: mi_option_t = 15;

/// Turn transparent huge pages off for this process, for memory faulted in from now on.
pub fn no_huge_pages() {
    // SAFETY: prctl with integer arguments only; failure (an old kernel) leaves THP as it was.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Purge freed memory at once until [`StartupMemory::release`].
pub struct StartupMemory {
    purge_delay: std::ffi::c_long,
}

impl StartupMemory {
    pub fn purge_now() -> Self {
        // SAFETY: reading and setting a mimalloc option has no preconditions.
        let purge_delay = unsafe { mi_option_get(PURGE_DELAY) };
        // SAFETY: as above.
        unsafe { mi_option_set(PURGE_DELAY, 0) };
        Self { purge_delay }
    }

    /// Give back what start-up freed, and restore the purge delay.
    pub fn release(self) {
        trim();
        // SAFETY: as in `purge_now`.
        unsafe { mi_option_set(PURGE_DELAY, self.purge_delay) };
    }
}

/// Give back what was freed and is no longer needed: once traffic pauses, what the last burst
/// left (batches, buffers, finished exchanges) need not stay resident until the next one.
pub fn trim() {
    // SAFETY: no preconditions; it only returns pages that hold no live allocation.
    unsafe { mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_after_no_huge_pages() {
        no_huge_pages();
        // SAFETY: as in `no_huge_pages`.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

    #[test]
    fn purge_delay_is_the_option_it_names() {
        // mimalloc 3's default purge delay is 1 s (src/options.c), which none of the options
        // around it defaults to.
        // SAFETY: as in `purge_now`.
        assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 1000);
        let s = StartupMemory::purge_now();
        // SAFETY: as above.
        assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 0);
        s.release();
        // SAFETY: as above.
        assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 1000);
    }
}
