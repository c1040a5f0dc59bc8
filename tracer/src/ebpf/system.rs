//! Host prerequisites: privileges and tracefs.

use std::path::Path;

/// Capability numbers from <linux/capability.h>.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// One line naming the missing capabilities, or Ok when loading can be tried.
pub fn check_privileges() -> Result<(), String> {
    let Some(caps) = effective_caps() else {
        return Ok(()); // Cannot tell: let the kernel decide.
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| *n)
        .collect();
    Err(format!(
        "tracer needs {} (or CAP_SYS_ADMIN) to load eBPF programs: run it as root (`sudo tracer`) or grant them (`sudo setcap cap_bpf,cap_perfmon,cap_sys_admin+ep $(which tracer)`)",
        missing.join(" and ")
    ))
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mount tracefs at /sys/kernel/tracing when it is missing (syscall tracepoints need it).
pub fn ensure_tracefs() -> Result<(), String> {
    if Path::new(TRACEFS).join("events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({}): run `mount -t tracefs nodev {TRACEFS}` as root",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
