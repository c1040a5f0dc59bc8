//! Per-connection queues (pending requests, remembered exchanges) hold one entry at a time on
//! most connections, and idle connections are many: a queue grows to one slot, not to the four
//! `VecDeque` starts with, and gives back what a burst (pipelining) made it grow to once empty.

use std::collections::VecDeque;

/// Append `v`, allocating a single slot for a queue that has none.
pub fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.capacity() == 0 {
        q.reserve_exact(1);
    }
    q.push_back(v);
}

/// After removals: an empty queue keeps at most one slot.
pub fn settle<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 1 {
        q.shrink_to(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_while_idle() {
        let mut q = VecDeque::new();
        push(&mut q, 1u64);
        assert_eq!(q.capacity(), 1);
        for i in 0..10 {
            push(&mut q, i);
        }
        q.clear();
        settle(&mut q);
        assert!(q.capacity() <= 1);
    }
}
