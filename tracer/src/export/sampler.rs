//! Head sampling for the trace exporters (OTLP, Zipkin), as `OTEL_TRACES_SAMPLER` describes it.
//! Prometheus metrics see every span: sampling never skews the RED metrics.
//!
//! The decision is a function of the span alone, so every exporter and every span of a trace
//! agree without shared state:
//! - `traceidratio`: on the trace id (the OpenTelemetry SDK rule: the low 63 bits of the id's
//!   last 8 bytes against `ratio * 2^63`), so all spans of a trace are kept or left together;
//! - `parentbased_*`: a span whose parent came from a request's context (`traceparent` flags,
//!   B3's sampled flag...) follows that flag; any other span (a root, or one whose parent tracer
//!   linked itself) uses the root sampler, which for the same trace id gives the same answer.

use crate::span::{LinkKind, SpanRecord};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    /// Probability in [0, 1].
    TraceIdRatio(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    pub root: Root,
    pub parent_based: bool,
}

impl Default for Sampler {
    fn default() -> Self {
        // The OpenTelemetry default is parentbased_always_on.
        Self {
            root: Root::AlwaysOn,
            parent_based: true,
        }
    }
}

impl Sampler {
    /// `name` as in `OTEL_TRACES_SAMPLER`, `arg` as in `OTEL_TRACES_SAMPLER_ARG` (the ratio).
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let name = name.trim().to_ascii_lowercase();
        let (parent_based, root) = match name.strip_prefix("parentbased_") {
            Some(r) => (true, r),
            None => (false, name.as_str()),
        };
        let root = match root {
            "always_on" => Root::AlwaysOn,
            "always_off" => Root::AlwaysOff,
            "traceidratio" => {
                let ratio = match arg.map(str::trim).filter(|a| !a.is_empty()) {
                    None => 1.0,
                    Some(a) => a
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("sampler argument '{a}' is not a ratio between 0 and 1 (e.g. 0.25)"))?,
                };
                Root::TraceIdRatio(ratio)
            }
            _ => {
                return Err(format!(
                    "unknown sampler '{name}': use always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio"
                ))
            }
        };
        Ok(Self { root, parent_based })
    }

    pub fn should_sample(&self, span: &SpanRecord) -> bool {
        if self.parent_based && span.parent_span_id.is_some() {
            if let Some(flag) = header_sampled_flag(span) {
                return flag;
            }
        }
        match self.root {
            Root::AlwaysOn => true,
            Root::AlwaysOff => false,
            Root::TraceIdRatio(r) => trace_id_ratio(&span.trace_id, r),
        }
    }
}

fn trace_id_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

/// The sampled flag the caller sent with the request, if the parent came from its context.
fn header_sampled_flag(span: &SpanRecord) -> Option<bool> {
    if !matches!(span.link, LinkKind::Header | LinkKind::Injected) {
        return None;
    }
    span.parent_sampled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil::span;

    #[test]
    fn parses() {
        assert_eq!(
            Sampler::parse("always_off", None).unwrap(),
            Sampler {
                root: Root::AlwaysOff,
                parent_based: false
            }
        );
        assert_eq!(
            Sampler::parse("parentbased_traceidratio", Some("0.5")).unwrap(),
            Sampler {
                root: Root::TraceIdRatio(0.5),
                parent_based: true
            }
        );
        assert!(Sampler::parse("traceidratio", Some("2")).is_err());
        assert!(Sampler::parse("sometimes", None)
            .unwrap_err()
            .contains("unknown sampler"));
    }

    #[test]
    fn ratio_is_by_trace_id() {
        let s = Sampler::parse("traceidratio", Some("0.5")).unwrap();
        let mut kept = 0;
        for i in 0..1000u32 {
            let mut a = span(1);
            a.trace_id[8..12].copy_from_slice(&(i.wrapping_mul(2654435761)).to_be_bytes());
            let mut b = a.clone();
            b.span_id = [9; 8];
            assert_eq!(
                s.should_sample(&a),
                s.should_sample(&b),
                "same trace, same decision"
            );
            kept += usize::from(s.should_sample(&a));
        }
        assert!((350..650).contains(&kept), "{kept}");
        assert!(!Sampler::parse("traceidratio", Some("0"))
            .unwrap()
            .should_sample(&span(1)));
    }

    #[test]
    fn parent_based_follows_header_flag() {
        let s = Sampler::parse("parentbased_always_on", None).unwrap();
        let mut sp = span(1);
        sp.parent_span_id = Some([1; 8]);
        sp.link = LinkKind::Header;
        sp.parent_sampled = Some(false);
        assert!(!s.should_sample(&sp));
        sp.parent_sampled = Some(true);
        assert!(Sampler::parse("parentbased_always_off", None)
            .unwrap()
            .should_sample(&sp));
        // Not parent-based: the header is ignored.
        assert!(!Sampler::parse("always_off", None)
            .unwrap()
            .should_sample(&sp));
    }
}
