//! Small helpers: temporary directories, free ports, the agent binary, thread ids, waiting.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

/// A directory under the system temp dir, removed (with everything in it) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "tracer-tests.{label}.{}.{}.{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        set_mode(&path, 0o755);
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Write a file of exactly `size` bytes (a repeating, recognisable pattern) and return its path.
    pub fn file_of_size(&self, name: &str, size: usize) -> PathBuf {
        let data: Vec<u8> = (0..size)
            .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz\n"[i % 37])
            .collect();
        self.write(name, &data)
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// A port free on 127.0.0.1 right now (bound, read back, released). Whoever uses it must retry on
/// a conflict: another process may take it in between.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// The id of the calling thread (what the agent reports as `thread.id`).
pub fn gettid() -> u64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The agent binary: `$TRACER_BIN`, else `target/debug/tracer` of the workspace (or of
/// `$CARGO_TARGET_DIR`), built with `cargo build -p tracer` once if it is missing or older than
/// the agent's sources (`cargo test` alone does not build it).
pub fn tracer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRACER_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "TRACER_BIN={} is not a file", p.display());
            return p;
        }
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let target = if target.is_relative() {
            root.join(target)
        } else {
            target
        };
        let bin = target.join("debug").join("tracer");
        let stale = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
            Err(_) => true,
            Ok(built) => ["tracer", "tracer-ebpf", "tracer-common"]
                .iter()
                .filter_map(|c| newest_mtime(&root.join(c)))
                .chain(newest_mtime(&root.join("Cargo.lock")))
                .any(|t| t > built),
        };
        if stale {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "tracer"])
                .current_dir(&root)
                .status()
                .expect("running cargo build -p tracer");
            if !status.success() {
                // Only a stale binary to fall back on (e.g. sources being edited): say so loudly.
                assert!(bin.is_file(), "cargo build -p tracer failed: {status}");
                // Straight to fd 2: libtest captures eprintln!.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "WARNING: cargo build -p tracer failed ({status}); testing the older {}\n",
                        bin.display()
                    )
                    .as_bytes(),
                );
            }
            assert!(
                bin.is_file(),
                "cargo build -p tracer did not produce {}",
                bin.display()
            );
        }
        bin
    })
    .clone()
}

/// The newest modification time of a file, or of any file under a directory (`target` and hidden
/// directories skipped).
fn newest_mtime(p: &Path) -> Option<std::time::SystemTime> {
    let m = std::fs::symlink_metadata(p).ok()?;
    if !m.is_dir() {
        return m.modified().ok();
    }
    std::fs::read_dir(p)
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !n.starts_with('.') && n != "target"
        })
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// Poll `f` every 20 ms until it returns `Some`, or `None` after `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `program` as found on PATH, or panic: the peers are installed by `cargo xtask setup`/`test`.
pub fn which(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{program}` is not installed (cargo xtask test installs the test peers: nginx, curl, python3, util-linux)")
}

/// The executable a running process runs, as the kernel reports it.
pub fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/exe: {e}"))
}

/// Direct children of a process.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
