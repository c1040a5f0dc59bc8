//! An OTLP receiver for the tests: gRPC (tonic, with the official generated service) and HTTP
//! (POST /v1/traces, protobuf or JSON, gzip or not), decoding with `opentelemetry-proto`.
//! It runs on its own runtime so stopping it really closes every connection (an outage).
//! Used by the agent crate's export tests and by the integration tests (behind rotel).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
/// The generated OTLP types, for tests that look into what arrived.
pub use opentelemetry_proto::tonic as proto;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::{any_value, AnyValue, KeyValue},
    trace::v1::Span,
};
use prost::Message;

#[derive(Debug, Clone)]
pub struct Received {
    pub transport: &'static str,
    pub headers: Vec<(String, String)>,
    pub request: ExportTraceServiceRequest,
}

type Store = Arc<Mutex<Vec<Received>>>;

#[derive(Clone)]
struct Grpc(Store);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        self.0.lock().unwrap().push(Received {
            transport: "grpc",
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

pub struct Receiver {
    rt: Option<tokio::runtime::Runtime>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    store: Store,
}

fn decode_http(
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<(&'static str, ExportTraceServiceRequest), String> {
    let gz = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let body = if gz {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        out
    } else {
        body.to_vec()
    };
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/json") {
        serde_json::from_slice(&body)
            .map(|r| ("http/json", r))
            .map_err(|e| e.to_string())
    } else if ctype.starts_with("application/x-protobuf") {
        ExportTraceServiceRequest::decode(body.as_slice())
            .map(|r| ("http/protobuf", r))
            .map_err(|e| e.to_string())
    } else {
        Err(format!("unexpected content-type {ctype:?}"))
    }
}

async fn http_handler(
    store: Store,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |code: u16, body: Vec<u8>| {
        let mut r = http::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        r
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return Ok(reply(404, Vec::new()));
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await else {
        return Ok(reply(400, Vec::new()));
    };
    match decode_http(&parts.headers, &body.to_bytes()) {
        Ok((transport, request)) => {
            let headers = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            store.lock().unwrap().push(Received {
                transport,
                headers,
                request,
            });
            Ok(reply(
                200,
                ExportTraceServiceResponse {
                    partial_success: None,
                }
                .encode_to_vec(),
            ))
        }
        Err(e) => Ok(reply(400, e.into_bytes())),
    }
}

/// Bind 127.0.0.1:port, waiting a little for a just-stopped receiver to let go of it.
fn bind(port: u16) -> std::net::TcpListener {
    let start = Instant::now();
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// A server certificate and key, PEM.
#[derive(Clone)]
pub struct Tls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl Receiver {
    /// Listen on 127.0.0.1 (port 0 = any free port).
    pub fn start(grpc_port: u16, http_port: u16) -> Self {
        Self::start_with(grpc_port, http_port, None)
    }

    /// Listen with TLS on both ports.
    pub fn start_tls(tls: Tls) -> Self {
        Self::start_with(0, 0, Some(tls))
    }

    fn start_with(grpc_port: u16, http_port: u16, tls: Option<Tls>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store: Store = Arc::default();
        let g = bind(grpc_port);
        let h = bind(http_port);
        let (grpc, http) = (g.local_addr().unwrap(), h.local_addr().unwrap());
        g.set_nonblocking(true).unwrap();
        h.set_nonblocking(true).unwrap();
        let svc = TraceServiceServer::new(Grpc(store.clone()))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let grpc_tls = tls.clone();
        rt.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(
                tokio::net::TcpListener::from_std(g).unwrap(),
            );
            let mut server = tonic::transport::Server::builder();
            if let Some(t) = grpc_tls {
                let id = tonic::transport::Identity::from_pem(&t.cert, &t.key);
                server = server
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(id))
                    .unwrap();
            }
            server
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        let acceptor = tls.map(|t| {
            use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
            let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&t.cert)
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_slice(&t.key).unwrap();
            let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        let s = store.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(h).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| http_handler(s.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            let Ok(tls) = a.accept(stream).await else {
                                return;
                            };
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                .await;
                        }
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            rt: Some(rt),
            grpc,
            http,
            store,
        }
    }

    /// Stop serving and close every connection.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.store.lock().unwrap().clone()
    }

    pub fn span_count(&self) -> usize {
        self.received()
            .iter()
            .flat_map(|r| &r.request.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }

    /// Wait until at least `n` spans arrived (panics after `timeout`).
    pub fn wait_spans(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        while self.span_count() < n {
            assert!(
                start.elapsed() < timeout,
                "only {} of {n} spans arrived in {timeout:?}",
                self.span_count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An attribute value as text: strings as they are, numbers and booleans printed.
pub fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Attributes as a map of texts (see [`value_text`]).
pub fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
        .collect()
}

/// One span as it arrived: its resource's attributes, the span, its scope's name.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub resource: HashMap<String, String>,
    pub span: Span,
    pub scope: String,
}

/// Every span of every request, in arrival order.
pub fn received_spans(received: &[Received]) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for r in received {
        for rs in &r.request.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|res| attrs(&res.attributes))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                let scope = ss
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for span in &ss.spans {
                    out.push(ReceivedSpan {
                        resource: resource.clone(),
                        span: span.clone(),
                        scope: scope.clone(),
                    });
                }
            }
        }
    }
    out
}
