//! Trace linking as the spans show it: ids, parent, `tracer.link`, and assertions on chains.

use crate::span::Span;

/// The trace fields of a span printed with `--output json`.
pub trait TraceIds {
    fn trace_id(&self) -> &str;
    fn span_id(&self) -> &str;
    /// `None` for a root span.
    fn parent_id(&self) -> Option<&str>;
    /// `tracer.link`: header, thread, connection or root.
    fn link(&self) -> &str;
}

impl TraceIds for Span {
    fn trace_id(&self) -> &str {
        self.get("trace_id").as_str().unwrap_or("")
    }
    fn span_id(&self) -> &str {
        self.get("span_id").as_str().unwrap_or("")
    }
    fn parent_id(&self) -> Option<&str> {
        self.get("parent_span_id").as_str()
    }
    fn link(&self) -> &str {
        self.get("tracer.link").as_str().unwrap_or("")
    }
}

/// One line per span: what a linking failure needs to be understood.
pub fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} pid={} {} trace={} span={} parent={} link={}\n",
                s.kind(),
                s.pid().unwrap_or(0),
                s.name(),
                s.trace_id(),
                s.span_id(),
                s.parent_id().unwrap_or("-"),
                s.link()
            )
        })
        .collect()
}

/// `spans` form one trace in which each span is the parent of the next, the first a root.
pub fn assert_chain(spans: &[Span]) {
    assert!(!spans.is_empty());
    assert_eq!(
        spans[0].parent_id(),
        None,
        "the first span is not a root\n{}",
        describe(spans)
    );
    assert_linked(spans);
}

/// Each span is the child of the one before it, in its trace.
pub fn assert_linked(spans: &[Span]) {
    let ctx = describe(spans);
    for w in spans.windows(2) {
        assert_eq!(
            w[1].parent_id(),
            Some(w[0].span_id()),
            "the parent of {} {} is not {} {}\n{ctx}",
            w[1].kind(),
            w[1].name(),
            w[0].kind(),
            w[0].name()
        );
        assert_eq!(
            w[1].trace_id(),
            w[0].trace_id(),
            "{} is not in the trace of {}\n{ctx}",
            w[1].name(),
            w[0].name()
        );
    }
}
