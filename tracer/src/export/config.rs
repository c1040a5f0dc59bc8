//! Exporter configuration: CLI flags and the standard OpenTelemetry environment variables.
//! A flag wins over its variable; the signal-specific variable (`..._TRACES_...`) wins over the
//! generic one. Nothing configured means no network exporter at all.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use thiserror::Error;

use super::{
    otlp::{OtlpConfig, OtlpSink, Protocol},
    prometheus::PrometheusExporter,
    queue::{BatchConfig, ExportCounters, Overflow, QueueConfig, QueuedExporter},
    sampler::Sampler,
    zipkin::{ZipkinConfig, ZipkinSink},
    Exporter,
};
use crate::{process::parse_resource_attributes, stats::Stats};

/// Export options (flattened into the main command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExportArgs {
    /// Send spans over OTLP to this collector, e.g. http://127.0.0.1:4317 (gRPC) or
    /// http://127.0.0.1:4318 (HTTP; /v1/traces is appended). https works.
    /// [env: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is), OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc, http/protobuf or http/json (default grpc, or http/protobuf when
    /// the endpoint's port is 4318). [env: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL]
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,

    /// Header sent with each OTLP request, e.g. `authorization=Bearer x` (repeatable; wins over
    /// the same header from the environment). [env: OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_HEADERS]
    #[arg(long = "otlp-header", value_name = "KEY=VALUE")]
    pub otlp_headers: Vec<String>,

    /// OTLP request timeout, retries included: milliseconds, or a duration such as `10s`
    /// (default 10s). [env: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT (ms)]
    #[arg(long, value_name = "DURATION")]
    pub otlp_timeout: Option<String>,

    /// OTLP compression: gzip or none (default none).
    /// [env: OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION]
    #[arg(long, value_name = "gzip|none")]
    pub otlp_compression: Option<String>,

    /// A PEM file of CA certificates to trust for an https OTLP endpoint, besides the system's
    /// roots. [env: OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE]
    #[arg(long, value_name = "PEM")]
    pub otlp_certificate: Option<String>,

    /// Head sampler of the trace exporters (OTLP, Zipkin): always_on, always_off, traceidratio,
    /// parentbased_always_on (default), parentbased_always_off, parentbased_traceidratio.
    /// Metrics always see every span. [env: OTEL_TRACES_SAMPLER]
    #[arg(long, value_name = "SAMPLER")]
    pub sampler: Option<String>,

    /// The sampler's argument: the ratio in [0, 1] for *traceidratio. [env: OTEL_TRACES_SAMPLER_ARG]
    #[arg(long, value_name = "ARG")]
    pub sampler_arg: Option<String>,

    /// Send spans in Zipkin v2 JSON to this URL (/api/v2/spans is appended when the URL has no
    /// path), e.g. http://127.0.0.1:9411. [env: OTEL_EXPORTER_ZIPKIN_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub zipkin_endpoint: Option<String>,

    /// Serve Prometheus metrics (request duration histograms, agent counters) on
    /// http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// Spans each network exporter holds while its collector is slow or down (default 4096);
    /// beyond, spans are dropped and counted.
    #[arg(long, value_name = "SPANS")]
    pub export_queue_size: Option<usize>,

    /// Which spans a full export queue drops.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub export_overflow: Option<Overflow>,
}

#[derive(Debug, Error)]
pub enum ExportConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot serve metrics on {addr}: {source} (pick a free HOST:PORT for --metrics-addr)")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn invalid(msg: impl Into<String>) -> ExportConfigError {
    ExportConfigError::Invalid(msg.into())
}

/// Everything `build_exporters` needs, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub otlp: Option<OtlpConfig>,
    pub zipkin: Option<ZipkinConfig>,
    pub metrics_addr: Option<SocketAddr>,
    pub sampler: Sampler,
    pub queue_capacity: usize,
    pub overflow: Overflow,
}

/// A value from a flag, else from the first set variable; with where it came from (for errors).
fn pick(
    flag: Option<&String>,
    flag_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    vars: &[&str],
) -> Option<(String, String)> {
    if let Some(v) = flag.map(|v| v.trim()).filter(|v| !v.is_empty()) {
        return Some((v.to_string(), flag_name.to_string()));
    }
    for var in vars {
        if let Some(v) = env(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            return Some((v, (*var).to_string()));
        }
    }
    None
}

/// An http(s) URL with a host; returns it without a trailing slash.
fn check_url(url: &str, source: &str) -> Result<http::Uri, ExportConfigError> {
    let bad = || {
        invalid(format!(
            "invalid endpoint '{url}' (from {source}): expected http://HOST:PORT or https://HOST:PORT, optionally with a path"
        ))
    };
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(uri)
}

fn parse_timeout(v: &str, source: &str) -> Result<Duration, ExportConfigError> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(v).map_err(|_| {
        invalid(format!(
            "invalid timeout '{v}' (from {source}): give milliseconds (10000) or a duration (10s)"
        ))
    })
}

/// `k=v,k2=v2` headers (values may be percent-encoded).
fn parse_headers(v: &str) -> Vec<(String, String)> {
    parse_resource_attributes(v)
}

impl ExportConfig {
    pub fn resolve(
        args: &ExportArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ExportConfigError> {
        let sampler = match pick(
            args.sampler.as_ref(),
            "--sampler",
            env,
            &["OTEL_TRACES_SAMPLER"],
        ) {
            None => Sampler::default(),
            Some((name, source)) => {
                let arg = pick(
                    args.sampler_arg.as_ref(),
                    "--sampler-arg",
                    env,
                    &["OTEL_TRACES_SAMPLER_ARG"],
                );
                Sampler::parse(&name, arg.as_ref().map(|(a, _)| a.as_str()))
                    .map_err(|e| invalid(format!("{e} (from {source})")))?
            }
        };
        let otlp = Self::resolve_otlp(args, env)?;
        let zipkin = match pick(
            args.zipkin_endpoint.as_ref(),
            "--zipkin-endpoint",
            env,
            &["OTEL_EXPORTER_ZIPKIN_ENDPOINT"],
        ) {
            None => None,
            Some((url, source)) => {
                let uri = check_url(&url, &source)?;
                let url = if uri.path() == "/" || uri.path().is_empty() {
                    format!("{}/api/v2/spans", url.trim_end_matches('/'))
                } else {
                    url
                };
                Some(ZipkinConfig {
                    url,
                    timeout: Duration::from_secs(10),
                })
            }
        };
        let metrics_addr = match args
            .metrics_addr
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            None => None,
            Some(a) => {
                use std::net::ToSocketAddrs;
                let addr = a.to_socket_addrs().ok().and_then(|mut it| it.next()).ok_or_else(|| {
                    invalid(format!("invalid --metrics-addr '{a}': expected HOST:PORT, e.g. 127.0.0.1:9464 or 0.0.0.0:9464"))
                })?;
                Some(addr)
            }
        };
        let queue_capacity = args.export_queue_size.unwrap_or(4096);
        if queue_capacity == 0 {
            return Err(invalid("--export-queue-size must be at least 1"));
        }
        Ok(Self {
            otlp,
            zipkin,
            metrics_addr,
            sampler,
            queue_capacity,
            overflow: args.export_overflow.unwrap_or_default(),
        })
    }

    fn resolve_otlp(
        args: &ExportArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpConfig>, ExportConfigError> {
        // Precedence: flag (a base URL), the traces variable (as is), the generic one (a base URL).
        let (url, source, is_base) = if let Some((u, s)) =
            pick(args.otlp_endpoint.as_ref(), "--otlp-endpoint", env, &[])
        {
            (u, s, true)
        } else if let Some((u, s)) = pick(None, "", env, &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
            (u, s, false)
        } else if let Some((u, s)) = pick(None, "", env, &["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
            (u, s, true)
        } else {
            return Ok(None);
        };
        let uri = check_url(&url, &source)?;
        let protocol = match pick(
            args.otlp_protocol.as_ref(),
            "--otlp-protocol",
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
        ) {
            Some((p, s)) => Protocol::parse(&p).ok_or_else(|| {
                invalid(format!(
                    "invalid OTLP protocol '{p}' (from {s}): use grpc, http/protobuf or http/json"
                ))
            })?,
            // 4318 is the well-known OTLP/HTTP port: don't speak gRPC to it.
            None if uri.port_u16() == Some(4318) => Protocol::HttpProtobuf,
            None => Protocol::Grpc,
        };
        let endpoint = match protocol {
            Protocol::Grpc => url.clone(),
            Protocol::HttpProtobuf | Protocol::HttpJson if is_base => {
                format!("{}/v1/traces", url.trim_end_matches('/'))
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => url.clone(),
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some((h, _)) = pick(
            None,
            "",
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ],
        ) {
            headers = parse_headers(&h);
        }
        for h in &args.otlp_headers {
            let (k, v) = h
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    invalid(format!("invalid --otlp-header '{h}': expected KEY=VALUE"))
                })?;
            headers.retain(|(old, _)| !old.eq_ignore_ascii_case(k));
            headers.push((k.to_string(), v.to_string()));
        }
        super::otlp::header_map(&headers).map_err(|e| {
            invalid(format!(
                "{e} in the OTLP headers: names are tokens, values printable ASCII"
            ))
        })?;
        let timeout = match pick(
            args.otlp_timeout.as_ref(),
            "--otlp-timeout",
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
        ) {
            Some((t, s)) => parse_timeout(&t, &s)?,
            None => Duration::from_secs(10),
        };
        if timeout.is_zero() {
            return Err(invalid("the OTLP timeout must be more than 0"));
        }
        let gzip = match pick(
            args.otlp_compression.as_ref(),
            "--otlp-compression",
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ],
        ) {
            None => false,
            Some((c, s)) => match c.to_ascii_lowercase().as_str() {
                "gzip" => true,
                "none" => false,
                _ => {
                    return Err(invalid(format!(
                        "invalid OTLP compression '{c}' (from {s}): use gzip or none"
                    )))
                }
            },
        };
        let ca_pem = match pick(
            args.otlp_certificate.as_ref(),
            "--otlp-certificate",
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ],
        ) {
            None => None,
            Some((path, s)) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    invalid(format!(
                        "cannot read the CA certificate file '{path}' (from {s}): {e}"
                    ))
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(format!("'{path}' (from {s}) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
                }
                Some(pem)
            }
        };
        let resource_attributes = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| parse_resource_attributes(&v))
            .unwrap_or_default();
        Ok(Some(OtlpConfig {
            endpoint,
            protocol,
            headers,
            timeout,
            gzip,
            ca_pem,
            resource_attributes,
        }))
    }

    fn queue(&self) -> QueueConfig {
        QueueConfig {
            capacity: self.queue_capacity,
            overflow: self.overflow,
            ..QueueConfig::default()
        }
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Exporters besides stdout configured by `args` and the environment.
pub fn build_exporters(
    args: &ExportArgs,
    stats: &Arc<Stats>,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<Box<dyn Exporter>>, ExportConfigError> {
    let cfg = ExportConfig::resolve(args, &process_env)?;
    build_from_config(&cfg, stats, rt).map(|(exporters, _)| exporters)
}

/// Configured exporters, in the order spans reach them.
pub type Exporters = Vec<Box<dyn Exporter>>;

/// The exporters of `cfg`, and the address /metrics is served on (if any).
pub fn build_from_config(
    cfg: &ExportConfig,
    stats: &Arc<Stats>,
    rt: &tokio::runtime::Handle,
) -> Result<(Exporters, Option<SocketAddr>), ExportConfigError> {
    let mut exporters: Exporters = Vec::new();
    let mut counters: Vec<(&'static str, Arc<ExportCounters>)> = Vec::new();
    if let Some(o) = &cfg.otlp {
        let sink = OtlpSink::new(o, rt)
            .map_err(|e| invalid(format!("cannot set up OTLP export to {}: {e}", o.endpoint)))?;
        let e = QueuedExporter::spawn(
            "otlp",
            sink,
            cfg.sampler,
            cfg.queue(),
            BatchConfig::default(),
            rt,
        );
        counters.push(("otlp", e.counters()));
        tracing::info!(
            "exporting spans over OTLP ({}) to {}",
            o.protocol.as_str(),
            o.endpoint
        );
        exporters.push(Box::new(e));
    }
    if let Some(z) = &cfg.zipkin {
        let sink = ZipkinSink::new(z)
            .map_err(|e| invalid(format!("cannot set up Zipkin export to {}: {e}", z.url)))?;
        let e = QueuedExporter::spawn(
            "zipkin",
            sink,
            cfg.sampler,
            cfg.queue(),
            BatchConfig::default(),
            rt,
        );
        counters.push(("zipkin", e.counters()));
        tracing::info!("exporting spans to Zipkin at {}", z.url);
        exporters.push(Box::new(e));
    }
    let mut metrics = None;
    if let Some(addr) = cfg.metrics_addr {
        let p = PrometheusExporter::serve(addr, stats.clone(), counters, rt)
            .map_err(|source| ExportConfigError::MetricsBind { addr, source })?;
        metrics = Some(p.local_addr());
        tracing::info!(
            "serving Prometheus metrics on http://{}/metrics",
            p.local_addr()
        );
        exporters.push(Box::new(p));
    }
    Ok((exporters, metrics))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(
        args: &ExportArgs,
        vars: &[(&str, &str)],
    ) -> Result<ExportConfig, ExportConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportConfig::resolve(args, &move |k| map.get(k).cloned())
    }

    #[test]
    fn nothing_configured_means_no_network_exporter() {
        let c = resolve(&ExportArgs::default(), &[]).unwrap();
        assert_eq!(c.otlp, None);
        assert_eq!(c.zipkin, None);
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.sampler, Sampler::default());
    }

    #[test]
    fn otlp_from_env() {
        let c = resolve(
            &ExportArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%20ecret,x=1"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
            ],
        )
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.protocol, Protocol::HttpProtobuf, "4318 means HTTP");
        assert_eq!(o.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(
            o.headers,
            vec![
                ("api-key".into(), "s ecret".into()),
                ("x".into(), "1".into())
            ]
        );
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert!(o.gzip);
        assert_eq!(
            o.resource_attributes,
            vec![("deployment.environment".into(), "prod".into())]
        );

        let c = resolve(
            &ExportArgs::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")],
        )
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(
            (o.protocol, o.endpoint.as_str()),
            (Protocol::Grpc, "http://127.0.0.1:4317")
        );
        assert_eq!(o.timeout, Duration::from_secs(10));

        // The traces variable is used as is and wins over the generic one.
        let c = resolve(
            &ExportArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://b/custom/traces",
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(
            (o.protocol, o.endpoint.as_str()),
            (Protocol::HttpJson, "https://b/custom/traces")
        );
    }

    #[test]
    fn flags_win_over_env() {
        let args = ExportArgs {
            otlp_endpoint: Some("http://flag:4318".into()),
            otlp_protocol: Some("grpc".into()),
            otlp_headers: vec!["X=flag".into(), "y=2".into()],
            otlp_timeout: Some("3s".into()),
            otlp_compression: Some("none".into()),
            otlp_certificate: None,
            sampler: Some("traceidratio".into()),
            sampler_arg: Some("0.25".into()),
            zipkin_endpoint: Some("http://127.0.0.1:9411".into()),
            metrics_addr: Some("127.0.0.1:0".into()),
            export_queue_size: Some(10),
            export_overflow: Some(Overflow::DropOldest),
        };
        let c = resolve(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x=env,z=3"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "100"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.9"),
            ],
        )
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(
            (o.protocol, o.endpoint.as_str()),
            (Protocol::Grpc, "http://flag:4318")
        );
        assert_eq!(
            o.headers,
            vec![
                ("z".into(), "3".into()),
                ("X".into(), "flag".into()),
                ("y".into(), "2".into())
            ]
        );
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert!(!o.gzip);
        assert_eq!(
            c.sampler,
            Sampler::parse("traceidratio", Some("0.25")).unwrap()
        );
        assert_eq!(c.zipkin.unwrap().url, "http://127.0.0.1:9411/api/v2/spans");
        assert_eq!(c.metrics_addr, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!((c.queue_capacity, c.overflow), (10, Overflow::DropOldest));
    }

    #[test]
    fn invalid_config_is_one_clear_line() {
        type Case = (ExportArgs, Vec<(&'static str, &'static str)>, &'static str);
        let cases: Vec<Case> = vec![
            (ExportArgs::default(), vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (ExportArgs { otlp_endpoint: Some("ftp://x".into()), ..Default::default() }, vec![], "--otlp-endpoint"),
            (
                ExportArgs { otlp_endpoint: Some("http://x:4317".into()), otlp_protocol: Some("thrift".into()), ..Default::default() },
                vec![],
                "grpc, http/protobuf or http/json",
            ),
            (
                ExportArgs { otlp_endpoint: Some("http://x".into()), otlp_headers: vec!["novalue".into()], ..Default::default() },
                vec![],
                "KEY=VALUE",
            ),
            (
                ExportArgs::default(),
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"), ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")],
                "gzip or none",
            ),
            (
                ExportArgs::default(),
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
                "milliseconds",
            ),
            (ExportArgs::default(), vec![("OTEL_TRACES_SAMPLER", "maybe")], "OTEL_TRACES_SAMPLER"),
            (ExportArgs { metrics_addr: Some("nope".into()), ..Default::default() }, vec![], "HOST:PORT"),
            (
                ExportArgs::default(),
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://x"), ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent.pem")],
                "cannot read the CA certificate file '/nonexistent.pem' (from OTEL_EXPORTER_OTLP_CERTIFICATE)",
            ),
            (ExportArgs { zipkin_endpoint: Some("localhost:9411".into()), ..Default::default() }, vec![], "--zipkin-endpoint"),
        ];
        for (args, env, needle) in cases {
            let e = resolve(&args, &env).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }
}
