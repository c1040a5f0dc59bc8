//! Request-head scanning for context injection: where the request line and the head end, and
//! the headers that decide whether and how a head may be edited. Works on per-CPU buffers of at
//! least `2 * SCAN_WINDOW + 16` bytes; every index is masked so the verifier sees it in bounds.

use core::ffi::c_void;

use aya_ebpf::{cty::c_long, helpers::generated::bpf_loop};
use tracer_common::inject::{HeadInfo, SCAN_WINDOW};

use crate::maps::{HEAD_INFO, MSG_SCRATCH, SCRATCH};

/// Index mask: offsets stay below `2 * SCAN_WINDOW`, so an 8-byte read at an offset below
/// `SCAN_WINDOW + 8` is never folded.
const MASK: usize = 2 * SCAN_WINDOW - 1;

/// `i` masked into the buffer. The value goes through a volatile read so the compiler cannot
/// drop the mask where it proved `i` small on another register: the verifier must see the mask.
#[inline(always)]
fn bound(i: usize) -> usize {
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&i) & MASK }
}

#[inline(always)]
unsafe fn byte(buf: *const u8, i: usize) -> u8 {
    *buf.add(bound(i))
}

/// Byte `i` of a scan buffer (masked into it).
#[inline(always)]
pub unsafe fn byte_at(buf: *const u8, i: usize) -> u8 {
    byte(buf, i)
}

#[inline(always)]
unsafe fn word(buf: *const u8, i: usize) -> u64 {
    core::ptr::read_unaligned(buf.add(bound(i)) as *const u64)
}

/// A header-name prefix: its bytes (little-endian), which of them are letters (matched without
/// case), and how many bytes it has.
struct Pat {
    value: u64,
    letters: u64,
    used: u64,
    len: usize,
}

const fn pat(s: &[u8]) -> Pat {
    let mut p = Pat {
        value: 0,
        letters: 0,
        used: 0,
        len: s.len(),
    };
    let mut i = 0;
    while i < s.len() && i < 8 {
        p.value |= (s[i] as u64) << (8 * i);
        if s[i].is_ascii_lowercase() {
            p.letters |= 0x20 << (8 * i);
        }
        p.used |= 0xff << (8 * i);
        i += 1;
    }
    p
}

/// Whether `w` (bytes read at the pattern's position) matches `p`, and the line has room for it.
#[inline(always)]
fn is(w: u64, p: &Pat, room: usize) -> bool {
    room >= p.len && (w | p.letters) & p.used == p.value
}

// Names split in 8-byte words: first word, then the rest.
const TRACEPAR: Pat = pat(b"tracepar");
const ENT: Pat = pat(b"ent:");
const TRACESTA: Pat = pat(b"tracesta");
const TE_COLON: Pat = pat(b"te:");
const B3: Pat = pat(b"b3:");
const X_B3: Pat = pat(b"x-b3-");
const UBER_TRA: Pat = pat(b"uber-tra");
const X_DATADO: Pat = pat(b"x-datado");
const CONTENT: Pat = pat(b"content-");
const LENGTH: Pat = pat(b"length:");
const TRANSFER: Pat = pat(b"transfer");
const ENCODIN: Pat = pat(b"-encodin");
const UPGRADE: Pat = pat(b"upgrade:");

/// Note what the header line starting at `s` is, if it matters.
#[inline(always)]
unsafe fn classify(buf: *const u8, s: usize, len: usize, info: &mut HeadInfo) {
    // Reads past `len` stay inside the buffer; `room` keeps them from matching.
    let room = len - s;
    let rest = room.saturating_sub(8);
    let w0 = word(buf, s);
    let w1 = word(buf, s + 8);
    if is(w0, &TRACEPAR, room) && is(w1, &ENT, rest) {
        if info.traceparent_at == 0 {
            info.traceparent_at = (s + 12) as u32;
        } else {
            info.other_context = 1;
        }
    } else if (is(w0, &TRACESTA, room) && is(w1, &TE_COLON, rest))
        || is(w0, &B3, room)
        || is(w0, &X_B3, room)
        || is(w0, &UBER_TRA, room)
        || is(w0, &X_DATADO, room)
    {
        // tracestate alone is not a context, but a head with one is left alone all the same.
        info.other_context = 1;
    } else if is(w0, &CONTENT, room) && is(w1, &LENGTH, rest) {
        info.content_lengths += 1;
        info.content_length_at = (s + 15) as u32;
    } else if is(w0, &TRANSFER, room) && is(w1, &ENCODIN, rest) {
        info.transfer_encoding = 1;
    } else if is(w0, &UPGRADE, room) {
        info.upgrade = 1;
    }
}

/// Which per-CPU buffer a scan reads.
pub mod source {
    /// `SCRATCH` (a data record's bytes), results in `HEAD_INFO`.
    pub const RECORD: u32 = 0;
    /// `MSG_SCRATCH` (an outgoing message's bytes), results in its `info`.
    pub const MESSAGE: u32 = 1;
}

#[repr(C)]
struct ScanCtx {
    source: u32,
    len: u32,
}

/// The buffer and result slot of a scan source.
#[inline(always)]
fn buffers(src: u32) -> Option<(*const u8, *mut HeadInfo)> {
    if src == source::RECORD {
        let rec = SCRATCH.get_ptr_mut(0)?;
        let info = HEAD_INFO.get_ptr_mut(0)?;
        // SAFETY: valid map value pointers.
        Some((unsafe { (*rec).data.as_ptr() }, info))
    } else {
        let sc = MSG_SCRATCH.get_ptr_mut(0)?;
        // SAFETY: as above.
        unsafe { Some(((*sc).data.as_ptr(), &mut (*sc).info as *mut HeadInfo)) }
    }
}

/// One step of the scan, at byte `i` (a `bpf_loop` callback, so the verifier checks it once
/// rather than once per byte). Returns 1 to stop.
unsafe extern "C" fn scan_step(i: u64, ctx: *mut c_void) -> c_long {
    let c = &*(ctx as *const ScanCtx);
    let len = c.len as usize;
    let i = i as usize & (SCAN_WINDOW - 1);
    if i + 1 >= len {
        return 1;
    }
    let Some((buf, info)) = buffers(c.source) else {
        return 1;
    };
    let info = &mut *info;
    if byte(buf, i) != b'\n' {
        return 0;
    }
    let s = i + 1;
    if info.line1_end == 0 {
        info.line1_end = s as u32;
    }
    let ch = byte(buf, s);
    if ch == b'\r' {
        if s + 1 < len && byte(buf, s + 1) == b'\n' {
            info.head_end = (s + 2) as u32;
        }
        return 1;
    }
    if ch == b'\n' {
        info.head_end = (s + 1) as u32;
        return 1;
    }
    classify(buf, s, len, info);
    0
}

/// Scan the first `len` bytes (at most `SCAN_WINDOW`) of source `src` as a request head; the
/// result is in the source's `HeadInfo`.
#[inline(always)]
pub fn scan(src: u32, len: usize) -> Option<HeadInfo> {
    let (_, info) = buffers(src)?;
    // SAFETY: valid map value pointer.
    unsafe { *info = HeadInfo::default() };
    walk(src, len)
}

/// Scan the first `len` bytes of the record scratch as the rest of a head whose earlier part
/// ended with a line: its first byte starts a header line (or the blank line ending the head).
/// `line1_end` is meaningless in the result.
#[inline(always)]
pub fn scan_continuation(len: usize) -> Option<HeadInfo> {
    let (buf, info) = buffers(source::RECORD)?;
    // SAFETY: valid map value pointers; reads are masked into the scratch.
    unsafe {
        *info = HeadInfo::default();
        let info = &mut *info;
        match byte(buf, 0) {
            b'\n' => info.head_end = 1,
            b'\r' if len > 1 && byte(buf, 1) == b'\n' => info.head_end = 2,
            _ => classify(buf, 0, len.min(SCAN_WINDOW), info),
        }
        if info.head_end != 0 {
            return Some(*info);
        }
    }
    walk(source::RECORD, len)
}

/// Run `scan_step` over the first `len` bytes of `src`, adding to its `HeadInfo`.
#[inline(always)]
fn walk(src: u32, len: usize) -> Option<HeadInfo> {
    let len = if len > SCAN_WINDOW { SCAN_WINDOW } else { len };
    let mut ctx = ScanCtx {
        source: src,
        len: len as u32,
    };
    // SAFETY: `scan_step` has the callback signature bpf_loop expects; `ctx` outlives the call.
    unsafe {
        bpf_loop(
            len as u32,
            scan_step as *mut c_void,
            &mut ctx as *mut ScanCtx as *mut c_void,
            0,
        )
    };
    let (_, info) = buffers(src)?;
    // SAFETY: as above.
    Some(unsafe { *info })
}

/// Value of a hex digit, or 16.
#[inline(always)]
fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 16,
    }
}

#[inline(always)]
unsafe fn hex_byte(buf: *const u8, at: usize) -> Option<u8> {
    let hi = hex_value(byte(buf, at));
    let lo = hex_value(byte(buf, at + 1));
    if hi > 15 || lo > 15 {
        return None;
    }
    Some(hi << 4 | lo)
}

/// Skip spaces and tabs from `at` (a few at most).
#[inline(always)]
unsafe fn skip_blanks(buf: *const u8, mut at: usize) -> usize {
    for _ in 0..8 {
        let c = byte(buf, at);
        if c != b' ' && c != b'\t' {
            break;
        }
        at += 1;
    }
    at
}

/// A version-00 traceparent value that the agent also accepts.
#[derive(Clone, Copy)]
pub struct Traceparent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
    /// Offset of the parent id's 16 hex digits.
    pub parent_at: usize,
}

/// The version-00 traceparent value at `at`, if valid.
#[inline(always)]
pub unsafe fn traceparent(buf: *const u8, at: usize, len: usize) -> Option<Traceparent> {
    let p = skip_blanks(buf, at);
    // "00-" 32 "-" 16 "-" 2
    if p + 55 > len || p >= SCAN_WINDOW {
        return None;
    }
    if byte(buf, p) != b'0' || byte(buf, p + 1) != b'0' || byte(buf, p + 2) != b'-' {
        return None;
    }
    let mut trace = [0u8; 16];
    let mut any = 0u8;
    for k in 0..16 {
        let b = hex_byte(buf, p + 3 + 2 * k)?;
        trace[k] = b;
        any |= b;
    }
    if byte(buf, p + 35) != b'-' || any == 0 {
        return None;
    }
    let mut parent = [0u8; 8];
    let mut span_any = 0u8;
    for k in 0..8 {
        let b = hex_byte(buf, p + 36 + 2 * k)?;
        parent[k] = b;
        span_any |= b;
    }
    if byte(buf, p + 52) != b'-' || span_any == 0 {
        return None;
    }
    let flags = hex_byte(buf, p + 53)?;
    // Version 00 ends there.
    let after = byte(buf, p + 55);
    if p + 55 < len && !matches!(after, b'\r' | b'\n' | b' ' | b'\t') {
        return None;
    }
    Some(Traceparent {
        trace_id: trace,
        parent_id: parent,
        flags,
        parent_at: p + 36,
    })
}

/// A decimal Content-Length value at `at`, alone on its line.
#[inline(always)]
pub unsafe fn content_length(buf: *const u8, at: usize, len: usize) -> Option<u64> {
    let mut p = skip_blanks(buf, at);
    let mut v: u64 = 0;
    let mut digits = 0;
    for _ in 0..18 {
        if p >= len {
            return None;
        }
        let c = byte(buf, p);
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + (c - b'0') as u64;
        digits += 1;
        p += 1;
    }
    if digits == 0 {
        return None;
    }
    p = skip_blanks(buf, p);
    if p >= len || byte(buf, p) != b'\r' {
        return None;
    }
    Some(v)
}

/// Whether the request line ending at `line1_end` ends in ` HTTP/1.x\r\n`.
#[inline(always)]
pub unsafe fn http1_request_line(buf: *const u8, line1_end: usize) -> bool {
    if line1_end < 16 {
        return false;
    }
    let e = line1_end - 11;
    word(buf, e) == u64::from_le_bytes(*b" HTTP/1.") && byte(buf, e + 9) == b'\r'
}

/// Lowercase hex digit of a nibble.
#[inline(always)]
fn hex_digit(n: u8) -> u8 {
    if n < 10 {
        b'0' + n
    } else {
        b'a' + n - 10
    }
}

/// 16 lowercase hex digits of `span` into `out`.
#[inline(always)]
pub fn write_span_hex(out: &mut [u8; 16], span: &[u8; 8]) {
    for k in 0..8 {
        out[2 * k] = hex_digit(span[k] >> 4);
        out[2 * k + 1] = hex_digit(span[k] & 15);
    }
}

/// `traceparent: 00-<trace>-<span>-<flags>\r\n` into `out`.
#[inline(always)]
pub fn write_traceparent(
    out: &mut [u8; tracer_common::inject::HEADER_LEN + 2],
    trace: &[u8; 16],
    span: &[u8; 8],
    flags: u8,
) {
    out[..16].copy_from_slice(b"traceparent: 00-");
    for k in 0..16 {
        out[16 + 2 * k] = hex_digit(trace[k] >> 4);
        out[17 + 2 * k] = hex_digit(trace[k] & 15);
    }
    out[48] = b'-';
    for k in 0..8 {
        out[49 + 2 * k] = hex_digit(span[k] >> 4);
        out[50 + 2 * k] = hex_digit(span[k] & 15);
    }
    out[65] = b'-';
    out[66] = hex_digit(flags >> 4);
    out[67] = hex_digit(flags & 15);
    out[68] = b'\r';
    out[69] = b'\n';
}
