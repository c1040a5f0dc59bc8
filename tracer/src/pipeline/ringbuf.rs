//! The ring-buffer stage: read the kernel's records and decode them.

use std::{mem::size_of, ptr};

use aya::maps::{MapData, RingBuf};
use thiserror::Error;
use tracer_common::{
    conn::ConnEvent,
    data::{DataHeader, MAX_CAPTURE},
    event::{kind, EventHeader},
};

use super::{DataEvent, RawEvent};
use crate::stats::Stats;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("data record claims {claimed} bytes but carries {carried}")]
    BadLength { claimed: usize, carried: usize },
}

fn read<T: Copy>(b: &[u8]) -> Result<T, DecodeError> {
    if b.len() < size_of::<T>() {
        return Err(DecodeError::Short(b.len()));
    }
    // SAFETY: length checked; T is a plain repr(C) record valid for any bits; unaligned read.
    Ok(unsafe { ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// Decode one record.
pub fn decode(b: &[u8]) -> Result<RawEvent<'_>, DecodeError> {
    let h: EventHeader = read(b)?;
    match h.kind {
        kind::CONN_OPEN => Ok(RawEvent::Open(read::<ConnEvent>(b)?)),
        kind::CONN_CLOSE => {
            let ev: ConnEvent = read(b)?;
            Ok(RawEvent::Close {
                conn_id: ev.conn_id,
                ts_ns: ev.ts_ns,
            })
        }
        kind::DATA => {
            let header: DataHeader = read(b)?;
            let claimed = header.cap_len as usize;
            let body = &b[size_of::<DataHeader>()..];
            if claimed > MAX_CAPTURE || claimed > body.len() {
                return Err(DecodeError::BadLength {
                    claimed,
                    carried: body.len(),
                });
            }
            Ok(RawEvent::Data(DataEvent {
                header,
                bytes: &body[..claimed],
            }))
        }
        k => Err(DecodeError::UnknownKind(k)),
    }
}

/// How full the ring buffer is: its consumer and producer positions, read from a read-only
/// mapping of their two pages (the kernel's layout for `BPF_MAP_TYPE_RINGBUF`: consumer page,
/// producer page, data).
pub struct Fill {
    pages: *mut libc::c_void,
    page: usize,
    capacity: u64,
}

// SAFETY: the mapping is only read, with atomic loads, and unmapped once on drop.
unsafe impl Send for Fill {}

impl Fill {
    /// Map the position pages of the ring buffer `fd` of `capacity` data bytes.
    pub fn new(fd: std::os::fd::RawFd, capacity: u64) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a fresh read-only shared mapping of the map's first two pages; the kernel
        // allows read-only mappings of any part of a ring buffer.
        let pages = unsafe {
            libc::mmap(
                ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if pages == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            pages,
            page,
            capacity,
        })
    }

    /// The fraction of the ring buffer written and not yet read (0 to 1).
    pub fn used(&self) -> f64 {
        use std::sync::atomic::{AtomicU64, Ordering::Acquire};
        // SAFETY: both positions are 8-byte aligned u64s at the start of their mapped pages,
        // which live as long as `self`; the kernel writes them atomically.
        let (consumer, producer) = unsafe {
            (
                (*(self.pages as *const AtomicU64)).load(Acquire),
                (*(self.pages.cast::<u8>().add(self.page) as *const AtomicU64)).load(Acquire),
            )
        };
        producer.saturating_sub(consumer) as f64 / self.capacity.max(1) as f64
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.pages, 2 * self.page) };
    }
}

/// Reads records off the ring buffer; malformed ones are counted and the first is logged.
#[derive(Default)]
pub struct Reader {
    warned: bool,
}

impl Reader {
    /// Hand up to `max` records to `handle`, each decoded in place (the ring buffer's space is
    /// released once `handle` returns); returns how many were read, fewer if fewer were waiting.
    pub fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        max: usize,
        stats: &Stats,
        mut handle: impl FnMut(RawEvent<'_>),
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            n += 1;
            match decode(&item) {
                Ok(ev) => {
                    match &ev {
                        RawEvent::Open(_) => stats.events_conn_open.inc(),
                        RawEvent::Close { .. } => stats.events_conn_close.inc(),
                        RawEvent::Data(d) => {
                            stats.events_data.inc();
                            stats.bytes_captured.add(d.bytes.len() as u64);
                        }
                    }
                    handle(ev);
                }
                Err(e) => {
                    stats.events_malformed.inc();
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(
                            "malformed ring-buffer record ({e}); counted, further ones not logged"
                        );
                    }
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
    }

    #[test]
    fn decodes_data_and_rejects_bad_lengths() {
        let mut h = DataHeader {
            header: EventHeader {
                kind: kind::DATA,
                _pad: 0,
            },
            cap_len: 3,
            ..Default::default()
        };
        let mut b = bytes_of(&h);
        b.extend_from_slice(b"abc");
        match decode(&b) {
            Ok(RawEvent::Data(d)) => assert_eq!(d.bytes, b"abc"),
            other => panic!("{other:?}"),
        }
        h.cap_len = 10;
        let mut b = bytes_of(&h);
        b.extend_from_slice(b"abc");
        assert_eq!(
            decode(&b).unwrap_err(),
            DecodeError::BadLength {
                claimed: 10,
                carried: 3
            }
        );
        assert_eq!(decode(&[1, 2]).unwrap_err(), DecodeError::Short(2));
        let mut b = bytes_of(&h);
        b[0] = 99;
        assert_eq!(decode(&b).unwrap_err(), DecodeError::UnknownKind(99));
    }

    #[test]
    fn decodes_open_and_close() {
        let ev = ConnEvent {
            header: EventHeader {
                kind: kind::CONN_OPEN,
                _pad: 0,
            },
            conn_id: 7,
            ..Default::default()
        };
        assert!(matches!(decode(&bytes_of(&ev)), Ok(RawEvent::Open(e)) if e.conn_id == 7));
        let ev = ConnEvent {
            header: EventHeader {
                kind: kind::CONN_CLOSE,
                _pad: 0,
            },
            conn_id: 8,
            ts_ns: 5,
            ..Default::default()
        };
        assert!(matches!(
            decode(&bytes_of(&ev)),
            Ok(RawEvent::Close {
                conn_id: 8,
                ts_ns: 5
            })
        ));
    }
}
