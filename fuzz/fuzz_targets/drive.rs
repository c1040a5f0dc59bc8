//! What every parser fuzz target shares: turning the fuzzer's bytes into segments of one
//! connection, fed to a parser of the protocol under test.
//!
//! Input layout: one byte picks the role, then segments, each `ctl len bytes[len]`:
//! `ctl` bit 0 picks the direction, bits 1-3 all set mark bytes lost before the segment,
//! bits 4-6 pick the uncaptured byte count, bit 7 runs `expire` after the segment.

use tracer::protocol::{Direction, ParseOutput, Protocol, Role, Segment};

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

/// Feed `data` to a new parser of `protocol`, expire and close it; what it reported, and the
/// ids of the exchanges it started. Nothing may stay pending after the close.
pub fn drive(protocol: &dyn Protocol, data: &[u8]) -> Option<(ParseOutput, Vec<u64>)> {
    let (&first, mut rest) = data.split_first()?;
    let mut parser = protocol.parser(role(first));
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
    let started = out.started.iter().map(|s| s.id).collect();
    Some((out, started))
}
