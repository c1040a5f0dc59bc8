//! What we know of a traced process: read once from /proc when its first connection is seen
//! (short-lived clients may be gone by the time their spans are built).

use std::{num::NonZeroUsize, path::Path, sync::Arc};

use lru::LruCache;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Executable name (basename of /proc/PID/exe, else the kernel's task name).
    pub exe_name: String,
    pub exe_path: String,
    pub command_line: String,
    /// `OTEL_SERVICE_NAME` from the process's environment, else the executable name.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` from the process's environment, parsed.
    pub resource_attributes: Vec<(String, String)>,
    /// Start time in clock ticks since boot (distinguishes a reused pid).
    pub start_ticks: u64,
}

/// Most bytes read from a process's environment.
const MAX_ENVIRON: u64 = 256 * 1024;

fn read_capped(path: &Path, cap: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(cap).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Field 22 of /proc/PID/stat (after the parenthesised comm, which may hold spaces).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `k1=v1,k2=v2` as in the OpenTelemetry spec (values may be percent-encoded).
pub fn parse_resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            Some((k.to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ProcessInfo {
    /// Read /proc/PID; `comm` (from the kernel) fills in when the process is already gone.
    pub fn read(pid: u32, comm: &str) -> Self {
        let dir = format!("/proc/{pid}");
        let exe_path = std::fs::read_link(format!("{dir}/exe"))
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        let exe_name = Path::new(&exe_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| comm.to_string());
        let command_line = read_capped(Path::new(&format!("{dir}/cmdline")), 16 * 1024)
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let mut service_name = None;
        let mut resource_attributes = Vec::new();
        if let Some(env) = read_capped(Path::new(&format!("{dir}/environ")), MAX_ENVIRON) {
            for var in env.split(|&c| c == 0) {
                if let Some(v) = var.strip_prefix(b"OTEL_SERVICE_NAME=") {
                    let v = String::from_utf8_lossy(v).trim().to_string();
                    if !v.is_empty() {
                        service_name = Some(v);
                    }
                } else if let Some(v) = var.strip_prefix(b"OTEL_RESOURCE_ATTRIBUTES=") {
                    resource_attributes = parse_resource_attributes(&String::from_utf8_lossy(v));
                }
            }
        }
        let service_name = service_name
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| exe_name.clone());
        Self {
            pid,
            exe_name,
            exe_path,
            command_line,
            service_name,
            resource_attributes,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }
}

/// Bounded cache of process descriptions by pid.
pub struct ProcessCache {
    cache: LruCache<u32, Arc<ProcessInfo>>,
}

impl ProcessCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// The process with `pid`, re-read if the pid now belongs to another process.
    pub fn get(&mut self, pid: u32, comm: &str) -> Arc<ProcessInfo> {
        if let Some(p) = self.cache.get(&pid) {
            let fresh = p.start_ticks == 0 || start_ticks(pid).is_none_or(|t| t == p.start_ticks);
            if fresh {
                return p.clone();
            }
        }
        let info = Arc::new(ProcessInfo::read(pid, comm));
        self.cache.put(pid, info.clone());
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let me = ProcessInfo::read(std::process::id(), "x");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.exe_name.is_empty());
        assert!(me.start_ticks > 0);
    }

    #[test]
    fn gone_process_falls_back_to_comm() {
        let p = ProcessInfo::read(u32::MAX - 1, "curl");
        assert_eq!(p.exe_name, "curl");
        assert_eq!(p.service_name, "curl");
    }

    #[test]
    fn resource_attributes() {
        let a =
            parse_resource_attributes("service.name=shop, deployment.environment=prod%20eu,bad,=x");
        assert_eq!(
            a,
            vec![
                ("service.name".to_string(), "shop".to_string()),
                ("deployment.environment".to_string(), "prod eu".to_string())
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
