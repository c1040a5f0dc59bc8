//! Overload shedding: when the agent falls behind the kernel, or uses more CPU than its budget,
//! a consistent sample of whole connections stops being captured, rather than the ring buffer
//! losing records at random (which costs the traced programs the capture all the same, and
//! leaves spans cut or mislinked) or the agent taking the host's CPU from the traced programs.
//!
//! - The level is how many of [`BUCKETS`] shares of connections are shed. A connection's share
//!   is a hash of its two ends taken in either order, so both ends of one TCP connection on this
//!   host agree.
//! - CPU: the agent's, over windows of [`CPU_WINDOW_NS`], against `--cpu-budget`. Over budget,
//!   the captured shares shrink in proportion (budget / use, with a margin), at most every
//!   [`CPU_STEP_NS`] (the backlog already captured keeps the agent busy for a while after a
//!   step), and never to none.
//! - Fill of the ring buffer, read every [`FILL_EVERY`] records: above [`HIGH`], and no lower
//!   than it has been since the last change, an eighth more is shed per eighth of the ring
//!   filled past [`HIGH`] (at most every [`STEP_NS`]), up to all.
//! - Calm (fill under [`LOW`] and CPU under [`CPU_CALM`] of the budget for [`CALM_NS`]): the
//!   captured shares grow in proportion, as far as the budget (with the margin) allows: all
//!   at once when the load is gone, a share at a time when it is not. Halving the shed shares
//!   instead multiplied a small captured share several times over, straight back over budget.
//! - Shedding is for good: the kernel stops capturing the connection (its syscalls then cost one
//!   lookup), its records already in the ring buffer are discarded, and both are counted. A lower
//!   level spares connections opened from then on.

use std::{hash::BuildHasher, net::SocketAddr};

use crate::{conn::ConnMeta, hash::FastState};

/// Shares of connections the level counts in.
pub const BUCKETS: u8 = 64;
/// Shares one step of the fill (or of calm) moves.
const FILL_STEP: u8 = BUCKETS / 8;
/// Records read between two looks at the fill.
pub const FILL_EVERY: usize = 32;
/// Fill of the ring buffer above which more connections are shed: a quarter, far past what
/// waits between two wake-ups of the reader, and early enough that the backlog to work off stays
/// small.
pub const HIGH: f64 = 0.25;
/// Fill below which the level may fall again.
pub const LOW: f64 = 0.05;
/// Least time between two rises for the fill: each gives the kernel time to stop the
/// connections shed.
pub const STEP_NS: u64 = 10_000_000;
/// Time spent calm before the level falls.
pub const CALM_NS: u64 = 5_000_000_000;
/// How often the agent's CPU is read.
pub const CPU_WINDOW_NS: u64 = 100_000_000;
/// The agent's CPU is not watched until this long after it started.
pub const CPU_SETTLE_NS: u64 = 1_000_000_000;
/// Least time between two rises for CPU.
pub const CPU_STEP_NS: u64 = 300_000_000;
/// Share of the CPU budget under which the agent counts as calm.
pub const CPU_CALM: f64 = 0.7;
/// Aim below the budget when shrinking the captured shares for CPU.
const CPU_MARGIN: f64 = 0.8;

pub struct Shedder {
    level: u8,
    changed: u64,
    /// The lowest fill seen since the level last changed.
    low: f64,
    /// The last fill seen.
    fill: f64,
    calm_since: Option<u64>,
    hasher: FastState,
    /// CPU budget in cores.
    budget: f64,
}

impl Shedder {
    pub fn new(cpu_budget: f64) -> Self {
        Self {
            level: 0,
            changed: 0,
            low: 0.0,
            fill: 0.0,
            calm_since: None,
            hasher: FastState::default(),
            budget: cpu_budget,
        }
    }

    /// The agent used `cores` over the window ending at monotonic `now`: the new level, if it
    /// changed.
    pub fn observe_cpu(&mut self, cores: f64, now: u64) -> Option<u8> {
        let captured = BUCKETS - self.level;
        // What the budget (with the margin) allows at this window's cost per share.
        let allowed = f64::from(captured) * self.budget * CPU_MARGIN / cores.max(f64::MIN_POSITIVE);
        if cores < self.budget * CPU_CALM && self.fill < LOW {
            let since = *self.calm_since.get_or_insert(now);
            if self.level == 0 || now.saturating_sub(since) < CALM_NS {
                return None;
            }
            self.calm_since = Some(now);
            let grown = (allowed.min(f64::from(BUCKETS)) as u8).max(captured + 1);
            return self.set(BUCKETS - grown.min(BUCKETS), now);
        }
        self.calm_since = None;
        if cores <= self.budget || now.saturating_sub(self.changed) < CPU_STEP_NS {
            return None;
        }
        // At least one share stays captured for CPU (the fill may still take it).
        let keep = (allowed.floor().max(1.0) as u8).min(captured);
        self.set(BUCKETS - keep, now)
    }

    /// The ring buffer is `used` full (0 to 1) at monotonic `now`: the new level, if it changed.
    pub fn observe_fill(&mut self, used: f64, now: u64) -> Option<u8> {
        self.fill = used;
        if used > HIGH {
            self.calm_since = None;
            // Still draining since the last rise: give it time.
            let draining = self.level > 0 && used < self.low;
            self.low = self.low.min(used);
            if !draining && now.saturating_sub(self.changed) >= STEP_NS {
                self.low = used;
                // The fuller, the larger the step: an eighth more per eighth of the ring.
                let eighths = 1 + ((used - HIGH) * 8.0) as u8;
                let level = self.level.saturating_add(FILL_STEP * eighths).min(BUCKETS);
                return self.set(level, now);
            }
        } else if used >= LOW {
            self.calm_since = None;
        }
        None
    }

    fn set(&mut self, level: u8, now: u64) -> Option<u8> {
        if level == self.level {
            return None;
        }
        self.level = level;
        self.changed = now;
        Some(level)
    }

    pub fn level(&self) -> u8 {
        self.level
    }

    /// Whether connection `meta` is to be shed at the current level.
    pub fn sheds(&self, meta: &ConnMeta) -> bool {
        self.level > 0 && self.bucket(meta) < self.level
    }

    fn bucket(&self, meta: &ConnMeta) -> u8 {
        let (l, r) = (meta.endpoints.local, meta.endpoints.remote);
        let (a, b) = (SocketAddr::new(l.0, l.1), SocketAddr::new(r.0, r.1));
        let ends = if a <= b { (a, b) } else { (b, a) };
        (self.hasher.hash_one(ends) % u64::from(BUCKETS)) as u8
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const MS: u64 = 1_000_000;

    /// (fill, ms since start) observed in turn, and the level after each.
    #[rstest]
    #[case::quiet(&[(0.0, 0), (0.1, 10), (0.24, 20)], &[0, 0, 0])]
    #[case::rises_an_eighth_per_step(&[(0.3, 10), (0.32, 12), (0.32, 20), (0.34, 30)], &[8, 8, 16, 24])]
    #[case::larger_steps_when_fuller(&[(0.45, 10), (0.55, 20), (0.99, 30)], &[16, 40, 64])]
    #[case::not_while_the_backlog_shrinks(&[(0.35, 10), (0.3, 20), (0.28, 30), (0.29, 40)], &[8, 8, 8, 16])]
    #[case::up_to_all(&[(0.3, 10), (0.3, 20), (0.3, 30), (0.3, 40), (0.3, 50), (0.3, 60), (0.3, 70), (0.3, 80), (0.3, 90)], &[8, 16, 24, 32, 40, 48, 56, 64, 64])]
    fn level_follows_the_fill(#[case] seen: &[(f64, u64)], #[case] levels: &[u8]) {
        let mut s = Shedder::new(1.0);
        let got: Vec<u8> = seen
            .iter()
            .map(|&(used, ms)| {
                s.observe_fill(used, ms * MS);
                s.level()
            })
            .collect();
        assert_eq!(got, levels);
    }

    /// (ms since start, cores used over the window ending then, fill) in turn, and the level
    /// after each. Budget 0.5 cores: the margin aims at 0.4, calm is under 0.35.
    #[rstest]
    #[case::under_budget(&[(400, 0.4, 0.0), (500, 0.49, 0.0)], &[0, 0])]
    // Twice the budget: 64 * 0.4 = 25 shares kept; then 25 * 0.4 / 0.75 = 13.
    #[case::shrinks_in_proportion(&[(400, 1.0, 0.0), (500, 1.0, 0.0), (600, 1.0, 0.0), (800, 0.75, 0.0), (900, 0.45, 0.0)], &[39, 39, 39, 51, 51])]
    #[case::never_all(&[(400, 9.0, 0.0), (800, 9.0, 0.0), (1200, 9.0, 0.0)], &[62, 63, 63])]
    #[case::no_growth_while_busy(&[(400, 0.6, 0.0), (500, 0.4, 0.0), (6000, 0.4, 0.0)], &[22, 22, 22])]
    #[case::no_growth_while_the_ring_fills(&[(400, 0.6, 0.0), (500, 0.2, 0.1), (6000, 0.2, 0.1)], &[22, 22, 22])]
    // 42 shares cost 0.2 cores: 0.4 cores' worth is 84, all of them.
    #[case::all_back_once_the_load_is_gone(&[(400, 0.6, 0.0), (500, 0.2, 0.0), (5500, 0.2, 0.0)], &[22, 22, 0])]
    // 42 shares cost 0.33 cores: 0.4 cores' worth is 50; then 50 * 0.4 / 0.33 = 60.
    #[case::grows_in_proportion(&[(400, 0.6, 0.0), (500, 0.33, 0.0), (5500, 0.33, 0.0), (10500, 0.33, 0.0)], &[22, 22, 14, 4])]
    // 2 shares cost 0.34 cores: 0.4 cores' worth is 2.35, still 2.
    #[case::a_share_at_least(&[(400, 9.0, 0.0), (500, 0.34, 0.0), (5500, 0.34, 0.0)], &[62, 62, 61])]
    #[case::calm_is_broken_by_load(&[(400, 0.6, 0.0), (500, 0.2, 0.0), (3000, 0.4, 0.0), (5500, 0.2, 0.0), (10400, 0.2, 0.0)], &[22, 22, 22, 22, 22])]
    fn level_follows_the_cpu(#[case] seen: &[(u64, f64, f64)], #[case] levels: &[u8]) {
        let mut s = Shedder::new(0.5);
        let got: Vec<u8> = seen
            .iter()
            .map(|&(ms, cores, used)| {
                s.observe_fill(used, ms * MS);
                s.observe_cpu(cores, ms * MS);
                s.level()
            })
            .collect();
        assert_eq!(got, levels);
    }
}
