//! Zipkin v2 JSON (`POST /api/v2/spans`): the same spans, in Zipkin's model. The local endpoint
//! is the traced process's service, the remote endpoint the peer of the connection.

use std::{net::IpAddr, sync::Arc, time::Duration};

use serde_json::{Map, Value as Json};

use super::queue::BatchSink;
use crate::span::{hex, SpanKind, SpanRecord, SpanStatus, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ZipkinConfig {
    /// Full URL of the spans endpoint.
    pub url: String,
    pub timeout: Duration,
}

fn endpoint(ip: IpAddr, port: u16, service: Option<&str>) -> Json {
    let mut e = Map::new();
    if let Some(s) = service {
        e.insert("serviceName".into(), Json::from(s));
    }
    // Zipkin wants a v4 address in ipv4, also when the socket was dual-stack.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => e.insert("ipv4".into(), Json::from(a.to_string())),
        IpAddr::V6(a) => e.insert("ipv6".into(), Json::from(a.to_string())),
    };
    if port != 0 {
        e.insert("port".into(), Json::from(port));
    }
    Json::Object(e)
}

/// One span in Zipkin v2 JSON.
pub fn span_json(s: &SpanRecord) -> Json {
    let mut tags = Map::new();
    for kv in &s.attributes {
        let v = match &kv.value {
            Value::Str(v) => v.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
        };
        tags.insert(kv.key.to_string(), Json::from(v));
    }
    tags.insert("tracer.link".into(), Json::from(s.link.as_str()));
    tags.insert("thread.id".into(), Json::from(s.tid.to_string()));
    tags.insert("process.pid".into(), Json::from(s.process.pid.to_string()));
    if let SpanStatus::Error { message } = &s.status {
        // Zipkin's convention: the "error" tag marks a failed span.
        tags.insert(
            "error".into(),
            Json::from(if message.is_empty() {
                "error"
            } else {
                message.as_str()
            }),
        );
        tags.insert("otel.status_code".into(), Json::from("ERROR"));
    }
    let (lip, lport) = s.endpoints.local;
    let (rip, rport) = s.endpoints.remote;
    let mut span = Map::new();
    span.insert("traceId".into(), Json::from(hex(&s.trace_id)));
    span.insert("id".into(), Json::from(hex(&s.span_id)));
    if let Some(p) = s.parent_span_id {
        span.insert("parentId".into(), Json::from(hex(&p)));
    }
    span.insert("name".into(), Json::from(s.name.as_str()));
    span.insert(
        "kind".into(),
        Json::from(match s.kind {
            SpanKind::Server => "SERVER",
            SpanKind::Client => "CLIENT",
        }),
    );
    span.insert("timestamp".into(), Json::from(s.start_unix_ns / 1000));
    // Zipkin reads a 0 duration as unknown: round up to at least 1 µs.
    span.insert(
        "duration".into(),
        Json::from((s.end_unix_ns.saturating_sub(s.start_unix_ns) / 1000).max(1)),
    );
    span.insert(
        "localEndpoint".into(),
        endpoint(lip, lport, Some(&s.process.service_name)),
    );
    span.insert("remoteEndpoint".into(), endpoint(rip, rport, None));
    span.insert("tags".into(), Json::Object(tags));
    Json::Object(span)
}

pub struct ZipkinSink {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl ZipkinSink {
    pub fn new(cfg: &ZipkinConfig) -> Result<Self, String> {
        super::otlp::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: cfg.url.clone(),
            timeout: cfg.timeout,
        })
    }

    async fn post(&self, body: &bytes::Bytes) -> Result<(), (bool, String)> {
        let r = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| (true, format!("POST {}: {e}", self.url)))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        // 429 and 5xx may pass later; other refusals will not.
        let retryable = status.as_u16() == 429 || status.is_server_error();
        let text = r.text().await.unwrap_or_default();
        Err((
            retryable,
            format!(
                "POST {}: {status} {}",
                self.url,
                text.chars().take(200).collect::<String>()
            ),
        ))
    }
}

impl BatchSink for ZipkinSink {
    async fn send(&mut self, batch: Vec<Arc<SpanRecord>>) -> Result<(), (u64, String)> {
        let n = batch.len() as u64;
        let spans: Vec<Json> = batch.iter().map(|s| span_json(s)).collect();
        let body = bytes::Bytes::from(Json::Array(spans).to_string());
        // Bounded retries with exponential backoff, all within the timeout.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.post(&body).await {
                Ok(()) => return Ok(()),
                Err((retryable, e)) => {
                    if !retryable
                        || attempts >= 4
                        || tokio::time::Instant::now() + delay >= deadline
                    {
                        return Err((n, e));
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}
