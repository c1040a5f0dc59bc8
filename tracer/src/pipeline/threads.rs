//! What each thread of a traced process is serving, for `thread` links: a client request that a
//! thread starts while it serves exactly one server request is that request's child.
//!
//! That holds for thread-per-request servers and thread pools (a thread serves one request from
//! reading it to answering it) and, with one request in flight, for event loops. It does not hold
//! when the runtime moves tasks between threads (Go, tokio, .NET, Java virtual threads: a thread
//! may run one request's code while another request it read is in flight). So each server
//! request also records whether its thread did server I/O for another connection while it was in
//! flight (`shared`); the linker then links a client span only to a server span whose thread
//! served it alone, from reading the request to answering it.

use crate::{hash::FastMap, span::ExchangeKey};

/// Most server requests tracked in flight per thread (an event loop may hold many).
const MAX_INFLIGHT_PER_THREAD: usize = 256;

#[derive(Debug, Clone, Copy)]
struct InFlight {
    key: ExchangeKey,
    /// The thread moved server bytes of another connection while this request was in flight.
    shared: bool,
}

/// Server requests started and not yet answered, by the (tgid, tid) that read them.
#[derive(Default)]
pub struct Threads {
    inflight: FastMap<(u32, u32), Vec<InFlight>>,
}

impl Threads {
    /// Thread `tid` of process `tgid` read the whole head of server request `key`.
    pub fn server_started(&mut self, tgid: u32, tid: u32, key: ExchangeKey) {
        let v = self.inflight.entry((tgid, tid)).or_default();
        if v.len() < MAX_INFLIGHT_PER_THREAD {
            v.push(InFlight { key, shared: false });
        }
    }

    /// Thread `tid` moved bytes of server connection `conn_id`: the requests it has in flight on
    /// other connections no longer have it to themselves.
    pub fn server_io(&mut self, tgid: u32, tid: u32, conn_id: u64) {
        if let Some(v) = self.inflight.get_mut(&(tgid, tid)) {
            for f in v.iter_mut().filter(|f| f.key.conn_id != conn_id) {
                f.shared = true;
            }
        }
    }

    /// The parent of a client request thread `tid` starts now: the server request it serves, if
    /// it serves exactly one (several in flight on an event loop: ambiguous, none).
    pub fn client_started(&self, tgid: u32, tid: u32) -> Option<ExchangeKey> {
        match self.inflight.get(&(tgid, tid)).map(Vec::as_slice) {
            Some([only]) => Some(only.key),
            _ => None,
        }
    }

    /// Server request `key`, read by thread `tid`, is reported. Returns whether that thread
    /// served other connections while it was in flight.
    pub fn server_done(&mut self, tgid: u32, tid: u32, key: ExchangeKey) -> bool {
        let Some(v) = self.inflight.get_mut(&(tgid, tid)) else {
            return false;
        };
        let shared = v.iter().any(|f| f.key == key && f.shared);
        v.retain(|f| f.key != key);
        if v.is_empty() {
            self.inflight.remove(&(tgid, tid));
        }
        shared
    }

    /// Forget the requests of a connection that left the table.
    pub fn forget(&mut self, tgid: u32, conn_id: u64) {
        self.inflight.retain(|(t, _), v| {
            if *t == tgid {
                v.retain(|f| f.key.conn_id != conn_id);
            }
            !v.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conn_id: u64, seq: u64) -> ExchangeKey {
        ExchangeKey { conn_id, id: seq }
    }

    #[test]
    fn one_request_in_flight_is_the_parent() {
        let mut t = Threads::default();
        assert_eq!(t.client_started(1, 10), None);
        t.server_started(1, 10, key(5, 0));
        assert_eq!(t.client_started(1, 10), Some(key(5, 0)));
        assert_eq!(t.client_started(1, 11), None, "another thread");
        assert_eq!(t.client_started(2, 10), None, "another process");
        // Bytes of its own connection (the answer) leave it unshared.
        t.server_io(1, 10, 5);
        assert!(!t.server_done(1, 10, key(5, 0)));
        assert_eq!(t.client_started(1, 10), None);
        assert!(t.inflight.is_empty());
    }

    #[test]
    fn two_in_flight_are_ambiguous() {
        let mut t = Threads::default();
        t.server_started(1, 10, key(5, 0));
        t.server_started(1, 10, key(6, 0));
        assert_eq!(t.client_started(1, 10), None);
        t.forget(1, 6);
        assert_eq!(t.client_started(1, 10), Some(key(5, 0)));
    }

    #[test]
    fn serving_another_connection_meanwhile_is_recorded() {
        let mut t = Threads::default();
        t.server_started(1, 10, key(5, 0));
        // The thread answers a request of connection 6 (read by another thread) meanwhile.
        t.server_io(1, 10, 6);
        assert!(t.server_done(1, 10, key(5, 0)));
        assert!(!t.server_done(1, 10, key(5, 0)), "already done");
    }
}
