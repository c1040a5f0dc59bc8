//! Trace context carried in request headers: W3C `traceparent`, Zipkin B3 (single and multi),
//! Jaeger `uber-trace-id`, Datadog `x-datadog-*`. Parsing is strict: a malformed header gives
//! no context rather than a wrong one.

/// A remote parent: the trace and the span that sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3,
    Jaeger,
    Datadog,
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Exactly `2 * N` hex digits into N bytes.
fn hex_exact<const N: usize>(s: &(impl AsRef<[u8]> + ?Sized)) -> Option<[u8; N]> {
    let b = s.as_ref();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = hex_nibble(pair[0])? << 4 | hex_nibble(pair[1])?;
    }
    Some(out)
}

/// 1 to `2 * N` (at most 32) hex digits, left-padded with zeros, into N bytes.
fn hex_padded<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut buf = [b'0'; 32];
    let width = 2 * N;
    let pad = width.checked_sub(s.len())?;
    if s.is_empty() || width > buf.len() {
        return None;
    }
    buf[pad..width].copy_from_slice(s.as_bytes());
    hex_exact::<N>(&buf[..width])
}

/// 16 or 32 hex digits (64- or 128-bit trace ids), left-padded to 128 bits.
fn trace_id_hex(s: &str) -> Option<[u8; 16]> {
    if s.len() <= 16 {
        // A 64-bit id is the low half.
        let low = hex_padded::<8>(s)?;
        let mut t = [0u8; 16];
        t[8..].copy_from_slice(&low);
        Some(t)
    } else {
        hex_padded::<16>(s)
    }
}

fn span_id_hex(s: &str) -> Option<[u8; 8]> {
    hex_padded::<8>(s)
}

fn valid(trace_id: [u8; 16], span_id: [u8; 8]) -> bool {
    trace_id != [0; 16] && span_id != [0; 8]
}

/// `00-<trace>-<span>-<flags>`.
pub fn parse_traceparent(v: &str) -> Option<RemoteContext> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let version = hex_exact::<1>(version)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id = hex_exact::<16>(trace)?;
    let span_id = hex_exact::<8>(span)?;
    let flags = hex_exact::<1>(flags)?[0];
    valid(trace_id, span_id).then_some(RemoteContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        format: Format::W3c,
    })
}

/// `b3: <trace>-<span>[-<sampled>[-<parent>]]`.
fn parse_b3_single(v: &str) -> Option<RemoteContext> {
    let mut parts = v.trim().split('-');
    let trace_id = trace_id_hex(parts.next()?)?;
    let span_id = span_id_hex(parts.next()?)?;
    let sampled = !matches!(parts.next(), Some("0"));
    valid(trace_id, span_id).then_some(RemoteContext {
        trace_id,
        span_id,
        sampled,
        format: Format::B3,
    })
}

/// `uber-trace-id: <trace>:<span>:<parent>:<flags>` (the sender's span is the second field).
fn parse_jaeger(v: &str) -> Option<RemoteContext> {
    let v = v.trim();
    // Jaeger clients may URL-encode the colons.
    let v = v.replace("%3A", ":").replace("%3a", ":");
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() != 4 {
        return None;
    }
    let trace_id = trace_id_hex(parts[0])?;
    let span_id = span_id_hex(parts[1])?;
    let flags = u8::from_str_radix(parts[3], 16).ok()?;
    valid(trace_id, span_id).then_some(RemoteContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        format: Format::Jaeger,
    })
}

/// Datadog: decimal 64-bit ids.
fn parse_datadog(trace: &str, parent: &str, priority: Option<&str>) -> Option<RemoteContext> {
    let t: u64 = trace.trim().parse().ok()?;
    let s: u64 = parent.trim().parse().ok()?;
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&t.to_be_bytes());
    let span_id = s.to_be_bytes();
    let sampled = priority
        .and_then(|p| p.trim().parse::<i32>().ok())
        .is_none_or(|p| p > 0);
    valid(trace_id, span_id).then_some(RemoteContext {
        trace_id,
        span_id,
        sampled,
        format: Format::Datadog,
    })
}

/// The context of a request, W3C first, from its headers as `get` finds them: the value of the
/// first header of a (lowercase) name, matched case-insensitively.
pub fn extract<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<RemoteContext> {
    if let Some(c) = get("traceparent").and_then(parse_traceparent) {
        return Some(c);
    }
    if let Some(c) = get("b3").and_then(parse_b3_single) {
        return Some(c);
    }
    if let (Some(t), Some(s)) = (get("x-b3-traceid"), get("x-b3-spanid")) {
        if let (Some(trace_id), Some(span_id)) = (trace_id_hex(t.trim()), span_id_hex(s.trim())) {
            if valid(trace_id, span_id) {
                let sampled = !matches!(get("x-b3-sampled").map(str::trim), Some("0" | "false"));
                return Some(RemoteContext {
                    trace_id,
                    span_id,
                    sampled,
                    format: Format::B3,
                });
            }
        }
    }
    if let Some(c) = get("uber-trace-id").and_then(parse_jaeger) {
        return Some(c);
    }
    if let (Some(t), Some(p)) = (get("x-datadog-trace-id"), get("x-datadog-parent-id")) {
        return parse_datadog(t, p, get("x-datadog-sampling-priority"));
    }
    None
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    /// `extract` over a header list.
    fn extract_from(pairs: &[(&str, &str)]) -> Option<RemoteContext> {
        extract(|name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        })
    }

    #[test]
    fn w3c() {
        let c = extract_from(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )])
        .unwrap();
        assert_eq!(c.trace_id[0], 0x4b);
        assert_eq!(c.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(c.sampled);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
            "",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // Future versions may append fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }

    #[test]
    fn b3_forms() {
        let c = extract_from(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )])
        .unwrap();
        assert_eq!(c.format, Format::B3);
        assert_eq!(c.span_id[0], 0xe4);
        let c = extract_from(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ])
        .unwrap();
        assert_eq!(&c.trace_id[..8], &[0; 8]);
        assert_eq!(c.trace_id[8], 0x46);
        assert!(!c.sampled);
        assert_eq!(extract_from(&[("b3", "1")]), None);
    }

    #[test]
    fn jaeger_and_datadog() {
        let c =
            extract_from(&[("uber-trace-id", "463ac35c9f6413ad:a2fb4a1d1a96d312:0:1")]).unwrap();
        assert_eq!(c.format, Format::Jaeger);
        assert_eq!(c.span_id[0], 0xa2);
        let c = extract_from(&[(
            "uber-trace-id",
            "463ac35c9f6413ad%3Aa2fb4a1d1a96d312%3A0%3A1",
        )])
        .unwrap();
        assert_eq!(c.span_id[0], 0xa2);
        let c = extract_from(&[
            ("x-datadog-trace-id", "1234"),
            ("x-datadog-parent-id", "5678"),
        ])
        .unwrap();
        assert_eq!(
            u64::from_be_bytes(c.trace_id[8..].try_into().unwrap()),
            1234
        );
        assert_eq!(u64::from_be_bytes(c.span_id), 5678);
        assert_eq!(
            extract_from(&[("x-datadog-trace-id", "x"), ("x-datadog-parent-id", "1")]),
            None
        );
    }

    /// 64-bit ids and ids with their leading zeros left out are padded; empty, too long or
    /// non-hex ones give nothing.
    #[rstest]
    #[case::one_digit("1", Some(1))]
    #[case::bits_64("463ac35c9f6413ad", Some(0x463a_c35c_9f64_13ad))]
    #[case::digits_17("10000000000000000", Some(1 << 64))]
    #[case::bits_128(
        "4bf92f3577b34da6a3ce929d0e0e4736",
        Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736)
    )]
    #[case::digits_33("04bf92f3577b34da6a3ce929d0e0e4736", None)]
    #[case::empty("", None)]
    #[case::not_hex("12g4", None)]
    fn trace_ids(#[case] text: &str, #[case] want: Option<u128>) {
        assert_eq!(trace_id_hex(text), want.map(u128::to_be_bytes));
    }

    #[rstest]
    #[case::one_digit("a", Some(0xa))]
    #[case::bits_64("a2fb4a1d1a96d312", Some(0xa2fb_4a1d_1a96_d312))]
    #[case::digits_17("0a2fb4a1d1a96d312", None)]
    #[case::empty("", None)]
    #[case::not_hex("-1", None)]
    fn span_ids(#[case] text: &str, #[case] want: Option<u64>) {
        assert_eq!(span_id_hex(text), want.map(u64::to_be_bytes));
    }
}
