//! Synthetic spans for the export tests.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use crate::{
    process::ProcessInfo,
    span::{Endpoints, KeyValue, LinkKind, SpanKind, SpanRecord, SpanStatus, SpanSummary},
};

pub fn process(pid: u32, service: &str) -> Arc<ProcessInfo> {
    Arc::new(ProcessInfo {
        pid,
        exe_name: "nginx".into(),
        exe_path: "/usr/sbin/nginx".into(),
        command_line: "nginx -c /etc/nginx.conf".into(),
        service_name: service.into(),
        resource_attributes: vec![("deployment.environment".into(), "test".into())],
        start_ticks: 1000 + u64::from(pid),
    })
}

/// A server span `GET /users/{n}` of process `pid`, 1 ms long, distinct ids per `n`.
pub fn span(n: u32) -> SpanRecord {
    span_of(process(4242, "shop"), n)
}

pub fn span_of(process: Arc<ProcessInfo>, n: u32) -> SpanRecord {
    let mut trace_id = [0u8; 16];
    trace_id[..4].copy_from_slice(&0xabcd_0000u32.to_be_bytes());
    trace_id[12..].copy_from_slice(&n.to_be_bytes());
    trace_id[4] = 1;
    let mut span_id = [0u8; 8];
    span_id[4..].copy_from_slice(&n.to_be_bytes());
    span_id[0] = 7;
    let start = 1_700_000_000_123_456_789u64 + u64::from(n) * 1000;
    SpanRecord {
        trace_id,
        span_id,
        parent_span_id: None,
        link: LinkKind::Root,
        parent_sampled: None,
        name: "GET".into(),
        kind: SpanKind::Server,
        start_unix_ns: start,
        end_unix_ns: start + 1_000_000,
        status: SpanStatus::Unset,
        attributes: vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", format!("/users/{n}")),
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("server.port", 8080u16),
        ],
        summary: SpanSummary::Http {
            method: "GET".into(),
            path: format!("/users/{n}").into(),
            status_code: Some(200),
        },
        process,
        tid: 77,
        endpoints: Endpoints {
            local: (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8080),
            remote: (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 50000),
        },
    }
}
