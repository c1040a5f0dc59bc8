//! Prometheus: RED metrics of the traced HTTP and database traffic (duration histograms named
//! after the OpenTelemetry semantic conventions) and the agent's own counters, served on
//! `/metrics`.
//! Fed as an [`Exporter`] so it sees every span (sampling does not apply to metrics).

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::ConstCounter, family::Family, gauge::ConstGauge, histogram::Histogram, MetricType,
    },
    registry::Registry,
};

use super::{
    queue::{DropReason, ExportCounters},
    Exporter,
};
use crate::{
    protocol::ParseError,
    span::{SpanKind, SpanRecord, SpanSummary},
    stats::Stats,
};

/// Bucket boundaries (seconds) the HTTP semantic conventions advise for request durations.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Distinct routes kept per service; more go to `/{other}` (bounded series count).
pub const MAX_ROUTES_PER_SERVICE: usize = 100;
/// Distinct services kept; more go to `{other}`.
pub const MAX_SERVICES: usize = 1000;
/// Path segments kept in a route.
const MAX_SEGMENTS: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub service: String,
    pub http_request_method: String,
    pub http_response_status_code: String,
    pub http_route: String,
}

/// Bucket boundaries (seconds) the database semantic conventions advise for operation durations.
pub const DB_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Distinct database operations kept per service; more go to `_OTHER`.
pub const MAX_OPERATIONS_PER_SERVICE: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabels {
    pub service: String,
    pub db_system_name: String,
    pub db_operation_name: String,
    /// Empty when the operation succeeded.
    pub error_type: String,
}

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

fn new_db_histogram() -> Histogram {
    Histogram::new(DB_BUCKETS)
}

type Durations = Family<HttpLabels, Histogram, fn() -> Histogram>;
type DbDurations = Family<DbLabels, Histogram, fn() -> Histogram>;

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// A segment that names one resource rather than a kind of them.
fn is_id(seg: &str) -> bool {
    seg.bytes().all(|b| b.is_ascii_digit())
        || is_uuid(seg)
        || (seg.len() >= 16 && is_hex(seg))
        // Long tokens (base64 ids, hashes) are never part of a route template.
        || (seg.len() > 32 && seg.bytes().any(|b| b.is_ascii_digit()))
}

/// A low-cardinality route from a URL path: ids become `{id}`, depth is capped.
pub fn route_of(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::new();
    for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        if i == MAX_SEGMENTS {
            out.push_str("/{rest}");
            break;
        }
        out.push('/');
        out.push_str(if is_id(seg) { "{id}" } else { seg });
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn method_label(m: &str) -> String {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if KNOWN.contains(&m) {
        m.to_string()
    } else {
        "_OTHER".into()
    }
}

/// Routes (or operations) seen per service, capped.
struct Routes {
    by_service: HashMap<String, HashSet<String>>,
    max_per_service: usize,
}

impl Routes {
    fn new(max_per_service: usize) -> Self {
        Self {
            by_service: HashMap::new(),
            max_per_service,
        }
    }

    /// The (service, route) labels to use, within the caps.
    fn admit(&mut self, service: &str, route: String) -> (String, String) {
        self.admit_as(service, &route, "/{other}")
    }

    /// The (service, value) labels to use, within the caps; `other` stands for values past them.
    fn admit_as(&mut self, service: &str, value: &str, other: &str) -> (String, String) {
        if !self.by_service.contains_key(service) && self.by_service.len() >= MAX_SERVICES {
            return ("{other}".into(), other.into());
        }
        let values = self.by_service.entry(service.to_string()).or_default();
        if values.contains(value) {
            return (service.to_string(), value.to_string());
        }
        if values.len() >= self.max_per_service {
            return (service.to_string(), other.into());
        }
        values.insert(value.to_string());
        (service.to_string(), value.to_string())
    }
}

/// The agent's counters, read at scrape time.
#[derive(Debug)]
struct AgentCollector {
    stats: Arc<Stats>,
    exporters: Vec<(&'static str, Arc<ExportCounters>)>,
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn labelled<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    series: &[(L, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        let fm = m.encode_family(labels)?;
        match ty {
            MetricType::Gauge => {
                ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(fm)?
            }
            _ => ConstCounter::new(*v).encode(fm)?,
        }
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.stats;
        let k = |id: u32| s.kernel(id);
        use tracer_common::stats as ks;
        labelled(
            &mut enc,
            "tracer_events",
            "Ring-buffer records read from the kernel, by kind.",
            MetricType::Counter,
            &[
                ([("kind", "data")], s.events_data.get()),
                ([("kind", "conn_open")], s.events_conn_open.get()),
                ([("kind", "conn_close")], s.events_conn_close.get()),
                ([("kind", "malformed")], s.events_malformed.get()),
            ],
        )?;
        counter(
            &mut enc,
            "tracer_captured_bytes",
            "Payload bytes captured.",
            s.bytes_captured.get(),
        )?;
        counter(&mut enc, "tracer_spans", "Spans built.", s.spans.get())?;
        let parse: Vec<([(&str, &str); 1], u64)> = ParseError::ALL
            .iter()
            .map(|e| ([("error", e.as_str())], s.parse_error(*e).get()))
            .collect();
        labelled(
            &mut enc,
            "tracer_parse_errors",
            "Protocol parse errors, by kind.",
            MetricType::Counter,
            &parse,
        )?;
        labelled(
            &mut enc,
            "tracer_drops",
            "Data lost before export, by reason (ring-buffer losses included).",
            MetricType::Counter,
            &[
                ([("reason", "ringbuf_data")], k(ks::RINGBUF_DROPS_DATA)),
                ([("reason", "ringbuf_conn")], k(ks::RINGBUF_DROPS_CONN)),
                ([("reason", "malformed_event")], s.events_malformed.get()),
                (
                    [("reason", "unknown_connection")],
                    s.data_unknown_conn.get(),
                ),
                (
                    [("reason", "connection_evicted")],
                    s.conns_evicted_lru.get(),
                ),
                ([("reason", "overload_shed_records")], s.records_shed.get()),
            ],
        )?;
        counter(
            &mut enc,
            "tracer_requests_unanswered",
            "Requests reported without a response (timeout or close).",
            s.requests_unanswered.get(),
        )?;
        counter(
            &mut enc,
            "tracer_exchanges_truncated",
            "Exchanges reported from a head larger than what was captured or kept.",
            s.exchanges_truncated.get(),
        )?;
        counter(
            &mut enc,
            "tracer_connections_expired",
            "Connections forgotten after idling.",
            s.conns_expired_idle.get(),
        )?;
        counter(
            &mut enc,
            "tracer_connections_shed",
            "Connections no longer captured because the agent fell behind the kernel.",
            s.conns_shed.get(),
        )?;
        gauge(
            &mut enc,
            "tracer_overload_level",
            "Eighths of new connections not captured for overload (0: all captured).",
            s.shed_level.get(),
        )?;
        gauge(
            &mut enc,
            "tracer_connections_active",
            "Connections tracked now.",
            s.conns_active.get(),
        )?;
        let kernel: Vec<([(&str, &str); 1], u64)> = ks::NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| ([("counter", *n)], k(i as u32)))
            .collect();
        labelled(
            &mut enc,
            "tracer_kernel",
            "Counters kept by the kernel programs.",
            MetricType::Counter,
            &kernel,
        )?;

        let per = |f: &dyn Fn(&ExportCounters) -> u64| -> Vec<([(&str, &str); 1], u64)> {
            self.exporters
                .iter()
                .map(|(n, c)| ([("exporter", *n)], f(c)))
                .collect()
        };
        labelled(
            &mut enc,
            "tracer_export_spans",
            "Spans the collector accepted.",
            MetricType::Counter,
            &per(&|c| c.exported.get()),
        )?;
        labelled(
            &mut enc,
            "tracer_export_failures",
            "Export requests that failed after retries.",
            MetricType::Counter,
            &per(&|c| c.failures.get()),
        )?;
        labelled(
            &mut enc,
            "tracer_export_sampled_out_spans",
            "Spans the sampler left out.",
            MetricType::Counter,
            &per(&|c| c.sampled_out.get()),
        )?;
        labelled(
            &mut enc,
            "tracer_export_queue_depth",
            "Spans waiting in the export queue.",
            MetricType::Gauge,
            &per(&|c| c.queue_depth.get()),
        )?;
        let mut drops: Vec<([(&str, &str); 2], u64)> = Vec::new();
        for (n, c) in &self.exporters {
            for r in DropReason::ALL {
                drops.push((
                    [("exporter", *n), ("reason", r.as_str())],
                    c.dropped(r).get(),
                ));
            }
        }
        labelled(
            &mut enc,
            "tracer_export_dropped_spans",
            "Spans lost by an exporter, by reason.",
            MetricType::Counter,
            &drops,
        )
    }
}

pub struct PrometheusExporter {
    server: Durations,
    client: Durations,
    db_client: DbDurations,
    routes: Routes,
    /// Operations seen per service and database system, capped like routes.
    operations: Routes,
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PrometheusExporter {
    /// Bind `addr` now (so a bad address fails at start) and serve /metrics on `rt`.
    pub fn serve(
        addr: SocketAddr,
        stats: Arc<Stats>,
        exporters: Vec<(&'static str, Arc<ExportCounters>)>,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let server: Durations = Family::new_with_constructor(new_histogram);
        let client: Durations = Family::new_with_constructor(new_histogram);
        let db_client: DbDurations = Family::new_with_constructor(new_db_histogram);
        let mut registry = Registry::default();
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests seen by tracer",
            server.clone(),
        );
        registry.register(
            "http_client_request_duration_seconds",
            "Duration of HTTP client requests seen by tracer",
            client.clone(),
        );
        registry.register(
            "db_client_operation_duration_seconds",
            "Duration of database client operations seen by tracer",
            db_client.clone(),
        );
        registry.register_collector(Box::new(AgentCollector { stats, exporters }));
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let task = rt.spawn(accept_loop(listener, Arc::new(registry)));
        Ok(Self {
            server,
            client,
            db_client,
            routes: Routes::new(MAX_ROUTES_PER_SERVICE),
            operations: Routes::new(MAX_OPERATIONS_PER_SERVICE),
            addr: local,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn record(&mut self, s: &SpanRecord) {
        let secs = s.end_unix_ns.saturating_sub(s.start_unix_ns) as f64 / 1e9;
        match &s.summary {
            SpanSummary::Http {
                method,
                path,
                status_code,
            } => {
                let (service, http_route) =
                    self.routes.admit(&s.process.service_name, route_of(path));
                let labels = HttpLabels {
                    service,
                    http_request_method: method_label(method),
                    http_response_status_code: status_code
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    http_route,
                };
                let family = match s.kind {
                    SpanKind::Server => &self.server,
                    SpanKind::Client => &self.client,
                };
                family.get_or_create(&labels).observe(secs);
            }
            SpanSummary::Db {
                system,
                operation,
                error_type,
            } => {
                if s.kind != SpanKind::Client {
                    return;
                }
                let (service, op) =
                    self.operations
                        .admit_as(&s.process.service_name, operation, "_OTHER");
                let labels = DbLabels {
                    service,
                    db_system_name: (*system).to_string(),
                    db_operation_name: op,
                    error_type: error_type.clone().unwrap_or_default(),
                };
                self.db_client.get_or_create(&labels).observe(secs);
            }
        }
    }
}

impl Exporter for PrometheusExporter {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn export(&mut self, spans: &[Arc<SpanRecord>]) {
        for s in spans {
            self.record(s);
        }
    }

    fn shutdown(&mut self) -> Option<String> {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        None
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait, don't spin.
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&registry, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond<B>(registry: &Registry, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, ctype: &str, body: String| {
        let mut r = http::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(v) = http::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            404,
            "text/plain",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return reply(405, "text/plain", "use GET\n".into());
    }
    let openmetrics = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (ctype, res) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            prometheus_client::encoding::text::encode(&mut body, registry),
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry),
        )
    };
    match res {
        Ok(()) => reply(200, ctype, body),
        Err(_) => reply(500, "text/plain", "encoding the metrics failed\n".into()),
    }
}
