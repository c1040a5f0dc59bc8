//! Per-connection queues (pending requests, remembered exchanges) hold one entry at a time on
//! most connections, and idle connections are many: a queue grows to one slot, not to the four
//! `VecDeque` starts with, and gives its memory back once empty. An idle keep-alive connection
//! then holds no slot (a pending HTTP/1 request is 208 bytes); the next exchange allocates one,
//! which costs far less than the rest of its work.

use std::collections::VecDeque;

/// Append `v`, allocating a single slot for a queue that has none.
pub fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.capacity() == 0 {
        q.reserve_exact(1);
    }
    q.push_back(v);
}

/// After removals: an empty queue gives its memory back.
pub fn settle<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 0 {
        q.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_while_busy_none_while_idle() {
        let mut q = VecDeque::new();
        push(&mut q, 1u64);
        assert_eq!(q.capacity(), 1);
        for i in 0..10 {
            push(&mut q, i);
        }
        q.clear();
        settle(&mut q);
        assert_eq!(q.capacity(), 0);
    }
}
