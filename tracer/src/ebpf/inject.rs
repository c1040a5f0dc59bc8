//! Context injection: loading and attaching its kernel programs (see `tracer_common::inject`).
//!
//! The sock_ops program goes on the cgroup v2 directories given with `--cgroup`, or on the
//! cgroup v2 root (every process); the sk_msg program on the sockhash the sock_ops program fills;
//! the request-head program in the read exits' tail-call slot. Dropping the `Ebpf` detaches all
//! three and frees the sockhash, which returns its sockets to the kernel's plain TCP path.

use std::{fs::File, path::PathBuf};

use aya::{
    maps::{ProgramArray, SockHash},
    programs::{links::CgroupAttachMode, SkMsg, SockOps, TracePoint},
    Ebpf,
};
use tracer_common::{inject::SockKey, names};

use super::{LoadError, Refused};

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| LoadError::Missing(name.into()))?
        .try_into()
        .map_err(|e| inject_error(name, e))
}

fn inject_error(what: &str, e: impl std::fmt::Debug) -> LoadError {
    LoadError::System(format!(
        "context injection: {what}: {e:?} (run without --inject-context to trace without it)"
    ))
}

/// The cgroup v2 hierarchy's root, from the mount table.
pub fn cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The outcome of loading (verifying) program `name`. A refusal by the verifier is returned
/// apart: the kernel lacks something injection needs, and tracing goes on without it.
fn loaded(
    name: &str,
    r: Result<(), aya::programs::ProgramError>,
) -> Result<Result<(), Refused>, LoadError> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(e) => match Refused::from_program_error(name, &e) {
            Some(refused) => Ok(Err(refused)),
            None => Err(inject_error(name, e)),
        },
    }
}

/// Load and attach the injection programs. All three are loaded before any is attached, so
/// a kernel that refuses one (a helper it lacks) gets none: `Ok(Err(refusal))`.
pub fn attach(ebpf: &mut Ebpf, cgroups: &[PathBuf]) -> Result<Result<(), Refused>, LoadError> {
    let head = program::<TracePoint>(ebpf, names::PROG_HEAD)?.load();
    if let Err(r) = loaded(names::PROG_HEAD, head)? {
        return Ok(Err(r));
    }
    let msg = program::<SkMsg>(ebpf, names::PROG_SK_MSG)?.load();
    if let Err(r) = loaded(names::PROG_SK_MSG, msg)? {
        return Ok(Err(r));
    }
    let ops = program::<SockOps>(ebpf, names::PROG_SOCK_OPS)?.load();
    if let Err(r) = loaded(names::PROG_SOCK_OPS, ops)? {
        return Ok(Err(r));
    }
    let head = program::<TracePoint>(ebpf, names::PROG_HEAD)?;
    let head_fd = head
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|e| inject_error(names::PROG_HEAD, e))?;
    let mut slots = ProgramArray::try_from(
        ebpf.map_mut(names::MAP_HEAD_PROG)
            .ok_or_else(|| LoadError::Missing(names::MAP_HEAD_PROG.into()))?,
    )
    .map_err(|e| inject_error(names::MAP_HEAD_PROG, e))?;
    slots
        .set(0, &head_fd, 0)
        .map_err(|e| inject_error(names::MAP_HEAD_PROG, e))?;

    let socks_fd = {
        let map = ebpf
            .map(names::MAP_SOCKS)
            .ok_or_else(|| LoadError::Missing(names::MAP_SOCKS.into()))?;
        let socks: SockHash<_, SockKey> =
            SockHash::try_from(map).map_err(|e| inject_error(names::MAP_SOCKS, e))?;
        socks
            .fd()
            .try_clone()
            .map_err(|e| inject_error(names::MAP_SOCKS, e))?
    };
    let msg = program::<SkMsg>(ebpf, names::PROG_SK_MSG)?;
    msg.attach(&socks_fd)
        .map_err(|e| inject_error(names::PROG_SK_MSG, e))?;

    let targets: Vec<PathBuf> = if cgroups.is_empty() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        vec![cgroup2_root(&mountinfo).ok_or_else(|| {
            inject_error(
                "no cgroup v2 hierarchy is mounted",
                "mount one with `mount -t cgroup2 none /sys/fs/cgroup`",
            )
        })?]
    } else {
        cgroups.to_vec()
    };
    let ops = program::<SockOps>(ebpf, names::PROG_SOCK_OPS)?;
    for dir in &targets {
        let f = File::open(dir).map_err(|e| inject_error(&dir.display().to_string(), e))?;
        // A link (what aya makes here) coexists with other programs whatever the mode, and the
        // kernel refuses the multi flag on link creation.
        ops.attach(f, CgroupAttachMode::Single)
            .map_err(|e| inject_error(&format!("attaching to {}", dir.display()), e))?;
    }
    tracing::info!(
        "context injection on: cgroups {}",
        targets
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let mi = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                  30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_root(mi), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_root("22 1 0:21 / /proc rw - proc proc rw\n"), None);
    }
}
