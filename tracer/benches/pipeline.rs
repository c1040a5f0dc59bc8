//! Userspace pipeline cost per span (issue 5, scenario 3): synthetic ring-buffer records of an
//! nginx-like keep-alive exchange (a request read, a response written) go through
//! decode -> connections stage (reassembly + HTTP/1 parse) -> span build -> link -> OTLP
//! protobuf bytes (what the OTLP exporter sends: an `ExportTraceServiceRequest` written by its
//! encoder straight from the spans).
//!
//! Run: `cargo bench -p tracer --bench pipeline` (or `cargo xtask bench`, which reads the
//! medians from target/criterion). Benchmarks process one span per iteration, except those
//! named `*_batch512` (512 spans per iteration, as the exporter batches them).

/// The agent's allocator (see src/main.rs), so stage costs are the agent's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{hint::black_box, mem::size_of, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::SeedableRng;
use tracer::{
    clock::Clock,
    export::otlp::{
        encode::{Encoder, Format},
        ResourceBase,
    },
    pipeline::{
        conns::{ConnsConfig, ConnsStage},
        link::Linker,
        ringbuf::decode,
        spans::{self, SpanOptions},
        Parsed, RawEvent,
    },
    span::SpanRecord,
    stats::Stats,
};
use tracer_common::{
    conn::{role, ConnEvent, AF_INET},
    data::{direction, syscall, DataHeader},
    event::{kind, EventHeader},
};

const REQUEST: &[u8] = b"GET /index.html?user=42 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk/4.2.0\r\nAccept: */*\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 18:02:11 GMT\r\nContent-Type: text/html\r\nContent-Length: 57\r\nLast-Modified: Thu, 26 Nov 2026 18:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6566a9f0-39\"\r\nAccept-Ranges: bytes\r\n\r\n<html><body>hello from the tracer benchmark</body></html>\n";

const CONN_ID: u64 = 7;

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain repr(C) value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
}

fn open_record() -> Vec<u8> {
    let mut ev = ConnEvent {
        header: EventHeader {
            kind: kind::CONN_OPEN,
            _pad: 0,
        },
        ts_ns: 1_000,
        conn_id: CONN_ID,
        tgid: std::process::id(),
        tid: std::process::id(),
        fd: 12,
        family: AF_INET,
        local_port: 8080,
        remote_port: 51834,
        role: role::SERVER,
        ..Default::default()
    };
    ev.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    ev.remote_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    ev.comm[..5].copy_from_slice(b"nginx");
    bytes_of(&ev)
}

fn data_record(dir: u8, sys: u8, payload: &[u8], ts: u64) -> Vec<u8> {
    let h = DataHeader {
        header: EventHeader {
            kind: kind::DATA,
            _pad: 0,
        },
        ts_enter_ns: ts,
        ts_exit_ns: ts + 2_000,
        conn_id: CONN_ID,
        ret_len: payload.len() as u64,
        tgid: std::process::id(),
        tid: std::process::id(),
        fd: 12,
        cap_len: payload.len() as u32,
        direction: dir,
        syscall: sys,
        ..Default::default()
    };
    let mut b = bytes_of(&h);
    b.extend_from_slice(payload);
    b
}

fn stage() -> ConnsStage {
    let mut stage = ConnsStage::new(
        ConnsConfig {
            max_connections: 65_536,
            request_timeout_ns: 30_000_000_000,
            idle_timeout_ns: 300_000_000_000,
            // Never consulted: the benchmark feeds the stage, not the data thread.
            cpu_budget: 1.0,
        },
        Arc::new(Stats::default()),
    );
    let mut out = Vec::new();
    stage.handle(decode(&open_record()).expect("open record"), &mut out);
    stage
}

/// Request and response records with timestamps advancing per exchange.
struct Records {
    ts: u64,
}

impl Records {
    fn next(&mut self) -> (Vec<u8>, Vec<u8>) {
        self.ts += 100_000;
        (
            data_record(direction::INGRESS, syscall::RECVFROM, REQUEST, self.ts),
            data_record(
                direction::EGRESS,
                syscall::WRITEV,
                RESPONSE,
                self.ts + 50_000,
            ),
        )
    }
}

/// decode + connections stage for one exchange: returns the parsed message(s).
fn parse(stage: &mut ConnsStage, req: &[u8], resp: &[u8], out: &mut Vec<Parsed>) {
    stage.handle(decode(req).expect("request record"), out);
    stage.handle(decode(resp).expect("response record"), out);
}

fn one_parsed() -> Parsed {
    let mut st = stage();
    let (req, resp) = Records { ts: 10_000 }.next();
    let mut out = Vec::new();
    parse(&mut st, &req, &resp, &mut out);
    assert_eq!(
        out.len(),
        1,
        "the synthetic exchange must yield one message"
    );
    out.pop().unwrap()
}

fn encode_json(span: &SpanRecord) -> usize {
    tracer::export::stdout::span_json(span).to_string().len()
}

const BATCH: usize = 512;

fn bench(c: &mut Criterion) {
    let clock = Clock::with_offset(1_700_000_000_000_000_000);
    let opts = SpanOptions {
        show_query_values: false,
    };
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));

    let (req, resp) = Records { ts: 10_000 }.next();
    g.bench_function("1_decode", |b| {
        b.iter(|| {
            let a = decode(black_box(&req)).unwrap();
            let b2 = decode(black_box(&resp)).unwrap();
            black_box((a, b2));
        })
    });

    // Keep-alive: the same connection gets exchange after exchange.
    let mut st = stage();
    let mut recs = Records { ts: 10_000 };
    let recorded: Vec<(Vec<u8>, Vec<u8>)> = (0..1024).map(|_| recs.next()).collect();
    let evs: Vec<(RawEvent, RawEvent)> = recorded
        .iter()
        .map(|(q, r)| (decode(q).unwrap(), decode(r).unwrap()))
        .collect();
    let mut i = 0usize;
    let mut out = Vec::with_capacity(4);
    g.bench_function("2_conns_parse", |b| {
        b.iter(|| {
            // Timestamps repeat every 1024 exchanges; the parser does not require them to grow.
            let (q, r) = &evs[i % evs.len()];
            i += 1;
            st.handle(*q, &mut out);
            st.handle(*r, &mut out);
            black_box(out.drain(..).count());
        })
    });

    let parsed = one_parsed();
    g.bench_function("3_span_build", |b| {
        b.iter(|| black_box(spans::build(black_box(&parsed), &clock, opts)))
    });

    let span = spans::build(&parsed, &clock, opts);
    let mut linker = Linker::new(
        rand::rngs::StdRng::seed_from_u64(1),
        65_536,
        Duration::from_secs(5),
    );
    let mut linked = Vec::with_capacity(4);
    g.bench_function("4_link", |b| {
        b.iter_batched(
            || span.clone(),
            |s| {
                linker.link(s, 0, &mut linked);
                black_box(linked.drain(..).count());
            },
            BatchSize::SmallInput,
        )
    });

    linker.link(span.clone(), 0, &mut linked);
    let done = linked.pop().expect("a root span is linked at once");
    g.bench_function("5_encode_json", |b| {
        b.iter(|| black_box(encode_json(black_box(&done))))
    });

    // The exporter's encoder: one request of a batch (of one process), into its reused buffer.
    let mut otlp = Encoder::new(Format::Protobuf, ResourceBase::new(Vec::new()));
    let batch: Vec<SpanRecord> = (0..BATCH).map(|_| done.clone()).collect();
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("5_encode_otlp_batch512", |b| {
        b.iter(|| black_box(otlp.encode(black_box(&batch)).len()))
    });

    // Everything in sequence, from record bytes to OTLP request bytes, 512 exchanges per batch.
    let mut st = stage();
    let mut recs = Records { ts: 10_000 };
    let raw: Vec<(Vec<u8>, Vec<u8>)> = (0..BATCH).map(|_| recs.next()).collect();
    let mut linker = Linker::new(
        rand::rngs::StdRng::seed_from_u64(2),
        65_536,
        Duration::from_secs(5),
    );
    let mut parsed_out = Vec::with_capacity(4);
    let mut spans_out: Vec<SpanRecord> = Vec::with_capacity(BATCH);
    g.bench_function("0_end_to_end_batch512", |b| {
        b.iter(|| {
            for (q, r) in &raw {
                parse(&mut st, q, r, &mut parsed_out);
                for p in parsed_out.drain(..) {
                    linker.link(spans::build(&p, &clock, opts), 0, &mut spans_out);
                }
            }
            black_box(otlp.encode(&spans_out).len());
            spans_out.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
