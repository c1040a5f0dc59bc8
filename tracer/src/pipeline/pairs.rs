//! Both ends of one TCP connection, when both are traced on this host: a server connection and
//! a client connection whose addresses mirror each other (the server's local end is the client's
//! remote end and the other way round). The server's spans then get the client's spans as parents
//! (`tracer.link` = `connection`).
//!
//! Addresses alone are not enough on a host with several network namespaces (containers, pods):
//! every namespace has its own 127.0.0.1, and private addresses may be reused. So:
//! - loopback traffic never leaves its namespace: both ends must be in the same one;
//! - other addresses may join two namespaces of this kernel (veth pairs, bridges): the ends may be
//!   in any namespace;
//! - a pair is made only when it is the only possible one: the server has exactly one possible
//!   client and that client exactly one possible server. Two namespaces using the same addresses
//!   and ports at the same time are ambiguous and stay unpaired: an unlinked span is better than a
//!   wrongly linked one.

use std::net::SocketAddr;

use crate::{conn::ConnMeta, hash::FastMap, protocol::Role};

/// (local, remote) ends of a connection.
type Ends = (SocketAddr, SocketAddr);

fn ends(meta: &ConnMeta) -> Ends {
    let (l, r) = (meta.endpoints.local, meta.endpoints.remote);
    (SocketAddr::new(l.0, l.1), SocketAddr::new(r.0, r.1))
}

/// One traced connection as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    conn_id: u64,
    role: Role,
    netns: u32,
}

/// Whether `a` and `b`, whose addresses mirror each other, may be the two ends of one TCP
/// connection.
fn may_pair(a: &End, b: &End, loopback: bool) -> bool {
    let roles = matches!(
        (a.role, b.role),
        (Role::Client, Role::Server) | (Role::Server, Role::Client)
    );
    roles && (!loopback || a.netns == b.netns)
}

/// Traced connections by their ends.
#[derive(Default)]
pub struct Pairs {
    by_ends: FastMap<Ends, Vec<End>>,
}

/// A server connection's client end changed: `(server, client)`, `None` when it has none (any
/// more: a second possible client made it ambiguous).
pub type MirrorUpdate = (u64, Option<u64>);

impl Pairs {
    /// Index a new connection. Returns the server connections whose client end this decides or
    /// changes (the new connection itself if it is a server, else the servers it may pair with).
    pub fn add(&mut self, meta: &ConnMeta) -> Vec<MirrorUpdate> {
        let key = ends(meta);
        if key.0.ip().is_unspecified() || key.1.ip().is_unspecified() {
            return Vec::new();
        }
        let me = End {
            conn_id: meta.conn_id,
            role: meta.role,
            netns: meta.netns,
        };
        self.by_ends.entry(key).or_default().push(me);
        let loopback = key.0.ip().is_loopback() || key.1.ip().is_loopback();
        let mirrored = (key.1, key.0);
        let servers: Vec<(End, Ends)> = match me.role {
            Role::Server => vec![(me, key)],
            Role::Client => self
                .at(&mirrored)
                .iter()
                .filter(|s| may_pair(&me, s, loopback))
                .map(|s| (*s, mirrored))
                .collect(),
            Role::Unknown => Vec::new(),
        };
        servers
            .into_iter()
            .map(|(s, skey)| (s.conn_id, self.only_client(&s, skey, loopback)))
            .collect()
    }

    /// Forget a connection that left the table.
    pub fn remove(&mut self, meta: &ConnMeta) {
        let key = ends(meta);
        if let Some(v) = self.by_ends.get_mut(&key) {
            v.retain(|e| e.conn_id != meta.conn_id);
            if v.is_empty() {
                self.by_ends.remove(&key);
            }
        }
    }

    fn at(&self, key: &Ends) -> &[End] {
        self.by_ends.get(key).map_or(&[], Vec::as_slice)
    }

    /// The client end of server `s` (whose ends are `skey`) if there is exactly one possible, and
    /// `s` is its only possible server.
    fn only_client(&self, s: &End, skey: Ends, loopback: bool) -> Option<u64> {
        let mut clients = self
            .at(&(skey.1, skey.0))
            .iter()
            .filter(|c| may_pair(s, c, loopback));
        let (Some(c), None) = (clients.next(), clients.next()) else {
            return None;
        };
        let servers = self
            .at(&skey)
            .iter()
            .filter(|x| may_pair(c, x, loopback))
            .count();
        (servers == 1).then_some(c.conn_id)
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use super::*;
    use crate::{conn::Addresses, span::Endpoints};

    fn meta(id: u64, role: Role, netns: u32, local: (&str, u16), remote: (&str, u16)) -> ConnMeta {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let endpoints = Endpoints {
            local: (ip(local.0), local.1),
            remote: (ip(remote.0), remote.1),
        };
        ConnMeta {
            conn_id: id,
            tgid: 1,
            fd: 3,
            role,
            addresses: Addresses::of(&endpoints),
            endpoints,
            cgroup_id: 0,
            netns,
            process: Arc::default(),
        }
    }

    const LO: &str = "127.0.0.1";

    #[test]
    fn mirrored_ends_pair_in_either_order() {
        let mut p = Pairs::default();
        assert_eq!(
            p.add(&meta(1, Role::Client, 7, (LO, 40000), (LO, 80))),
            vec![]
        );
        assert_eq!(
            p.add(&meta(2, Role::Server, 7, (LO, 80), (LO, 40000))),
            vec![(2, Some(1))]
        );
        let mut p = Pairs::default();
        assert_eq!(
            p.add(&meta(2, Role::Server, 7, (LO, 80), (LO, 40000))),
            vec![(2, None)]
        );
        assert_eq!(
            p.add(&meta(1, Role::Client, 7, (LO, 40000), (LO, 80))),
            vec![(2, Some(1))]
        );
    }

    #[test]
    fn loopback_pairs_only_within_its_namespace() {
        // Namespaces 7 and 8 both connect 127.0.0.1:40000 -> 127.0.0.1:80; x's server comes last.
        let mut p = Pairs::default();
        p.add(&meta(1, Role::Client, 7, (LO, 40000), (LO, 80)));
        p.add(&meta(3, Role::Client, 8, (LO, 40000), (LO, 80)));
        assert_eq!(
            p.add(&meta(4, Role::Server, 8, (LO, 80), (LO, 40000))),
            vec![(4, Some(3))]
        );
        assert_eq!(
            p.add(&meta(2, Role::Server, 7, (LO, 80), (LO, 40000))),
            vec![(2, Some(1))]
        );
    }

    #[test]
    fn other_addresses_pair_across_namespaces_unless_ambiguous() {
        let (a, b) = ("10.0.0.1", "10.0.0.2");
        let mut p = Pairs::default();
        p.add(&meta(1, Role::Client, 7, (a, 40000), (b, 80)));
        assert_eq!(
            p.add(&meta(2, Role::Server, 8, (b, 80), (a, 40000))),
            vec![(2, Some(1))]
        );
        // Another pair of namespaces reusing the same addresses and ports at the same time: no
        // way to tell which client is whose, so neither server keeps one.
        assert_eq!(
            p.add(&meta(3, Role::Client, 9, (a, 40000), (b, 80))),
            vec![(2, None)]
        );
        assert_eq!(
            p.add(&meta(4, Role::Server, 10, (b, 80), (a, 40000))),
            vec![(4, None)]
        );
        // Once one pair is gone, a new connection pairs again.
        for id in [1, 2, 3, 4] {
            let m = match id {
                1 | 3 => meta(id, Role::Client, 0, (a, 40000), (b, 80)),
                _ => meta(id, Role::Server, 0, (b, 80), (a, 40000)),
            };
            p.remove(&m);
        }
        assert!(p.by_ends.is_empty());
    }

    #[test]
    fn same_role_and_unspecified_addresses_never_pair() {
        let mut p = Pairs::default();
        p.add(&meta(1, Role::Server, 7, (LO, 80), (LO, 40000)));
        assert_eq!(
            p.add(&meta(2, Role::Server, 7, (LO, 40000), (LO, 80))),
            vec![(2, None)]
        );
        assert_eq!(
            p.add(&meta(3, Role::Client, 7, ("0.0.0.0", 1), (LO, 80))),
            vec![]
        );
        assert!(p
            .add(&meta(4, Role::Unknown, 7, (LO, 5), (LO, 6)))
            .is_empty());
    }
}
