//! Stage 3: span building. Each protocol's messages become `SpanRecord`s with the attribute
//! names of the stable OpenTelemetry semantic conventions.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Parsed;
use crate::{
    clock::Clock,
    conn::ConnMeta,
    protocol::{
        http1::{Exchange, Outcome},
        Message, Role,
    },
    span::{ExchangeKey, KeyValue, LinkKind, SpanKind, SpanRecord, SpanStatus, ThreadUse},
};

#[derive(Debug, Clone, Copy)]
pub struct SpanOptions {
    /// Keep query-string values instead of redacting them.
    pub show_query_values: bool,
}

/// Headers that carry trace context, kept on the span for the linking stage.
const CONTEXT_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "uber-trace-id",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
];

/// `a=1&b=2` -> `a=REDACTED&b=REDACTED`: query values often hold tokens.
pub fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}=REDACTED"),
            None => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Host and optional port of a Host header (`[v6]:port`, `name:port`, `name`).
fn split_host(h: &str) -> (&str, Option<u16>) {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (h, None),
        },
        _ => (h, None),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The span of one HTTP/1.x exchange.
pub fn http1_span(
    ex: &Exchange,
    meta: &Arc<ConnMeta>,
    clock: &Clock,
    opts: SpanOptions,
) -> SpanRecord {
    let kind = if ex.role == Role::Client {
        SpanKind::Client
    } else {
        SpanKind::Server
    };
    let req = &ex.request;
    let mut a = Vec::with_capacity(16);
    a.push(KeyValue::new("http.request.method", req.method.as_str()));
    a.push(KeyValue::new("url.path", req.path.as_str()));
    if let Some(q) = &req.query {
        let q = if opts.show_query_values {
            q.clone()
        } else {
            redact_query(q)
        };
        a.push(KeyValue::new("url.query", q));
    }
    let (local, remote) = (meta.endpoints.local, meta.endpoints.remote);
    let host = header(&req.headers, "host").map(split_host);
    match kind {
        SpanKind::Server => {
            let addr = host.map_or_else(|| local.0.to_string(), |(h, _)| h.to_string());
            a.push(KeyValue::new("server.address", addr));
            a.push(KeyValue::new(
                "server.port",
                host.and_then(|(_, p)| p).unwrap_or(local.1),
            ));
            a.push(KeyValue::new("client.address", remote.0.to_string()));
            a.push(KeyValue::new("client.port", remote.1));
        }
        SpanKind::Client => {
            let addr = host.map_or_else(|| remote.0.to_string(), |(h, _)| h.to_string());
            a.push(KeyValue::new("server.address", addr));
            a.push(KeyValue::new("server.port", remote.1));
        }
    }
    a.push(KeyValue::new("network.peer.address", remote.0.to_string()));
    a.push(KeyValue::new("network.peer.port", remote.1));
    a.push(KeyValue::new("network.protocol.name", "http"));
    a.push(KeyValue::new(
        "network.protocol.version",
        if req.version_minor == 0 { "1.0" } else { "1.1" },
    ));
    if let Some(ua) = header(&req.headers, "user-agent") {
        a.push(KeyValue::new("user_agent.original", ua));
    }
    a.push(KeyValue::new(
        "http.request.body.size",
        ex.request_body_size,
    ));
    if ex.truncated {
        // Attributes from headers past the cut are missing; body sizes are the declared ones.
        a.push(KeyValue::new("tracer.truncated", true));
    }

    let status = match (&ex.response, ex.outcome) {
        (Some(resp), _) => {
            a.push(KeyValue::new("http.response.status_code", resp.status));
            a.push(KeyValue::new(
                "http.response.body.size",
                ex.response_body_size,
            ));
            let failed = resp.status >= 500 || (kind == SpanKind::Client && resp.status >= 400);
            if failed {
                a.push(KeyValue::new("error.type", resp.status.to_string()));
                SpanStatus::Error {
                    message: format!("HTTP {}", resp.status),
                }
            } else {
                SpanStatus::Unset
            }
        }
        (None, Outcome::Timeout) => {
            a.push(KeyValue::new("error.type", "timeout"));
            SpanStatus::Error {
                message: "no response before the request timeout".into(),
            }
        }
        (None, _) => {
            a.push(KeyValue::new("error.type", "connection_closed"));
            SpanStatus::Error {
                message: "connection closed before a response".into(),
            }
        }
    };
    let context_headers = req
        .headers
        .iter()
        .filter(|(k, _)| CONTEXT_HEADERS.contains(&k.as_str()))
        .cloned()
        .collect();

    SpanRecord {
        trace_id: [0; 16],
        span_id: [0; 8],
        parent_span_id: None,
        link: LinkKind::Root,
        name: format!("{} {}", req.method, req.path),
        kind,
        start_unix_ns: clock.to_unix_ns(ex.start_ns),
        end_unix_ns: clock.to_unix_ns(ex.end_ns.max(ex.start_ns)),
        status,
        attributes: a,
        process: meta.process.clone(),
        tid: ex.request_tid,
        conn_id: meta.conn_id,
        endpoints: meta.endpoints,
        start_mono_ns: ex.start_ns,
        end_mono_ns: ex.end_ns.max(ex.start_ns),
        context_headers,
        exchange: ExchangeKey::default(),
        thread_parent: None,
        conn_parent: None,
        thread_use: if kind == SpanKind::Server
            && ex.response_tid != 0
            && ex.response_tid != ex.request_tid
        {
            ThreadUse::Moved
        } else {
            ThreadUse::Own
        },
        kernel: None,
        via_injected: false,
    }
}

pub fn build(p: &Parsed, clock: &Clock, opts: SpanOptions) -> SpanRecord {
    let mut span = match &p.message {
        Message::Http1(ex) => http1_span(ex, &p.meta, clock, opts),
    };
    span.exchange = p.exchange;
    span.thread_parent = p.thread_parent;
    span.conn_parent = p.conn_parent;
    span.kernel = p.kernel;
    span.via_injected = p.via_injected;
    if p.thread_shared && span.thread_use == ThreadUse::Own {
        span.thread_use = ThreadUse::Shared;
    }
    span
}

pub async fn run(
    mut conns_to_spans: mpsc::Receiver<Vec<Parsed>>,
    spans_to_link: mpsc::Sender<Vec<SpanRecord>>,
    clock: Clock,
    opts: SpanOptions,
) {
    while let Some(batch) = conns_to_spans.recv().await {
        let spans = batch.iter().map(|p| build(p, &clock, opts)).collect();
        if spans_to_link.send(spans).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_values_only() {
        assert_eq!(redact_query("a=1&b=&c"), "a=REDACTED&b=REDACTED&c");
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("::1"), ("::1", None));
        assert_eq!(split_host("h:notaport"), ("h:notaport", None));
    }
}
