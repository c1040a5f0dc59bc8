//! The real agent exporting OTLP to a third-party collector: curl -> nginx, both traced; the agent
//! sends its spans to rotel (once over gRPC, configured by the OTEL_* environment, once over
//! HTTP/protobuf, configured by flags), and rotel forwards them to the in-test receiver. What comes
//! out of rotel must be what the agent printed, intact: one resource per traced process with its
//! identity, and per request curl's client span and nginx's server span, linked, with their HTTP
//! attributes and times. Fails (never skips) without rotel or nginx.

use std::{collections::HashMap, time::Duration};

use tracer_tests::{
    agent::unix_ns,
    otlp::{
        proto::trace::v1::{span::SpanKind, status::StatusCode},
        received_spans, ReceivedSpan, Receiver,
    },
    peers::installed,
    Agent, Curl, Nginx, Rotel, Span, TempDir,
};

/// What curl asks nginx for, in order, on one keep-alive connection: path and status.
const REQUESTS: [(&str, u16); 3] = [
    ("/index.html", 200),
    ("/about.html", 200),
    ("/missing.html", 404),
];

/// curl's own settings, which win over the agent's for its resource.
const CURL_ENV: [(&str, &str); 2] = [
    ("OTEL_SERVICE_NAME", "shop-frontend"),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment=curl-env,team=web",
    ),
];

/// The agent's resource attributes: for every process, but never its identity (service.name).
const AGENT_RESOURCE: &str = "deployment.environment=otlp-test,service.name=not-a-process-name";

/// How long spans may take to come out of rotel (it batches for 100 ms).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Slack on the test's time window: span times are kernel monotonic times converted to unix
/// time with one offset taken at the agent's start.
const CLOCK_SLACK_NS: u64 = 50_000_000;

/// One run: the agent's spans as printed on stdout and as received, and what to check them by.
struct Run {
    printed: Vec<Span>,
    received: Vec<ReceivedSpan>,
    /// Unix ns before the agent started and after it stopped.
    window: (u64, u64),
    curl_pid: u32,
    nginx_worker: u32,
    nginx_port: u16,
    nginx_exe_path: String,
    /// The agent's stderr, for failure messages.
    stderr: String,
}

/// nginx and curl traced by an agent started with `args` and `env`, curl's requests made, the
/// agent stopped (it flushes its export queue), and the spans awaited in `rx`.
fn run(rx: &Receiver, args: &[&str], env: &[(&str, &str)], diag: &dyn Fn() -> String) -> Run {
    let www = TempDir::new("www");
    www.file_of_size("index.html", 300);
    www.file_of_size("about.html", 1200);
    let nginx = Nginx::start(www.path(), None);
    let urls: Vec<String> = REQUESTS.iter().map(|(p, _)| nginx.url(p)).collect();
    // The agent reads a process's /proc entry (command line, environment) when its connection
    // opens; a curl done in a millisecond may be gone by then and leave a bare resource (pid and
    // task name). Spacing its requests keeps it alive for ~0.4 s.
    let curl = Curl::new_with_env(&["--rate", "5/s"], &urls, &CURL_ENV);
    let curl_pid = curl.pid();
    let mut pids = nginx.pids();
    pids.push(curl_pid);
    let started = unix_ns();
    let agent = Agent::start_with_env("json", &pids, args, env);
    let transfers = curl.run();
    let codes: Vec<u16> = transfers.iter().map(|t| t.code).collect();
    let want: Vec<u16> = REQUESTS.iter().map(|(_, c)| *c).collect();
    assert_eq!(codes, want, "nginx error log:\n{}", nginx.error_log());
    let n = 2 * REQUESTS.len();
    if !agent.wait_until(tracer_tests::SPAN_TIMEOUT, |s| s.len() >= n) {
        eprintln!("note: the agent printed fewer than {n} spans in time");
    }
    let stopped = agent.stop();
    let stopped_at = unix_ns();
    stopped.assert_clean_exit();
    // Every span accepted by rotel before the agent exited: nothing lost or still queued.
    let line = format!("otlp: {n} spans exported, 0 failed exports, 0 sampled out, dropped: queue_full=0 export_failed=0 shutdown=0");
    assert!(
        stopped.stderr.contains(&line),
        "no `{line}` in the agent's summary\n--- agent stderr ---\n{}\n{}",
        stopped.stderr,
        diag()
    );
    let deadline = std::time::Instant::now() + DELIVERY_TIMEOUT;
    while rx.span_count() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Anything extra would come within a batch timeout or two.
    std::thread::sleep(Duration::from_millis(300));
    let received = received_spans(&rx.received());
    assert_eq!(
        received.len(),
        n,
        "{} span(s) arrived, {n} expected: {received:#?}\n{}",
        received.len(),
        diag()
    );
    Run {
        printed: stopped.spans,
        received,
        window: (started, stopped_at),
        curl_pid,
        nginx_worker: nginx.worker,
        nginx_port: nginx.port,
        nginx_exe_path: nginx.exe.path.clone(),
        stderr: stopped.stderr,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

impl Run {
    fn context(&self) -> String {
        let printed: Vec<String> = self.printed.iter().map(|s| s.to_string()).collect();
        format!(
            "--- printed by the agent ---\n{}\n--- received ---\n{:#?}\n--- agent stderr ---\n{}",
            printed.join("\n"),
            self.received,
            self.stderr
        )
    }

    /// Each received span is a printed one, field for field.
    fn check_same_as_printed(&self) {
        assert_eq!(
            self.printed.len(),
            self.received.len(),
            "{}",
            self.context()
        );
        for r in &self.received {
            let s = &r.span;
            let p = self
                .printed
                .iter()
                .find(|p| p.get("span_id").as_str() == Some(hex(&s.span_id).as_str()))
                .unwrap_or_else(|| panic!("received span not printed: {s:?}\n{}", self.context()));
            let ctx = || format!("received {r:#?}\nprinted {p}");
            assert_eq!(
                p.get("trace_id").as_str(),
                Some(hex(&s.trace_id).as_str()),
                "{}",
                ctx()
            );
            let parent = p.get("parent_span_id").as_str().unwrap_or("");
            assert_eq!(parent, hex(&s.parent_span_id), "{}", ctx());
            assert_eq!(p.name(), s.name, "{}", ctx());
            assert_eq!(
                (p.start_ns(), p.end_ns()),
                (s.start_time_unix_nano, s.end_time_unix_nano),
                "{}",
                ctx()
            );
            let kind = if p.is_server() {
                SpanKind::Server
            } else {
                SpanKind::Client
            };
            assert_eq!(s.kind, kind as i32, "{}", ctx());
            let code = s.status.as_ref().map_or(0, |st| st.code);
            let want = match p.status() {
                "error" => StatusCode::Error,
                _ => StatusCode::Unset,
            };
            assert_eq!(code, want as i32, "{}", ctx());
            let attrs = tracer_tests::otlp::attrs(&s.attributes);
            for (k, v) in p.get("attributes").as_object().unwrap() {
                assert_eq!(
                    attrs.get(k),
                    Some(&json_text(v)),
                    "attribute {k}: {}",
                    ctx()
                );
            }
            for k in ["thread.id", "tracer.link"] {
                assert_eq!(attrs.get(k), Some(&json_text(p.get(k))), "{k}: {}", ctx());
            }
            for (k, v) in p.get("resource").as_object().unwrap() {
                // OTLP leaves out what the agent does not know (printed as "").
                let want = Some(json_text(v)).filter(|v| !v.is_empty());
                assert_eq!(r.resource.get(k), want.as_ref(), "resource {k}: {}", ctx());
            }
        }
    }

    /// One resource per traced process, with its identity; curl's own OTEL_* settings win.
    fn check_resources(&self) {
        let mut by_pid: HashMap<String, &HashMap<String, String>> = HashMap::new();
        for r in &self.received {
            assert_eq!(r.scope, "tracer", "{}", self.context());
            let pid = r.resource.get("process.pid").cloned().unwrap_or_default();
            let same = by_pid.entry(pid).or_insert(&r.resource);
            assert_eq!(
                *same,
                &r.resource,
                "two resources for one process\n{}",
                self.context()
            );
        }
        let mut pids: Vec<&String> = by_pid.keys().collect();
        pids.sort();
        let mut want = [self.curl_pid.to_string(), self.nginx_worker.to_string()];
        want.sort();
        assert_eq!(pids, want.iter().collect::<Vec<_>>(), "{}", self.context());
        let host = host_name();
        let curl_path = installed("curl").display().to_string();
        for (pid, exe_path, service, env) in [
            (
                self.curl_pid,
                curl_path.as_str(),
                "shop-frontend",
                "curl-env",
            ),
            (
                self.nginx_worker,
                self.nginx_exe_path.as_str(),
                "nginx",
                "otlp-test",
            ),
        ] {
            let res = by_pid[&pid.to_string()];
            let get = |k: &str| res.get(k).map(String::as_str).unwrap_or("");
            let ctx = || format!("resource of {pid}: {res:#?}");
            assert_eq!(get("service.name"), service, "{}", ctx());
            assert!(
                get("service.instance.id").starts_with(&format!("{host}-{pid}-")),
                "{}",
                ctx()
            );
            assert_eq!(get("process.pid"), pid.to_string(), "{}", ctx());
            assert_eq!(get("process.executable.path"), exe_path, "{}", ctx());
            let name = exe_path.rsplit('/').next().unwrap();
            assert_eq!(get("process.executable.name"), name, "{}", ctx());
            assert_eq!(get("host.name"), host, "{}", ctx());
            assert_eq!(get("os.type"), "linux", "{}", ctx());
            assert_eq!(get("telemetry.distro.name"), "tracer", "{}", ctx());
            assert_eq!(
                get("telemetry.distro.version"),
                env!("CARGO_PKG_VERSION"),
                "{}",
                ctx()
            );
            assert_eq!(get("deployment.environment"), env, "{}", ctx());
        }
        let curl = by_pid[&self.curl_pid.to_string()];
        assert!(
            curl["process.command_line"].contains("/missing.html"),
            "{curl:#?}"
        );
        assert_eq!(
            curl.get("team").map(String::as_str),
            Some("web"),
            "{curl:#?}"
        );
        let nginx = by_pid[&self.nginx_worker.to_string()];
        assert_eq!(
            nginx["process.command_line"], "nginx: worker process",
            "{nginx:#?}"
        );
        assert_eq!(nginx.get("team"), None, "{nginx:#?}");
    }

    /// Per request: curl's client span, the root, and nginx's server span, its child.
    fn check_requests(&self) {
        let (from, to) = (
            self.window.0 - CLOCK_SLACK_NS,
            self.window.1 + CLOCK_SLACK_NS,
        );
        for (path, code) in REQUESTS {
            let find = |kind: SpanKind| -> &ReceivedSpan {
                let v: Vec<&ReceivedSpan> = self
                    .received
                    .iter()
                    .filter(|r| {
                        r.span.kind == kind as i32
                            && tracer_tests::otlp::attrs(&r.span.attributes)
                                .get("url.path")
                                .is_some_and(|p| p == path)
                    })
                    .collect();
                assert_eq!(
                    v.len(),
                    1,
                    "one {kind:?} span for {path}\n{}",
                    self.context()
                );
                v[0]
            };
            let client = find(SpanKind::Client);
            let server = find(SpanKind::Server);
            for (r, pid, link) in [
                (client, self.curl_pid, "root"),
                (server, self.nginx_worker, "connection"),
            ] {
                let s = &r.span;
                let a = tracer_tests::otlp::attrs(&s.attributes);
                let ctx = || format!("{path}: {r:#?}");
                assert_eq!(r.resource["process.pid"], pid.to_string(), "{}", ctx());
                assert_eq!(a["http.request.method"], "GET", "{}", ctx());
                assert_eq!(a["url.path"], path, "{}", ctx());
                assert_eq!(
                    a["http.response.status_code"],
                    code.to_string(),
                    "{}",
                    ctx()
                );
                assert_eq!(a["server.port"], self.nginx_port.to_string(), "{}", ctx());
                assert_eq!(a["tracer.link"], link, "{}", ctx());
                assert_eq!(s.trace_id.len(), 16, "{}", ctx());
                assert_eq!(s.span_id.len(), 8, "{}", ctx());
                assert!(s.trace_id.iter().any(|b| *b != 0), "{}", ctx());
                assert!(s.span_id.iter().any(|b| *b != 0), "{}", ctx());
                assert!(s.start_time_unix_nano <= s.end_time_unix_nano, "{}", ctx());
                assert!(
                    from <= s.start_time_unix_nano && s.end_time_unix_nano <= to,
                    "times outside the test's window {from}..{to}: {}",
                    ctx()
                );
            }
            assert!(client.span.parent_span_id.is_empty(), "{client:#?}");
            assert_eq!(
                server.span.trace_id, client.span.trace_id,
                "{server:#?}\n{client:#?}"
            );
            assert_eq!(
                server.span.parent_span_id, client.span.span_id,
                "{server:#?}\n{client:#?}"
            );
            assert_ne!(server.span.span_id, client.span.span_id);
            // 4xx is an error for the client only.
            let status = |r: &ReceivedSpan| r.span.status.as_ref().map_or(0, |s| s.code);
            let client_status = if code >= 400 {
                StatusCode::Error
            } else {
                StatusCode::Unset
            };
            assert_eq!(status(client), client_status as i32, "{client:#?}");
            assert_eq!(status(server), StatusCode::Unset as i32, "{server:#?}");
        }
    }
}

/// How the agent is pointed at rotel.
enum Setup {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT=... tracer`: gRPC and gzip, from the standard variables.
    GrpcFromEnv,
    /// `--otlp-endpoint ... --otlp-protocol http/protobuf` (`/v1/traces` appended).
    HttpProtobufFromFlags,
}

/// The agent -> rotel, rotel -> the receiver; everything checked.
fn through_rotel(setup: Setup) {
    let rx = Receiver::start(0, 0);
    let rotel = Rotel::start(&format!("http://{}", rx.grpc));
    let (grpc, http) = (rotel.grpc_url(), rotel.http_url());
    let resource = ("OTEL_RESOURCE_ATTRIBUTES", AGENT_RESOURCE);
    let (args, env): (Vec<&str>, Vec<(&str, &str)>) = match setup {
        Setup::GrpcFromEnv => (
            Vec::new(),
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
                resource,
            ],
        ),
        Setup::HttpProtobufFromFlags => (
            vec![
                "--otlp-endpoint",
                http.as_str(),
                "--otlp-protocol",
                "http/protobuf",
                "--otlp-timeout",
                "5s",
            ],
            vec![resource],
        ),
    };
    let diag = || format!("--- rotel log ---\n{}", rotel.log());
    let run = run(&rx, &args, &env, &diag);
    run.check_same_as_printed();
    run.check_resources();
    run.check_requests();
    // rotel decoded them itself (its debug log), not just passed bytes along.
    let log = rotel.log();
    assert!(
        log.contains("service.name: Str(shop-frontend)")
            && log.contains("service.name: Str(nginx)"),
        "{log}"
    );
}

#[test]
fn grpc_from_env_through_rotel() {
    through_rotel(Setup::GrpcFromEnv);
}

#[test]
fn http_protobuf_from_flags_through_rotel() {
    through_rotel(Setup::HttpProtobufFromFlags);
}

/// `--otlp-compression none` wins over `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` (which the OTLP
/// crate would otherwise read by itself), and `--otlp-header` reaches the collector: the agent
/// sends straight to the receiver here, to see its requests' headers.
#[test]
fn compression_and_header_flags_over_env() {
    let rx = Receiver::start(0, 0);
    let endpoint = format!("http://{}", rx.http);
    let args = [
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "http/protobuf",
        "--otlp-compression",
        "none",
        "--otlp-header",
        "x-tenant=flag",
    ];
    let env = [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=env,x-team=web"),
        ("OTEL_RESOURCE_ATTRIBUTES", AGENT_RESOURCE),
    ];
    let run = run(&rx, &args, &env, &String::new);
    run.check_same_as_printed();
    run.check_requests();
    for r in rx.received() {
        let h = |name: &str| -> Vec<&str> {
            r.headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(r.transport, "http/protobuf");
        assert!(h("content-encoding").is_empty(), "{:?}", r.headers);
        assert_eq!(h("x-tenant"), ["flag"], "{:?}", r.headers);
        assert_eq!(h("x-team"), ["web"], "{:?}", r.headers);
    }
}
