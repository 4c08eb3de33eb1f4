//! The keyspace: every key and index name (ADR 010).

use super::*;

/// The keys of one trace.
pub(super) struct TraceKeys {
    pub(super) row: String,
    pub(super) spans: String,
    pub(super) keys: String,
    pub(super) events: String,
}

impl RedisStore {
    pub(super) fn trace_keys(&self, tenant: &str, id: TraceId) -> TraceKeys {
        let base = format!("{}:t:{{{tenant}:{id}}}", self.prefix);
        TraceKeys {
            row: format!("{base}:r"),
            spans: format!("{base}:s"),
            keys: format!("{base}:k"),
            events: format!("{base}:e"),
        }
    }

    pub(super) fn tenant_index(&self, tenant: &str, which: &str) -> String {
        format!("{}:i:{{{tenant}}}:{which}", self.prefix)
    }

    /// The tenant's traces whose duration is in `bucket` (`duration_index`), by creation.
    pub(super) fn duration_index(&self, tenant: &str, bucket: u32) -> String {
        self.tenant_index(tenant, &format!("d:{bucket}"))
    }

    pub(super) fn global(&self, which: &str) -> String {
        format!("{}:g:{which}", self.prefix)
    }

    pub(super) fn member(tenant: &str, id: TraceId) -> String {
        format!("{tenant}/{id}")
    }

    pub(super) fn parse_member(m: &str) -> Option<(String, TraceId)> {
        let (t, id) = m.rsplit_once('/')?;
        Some((t.to_string(), id.parse().ok()?))
    }

    pub(super) fn lease_keys(&self, name: &str) -> (String, String) {
        let base = format!("{}:lease:{{{name}}}", self.prefix);
        (base.clone(), format!("{base}:token"))
    }
}
