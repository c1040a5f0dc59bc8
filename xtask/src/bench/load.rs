//! Load generation: wrk for maximum throughput, and our own open-loop fixed-rate generator for
//! latency (wrk2 is not packaged here; oha takes minutes to build). The fixed-rate generator
//! measures each request from the moment it was *scheduled* to be sent, so a stall delays the
//! schedule and is counted (no coordinated omission).

use std::{
    cell::RefCell,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream as TokioStream,
};

/// Result of a wrk run.
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    pub rps: f64,
    pub requests: u64,
    /// Socket errors and non-2xx responses.
    #[allow(dead_code)]
    pub errors: u64,
}

/// Closed-loop maximum throughput with wrk (HTTP/1.1 keep-alive).
pub fn wrk(port: u16, threads: u32, conns: u32, secs: u64) -> Result<WrkResult> {
    let out = Command::new("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{conns}"),
            format!("-d{secs}s"),
            format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .flat_map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|v| v.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    Ok(WrkResult {
        rps,
        requests,
        errors,
    })
}

/// Result of a redis-benchmark run: requests per second of each test.
#[derive(Debug, Clone, Copy)]
pub struct RedisResult {
    pub set_rps: f64,
    pub get_rps: f64,
    /// Requests sent in all (both tests).
    pub requests: u64,
}

impl RedisResult {
    /// Requests per second over the whole run (both tests back to back: the harmonic mean of
    /// the two rates, as each test sends the same number of requests).
    pub fn rps(&self) -> f64 {
        2.0 / (1.0 / self.set_rps + 1.0 / self.get_rps)
    }
}

/// Closed-loop Redis throughput: `redis-benchmark -P pipeline -c conns -n n -t set,get`.
pub fn redis_benchmark(port: u16, conns: u32, pipeline: u32, n: u64) -> Result<RedisResult> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-P", &pipeline.to_string(), "-c", &conns.to_string()])
        .args(["-n", &n.to_string(), "-t", "set,get", "-q", "--csv"])
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // CSV: a header line, then `"SET","552486.19",...` per test.
    let rps = |test: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| {
                let mut cells = l.split(',').map(|c| c.trim().trim_matches('"'));
                (cells.next()? == test).then(|| cells.next()?.parse::<f64>().ok())?
            })
            .with_context(|| format!("no {test} rate in redis-benchmark's output:\n{text}"))
    };
    Ok(RedisResult {
        set_rps: rps("SET")?,
        get_rps: rps("GET")?,
        requests: 2 * n,
    })
}

/// What a generator run measured. Latencies are in microseconds.
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: f64,
    pub hist: Histogram<u64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.max(1e-9)
    }
    pub fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }
}

/// Either a fixed request rate for a duration (open loop), or as fast as possible until a total
/// number of requests (closed loop).
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Rate { per_sec: f64, duration: Duration },
    Count { total: u64 },
}

/// One keep-alive connection that sends `GET path` and reads responses (Content-Length bodies).
struct Client {
    addr: SocketAddr,
    stream: Option<TokioStream>,
    buf: Vec<u8>,
    request: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    let head = String::from_utf8_lossy(head);
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

impl Client {
    fn new(addr: SocketAddr, path: &str) -> Self {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: xtask-bench\r\n\r\n",
            addr.port()
        );
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
            request: request.into_bytes(),
        }
    }

    /// One request/response exchange; reconnects when the server closed the connection.
    async fn exchange(&mut self) -> Result<()> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TokioStream::connect(self.addr).await?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
                self.buf.clear();
            }
            match self.try_exchange().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stream = None;
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    async fn try_exchange(&mut self) -> Result<()> {
        let s = self.stream.as_mut().unwrap();
        s.write_all(&self.request).await?;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let total = end + 4 + content_length(&self.buf[..end]);
                if self.buf.len() >= total {
                    let close = String::from_utf8_lossy(&self.buf[..end])
                        .to_ascii_lowercase()
                        .contains("connection: close");
                    self.buf.drain(..total);
                    if close {
                        self.stream = None;
                    }
                    return Ok(());
                }
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Run the generator on its own single-threaded runtime (in a thread of this process).
pub fn generate(addr: SocketAddr, path: &str, conns: usize, mode: Mode) -> Result<LoadResult> {
    let path = path.to_string();
    std::thread::spawn(move || -> Result<LoadResult> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let hist = Rc::new(RefCell::new(new_hist()));
            let errors = Rc::new(RefCell::new(0u64));
            let ok = Rc::new(RefCell::new(0u64));
            let remaining = Rc::new(RefCell::new(match mode {
                Mode::Count { total } => total,
                Mode::Rate { .. } => u64::MAX,
            }));
            let start = tokio::time::Instant::now() + Duration::from_millis(50);
            let local = tokio::task::LocalSet::new();
            for i in 0..conns {
                let (hist, errors, ok, remaining, path) = (
                    hist.clone(),
                    errors.clone(),
                    ok.clone(),
                    remaining.clone(),
                    path.clone(),
                );
                local.spawn_local(async move {
                    let mut c = Client::new(addr, &path);
                    match mode {
                        Mode::Rate { per_sec, duration } => {
                            let period = Duration::from_secs_f64(conns as f64 / per_sec);
                            let first = start + period.mul_f64(i as f64 / conns as f64);
                            let end = start + duration;
                            let mut k = 0u32;
                            loop {
                                let due = first + period * k;
                                if due >= end {
                                    break;
                                }
                                tokio::time::sleep_until(due).await;
                                let r = c.exchange().await;
                                let lat = due.elapsed().as_micros() as u64;
                                match r {
                                    Ok(()) => {
                                        *ok.borrow_mut() += 1;
                                        let _ = hist.borrow_mut().record(lat.max(1));
                                    }
                                    Err(_) => *errors.borrow_mut() += 1,
                                }
                                k += 1;
                                // A dead server must not spin this loop: back off on errors.
                                if *errors.borrow() > 1000 {
                                    break;
                                }
                            }
                        }
                        Mode::Count { .. } => {
                            tokio::time::sleep_until(start).await;
                            loop {
                                {
                                    let mut r = remaining.borrow_mut();
                                    if *r == 0 {
                                        break;
                                    }
                                    *r -= 1;
                                }
                                let t = tokio::time::Instant::now();
                                match c.exchange().await {
                                    Ok(()) => {
                                        *ok.borrow_mut() += 1;
                                        let _ = hist
                                            .borrow_mut()
                                            .record((t.elapsed().as_micros() as u64).max(1));
                                    }
                                    Err(_) => {
                                        *errors.borrow_mut() += 1;
                                        if *errors.borrow() > 1000 {
                                            break;
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
            }
            local.await;
            let elapsed = start.elapsed().as_secs_f64();
            let hist = hist.borrow().clone();
            let (ok, errors) = (*ok.borrow(), *errors.borrow());
            Ok(LoadResult {
                ok,
                errors,
                elapsed,
                hist,
            })
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load generator thread panicked"))?
}

/// Open `n` keep-alive connections, make one request on each, and keep them open (idle).
pub fn open_idle(port: u16, n: usize) -> Result<Vec<TcpStream>> {
    let req =
        format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: xtask-bench-idle\r\n\r\n");
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 8192];
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("idle connection {i}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(req.as_bytes())?;
        let mut got = Vec::new();
        loop {
            let k = s.read(&mut buf)?;
            if k == 0 {
                bail!("nginx closed idle connection {i}");
            }
            got.extend_from_slice(&buf[..k]);
            if let Some(end) = find(&got, b"\r\n\r\n") {
                if got.len() >= end + 4 + content_length(&got[..end]) {
                    break;
                }
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// Time a closure (seconds).
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}
