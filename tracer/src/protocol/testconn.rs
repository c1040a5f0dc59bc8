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
