//! Reads already in flight when the programs attach.
//!
//! A thread blocked in `recv` on a keep-alive connection entered the syscall before the entry
//! probe existed, so its exit would find no saved arguments and the request it returns would be
//! lost. `/proc/PID/task/TID/syscall` shows such a thread's syscall number and arguments: the
//! agent writes the missing `ARGS` entries itself, once, right after attaching. Entries are only
//! added where none exists (a fresh entry from the probe always wins), and only for socket fds.

use std::path::Path;

use tracer_common::{
    args::{src, Args},
    data::{direction, syscall},
};

/// A read-type syscall as `/proc/.../syscall` shows it: (syscall number, argument source, id).
const READS: &[(i64, u8, u8)] = &[
    (libc::SYS_read, src::BUF, syscall::READ),
    (libc::SYS_readv, src::IOV, syscall::READV),
    (libc::SYS_recvfrom, src::BUF, syscall::RECVFROM),
    (libc::SYS_recvmsg, src::MSG, syscall::RECVMSG),
];

/// A thread blocked in a read on a socket: the key and value of its `ARGS` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub pid_tgid: u64,
    pub fd: i32,
    pub ptr: u64,
    pub len: u64,
    pub src: u8,
    pub syscall: u8,
}

impl Blocked {
    pub fn args(&self, ts_enter: u64) -> Args {
        Args {
            ts_enter,
            ptr: self.ptr,
            len: self.len,
            fd: self.fd,
            src: self.src,
            syscall: self.syscall,
            direction: direction::INGRESS,
            flags: 0,
            // Unknown: the exit looks the fd up.
            sock: 0,
        }
    }
}

/// Parse one `/proc/PID/task/TID/syscall` line: "NR ARG1 .. ARG6 SP PC" (hex arguments), or
/// "running" / "-1 ..." for a thread not in a syscall.
pub fn parse_syscall_line(line: &str) -> Option<(i64, [u64; 3])> {
    let mut it = line.split_ascii_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    let mut a = [0u64; 3];
    for slot in &mut a {
        let v = it.next()?;
        *slot = u64::from_str_radix(v.strip_prefix("0x").unwrap_or(v), 16).ok()?;
    }
    Some((nr, a))
}

/// What `line` says about thread `tid` of `tgid`, if it is blocked in a read-type syscall.
pub fn blocked_read(tgid: u32, tid: u32, line: &str) -> Option<Blocked> {
    let (nr, [fd, ptr, len]) = parse_syscall_line(line)?;
    let &(_, src, sys) = READS.iter().find(|(n, _, _)| *n == nr)?;
    Some(Blocked {
        pid_tgid: (u64::from(tgid) << 32) | u64::from(tid),
        fd: i32::try_from(fd).ok()?,
        ptr,
        len,
        src,
        syscall: sys,
    })
}

fn numeric_dirs(dir: &Path) -> impl Iterator<Item = u32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
}

/// Every thread on the host (but `self_tgid`'s) blocked in a read on a socket.
pub fn scan(proc_root: &Path, self_tgid: u32) -> Vec<Blocked> {
    let mut out = Vec::new();
    for tgid in numeric_dirs(proc_root).filter(|&p| p != self_tgid) {
        let tasks = proc_root.join(tgid.to_string()).join("task");
        for tid in numeric_dirs(&tasks) {
            let Ok(line) = std::fs::read_to_string(tasks.join(tid.to_string()).join("syscall"))
            else {
                continue;
            };
            let Some(b) = blocked_read(tgid, tid, &line) else {
                continue;
            };
            let link = proc_root
                .join(tgid.to_string())
                .join("fd")
                .join(b.fd.to_string());
            if std::fs::read_link(link).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
                out.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_recvfrom_is_recognised() {
        let line = format!(
            "{} 0x5 0x7ffd1000 0x2000 0x0 0x0 0x0 0x7ffd0f00 0x7f0012345678\n",
            libc::SYS_recvfrom
        );
        let b = blocked_read(10, 11, &line).unwrap();
        assert_eq!(
            b,
            Blocked {
                pid_tgid: (10 << 32) | 11,
                fd: 5,
                ptr: 0x7ffd1000,
                len: 0x2000,
                src: src::BUF,
                syscall: syscall::RECVFROM
            }
        );
    }

    #[test]
    fn running_threads_and_other_syscalls_are_not() {
        assert_eq!(blocked_read(1, 1, "running\n"), None);
        assert_eq!(blocked_read(1, 1, "-1 0x7ffd0f00 0x7f0012345678\n"), None);
        let poll = format!("{} 0x5 0x1 0x0 0x0 0x0 0x0 0x1 0x2", libc::SYS_poll);
        assert_eq!(blocked_read(1, 1, &poll), None);
        assert_eq!(blocked_read(1, 1, "0 0x5"), None);
        assert_eq!(blocked_read(1, 1, "0 zz 0x1 0x2"), None);
    }

    #[test]
    fn this_test_thread_is_seen_blocked_in_recv() {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let mut b = [0u8; 16];
            let _ = c.read(&mut b);
        });
        let (s, _) = l.accept().unwrap();
        let tid = rx.recv().unwrap();
        let me = std::process::id();
        let mut found = None;
        for _ in 0..200 {
            found = scan(Path::new("/proc"), 0)
                .into_iter()
                .find(|b| b.pid_tgid == (u64::from(me) << 32) | u64::from(tid));
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(s);
        h.join().unwrap();
        let b = found.expect("the reader thread blocked in read/recv is found");
        assert_eq!(b.len, 16);
    }
}
