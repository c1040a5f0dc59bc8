//! Sending encoded export requests: OTLP/HTTP through reqwest, OTLP/gRPC through tonic with a
//! codec that passes the already encoded request through. Each reports whether a failure may
//! pass on a retry (OTLP's retryable codes).

use std::{io::Write as _, time::Duration};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use tonic::{
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

use super::{header_map, install_crypto_provider, OtlpConfig, Protocol};

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    No,
    /// After the exporter's own backoff.
    Backoff,
    /// Not before the server's delay (`Retry-After`).
    After(Duration),
}

#[derive(Debug)]
pub struct Failure {
    pub retry: Retry,
    pub message: String,
}

/// An error with its causes (`a: b: c`), which is where reqwest and hyper say what happened.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
}

pub enum Transport {
    Http(Http),
    Grpc(Grpc),
}

impl Transport {
    /// Must run where a tokio reactor is reachable (`rt`): the gRPC channel is made there.
    pub fn new(cfg: &OtlpConfig, rt: &tokio::runtime::Handle) -> Result<Self, String> {
        install_crypto_provider();
        match cfg.protocol {
            Protocol::Grpc => Grpc::new(cfg, rt).map(Self::Grpc),
            Protocol::HttpProtobuf | Protocol::HttpJson => Http::new(cfg).map(Self::Http),
        }
    }

    /// The body to send for an encoded request (gzip-compressed for HTTP when configured;
    /// gRPC compresses its messages itself). The uncompressed body is copied into `out`, whose
    /// memory comes back for the next batch once this one's body is dropped: a fresh buffer per
    /// batch came from new pages, which the kernel zeroes first.
    pub fn body(&self, request: &[u8], out: &mut BytesMut) -> Result<Bytes, String> {
        match self {
            Self::Http(h) if h.gzip => {
                let mut z = flate2::write::GzEncoder::new(
                    Vec::with_capacity(request.len() / 4 + 64),
                    flate2::Compression::default(),
                );
                z.write_all(request)
                    .and_then(|()| z.finish())
                    .map(Bytes::from)
                    .map_err(|e| format!("cannot compress the request: {e}"))
            }
            _ => {
                out.clear();
                out.extend_from_slice(request);
                Ok(out.split().freeze())
            }
        }
    }

    pub async fn send(&mut self, body: Bytes) -> Result<(), Failure> {
        match self {
            Self::Http(h) => h.send(body).await,
            Self::Grpc(g) => g.send(body).await,
        }
    }
}

pub struct Http {
    client: reqwest::Client,
    url: String,
    headers: http::HeaderMap,
    gzip: bool,
}

impl Http {
    fn new(cfg: &OtlpConfig) -> Result<Self, String> {
        let mut headers = header_map(&cfg.headers)?;
        let content_type = if cfg.protocol == Protocol::HttpJson {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        if cfg.gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
        }
        let mut client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("tracer/", env!("CARGO_PKG_VERSION")));
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
        Ok(Self {
            client,
            url: cfg.endpoint.clone(),
            headers,
            gzip: cfg.gzip,
        })
    }

    async fn send(&self, body: Bytes) -> Result<(), Failure> {
        let r = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| Failure {
                // Not reached, refused, reset or timed out: may pass later.
                retry: Retry::Backoff,
                message: format!("POST {}: {}", self.url, chain(&e)),
            })?;
        let status = r.status();
        let retry_after = r
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(600)));
        // The answer (a partial-success report at most) is read so the connection is reused.
        let text = r.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let retry = match status.as_u16() {
            429 | 503 => retry_after.map_or(Retry::Backoff, Retry::After),
            502 | 504 => Retry::Backoff,
            _ => Retry::No,
        };
        let text = String::from_utf8_lossy(&text[..text.len().min(200)]);
        Err(Failure {
            retry,
            message: format!("POST {}: {status} {}", self.url, text.trim()),
        })
    }
}

/// The gRPC method of OTLP traces.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct Grpc {
    client: tonic::client::Grpc<Channel>,
    metadata: tonic::metadata::MetadataMap,
    endpoint: String,
}

impl Grpc {
    fn new(cfg: &OtlpConfig, rt: &tokio::runtime::Handle) -> Result<Self, String> {
        let _guard = rt.enter();
        let mut endpoint = tonic::transport::Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|e| format!("invalid endpoint '{}': {e}", cfg.endpoint))?
            .timeout(cfg.timeout);
        if cfg.endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(pem) = &cfg.ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("cannot set up TLS: {}", chain(&e)))?;
        }
        let mut client = tonic::client::Grpc::new(endpoint.connect_lazy())
            .accept_compressed(CompressionEncoding::Gzip);
        if cfg.gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(Self {
            client,
            metadata: tonic::metadata::MetadataMap::from_headers(header_map(&cfg.headers)?),
            endpoint: cfg.endpoint.clone(),
        })
    }

    async fn send(&mut self, body: Bytes) -> Result<(), Failure> {
        let failure = |s: tonic::Status| Failure {
            retry: retry_of(s.code()),
            message: format!("gRPC export to {}: {}", self.endpoint, status_text(&s)),
        };
        self.client.ready().await.map_err(|e| Failure {
            retry: Retry::Backoff,
            message: format!("gRPC export to {}: {}", self.endpoint, chain(&e)),
        })?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        self.client
            .unary::<Bytes, (), _>(
                request,
                http::uri::PathAndQuery::from_static(EXPORT_PATH),
                PassThrough,
            )
            .await
            .map(drop)
            .map_err(failure)
    }
}

fn status_text(s: &tonic::Status) -> String {
    match std::error::Error::source(s) {
        Some(e) => format!("{:?}: {}: {}", s.code(), s.message(), chain(e)),
        None => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// OTLP's retryable gRPC codes (`ResourceExhausted` only with a server delay, which this
/// exporter does not read: not retried).
fn retry_of(code: tonic::Code) -> Retry {
    use tonic::Code;
    match code {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Retry::Backoff,
        _ => Retry::No,
    }
}

/// A codec whose message is the encoded request itself; the answer is not decoded.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough;

impl Codec for PassThrough {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = PassThrough;
    type Decoder = PassThrough;

    fn encoder(&mut self) -> Self::Encoder {
        PassThrough
    }

    fn decoder(&mut self) -> Self::Decoder {
        PassThrough
    }
}

impl Encoder for PassThrough {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PassThrough {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        // An ExportTraceServiceResponse (a partial-success report at most): skipped.
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
