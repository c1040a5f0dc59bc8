//! Feeds arbitrary segments to one HTTP/1 connection parser; it must never panic, and what it
//! reports must be consistent. Run from the repo root:
//! `AYA_BUILD_SKIP=1 cargo +nightly fuzz run http1 -- -max_total_time=60 -dict=fuzz/http1.dict`.
//! Input layout: see `drive.rs`.

#![no_main]

mod drive;

use libfuzzer_sys::fuzz_target;
use tracer::protocol::{
    http1::{Http1, Record},
    Role,
};

fuzz_target!(|data: &[u8]| {
    let Some((out, started)) = drive::drive(&Http1, data) else {
        return;
    };
    for m in out.messages {
        let any: Box<dyn std::any::Any> = m;
        let Ok(r) = any.downcast::<Record>() else {
            panic!("an HTTP/1 parser reported another protocol's record");
        };
        let x = &r.exchange;
        assert_ne!(x.role, Role::Unknown);
        assert!(x.start_ns <= x.end_ns, "{x:?}");
        assert!(started.contains(&r.id), "finished without a start: {r:?}");
    }
});
