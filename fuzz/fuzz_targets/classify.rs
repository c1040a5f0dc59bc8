//! Feeds arbitrary bytes to the protocol classifier the kernel and the agent share: it must never
//! panic, give `NeedMore` only for fewer than `PREFIX` bytes, and keep its verdict once given
//! as bytes are added (the kernel joins a connection's first messages until a verdict). Run from
//! the repo root: `AYA_BUILD_SKIP=1 cargo +nightly fuzz run classify -- -max_total_time=60`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_common::classify::{classify, Flow, Verdict, PREFIX};

fuzz_target!(|data: &[u8]| {
    for flow in [Flow::ToServer, Flow::ToClient, Flow::Unknown] {
        let mut decided: Option<Verdict> = None;
        for n in 0..=data.len().min(PREFIX + 1) {
            let v = classify(&data[..n], flow);
            if n >= PREFIX {
                assert_ne!(v, Verdict::NeedMore, "{n} bytes");
            }
            match decided {
                Some(d) => assert_eq!(v, d, "verdict changed at {n} bytes ({flow:?})"),
                None if v != Verdict::NeedMore => decided = Some(v),
                None => {}
            }
        }
        assert_eq!(classify(data, flow), decided.unwrap_or(Verdict::NeedMore));
    }
});
