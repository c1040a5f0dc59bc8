//! Kernel timestamps (CLOCK_MONOTONIC, from bpf_ktime_get_ns) to Unix time.

/// Converts monotonic nanoseconds to Unix-epoch nanoseconds with an offset taken at start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn new() -> Self {
        Self {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// A clock with a fixed offset (tests, replays).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        u64::try_from(i128::from(mono_ns) + self.offset_ns).unwrap_or(0)
    }

    /// Monotonic now, in the kernel's timebase.
    pub fn mono_now() -> u64 {
        u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
