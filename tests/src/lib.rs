//! Harness of the integration tests: they start the real agent as root with eBPF, real peers
//! (python3 http.server, a small python HTTP/1.1 server, nginx, curl, redis-server, redis-cli,
//! redis-py) on ephemeral loopback ports,
//! and assert the exact set of spans the agent prints with `--output json`.
//!
//! Running: as root, `cargo test -p tracer-tests` (or `cargo xtask test`, which installs the
//! peers). The agent is `$TRACER_BIN`, else `target/debug/tracer` (of `$CARGO_TARGET_DIR` if
//! set), built once with `cargo build -p tracer` when missing or older than its sources. The
//! python is `$PYTHON`, else `python3` from PATH. Peers needed: nginx, curl, python3, setpriv
//! (util-linux), sh.
//!
//! Isolation: the agent is always filtered (`--pid`) to the processes the test itself started,
//! so tests running in parallel, and other traffic on the host, do not show up. Clients are
//! started held at a gate (see [`process::Gated`]) so that their pids are known before the agent
//! starts. Tests whose client is the test process itself (raw sockets) live in a test binary of
//! their own and check `thread.id` too. Servers listen on port 0 where they can (python) or on a
//! port picked free and retried on conflict (nginx).
//!
//! Exactness: a test waits (at most [`SPAN_TIMEOUT`]) until each expected span has arrived, then
//! stops the agent with SIGINT (it flushes), and asserts that the spans are exactly the expected
//! ones (one to one, any order), all well formed (ids, times, name, attributes, resource), and
//! that the agent exited 0 with its summary.
//!
//! Cleanup: every process is the leader of its own process group, killed with its group on drop
//! (also on panic) and on the death of the test thread; temp dirs are removed on drop.
//!
//! A test that needs the agent fails (never skips) when the agent cannot load.
//!
//! Export: [`otlp::Receiver`] is an OTLP receiver (gRPC and HTTP) run inside the test,
//! [`rotel::Rotel`] a third-party collector forwarding to it, [`capture::Capture`] a plain HTTP
//! server recording requests. The agent crate's export unit tests use them too.

pub mod agent;
pub mod capture;
pub mod hosts;
pub mod netns;
pub mod otlp;
pub mod peers;
pub mod process;
pub mod pyapp;
pub mod raw;
pub mod redis;
pub mod rotel;
pub mod span;
pub mod trace;
pub mod util;

pub use agent::{Agent, SPAN_TIMEOUT};
pub use otlp::Receiver;
pub use peers::{Curl, Nginx, PyHttpServer, PyScript, Transfer};
pub use process::{Gated, Output, Proc};
pub use raw::RawClient;
pub use rotel::Rotel;
pub use span::{Expect, Peer, Span};
pub use util::{free_port, gettid, tracer_bin, TempDir};
