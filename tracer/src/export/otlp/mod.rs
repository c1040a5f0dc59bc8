//! OTLP traces over gRPC, HTTP protobuf or HTTP JSON. Each batch becomes one export request,
//! written straight from the span records by [`encode`] (one `ResourceSpans` per traced process),
//! and is sent by [`transport`] with bounded retries.

pub mod encode;
pub mod transport;

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::queue::BatchSink;
use crate::{
    process::ProcessInfo,
    span::{SpanRecord, Value},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" | "http/proto" | "http" => Some(Self::HttpProtobuf),
            "http/json" => Some(Self::HttpJson),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        }
    }
}

/// A resolved OTLP configuration (see `config.rs` for where each value comes from).
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// gRPC: the collector's base URL. HTTP: the full URL of the traces endpoint.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every request (flags already merged over the environment's).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub gzip: bool,
    /// Extra trusted CA certificates (PEM) for https endpoints, besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Agent-wide resource attributes (`OTEL_RESOURCE_ATTRIBUTES` of the agent).
    pub resource_attributes: Vec<(String, String)>,
}

/// Parts of every resource that don't depend on the process.
#[derive(Debug, Clone)]
pub struct ResourceBase {
    pub host_name: String,
    pub extra: Vec<(String, String)>,
}

impl ResourceBase {
    pub fn new(extra: Vec<(String, String)>) -> Self {
        Self {
            host_name: host_name(),
            extra,
        }
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Identity attributes the agent-wide list may not override: they describe one process.
const PER_PROCESS: &[&str] = &["service.name", "service.instance.id"];

/// The resource of a traced process: defaults, then the agent's `OTEL_RESOURCE_ATTRIBUTES`,
/// then the process's own `OTEL_RESOURCE_ATTRIBUTES`, then its service name (`OTEL_SERVICE_NAME`).
pub fn resource_attributes(p: &ProcessInfo, base: &ResourceBase) -> Vec<(String, Value)> {
    let mut attrs: Vec<(String, Value)> = Vec::with_capacity(16);
    fn set(attrs: &mut Vec<(String, Value)>, k: &str, v: Value) {
        match attrs.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => attrs.push((k.to_string(), v)),
        }
    }
    set(
        &mut attrs,
        "service.name",
        Value::from(p.service_name.clone()),
    );
    set(
        &mut attrs,
        "service.instance.id",
        Value::from(format!("{}-{}-{}", base.host_name, p.pid, p.start_ticks)),
    );
    set(&mut attrs, "process.pid", Value::Int(i64::from(p.pid)));
    set(
        &mut attrs,
        "process.executable.name",
        Value::from(p.exe_name.clone()),
    );
    if !p.exe_path.is_empty() {
        set(
            &mut attrs,
            "process.executable.path",
            Value::from(p.exe_path.clone()),
        );
    }
    if !p.command_line.is_empty() {
        set(
            &mut attrs,
            "process.command_line",
            Value::from(p.command_line.clone()),
        );
    }
    set(&mut attrs, "host.name", Value::from(base.host_name.clone()));
    set(&mut attrs, "os.type", "linux".into());
    set(&mut attrs, "telemetry.distro.name", "tracer".into());
    set(
        &mut attrs,
        "telemetry.distro.version",
        env!("CARGO_PKG_VERSION").into(),
    );
    for (k, v) in &base.extra {
        if !PER_PROCESS.contains(&k.as_str()) && !k.starts_with("process.") {
            set(&mut attrs, k, Value::from(v.clone()));
        }
    }
    for (k, v) in &p.resource_attributes {
        set(&mut attrs, k, Value::from(v.clone()));
    }
    set(
        &mut attrs,
        "service.name",
        Value::from(p.service_name.clone()),
    );
    attrs
}

pub fn header_map(headers: &[(String, String)]) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("invalid header name '{k}'"))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("invalid value for header '{k}'"))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// Make sure rustls has a crypto provider (we build with ring only).
pub fn install_crypto_provider() {
    // Err means one is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Retries of one request after its first attempt (OTLP's recommended policy).
const MAX_RETRIES: u32 = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_millis(1600);

/// Encodes each batch into one request and sends it, retrying retryable failures with backoff
/// within the timeout.
pub struct OtlpSink {
    encoder: encode::Encoder,
    transport: transport::Transport,
    /// Where request bodies are copied (see `Transport::body`).
    body: bytes::BytesMut,
    timeout: Duration,
}

impl OtlpSink {
    /// Must run where a tokio reactor is reachable (`rt`).
    pub fn new(cfg: &OtlpConfig, rt: &tokio::runtime::Handle) -> Result<Self, String> {
        let format = match cfg.protocol {
            Protocol::Grpc | Protocol::HttpProtobuf => encode::Format::Protobuf,
            Protocol::HttpJson => encode::Format::Json,
        };
        Ok(Self {
            encoder: encode::Encoder::new(
                format,
                ResourceBase::new(cfg.resource_attributes.clone()),
            ),
            transport: transport::Transport::new(cfg, rt)?,
            body: bytes::BytesMut::new(),
            timeout: cfg.timeout,
        })
    }

    /// Sends one request body, retrying while the failure is retryable, the retries last and
    /// the deadline allows.
    async fn deliver(&mut self, body: bytes::Bytes) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let mut delay = FIRST_RETRY_DELAY;
        let mut retries = 0;
        loop {
            let attempt = self.transport.send(body.clone());
            let failure = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(f)) => f,
                Err(_) => {
                    return Err(format!(
                        "no answer within the timeout ({})",
                        humantime::format_duration(self.timeout)
                    ))
                }
            };
            let wait = match failure.retry {
                transport::Retry::No => return Err(failure.message),
                transport::Retry::Backoff => delay,
                // The server's delay, within the deadline's limit below.
                transport::Retry::After(d) => d.max(delay),
            };
            if retries >= MAX_RETRIES || Instant::now() + wait >= deadline {
                return Err(failure.message);
            }
            retries += 1;
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}

impl BatchSink for OtlpSink {
    async fn send(&mut self, batch: Vec<Arc<SpanRecord>>) -> Result<(), (u64, String)> {
        let n = batch.len() as u64;
        let request = self.encoder.encode(&batch);
        let body = self
            .transport
            .body(request, &mut self.body)
            .map_err(|e| (n, e))?;
        drop(batch);
        self.deliver(body).await.map_err(|e| (n, e))
    }
}
