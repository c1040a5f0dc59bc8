//! Feeds arbitrary segments to one Redis (RESP) connection parser; it must never panic, and what
//! it reports must be consistent. Run from the repo root:
//! `AYA_BUILD_SKIP=1 cargo +nightly fuzz run redis -- -max_total_time=60 -dict=fuzz/redis.dict`.
//! Input layout: see `drive.rs`.

#![no_main]

mod drive;

use libfuzzer_sys::fuzz_target;
use tracer::protocol::{
    redis::{Command, Redis},
    Role,
};

fuzz_target!(|data: &[u8]| {
    let Some((out, started)) = drive::drive(&Redis, data) else {
        return;
    };
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
