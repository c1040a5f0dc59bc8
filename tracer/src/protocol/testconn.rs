//! One connection under test, for the protocols' unit tests, with a deterministic clock: the
//! k-th segment fed has `ts_enter = 100 * k`, `ts_exit = 100 * k + 5` and `tid = k`.

use super::{ConnParser, Direction, Message, ParseError, ParseOutput, Protocol, Role, Segment};

pub struct TestConn {
    pub parser: Box<dyn ConnParser>,
    pub out: ParseOutput,
    pub segments: u64,
}

impl TestConn {
    pub fn new(protocol: &dyn Protocol, role: Role) -> Self {
        Self {
            parser: protocol.parser(role),
            out: ParseOutput::default(),
            segments: 0,
        }
    }

    pub fn feed(&mut self, dir: Direction, bytes: &[u8]) {
        self.feed_with(dir, bytes, 0, false);
    }

    pub fn feed_with(&mut self, dir: Direction, bytes: &[u8], missing: u64, lost_before: bool) {
        self.segments += 1;
        let k = self.segments;
        let seg = Segment {
            dir,
            bytes,
            missing,
            lost_before,
            ts_enter: 100 * k,
            ts_exit: 100 * k + 5,
            tid: u32::try_from(k).unwrap_or(u32::MAX),
        };
        self.parser.feed(&seg, &mut self.out);
    }

    /// The finished records so far, as the protocol's own type (a record of another type fails
    /// the test).
    pub fn records<T: 'static>(&mut self) -> Vec<T> {
        self.out.messages.drain(..).map(downcast).collect()
    }

    pub fn errors(&mut self) -> Vec<ParseError> {
        std::mem::take(&mut self.out.errors)
    }

    pub fn close(&mut self, ts: u64) {
        self.parser.close(ts, &mut self.out);
    }

    pub fn expire(&mut self, now: u64, timeout_ns: u64) {
        self.parser.expire(now, timeout_ns, &mut self.out);
    }
}

/// A record as its protocol's own type.
pub fn downcast<T: 'static>(m: Message) -> T {
    let any: Box<dyn std::any::Any> = m;
    match any.downcast::<T>() {
        Ok(t) => *t,
        Err(_) => panic!(
            "a record of another type than {}",
            std::any::type_name::<T>()
        ),
    }
}

/// Small deterministic PRNG (xorshift64*), enough to shake a state machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next() % n).unwrap_or(0)
    }
}

/// Feed 300 connections of `protocol` (random role) with random cuts of random runs of
/// `pieces`, with random uncaptured counts, losses and expiries; after `close` nothing may be
/// pending, and `check` sees every record reported.
pub fn shake(protocol: &dyn Protocol, pieces: &[&[u8]], mut check: impl FnMut(Message)) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let role = [Role::Client, Role::Server, Role::Unknown][rng.below(3)];
        let mut c = TestConn::new(protocol, role);
        for _ in 0..rng.below(60) {
            let mut bytes = Vec::new();
            for _ in 0..rng.below(5) {
                bytes.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            let cut = rng.below(bytes.len() + 1);
            bytes.truncate(cut);
            let dir = if rng.below(2) == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let missing = [0, 0, 0, 1, 2, 7, u64::MAX][rng.below(7)];
            c.feed_with(dir, &bytes, missing, rng.below(20) == 0);
            if rng.below(10) == 0 {
                let now = c.segments * 100;
                c.expire(now, 5);
            }
        }
        c.expire(u64::MAX, 0);
        c.close(u64::MAX);
        assert!(!c.parser.has_pending());
        c.out.messages.drain(..).for_each(&mut check);
    }
}
