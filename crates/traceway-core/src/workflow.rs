//! Durable workflow context: what a stored context of a workflow instance must look like
//! (ADR 022, ADR 023). Pure checks, shared by the server, every store backend and the
//! client, so that each refuses the same input with the same message.

use std::collections::BTreeMap;

use crate::trace_context::{TraceParent, TraceState};

/// The longest instance id, in characters.
pub const MAX_INSTANCE_ID_CHARS: usize = 256;

/// The longest `tracestate` kept, in bytes (the W3C limit is 512 for propagation; a
/// stored value gets the same bound).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The most metadata entries a context may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;

/// The longest metadata key or value, in bytes.
pub const MAX_METADATA_BYTES: usize = 1024;

/// The longest agent name, in characters.
pub const MAX_AGENT_CHARS: usize = 256;

/// Why a workflow context was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowContextError {
    /// The instance id is empty, too long or holds a non-printable character.
    #[error("instance id: {0}")]
    InstanceId(String),
    /// The `traceparent` is not a valid W3C value.
    #[error("traceparent: {0}")]
    TraceParent(String),
    /// The `tracestate` is not a valid W3C value, or too long.
    #[error("tracestate: {0}")]
    TraceState(String),
    /// The agent name is too long or not printable.
    #[error("agent: {0}")]
    Agent(String),
    /// Too many metadata entries, or one too long.
    #[error("metadata: {0}")]
    Metadata(String),
}

/// Whether every character is printable: no control characters (C0, DEL, C1).
fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Checks an instance id: 1 to [`MAX_INSTANCE_ID_CHARS`] printable characters.
pub fn validate_instance_id(id: &str) -> Result<(), WorkflowContextError> {
    if id.is_empty() {
        return Err(WorkflowContextError::InstanceId("must not be empty".into()));
    }
    let n = id.chars().count();
    if n > MAX_INSTANCE_ID_CHARS {
        return Err(WorkflowContextError::InstanceId(format!(
            "must be at most {MAX_INSTANCE_ID_CHARS} characters (got {n})"
        )));
    }
    if !printable(id) {
        return Err(WorkflowContextError::InstanceId(
            "must hold printable characters only".into(),
        ));
    }
    Ok(())
}

/// A context as a client sends it, checked by [`validate_context`].
#[derive(Debug, Clone, Copy)]
pub struct ContextFields<'a> {
    /// The W3C `traceparent`.
    pub traceparent: &'a str,
    /// The W3C `tracestate`, if any.
    pub tracestate: Option<&'a str>,
    /// The agent that runs the workflow, if given.
    pub agent: Option<&'a str>,
    /// Free-form metadata.
    pub metadata: &'a BTreeMap<String, String>,
}

/// What is stored after validation: the `traceparent` written in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidContext {
    /// The parsed `traceparent`.
    pub parent: TraceParent,
    /// Its canonical header value (version `00`).
    pub traceparent: String,
    /// The `tracestate` as given (trimmed), `None` when empty.
    pub tracestate: Option<String>,
}

/// Checks a context's fields; the error names the first field that is wrong.
pub fn validate_context(c: ContextFields<'_>) -> Result<ValidContext, WorkflowContextError> {
    let parent = TraceParent::parse(c.traceparent)
        .map_err(|e| WorkflowContextError::TraceParent(e.to_string()))?;
    let tracestate = match c.tracestate.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) if s.len() > MAX_TRACESTATE_BYTES => {
            return Err(WorkflowContextError::TraceState(format!(
                "must be at most {MAX_TRACESTATE_BYTES} bytes (got {})",
                s.len()
            )))
        }
        Some(s) => {
            TraceState::parse(s).map_err(|e| WorkflowContextError::TraceState(e.to_string()))?;
            Some(s.to_string())
        }
    };
    if let Some(a) = c.agent {
        let n = a.chars().count();
        if n > MAX_AGENT_CHARS || !printable(a) {
            return Err(WorkflowContextError::Agent(format!(
                "must be at most {MAX_AGENT_CHARS} printable characters"
            )));
        }
    }
    if c.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(WorkflowContextError::Metadata(format!(
            "at most {MAX_METADATA_ENTRIES} entries (got {})",
            c.metadata.len()
        )));
    }
    if let Some((k, _)) = c
        .metadata
        .iter()
        .find(|(k, v)| k.len() > MAX_METADATA_BYTES || v.len() > MAX_METADATA_BYTES)
    {
        return Err(WorkflowContextError::Metadata(format!(
            "entry {:?} is longer than {MAX_METADATA_BYTES} bytes",
            k.chars().take(32).collect::<String>()
        )));
    }
    Ok(ValidContext {
        traceparent: parent.to_header(),
        parent,
        tracestate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn fields<'a>(
        tp: &'a str,
        ts: Option<&'a str>,
        m: &'a BTreeMap<String, String>,
    ) -> ContextFields<'a> {
        ContextFields {
            traceparent: tp,
            tracestate: ts,
            agent: None,
            metadata: m,
        }
    }

    #[test]
    fn instance_ids() {
        assert!(validate_instance_id("order-42").is_ok());
        assert!(validate_instance_id("ünïcödé/with spaces:ok").is_ok());
        assert!(validate_instance_id(&"x".repeat(256)).is_ok());
        // 256 characters of two bytes each are still 256 characters.
        assert!(validate_instance_id(&"é".repeat(256)).is_ok());
        for bad in ["", "a\nb", "tab\there", "\u{7f}", "\u{85}"] {
            let e = validate_instance_id(bad).unwrap_err();
            assert!(e.to_string().starts_with("instance id: "), "{bad:?}: {e}");
        }
        let e = validate_instance_id(&"x".repeat(257)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "instance id: must be at most 256 characters (got 257)"
        );
    }

    #[test]
    fn contexts() {
        let m = BTreeMap::new();
        let v = validate_context(fields(TP, Some(" congo=t61rcWkgMzE "), &m)).unwrap();
        assert_eq!(v.traceparent, TP);
        assert_eq!(v.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            validate_context(fields(TP, Some(""), &m))
                .unwrap()
                .tracestate,
            None
        );
        for (tp, ts, field) in [
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                None,
                "traceparent: ",
            ),
            (
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                None,
                "traceparent: ",
            ),
            (
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                None,
                "traceparent: ",
            ),
            (TP, Some("no-equals-sign"), "tracestate: "),
            (TP, Some("a=1,a=2"), "tracestate: "),
        ] {
            let e = validate_context(fields(tp, ts, &m)).unwrap_err();
            assert!(e.to_string().starts_with(field), "{tp} {ts:?}: {e}");
        }
        let long = format!("a={}", "x".repeat(600));
        let e = validate_context(fields(TP, Some(&long), &m)).unwrap_err();
        assert!(
            e.to_string().starts_with("tracestate: must be at most 512"),
            "{e}"
        );
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let e = validate_context(fields(TP, None, &many)).unwrap_err();
        assert!(e.to_string().starts_with("metadata: "), "{e}");
        let agent = "a".repeat(300);
        let e = validate_context(ContextFields {
            agent: Some(&agent),
            ..fields(TP, None, &m)
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("agent: "), "{e}");
    }
}
