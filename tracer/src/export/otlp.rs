//! OTLP traces through `opentelemetry-otlp` (gRPC, HTTP protobuf, HTTP JSON). Spans are turned
//! into the SDK's `SpanData` directly (no tracer, no span processor) and handed to the crate's
//! `SpanExporter` in batches, one export call per traced process so each carries that process's
//! resource (set with `SpanExporter::set_resource` before the call).

use std::{borrow::Cow, num::NonZeroUsize, sync::Arc, time::Duration};

use lru::LruCache;
use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState},
    InstrumentationScope, KeyValue as OtelKv, Value as OtelValue,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
    Resource,
};

use super::queue::BatchSink;
use crate::{
    process::ProcessInfo,
    span::{LinkKind, SpanKind, SpanRecord, SpanStatus, Value},
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
pub fn resource_attributes(p: &ProcessInfo, base: &ResourceBase) -> Vec<(String, OtelValue)> {
    let mut attrs: Vec<(String, OtelValue)> = Vec::with_capacity(16);
    fn set(attrs: &mut Vec<(String, OtelValue)>, k: &str, v: OtelValue) {
        match attrs.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => attrs.push((k.to_string(), v)),
        }
    }
    set(&mut attrs, "service.name", p.service_name.clone().into());
    set(
        &mut attrs,
        "service.instance.id",
        format!("{}-{}-{}", base.host_name, p.pid, p.start_ticks).into(),
    );
    set(&mut attrs, "process.pid", i64::from(p.pid).into());
    set(
        &mut attrs,
        "process.executable.name",
        p.exe_name.clone().into(),
    );
    if !p.exe_path.is_empty() {
        set(
            &mut attrs,
            "process.executable.path",
            p.exe_path.clone().into(),
        );
    }
    if !p.command_line.is_empty() {
        set(
            &mut attrs,
            "process.command_line",
            p.command_line.clone().into(),
        );
    }
    set(&mut attrs, "host.name", base.host_name.clone().into());
    set(&mut attrs, "os.type", "linux".into());
    set(&mut attrs, "telemetry.distro.name", "tracer".into());
    set(
        &mut attrs,
        "telemetry.distro.version",
        env!("CARGO_PKG_VERSION").into(),
    );
    for (k, v) in &base.extra {
        if !PER_PROCESS.contains(&k.as_str()) && !k.starts_with("process.") {
            set(&mut attrs, k, v.clone().into());
        }
    }
    for (k, v) in &p.resource_attributes {
        set(&mut attrs, k, v.clone().into());
    }
    set(&mut attrs, "service.name", p.service_name.clone().into());
    attrs
}

pub fn resource(p: &ProcessInfo, base: &ResourceBase) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            resource_attributes(p, base)
                .into_iter()
                .map(|(k, v)| OtelKv::new(k, v)),
        )
        .build()
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("tracer")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn unix(ns: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The SDK's view of a span: what the OTLP exporter encodes.
pub fn span_data(s: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let mut attributes: Vec<OtelKv> = Vec::with_capacity(s.attributes.len() + 2);
    for kv in &s.attributes {
        let v = match &kv.value {
            Value::Str(v) => OtelValue::from(v.clone()),
            Value::Int(i) => OtelValue::I64(*i),
            Value::Bool(b) => OtelValue::Bool(*b),
        };
        attributes.push(OtelKv::new(kv.key, v));
    }
    attributes.push(OtelKv::new("tracer.link", s.link.as_str()));
    attributes.push(OtelKv::new("thread.id", i64::from(s.tid)));
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: s.parent_span_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        // Parents from headers or from the peer's client span live in another process.
        parent_span_is_remote: matches!(
            s.link,
            LinkKind::Header | LinkKind::Injected | LinkKind::Connection
        ),
        span_kind: match s.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(s.name.clone()),
        start_time: unix(s.start_unix_ns),
        end_time: unix(s.end_unix_ns.max(s.start_unix_ns)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &s.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error { message } => Status::error(message.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}

/// Adds the configured headers to each HTTP request, over those the crate took from the
/// environment (so `--otlp-header` wins over `OTEL_EXPORTER_OTLP_HEADERS`).
#[derive(Debug)]
struct HeaderClient {
    inner: reqwest::Client,
    headers: http::HeaderMap,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HeaderClient {
    async fn send_bytes(
        &self,
        mut request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        for (k, v) in &self.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        self.inner.send_bytes(request).await
    }
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

/// The crate's exporter for `cfg`. Must run where a tokio reactor is reachable (`rt`).
pub fn build_exporter(
    cfg: &OtlpConfig,
    rt: &tokio::runtime::Handle,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    install_crypto_provider();
    let _guard = rt.enter();
    let headers = header_map(&cfg.headers)?;
    let https = cfg.endpoint.starts_with("https://");
    let built = match cfg.protocol {
        Protocol::Grpc => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.endpoint.clone())
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_timeout(cfg.timeout);
            if cfg.gzip {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            if https {
                let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
                if let Some(pem) = &cfg.ca_pem {
                    tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                }
                b = b.with_tls_config(tls);
            }
            if !headers.is_empty() {
                let md = tonic::metadata::MetadataMap::from_headers(headers);
                b = b.with_interceptor(move |mut req: tonic::Request<()>| {
                    for kv in md.iter() {
                        match kv {
                            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                                req.metadata_mut().insert(k.clone(), v.clone());
                            }
                            tonic::metadata::KeyAndValueRef::Binary(k, v) => {
                                req.metadata_mut().insert_bin(k.clone(), v.clone());
                            }
                        }
                    }
                    Ok(req)
                });
            }
            b.build()
        }
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            let mut client = reqwest::Client::builder().timeout(cfg.timeout);
            if let Some(pem) = &cfg.ca_pem {
                for cert in reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("invalid CA certificate: {e}"))?
                {
                    client = client.add_root_certificate(cert);
                }
            }
            let client = client
                .build()
                .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(HeaderClient {
                    inner: client,
                    headers,
                })
                .with_endpoint(cfg.endpoint.clone())
                .with_protocol(if cfg.protocol == Protocol::HttpJson {
                    opentelemetry_otlp::Protocol::HttpJson
                } else {
                    opentelemetry_otlp::Protocol::HttpBinary
                })
                .with_timeout(cfg.timeout);
            if cfg.gzip {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            b.build()
        }
    };
    built.map_err(|e| e.to_string())
}

/// Sends batches through the crate's exporter (which retries retryable errors with backoff,
/// within the timeout), one call per process.
pub struct OtlpSink {
    exporter: opentelemetry_otlp::SpanExporter,
    base: ResourceBase,
    scope: InstrumentationScope,
    resources: LruCache<(u32, u64), Resource>,
}

impl OtlpSink {
    pub fn new(cfg: &OtlpConfig, rt: &tokio::runtime::Handle) -> Result<Self, String> {
        Ok(Self {
            exporter: build_exporter(cfg, rt)?,
            base: ResourceBase::new(cfg.resource_attributes.clone()),
            scope: scope(),
            resources: LruCache::new(NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN)),
        })
    }

    fn resource(&mut self, p: &ProcessInfo) -> Resource {
        let key = (p.pid, p.start_ticks);
        if let Some(r) = self.resources.get(&key) {
            return r.clone();
        }
        let r = resource(p, &self.base);
        self.resources.put(key, r.clone());
        r
    }
}

/// Spans grouped by process, in first-seen order.
pub fn group_by_process(batch: &[Arc<SpanRecord>]) -> Vec<(Arc<ProcessInfo>, Vec<&SpanRecord>)> {
    let mut groups: Vec<(Arc<ProcessInfo>, Vec<&SpanRecord>)> = Vec::new();
    for s in batch {
        let p = &s.process;
        match groups
            .iter_mut()
            .find(|(g, _)| Arc::ptr_eq(g, p) || (g.pid == p.pid && g.start_ticks == p.start_ticks))
        {
            Some((_, v)) => v.push(s),
            None => groups.push((p.clone(), vec![s])),
        }
    }
    groups
}

impl BatchSink for OtlpSink {
    async fn send(&mut self, batch: Vec<Arc<SpanRecord>>) -> Result<(), (u64, String)> {
        let mut failed = 0u64;
        let mut error = String::new();
        for (process, spans) in group_by_process(&batch) {
            let data: Vec<SpanData> = spans.iter().map(|s| span_data(s, &self.scope)).collect();
            let n = data.len() as u64;
            let res = self.resource(&process);
            self.exporter.set_resource(&res);
            if let Err(e) = self.exporter.export(data).await {
                failed += n;
                error = e.to_string();
            }
        }
        if failed > 0 {
            Err((failed, error))
        } else {
            Ok(())
        }
    }
}
