//! The label values of the metrics: which store write, and why one failed.

use traceway_store::StoreFailure;

/// Store writes, for the latency histograms' `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    /// create_trace
    Create,
    /// append
    Append,
    /// update_trace
    Update,
    /// delete_trace
    Delete,
    /// delete_ended_before
    Cleanup,
    /// lease acquire / renew / release
    Lease,
    /// sweep_orphans
    Sweep,
    /// purge_expired
    Purge,
}

impl WriteOp {
    /// Every op, in the order of their index (`op as usize`).
    pub const ALL: [WriteOp; 8] = [
        WriteOp::Create,
        WriteOp::Append,
        WriteOp::Update,
        WriteOp::Delete,
        WriteOp::Cleanup,
        WriteOp::Lease,
        WriteOp::Sweep,
        WriteOp::Purge,
    ];

    /// The `op` label value.
    pub fn label(self) -> &'static str {
        match self {
            WriteOp::Create => "create",
            WriteOp::Append => "append",
            WriteOp::Update => "update",
            WriteOp::Delete => "delete",
            WriteOp::Cleanup => "cleanup",
            WriteOp::Lease => "lease",
            WriteOp::Sweep => "sweep",
            WriteOp::Purge => "purge",
        }
    }
}

/// The `kind` label of a failed write: the store error's [`StoreFailure::kind`], one
/// small, fixed set of values, so the series stay few whatever the message says.
pub fn error_kind_label(e: &impl StoreFailure) -> &'static str {
    e.kind().as_str()
}
