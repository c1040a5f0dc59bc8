//! Loading and attaching the kernel programs, and reading their counters.

pub mod btf;
pub mod inflight;
mod inject;
mod system;

use std::os::fd::AsRawFd;

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{trace_point::TracePointLinkId, TracePoint},
    Ebpf, EbpfLoader,
};
use thiserror::Error;
use tracer_common::{
    config::{filter, Config},
    data::MAX_CAPTURE,
    names,
    offsets::Offsets,
    stats,
};

pub use system::{check_privileges, ensure_tracefs};

/// The kernel programs, built by build.rs.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-probes"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("this tracer was built without its kernel programs (AYA_BUILD_SKIP); rebuild with `cargo build`")]
    NoPrograms,
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("{0}")]
    System(String),
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object lacks `{0}`")]
    Missing(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("attaching {program} to {tracepoint} failed: {source} (the kernel needs syscall tracepoints: CONFIG_FTRACE_SYSCALLS)")]
    Attach {
        program: String,
        tracepoint: String,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("--capture-bytes must be between 64 and {MAX_CAPTURE}, got {0}")]
    CaptureBytes(u32),
    #[error("--ring-buffer-mib must be a power of two from 1 to 1024, got {0}")]
    RingSize(u32),
    #[error("--exe `{0}` is longer than the kernel's 15-character process name; give its first 15 characters")]
    CommTooLong(String),
}

/// A program the kernel's verifier refused, with its reason in one line (the whole log is
/// logged at debug level: it can be thousands of lines).
#[derive(Debug, Error)]
#[error("the kernel refused the eBPF program {program}: {reason} ({errno}; `--log debug` prints the verifier's whole log)")]
pub struct Refused {
    pub program: String,
    pub reason: String,
    pub errno: String,
}

impl Refused {
    /// The refusal in `e`, if loading failed in the verifier (or the load syscall).
    pub fn from_program_error(program: &str, e: &aya::programs::ProgramError) -> Option<Self> {
        let aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } = e
        else {
            return None;
        };
        let log = verifier_log.to_string();
        tracing::debug!("verifier log of {program}:\n{log}");
        Some(Self {
            program: program.into(),
            reason: verifier_reason(&log).unwrap_or("no verifier log").into(),
            errno: io_error.to_string(),
        })
    }
}

/// The verifier's reason in its log: the last line before its closing statistics.
fn verifier_reason(log: &str) -> Option<&str> {
    log.lines().map(str::trim).rev().find(|l| {
        !l.is_empty()
            && !l.starts_with("verification time")
            && !l.starts_with("stack depth")
            && !l.starts_with("processed ")
    })
}

/// What the kernel programs should trace.
#[derive(Debug, Clone, Default)]
pub struct ProbeConfig {
    pub capture_bytes: u32,
    /// Size of the ring buffer of records, in MiB (a power of two).
    pub ring_mib: u32,
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    pub comms: Vec<String>,
    pub cgroup_ids: Vec<u64>,
    /// Insert `traceparent` into outgoing requests of traced processes.
    pub inject: bool,
    /// Cgroup v2 directories of the `--cgroup` filter (injection attaches there).
    pub cgroup_dirs: Vec<std::path::PathBuf>,
    /// Protocols whose connections the kernel captures (`tracer_common::classify::Protocol::bit`).
    pub protocols: u32,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    /// Every tracepoint attachment, by program name, for [`Probes::detach`].
    links: Vec<(&'static str, TracePointLinkId)>,
}

/// Field offsets of the kernel structs the programs walk, from the running kernel's BTF.
pub fn kernel_offsets(btf: &btf::Btf) -> Result<Offsets, btf::BtfError> {
    let off = |s: &str, m: &str| btf.member(s, m).map(|i| i.offset);
    // sock_common is the first member of sock; its offset is added for robustness anyway.
    let skc = off("sock", "__sk_common")?;
    let skc_off = |m: &str| off("sock_common", m).map(|o| o + skc);
    let optional = |r: Result<u32, btf::BtfError>| r.unwrap_or(Offsets::ABSENT);
    // `possible_net_t` holds just the `struct net *` (at its start), and nothing at all on kernels
    // built without network namespaces: then every socket is in the one namespace.
    let skc_net = btf
        .member("sock_common", "skc_net")
        .ok()
        .filter(|m| m.size == 8)
        .map_or(Offsets::ABSENT, |m| m.offset + skc);
    let net_ns_inum = match (off("net", "ns"), off("ns_common", "inum")) {
        (Ok(ns), Ok(inum)) => ns + inum,
        _ => Offsets::ABSENT,
    };
    // The file's reference count: `f_ref` (a file_ref_t, 0 for one reference) since 6.13,
    // `f_count` (1 for one) before.
    let (file_count, file_ref_zero_based) = match (off("file", "f_ref"), off("file", "f_count")) {
        (Ok(o), _) => (o, 1),
        (_, Ok(o)) => (o, 0),
        _ => (Offsets::ABSENT, 0),
    };
    Ok(Offsets {
        task_files: off("task_struct", "files")?,
        files_fdt: off("files_struct", "fdt")?,
        fdt_max_fds: off("fdtable", "max_fds")?,
        fdt_fd: off("fdtable", "fd")?,
        file_private_data: off("file", "private_data")?,
        file_f_inode: off("file", "f_inode")?,
        inode_i_mode: off("inode", "i_mode")?,
        socket_type: off("socket", "type")?,
        socket_sk: off("socket", "sk")?,
        skc_family: skc_off("skc_family")?,
        skc_daddr: skc_off("skc_daddr")?,
        skc_rcv_saddr: skc_off("skc_rcv_saddr")?,
        skc_dport: skc_off("skc_dport")?,
        skc_num: skc_off("skc_num")?,
        skc_v6_daddr: optional(skc_off("skc_v6_daddr")),
        skc_v6_rcv_saddr: optional(skc_off("skc_v6_rcv_saddr")),
        // A bitfield before 5.6: then TCP is recognised by SOCK_STREAM + inet family alone.
        sk_protocol: btf
            .member("sock", "sk_protocol")
            .ok()
            .filter(|m| m.size == 2)
            .map_or(Offsets::ABSENT, |m| m.offset),
        skc_net: if net_ns_inum == Offsets::ABSENT {
            Offsets::ABSENT
        } else {
            skc_net
        },
        net_ns_inum,
        task_tgid: off("task_struct", "tgid")?,
        task_comm: off("task_struct", "comm")?,
        skc_state: skc_off("skc_state")?,
        file_count,
        file_ref_zero_based,
        // Record layouts of the other tracepoints: see `tracepoint_offsets`.
        tp_state_skaddr: 8,
        tp_state_newstate: 20,
        tp_newtask_pid: 8,
        tp_newtask_flags: 32,
        sk_socket: off("sock", "sk_socket")?,
    })
}

/// Offset of `field` in the records of tracepoint `category:name`, from its tracefs `format`.
fn tracepoint_field(category: &str, name: &str, field: &str) -> Result<u32, LoadError> {
    let format = [system::TRACEFS, "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            std::fs::read_to_string(format!("{root}/events/{category}/{name}/format")).ok()
        })
        .ok_or_else(|| {
            LoadError::System(format!(
                "tracepoint {category}:{name} not found in tracefs (the kernel lacks it)"
            ))
        })?;
    format_field(&format, field).ok_or_else(|| {
        LoadError::System(format!(
            "tracepoint {category}:{name} has no field `{field}`"
        ))
    })
}

/// Offset of `field` in a tracefs `format` text (`field:TYPE NAME; offset:N; size:N; ...`).
pub fn format_field(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.trim().strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|v| v.parse().ok())
    })
}

/// Offsets of the fields the programs read from the non-syscall tracepoints.
fn tracepoint_offsets(o: &mut Offsets) -> Result<(), LoadError> {
    o.tp_state_skaddr = tracepoint_field("sock", "inet_sock_set_state", "skaddr")?;
    o.tp_state_newstate = tracepoint_field("sock", "inet_sock_set_state", "newstate")?;
    o.tp_newtask_pid = tracepoint_field("task", "task_newtask", "pid")?;
    o.tp_newtask_flags = tracepoint_field("task", "task_newtask", "clone_flags")?;
    Ok(())
}

fn comm_key(name: &str) -> Result<[u8; 16], LoadError> {
    let b = name.as_bytes();
    if b.len() > 15 {
        return Err(LoadError::CommTooLong(name.into()));
    }
    let mut k = [0u8; 16];
    k[..b.len()].copy_from_slice(b);
    Ok(k)
}

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, LoadError> {
    ebpf.map_mut(name)
        .ok_or_else(|| LoadError::Missing(name.into()))
}

impl Probes {
    /// Load the programs with `cfg`, fill the filter maps, attach every tracepoint.
    pub fn load(cfg: &ProbeConfig) -> Result<Self, LoadError> {
        if PROBES.is_empty() {
            return Err(LoadError::NoPrograms);
        }
        if !(64..=MAX_CAPTURE as u32).contains(&cfg.capture_bytes) {
            return Err(LoadError::CaptureBytes(cfg.capture_bytes));
        }
        if !cfg.ring_mib.is_power_of_two() || cfg.ring_mib > 1024 {
            return Err(LoadError::RingSize(cfg.ring_mib));
        }
        let comms = cfg
            .comms
            .iter()
            .map(|c| comm_key(c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut offsets = kernel_offsets(&btf::Btf::from_sys()?)?;
        ensure_tracefs().map_err(LoadError::System)?;
        tracepoint_offsets(&mut offsets)?;

        let mut filters = 0;
        for (set, bit) in [
            (!cfg.pids.is_empty(), filter::PID),
            (!comms.is_empty(), filter::COMM),
            (!cfg.cgroup_ids.is_empty(), filter::CGROUP),
            (!cfg.ports.is_empty(), filter::PORT),
        ] {
            if set {
                filters |= bit;
            }
        }
        let config = Config {
            self_tgid: std::process::id(),
            capture_bytes: cfg.capture_bytes,
            filters,
            inject: u32::from(cfg.inject),
            protocols: cfg.protocols,
            ..Config::default_const()
        };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::MAP_EVENTS, cfg.ring_mib << 20)
            .override_global(names::GLOBAL_CONFIG, &config, true)
            .override_global(names::GLOBAL_OFFSETS, &offsets, true)
            .load(PROBES)
            .map_err(|e| LoadError::Load(Box::new(e)))?;

        fill(&mut ebpf, names::MAP_FILTER_PIDS, cfg.pids.iter().copied())?;
        fill(
            &mut ebpf,
            names::MAP_FILTER_PORTS,
            cfg.ports.iter().copied(),
        )?;
        fill(
            &mut ebpf,
            names::MAP_FILTER_CGROUPS,
            cfg.cgroup_ids.iter().copied(),
        )?;
        fill(&mut ebpf, names::MAP_FILTER_COMMS, comms.into_iter())?;

        set_tail_call(&mut ebpf, names::PROG_SNIFF, names::MAP_SNIFF_PROG)?;
        let mut links =
            Vec::with_capacity(names::TRACEPOINTS.len() + names::OTHER_TRACEPOINTS.len());
        let all = names::TRACEPOINTS
            .iter()
            .map(|(p, t)| (*p, "syscalls", *t))
            .chain(names::OTHER_TRACEPOINTS.iter().copied());
        for (program, category, tracepoint) in all {
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| LoadError::Missing(program.into()))?
                .try_into()
                .map_err(|source| LoadError::Attach {
                    program: program.into(),
                    tracepoint: format!("{category}:{tracepoint}"),
                    source: Box::new(source),
                })?;
            // A program serving several tracepoints is loaded (verified) once.
            if prog.fd().is_err() {
                prog.load().map_err(|source| {
                    match Refused::from_program_error(program, &source) {
                        Some(r) => LoadError::Refused(r),
                        None => LoadError::Attach {
                            program: (*program).into(),
                            tracepoint: format!("{category}:{tracepoint}"),
                            source: Box::new(source),
                        },
                    }
                })?;
            }
            let link = prog
                .attach(category, tracepoint)
                .map_err(|source| LoadError::Attach {
                    program: program.into(),
                    tracepoint: format!("{category}:{tracepoint}"),
                    source: Box::new(source),
                })?;
            links.push((program, link));
        }
        if cfg.inject {
            if let Err(r) = inject::attach(&mut ebpf, &cfg.cgroup_dirs)? {
                tracing::warn!(
                    "context injection is not available on this kernel, tracing continues without it: {r}"
                );
            }
        }
        let mut probes = Self { ebpf, links };
        probes.seed_inflight_reads()?;
        Ok(probes)
    }

    /// Detach every tracepoint at once. Each detach waits for the kernel's tracepoint grace
    /// period (~70 ms here); one after the other, as dropping the programs does, that is ~2 s.
    pub fn detach(&mut self) {
        let mut owned = Vec::with_capacity(self.links.len());
        for (name, id) in self.links.drain(..) {
            let prog: Option<&mut TracePoint> =
                self.ebpf.program_mut(name).and_then(|p| p.try_into().ok());
            if let Some(link) = prog.and_then(|p| p.take_link(id).ok()) {
                owned.push(link);
            }
        }
        std::thread::scope(|s| {
            for link in owned {
                // A thread that cannot start leaves its link to be dropped here, in turn.
                let _ = std::thread::Builder::new().spawn_scoped(s, move || drop(link));
            }
        });
    }

    /// Forget saved syscall arguments of threads that no longer exist (they died inside the
    /// syscall, so no exit took them). Returns how many were removed.
    pub fn sweep_args(&mut self) -> usize {
        let Some(map) = self.ebpf.map_mut(names::MAP_ARGS) else {
            return 0;
        };
        let Ok(mut map) = BpfHashMap::<_, u64, tracer_common::args::Args>::try_from(map) else {
            return 0;
        };
        let dead: Vec<u64> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !std::path::Path::new(&format!("/proc/{}/task/{}", k >> 32, k & 0xffff_ffff))
                    .exists()
            })
            .collect();
        dead.iter().filter(|k| map.remove(k).is_ok()).count()
    }

    /// Save the arguments of reads that were already blocked when the programs attached (see
    /// [`inflight`]); entries the probes wrote meanwhile are kept.
    fn seed_inflight_reads(&mut self) -> Result<usize, LoadError> {
        let blocked = inflight::scan(std::path::Path::new("/proc"), std::process::id());
        // The slots' spill marks first: an exit that finds its entry must also look for it.
        let name = names::MAP_ARG_SPILL;
        let mut marks: aya::maps::Array<_, u8> =
            aya::maps::Array::try_from(map_mut(&mut self.ebpf, name)?).map_err(|source| {
                LoadError::Map {
                    name,
                    source: Box::new(source),
                }
            })?;
        for b in &blocked {
            let slot = (b.pid_tgid as u32) & (tracer_common::args::ARG_SLOTS - 1);
            let _ = marks.set(slot, tracer_common::args::SPILLED, 0);
        }
        let name = names::MAP_ARGS;
        let mut map: BpfHashMap<_, u64, tracer_common::args::Args> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, name)?).map_err(|source| {
                LoadError::Map {
                    name,
                    source: Box::new(source),
                }
            })?;
        let now = crate::clock::Clock::mono_now();
        let mut seeded = 0;
        for b in blocked {
            // BPF_NOEXIST: the thread may have returned and entered a new read since the scan.
            if map.insert(b.pid_tgid, b.args(now), 1).is_ok() {
                seeded += 1;
            }
        }
        tracing::debug!("{seeded} reads in flight at attach time");
        Ok(seeded)
    }

    /// The kernel's connection table, for the conns stage's verdicts (can be taken once).
    pub fn take_conn_table(&mut self) -> Result<ConnTable, LoadError> {
        let map = self
            .ebpf
            .take_map(names::MAP_CONNS)
            .ok_or_else(|| LoadError::Missing(names::MAP_CONNS.into()))?;
        let map = BpfHashMap::try_from(map).map_err(|source| LoadError::Map {
            name: names::MAP_CONNS,
            source: Box::new(source),
        })?;
        Ok(ConnTable { map })
    }

    /// The ring buffer the programs write records to (can be taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map(names::MAP_EVENTS)
            .ok_or_else(|| LoadError::Missing(names::MAP_EVENTS.into()))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map {
            name: names::MAP_EVENTS,
            source: Box::new(source),
        })
    }

    /// Kernel counters summed over CPUs, indexed by `tracer_common::stats` ids.
    pub fn kernel_stats(&self) -> [u64; stats::COUNT as usize] {
        let mut out = [0u64; stats::COUNT as usize];
        let Some(map) = self.ebpf.map(names::MAP_STATS) else {
            return out;
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
            return out;
        };
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = arr.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }

    /// File descriptor of the ring buffer map, for diagnostics.
    pub fn events_fd(ring: &RingBuf<MapData>) -> i32 {
        ring.as_raw_fd()
    }
}

/// Deletes entries of the kernel's connection table (see [`Probes::take_conn_forgetter`]).
/// `bpf_map_update_elem` flag: replace an existing entry only.
const BPF_EXIST: u64 = 2;

/// The kernel's connection table, keyed by `ConnEvent::sock`.
pub struct ConnTable {
    map: BpfHashMap<MapData, u64, tracer_common::conn::ConnState>,
}

impl crate::pipeline::conns::KernelConns for ConnTable {
    /// A missing entry (the socket closed meanwhile) or one of another connection needs
    /// nothing; one not announced yet will be anyway.
    fn announce_again(&mut self, sock: u64, conn_id: u64) {
        self.rewrite(sock, conn_id, |st| {
            if st.announced == tracer_common::conn::announced::YES {
                st.announced = tracer_common::conn::announced::AGAIN;
            }
        });
    }

    /// The next syscall finds the connection ignored (see `rewrite`).
    fn ignore(&mut self, sock: u64, conn_id: u64) {
        self.rewrite(sock, conn_id, |st| {
            st.state = tracer_common::conn::state::IGNORED
        });
    }
}

impl ConnTable {
    /// Apply `f` to the entry of `sock` if it still holds connection `conn_id` (a socket closed
    /// meanwhile may carry another one by now). The entry is rewritten whole: a program holding
    /// the old one finishes its syscall with it, and the next one sees the change.
    fn rewrite(
        &mut self,
        sock: u64,
        conn_id: u64,
        f: impl FnOnce(&mut tracer_common::conn::ConnState),
    ) {
        if let Ok(mut st) = self.map.get(&sock, 0) {
            if st.conn_id != conn_id {
                return;
            }
            f(&mut st);
            // BPF_EXIST: only over an existing entry; one the socket's close removed stays removed.
            let _ = self.map.insert(sock, st, BPF_EXIST);
        }
    }
}

/// Put program `prog` in slot 0 of the program array `map` (a tail call target).
fn set_tail_call(ebpf: &mut Ebpf, prog: &'static str, map: &'static str) -> Result<(), LoadError> {
    let p: &mut TracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| LoadError::Missing(prog.into()))?
        .try_into()
        .map_err(|source| LoadError::Attach {
            program: prog.into(),
            tracepoint: "a tail call".into(),
            source: Box::new(source),
        })?;
    p.load().map_err(|source| LoadError::Attach {
        program: prog.into(),
        tracepoint: "a tail call".into(),
        source: Box::new(source),
    })?;
    let fd = p
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|source| LoadError::Attach {
            program: prog.into(),
            tracepoint: "a tail call".into(),
            source: Box::new(source),
        })?;
    let mut slots = aya::maps::ProgramArray::try_from(map_mut(ebpf, map)?).map_err(|source| {
        LoadError::Map {
            name: map,
            source: Box::new(source),
        }
    })?;
    slots.set(0, &fd, 0).map_err(|source| LoadError::Map {
        name: map,
        source: Box::new(source),
    })
}

fn fill<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: impl Iterator<Item = K>,
) -> Result<(), LoadError> {
    let mut map: BpfHashMap<_, K, u8> =
        BpfHashMap::try_from(map_mut(ebpf, name)?).map_err(|source| LoadError::Map {
            name,
            source: Box::new(source),
        })?;
    for k in keys {
        map.insert(k, 1, 0).map_err(|source| LoadError::Map {
            name,
            source: Box::new(source),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_reason_is_the_line_before_the_statistics() {
        let log = "0: R1=ctx(off=0,imm=0) R10=fp0\n825: (85) call bpf_probe_read_user#112\n\
                   R1 min value is negative, either use unsigned index\n\
                   verification time 1472767 usec\nstack depth 392+0\n\
                   processed 26947 insns (limit 1000000) max_states_per_insn 10\n";
        assert_eq!(
            verifier_reason(log),
            Some("R1 min value is negative, either use unsigned index")
        );
        assert_eq!(
            verifier_reason("4: (85) call bpf_get_current_pid_tgid#14\nunknown func bpf_get_current_pid_tgid#14\nverification time 861 usec\n"),
            Some("unknown func bpf_get_current_pid_tgid#14")
        );
        assert_eq!(verifier_reason(""), None);
    }

    const SET_STATE: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n";

    #[test]
    fn tracepoint_format_fields() {
        for (field, want) in [
            ("skaddr", Some(8)),
            ("newstate", Some(20)),
            ("saddr_v6", Some(40)),
            ("parent_comm", Some(8)),
            ("common_pid", Some(4)),
            ("oldstate", None),
            ("saddr", None),
        ] {
            assert_eq!(format_field(SET_STATE, field), want, "{field}");
        }
    }

    #[test]
    fn running_kernel_has_the_tracepoints_and_offsets() {
        let mut o = kernel_offsets(&btf::Btf::from_sys().expect("kernel BTF")).expect("offsets");
        assert_ne!(o.file_count, Offsets::ABSENT);
        ensure_tracefs().expect("tracefs");
        tracepoint_offsets(&mut o).expect("tracepoint formats");
        assert_eq!((o.tp_state_skaddr, o.tp_state_newstate), (8, 20));
    }
}
