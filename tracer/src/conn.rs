//! Connections as the agent knows them: identity, ends, process, and the protocol parser fed by
//! their segments. Bounded: LRU beyond `max` entries, forgotten after an idle timeout.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use tracer_common::conn::{role, ConnEvent, AF_INET};

use crate::{
    hash::{self, FastLru},
    process::ProcessInfo,
    protocol::{ConnParser, Role},
    span::{Endpoints, ExchangeKey, KernelIds},
};

/// What spans need to know about the connection they happened on.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    pub conn_id: u64,
    pub tgid: u32,
    pub fd: i32,
    pub role: Role,
    pub endpoints: Endpoints,
    /// The ends' addresses as attribute text.
    pub addresses: Addresses,
    pub cgroup_id: u64,
    /// Inode number of the socket's network namespace; 0 if unknown.
    pub netns: u32,
    pub process: Arc<ProcessInfo>,
}

/// The addresses of a connection's ends as text, formatted once per connection rather than once
/// per span.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub local: Arc<str>,
    pub remote: Arc<str>,
}

impl Addresses {
    pub fn of(e: &Endpoints) -> Self {
        Self {
            local: e.local.0.to_string().into(),
            remote: e.remote.0.to_string().into(),
        }
    }
}

/// An address as the kernel gives it; IPv4-mapped IPv6 shown as IPv4.
pub fn ip_of(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        return IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]));
    }
    let v6 = Ipv6Addr::from(*raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub fn role_of(raw: u8) -> Role {
    match raw {
        role::CLIENT => Role::Client,
        role::SERVER => Role::Server,
        _ => Role::Unknown,
    }
}

/// The kernel's task name, up to its NUL.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl ConnMeta {
    pub fn from_event(ev: &ConnEvent, process: Arc<ProcessInfo>) -> Self {
        let endpoints = Endpoints {
            local: (ip_of(ev.family, &ev.local_addr), ev.local_port),
            remote: (ip_of(ev.family, &ev.remote_addr), ev.remote_port),
        };
        Self {
            conn_id: ev.conn_id,
            tgid: ev.tgid,
            fd: ev.fd,
            role: role_of(ev.role),
            addresses: Addresses::of(&endpoints),
            endpoints,
            cgroup_id: ev.cgroup_id,
            netns: ev.netns,
            process,
        }
    }
}

/// A tracked connection.
pub struct Conn {
    pub meta: Arc<ConnMeta>,
    /// The kernel's key of the connection (`ConnEvent::sock`).
    pub sock: u64,
    /// Chosen on the first segment a registered protocol recognises.
    pub parser: Option<Box<dyn ConnParser>>,
    /// Monotonic ns of the last event.
    pub last_seen: u64,
    /// Client connections: the thread parent of each started, unreported exchange, by id.
    pub thread_parents: VecDeque<(u64, Option<ExchangeKey>)>,
    /// Server connections: the traced client connection at the other end, if any.
    pub mirror: Option<u64>,
    /// Kernel-chosen ids carried by the last request head seen, for the next request to start.
    pub kernel_next: Option<KernelIds>,
    /// Kernel-chosen ids of started, unreported exchanges, by id.
    pub kernel_ids: VecDeque<(u64, KernelIds)>,
}

impl Conn {
    pub fn new(meta: Arc<ConnMeta>, ts: u64) -> Self {
        Self {
            meta,
            sock: 0,
            parser: None,
            last_seen: ts,
            thread_parents: Default::default(),
            mirror: None,
            kernel_next: None,
            kernel_ids: Default::default(),
        }
    }
}

/// Connections by id, least recently used first out.
pub struct ConnTable {
    conns: FastLru<u64, Conn>,
}

impl ConnTable {
    pub fn new(max: usize) -> Self {
        Self {
            conns: hash::lru(max),
        }
    }

    /// Insert; returns the connection pushed out if the table was full.
    pub fn insert(&mut self, conn: Conn) -> Option<Conn> {
        let id = conn.meta.conn_id;
        match self.conns.push(id, conn) {
            Some((old_id, old)) if old_id != id => Some(old),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    /// `get_mut` without making it the most recently used (no traffic of its own happened).
    pub fn peek_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.peek_mut(&id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Conn> {
        self.conns.pop(&id)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.conns.iter().map(|(_, c)| c)
    }

    /// Ids of connections idle since before `cutoff` (monotonic ns), oldest first.
    pub fn idle_since(&self, cutoff: u64) -> Vec<u64> {
        // LRU order is access order, which is event order: stop at the first recent one.
        self.conns
            .iter()
            .rev()
            .take_while(|(_, c)| c.last_seen < cutoff)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Connections with requests waiting for responses.
    pub fn with_pending(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.conns
            .iter_mut()
            .map(|(_, c)| c)
            .filter(|c| c.parser.as_ref().is_some_and(|p| p.has_pending()))
    }
}
