//! Feeds arbitrary segments to one Redis (RESP) connection parser; it must never panic, and what
//! it reports must be consistent. Run from the repo root:
//! `AYA_BUILD_SKIP=1 cargo +nightly fuzz run redis -- -max_total_time=60 -dict=fuzz/redis.dict`.
//!
//! Input layout: one byte picks the role, then segments, each `ctl len bytes[len]`:
//! `ctl` bit 0 picks the direction, bits 1-3 all set mark bytes lost before the segment,
//! bits 4-6 pick the uncaptured byte count, bit 7 runs `expire` after the segment.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::protocol::{
    redis::{Command, Redis},
    ConnParser, Direction, ParseOutput, Protocol, Role, Segment,
};

fn role(b: u8) -> Role {
    match b % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    }
}

fn missing(ctl: u8, len: u8) -> u64 {
    match (ctl >> 4) & 7 {
        0..=3 => 0,
        4 => 1,
        5 => 2,
        6 => u64::from(len) * 3,
        _ => u64::MAX,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut parser: Box<dyn ConnParser> = Redis.parser(role(first));
    let mut out = ParseOutput::default();
    let mut ts = 0u64;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = tail.first().copied().unwrap_or(0);
        let tail = tail.get(1..).unwrap_or_default();
        let (bytes, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        ts += 1 + u64::from(ctl);
        let seg = Segment {
            dir: if ctl & 1 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            bytes,
            missing: missing(ctl, len),
            lost_before: ctl & 0x0e == 0x0e,
            ts_enter: ts,
            ts_exit: ts + 1,
            tid: u32::from(ctl),
        };
        parser.feed(&seg, &mut out);
        if ctl & 0x80 != 0 {
            parser.expire(ts + 1, u64::from(len), &mut out);
        }
    }
    parser.expire(ts + 2, 1, &mut out);
    parser.close(ts + 3, &mut out);
    assert!(!parser.has_pending(), "close must leave nothing pending");
    let started: Vec<u64> = out.started.iter().map(|s| s.id).collect();
    let mut last = None;
    for m in out.messages {
        let any: Box<dyn std::any::Any> = m;
        let Ok(c) = any.downcast::<Command>() else {
            panic!("a Redis parser reported another protocol's record");
        };
        assert_ne!(c.role, Role::Unknown);
        assert!(c.start_ns <= c.end_ns, "{c:?}");
        assert!(started.contains(&c.id), "finished without a start: {c:?}");
        // In order: each command finishes after the ones before it.
        assert!(last.is_none_or(|l| l < c.id), "out of order: {c:?}");
        last = Some(c.id);
    }
});
