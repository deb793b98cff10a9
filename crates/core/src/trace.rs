//! Trace context: one goal is one trace, across the API, the planner, the workers and the judge.
//!
//! A goal's trace id is a function of the goal's id, so every process that touches the goal
//! names the same trace even for a message that lost its context (sent again by the
//! reconciler, or by hand). Its first four bytes are the goal's creation time in seconds (goal
//! ids are UUIDv7, time first), as AWS X-Ray requires of a trace id; the other twelve are the
//! rest of the id, so two goals never share a trace.
//!
//! The context travels between functions in each SQS message, in both encodings in use:
//! - W3C Trace Context: the `traceparent` message attribute, `00-<trace>-<parent span>-01`;
//! - AWS X-Ray: the `AWSTraceHeader` system attribute, `Root=1-<8 hex>-<24 hex>;Parent=<16
//!   hex>`, which Lambda's active tracing reads to put a function's segment in the goal's trace.
//!   It carries no sampling decision: X-Ray's sampling rules decide, not every message.
//!
//! Span ids that others must find again are named, not drawn ([`TraceContext::with_span_of`]):
//! a message sent from the outbox is sent under the span `outbox:<row>`, a message is handled
//! under `sqs:<message id>`, so the handler's `parent_span_id` is the span the relay logged the
//! send under, and the tool calls a handler makes name the handler's span as their parent.

use std::fmt;

/// A trace and the span within it that sent a message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// The SQS message attribute that carries the W3C context.
pub const TRACEPARENT: &str = "traceparent";
/// The SQS system attribute that carries the X-Ray context.
pub const AWS_TRACE_HEADER: &str = "AWSTraceHeader";

impl TraceContext {
    /// The trace of `goal`, with a new span.
    pub fn for_goal(goal: uuid::Uuid) -> Self {
        Self {
            trace_id: goal_trace(goal),
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// The trace id of `goal`, as [`TraceContext::trace_id`] writes it (no span is made).
    pub fn trace_id_of(goal: uuid::Uuid) -> String {
        hex::encode(goal_trace(goal))
    }

    /// The same trace, continued by a new span (this one its parent).
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The same trace, in the span named `name` (its id is the start of the name's SHA-256):
    /// whoever knows the name finds the span again.
    pub fn with_span_of(&self, name: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(name.as_bytes());
        let mut span_id: [u8; 8] = digest[..8].try_into().unwrap_or([1; 8]);
        if span_id == [0; 8] {
            span_id = [1; 8];
        }
        Self { span_id, ..*self }
    }

    /// The trace id as W3C writes it: 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The trace id as X-Ray writes it: `1-<8 hex>-<24 hex>`.
    pub fn xray_trace_id(&self) -> String {
        let hex = self.trace_id();
        format!("1-{}-{}", &hex[..8], &hex[8..])
    }

    /// This span's id: 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }

    /// The `traceparent` header (W3C Trace Context, version 00).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id(),
            self.span_id(),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The `X-Amzn-Trace-Id` / `AWSTraceHeader` value, without a sampling decision (X-Ray's
    /// sampling rules make it).
    pub fn xray_header(&self) -> String {
        format!("Root={};Parent={}", self.xray_trace_id(), self.span_id())
    }

    /// Reads a `traceparent` header; `None` for anything malformed (an all-zero id included).
    pub fn parse_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2
            || !is_lower_hex(version)
            || version == "ff"
            || flags.len() != 2
            || !is_lower_hex(flags)
            || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Self::from_parts(trace, span, flags & 1 == 1)
    }

    /// Reads an X-Ray trace header (`Root=1-...;Parent=...;Sampled=1`, in any order).
    pub fn parse_xray(header: &str) -> Option<Self> {
        let (mut root, mut parent, mut sampled) = (None, None, true);
        for field in header.split(';') {
            match field.trim().split_once('=') {
                Some(("Root", value)) => root = Some(value),
                Some(("Parent", value)) => parent = Some(value),
                Some(("Sampled", value)) => sampled = value != "0",
                _ => {}
            }
        }
        let root = root?.strip_prefix("1-")?;
        let (time, rest) = root.split_once('-')?;
        if time.len() != 8 || rest.len() != 24 {
            return None;
        }
        Self::from_parts(&format!("{time}{rest}"), parent?, sampled)
    }

    fn from_parts(trace: &str, span: &str, sampled: bool) -> Option<Self> {
        if !is_lower_hex(trace) || !is_lower_hex(span) {
            return None;
        }
        let trace_id: [u8; 16] = hex::decode(trace).ok()?.try_into().ok()?;
        let span_id: [u8; 8] = hex::decode(span).ok()?.try_into().ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled,
        })
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// The goal's creation time in seconds, then the rest of its id.
fn goal_trace(goal: uuid::Uuid) -> [u8; 16] {
    let id = goal.as_bytes();
    let seconds = match goal.get_timestamp() {
        Some(ts) => ts.to_unix().0 as u32,
        // Not a time-ordered id: its first four bytes stand in for the time.
        None => u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
    };
    let mut trace_id = [0u8; 16];
    trace_id[..4].copy_from_slice(&seconds.to_be_bytes());
    trace_id[4..].copy_from_slice(&id[4..]);
    trace_id
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A span id: random, never zero.
fn new_span_id() -> [u8; 8] {
    loop {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let id: [u8; 8] = bytes[..8].try_into().unwrap_or([1; 8]);
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goal_always_names_the_same_trace_and_its_time() {
        let goal = uuid::Uuid::now_v7();
        let a = TraceContext::for_goal(goal);
        let b = TraceContext::for_goal(goal);
        assert_eq!(a.trace_id(), b.trace_id());
        assert_ne!(a.span_id(), b.span_id());
        let seconds = u32::from_str_radix(&a.trace_id()[..8], 16).unwrap();
        let now = chrono::Utc::now().timestamp() as u32;
        assert!(now.abs_diff(seconds) < 5, "{seconds} vs {now}");
        assert_ne!(
            TraceContext::for_goal(uuid::Uuid::now_v7()).trace_id(),
            a.trace_id()
        );
    }

    #[test]
    fn both_encodings_read_back_what_they_wrote() {
        let ctx = TraceContext::for_goal(uuid::Uuid::now_v7());
        assert_eq!(
            TraceContext::parse_traceparent(&ctx.traceparent()),
            Some(ctx)
        );
        assert_eq!(TraceContext::parse_xray(&ctx.xray_header()), Some(ctx));
        let child = ctx.child();
        assert_eq!(child.trace_id(), ctx.trace_id());
        assert_ne!(child.span_id(), ctx.span_id());
        assert!(ctx.xray_header().starts_with("Root=1-"));
        assert!(!ctx.xray_header().contains("Sampled"));
        let named = ctx.with_span_of("sqs:m-1");
        assert_eq!(
            named.span_id(),
            ctx.child().with_span_of("sqs:m-1").span_id()
        );
        assert_ne!(named.span_id(), ctx.with_span_of("sqs:m-2").span_id());
        assert_eq!(named.trace_id(), ctx.trace_id());
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-0102030405060708-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz",
        ] {
            assert_eq!(TraceContext::parse_traceparent(bad), None, "{bad}");
        }
        assert!(
            TraceContext::parse_traceparent(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            )
            .is_some()
        );
        for bad in [
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e98-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Parent=53995c3f42cd8ad8",
        ] {
            assert_eq!(TraceContext::parse_xray(bad), None, "{bad}");
        }
        let ok = TraceContext::parse_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(ok.trace_id(), "5759e988bd862e3fe1be46a994272793");
    }
}
