//! Child processes the benchmark starts itself (and stops by their own pid), plus /proc readings.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// A started program. Dropping it stops it (SIGTERM, then SIGKILL after a grace period).
pub struct Proc {
    pub name: String,
    child: Child,
    /// Lines seen on stderr (and on stdout when captured), in order.
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
    exited: bool,
}

fn pump(
    r: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    keep: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if keep {
                        let mut l = lines.lock().unwrap();
                        // Bounded: a chatty program cannot grow the harness without limit.
                        if l.len() < 10_000 {
                            l.push(line.trim_end().to_string());
                        }
                    }
                }
            }
        }
    })
}

impl Proc {
    /// Start `cmd`; stderr is always collected; stdout is collected when `capture_stdout`,
    /// otherwise discarded.
    pub fn start(name: &str, cmd: &mut Command, capture_stdout: bool) -> Result<Self> {
        cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        cmd.stdout(if capture_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = vec![pump(child.stderr.take().unwrap(), lines.clone(), true)];
        if let Some(out) = child.stdout.take() {
            readers.push(pump(out, lines.clone(), true));
        }
        Ok(Self {
            name: name.into(),
            child,
            lines,
            readers,
            exited: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait until a line containing `needle` appears (or the program exits, or `timeout`).
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return Ok(l.clone());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = true;
                thread::sleep(Duration::from_millis(100));
                bail!(
                    "{} exited with {st} before printing `{needle}`:\n{}",
                    self.name,
                    self.lines().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print `{needle}` within {timeout:?}:\n{}",
                    self.name,
                    self.lines().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `sig`, wait up to `grace` for the exit, SIGKILL after; returns every line it printed.
    pub fn stop_with(&mut self, sig: i32, grace: Duration) -> Vec<String> {
        if !self.exited {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(self.child.id() as i32, sig) };
            let deadline = Instant::now() + grace;
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                }
            }
            self.exited = true;
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.lines()
    }

    pub fn stop(&mut self) -> Vec<String> {
        self.stop_with(libc::SIGTERM, Duration::from_secs(10))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU seconds (user + system) the process has used so far, from /proc/PID/stat.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')').context("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is f[0]; utime is field 14, stime field 15.
    let utime: f64 = f[11].parse()?;
    let stime: f64 = f[12].parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// Resident set size in MiB, from /proc/PID/status.
pub fn rss_mib(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// A loopback port that was free a moment ago (for programs that cannot bind port 0 and say
/// which port they got, like nginx).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until something accepts connections on `port`.
pub fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

/// Raise this process's open-file limit (children inherit it) to `n`, or to the hard limit when
/// that is lower (raising the hard limit needs CAP_SYS_RESOURCE, which root may lack here).
pub fn raise_nofile(n: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    let want = libc::rlimit {
        rlim_cur: n,
        rlim_max: n.max(lim.rlim_max),
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(n);
    }
    let soft = libc::rlimit {
        rlim_cur: n.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
        bail!(
            "setrlimit(RLIMIT_NOFILE, {}): {}",
            soft.rlim_cur,
            std::io::Error::last_os_error()
        );
    }
    Ok(soft.rlim_cur)
}

/// 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
