//! Live output on stdout: one readable line per span, or one JSON object per span.

use std::{
    io::{self, Write},
    sync::Arc,
};

use serde_json::{json, Map, Value as Json};

use super::Exporter;
use crate::span::{hex, SpanRecord, SpanStatus, SpanSummary, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub struct StdoutExporter<W: Write + Send> {
    format: Format,
    out: W,
    /// Set once stdout is gone (e.g. a closed pipe): stop writing, don't fail the agent.
    broken: bool,
}

impl StdoutExporter<io::Stdout> {
    pub fn stdout(format: Format) -> Self {
        Self::new(format, io::stdout())
    }
}

impl<W: Write + Send> StdoutExporter<W> {
    pub fn new(format: Format, out: W) -> Self {
        Self {
            format,
            out,
            broken: false,
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Str(s) => Json::from(s.as_str()),
        Value::Int(i) => Json::from(*i),
        Value::Bool(b) => Json::from(*b),
    }
}

/// The `--output json` object of a span.
pub fn span_json(s: &SpanRecord) -> Json {
    let attrs: Map<String, Json> = s
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), value_json(&kv.value)))
        .collect();
    let p = &s.process;
    let mut resource = Map::new();
    for (k, v) in &p.resource_attributes {
        resource.insert(k.clone(), Json::from(v.as_str()));
    }
    resource.insert("service.name".into(), Json::from(p.service_name.as_str()));
    resource.insert("process.pid".into(), Json::from(p.pid));
    resource.insert(
        "process.executable.name".into(),
        Json::from(p.exe_name.as_str()),
    );
    resource.insert(
        "process.executable.path".into(),
        Json::from(p.exe_path.as_str()),
    );
    resource.insert(
        "process.command_line".into(),
        Json::from(p.command_line.as_str()),
    );
    let status = match &s.status {
        SpanStatus::Unset => json!({"code": "unset"}),
        SpanStatus::Error { message } => json!({"code": "error", "message": message}),
    };
    json!({
        "trace_id": hex(&s.trace_id),
        "span_id": hex(&s.span_id),
        "parent_span_id": s.parent_span_id.map(|p| hex(&p)),
        "name": s.name,
        "kind": s.kind.as_str(),
        "start_time_unix_nano": s.start_unix_ns,
        "end_time_unix_nano": s.end_unix_ns,
        "duration_ns": s.end_unix_ns.saturating_sub(s.start_unix_ns),
        "status": status,
        "thread.id": s.tid,
        "tracer.link": s.link.as_str(),
        "attributes": attrs,
        "resource": resource,
    })
}

fn fmt_duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.0}µs", ns as f64 / 1e3)
    }
}

/// The `--output text` line of a span.
pub fn span_line(s: &SpanRecord) -> String {
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(s.start_unix_ns),
    );
    let status = match (&s.summary, &s.status) {
        (
            SpanSummary::Http {
                status_code: Some(c),
                ..
            },
            _,
        ) => c.to_string(),
        (_, SpanStatus::Error { message }) => message.clone(),
        (SpanSummary::Db { .. }, SpanStatus::Unset) => "ok".into(),
        (_, SpanStatus::Unset) => "-".into(),
    };
    let (ip, port) = s.endpoints.remote;
    format!(
        "{time} {svc}[{pid}] {kind:<6} {name} {status} {dur} peer={ip}:{port}",
        svc = s.process.service_name,
        pid = s.process.pid,
        kind = s.kind.as_str().to_uppercase(),
        name = s.name,
        dur = fmt_duration(s.end_unix_ns.saturating_sub(s.start_unix_ns)),
    )
}

impl<W: Write + Send> Exporter for StdoutExporter<W> {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn export(&mut self, spans: &[Arc<SpanRecord>]) {
        if self.broken {
            return;
        }
        for s in spans {
            let r = match self.format {
                Format::Text => writeln!(self.out, "{}", span_line(s)),
                Format::Json => writeln!(self.out, "{}", span_json(s)),
            };
            if r.is_err() {
                self.broken = true;
                return;
            }
        }
        if self.out.flush().is_err() {
            self.broken = true;
        }
    }
}
