//! The reply thread: publishes what a committed group wrote, then replies to each command.

use super::*;

pub(super) type ReplyTo = oneshot::Sender<Result<OpResult, OpError>>;

pub(super) type Pending = (Op, ReplyTo);

/// A group's outcome, handed to the reply thread in commit order.
pub(super) enum Acks {
    /// Committed: publish, then reply.
    Committed(Vec<(ReplyTo, Result<OpResult, OpError>)>),
    /// Not committed: reply with the error.
    Failed(Vec<ReplyTo>, BackendError),
}

/// The reply thread: publishes what a committed group wrote to the hub (in commit order,
/// so in seq order per trace), then replies to each command.
pub(super) struct Acker;

impl Acker {
    pub(super) fn start(
        hub: crate::InProcessHub,
    ) -> std::io::Result<(
        std::sync::mpsc::SyncSender<Acks>,
        std::thread::JoinHandle<()>,
    )> {
        // Bounded: a reply thread that falls behind holds the writer back.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Acks>(64);
        let handle = std::thread::Builder::new()
            .name("tw-sqlite-ack".into())
            .spawn(move || {
                for acks in rx {
                    match acks {
                        Acks::Committed(results) => {
                            Self::publish(&hub, &results);
                            for (reply, r) in results {
                                let _ = reply.send(r);
                            }
                        }
                        Acks::Failed(replies, e) => {
                            for reply in replies {
                                let _ = reply.send(Err(OpError::Backend(e.clone())));
                            }
                        }
                    }
                }
            })?;
        Ok((tx, handle))
    }

    /// Whether a committed command's result has something for the hub.
    pub(super) fn publishes(r: &Result<OpResult, OpError>) -> bool {
        matches!(
            r,
            Ok(OpResult::Trace(..) | OpResult::Append(..) | OpResult::Orphaned(_))
        )
    }

    fn publish(hub: &crate::InProcessHub, results: &[(ReplyTo, Result<OpResult, OpError>)]) {
        let publish = |trace: &Trace, events: &[Event]| {
            let meta = crate::TraceMeta {
                agent_id: trace.agent_id.clone(),
                state: Some(trace.state.clone()),
            };
            hub.publish(&trace.tenant, &meta, events);
        };
        for (_, r) in results {
            match r {
                Ok(OpResult::Trace(t, e)) => publish(t, e),
                Ok(OpResult::Append(_, t, events)) => publish(t, events),
                Ok(OpResult::Orphaned(list)) => {
                    for o in list {
                        publish(&o.trace, &o.events);
                    }
                }
                _ => {}
            }
        }
    }
}
