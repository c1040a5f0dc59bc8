//! Context injection (`--inject-context`) across four hosts made of network namespaces
//! (`tracer_tests::hosts`): curl, nginx as a reverse proxy, a python backend and the python
//! service it calls.
//!
//! With injection on, every outgoing request carries a `traceparent` the kernel inserted: curl's
//! starts the trace, nginx's and the backend's continue the request their thread serves. The
//! applications themselves receive it: the backend logs a traceparent whose span id is nginx's
//! client span's, the service one whose span id is the backend's client span's. Each server span
//! says `injected` (its parent named by a header this tracer inserted), each client span behind a
//! server span `thread`, and the six spans form one chain. Warm-up requests first let the kernel
//! see nginx and the backend answer each request on the thread that read it.

use std::time::Duration;

use tracer_common::inject::PROVEN_ANSWERS;
use tracer_tests::{
    hosts::Chain,
    pyapp::PyApp,
    trace::{assert_chain, describe, TraceIds},
    util::which,
    Agent, Gated,
};

const WARM_UPS: u32 = 2 * PROVEN_ANSWERS;

/// The traceparent `app` logged for a request to `path`.
fn received_traceparent(app: &PyApp, path: &str) -> String {
    let log = app.log();
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("TRACEPARENT {path} ")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no request for {path} logged:\n{log}"))
}

#[test]
fn injected_context_reaches_each_application() {
    let chain = Chain::start("10.202.0", &["--log-context"]);
    let ip = which("ip").display().to_string();
    let curl = Gated::spawn("curl (a)", &ip, &chain.curl_args("/proxy/api"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&chain.pids(&[curl_pid]), &["--inject-context"]);
    // The kernel lets a process's requests carry the context of the request a thread serves only
    // once it has seen the process answer `PROVEN_ANSWERS` requests on their reading threads:
    // twice as many warm-ups, so that a response the kernel missed under load does not decide.
    for _ in 0..WARM_UPS {
        let st = std::process::Command::new(&ip)
            .args(chain.curl_args("/proxy/warm"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running curl");
        assert!(st.success(), "warm-up request failed: {st}");
    }
    let out = curl.finish(Duration::from_secs(40));
    let mut expected = chain.expect_request(
        &out,
        curl_pid,
        "api",
        ["injected", "thread", "injected", "thread", "injected"],
    );
    for _ in 0..WARM_UPS {
        expected.extend(chain.spans_behind("warm"));
    }
    let spans = agent.expect_exact(&expected);
    let spans = &spans[..6];
    assert_chain(spans);

    // What the applications received is what the spans say.
    let ctx = describe(spans);
    for (app, path, client) in [
        (&chain.backend, "/api", &spans[2]),
        (&chain.service, "/svc/api", &spans[4]),
    ] {
        let tp = received_traceparent(app, path);
        assert_eq!(
            tp,
            format!("00-{}-{}-01", client.trace_id(), client.span_id()),
            "{path}: the traceparent received is not the client span's\n{ctx}"
        );
    }
}
