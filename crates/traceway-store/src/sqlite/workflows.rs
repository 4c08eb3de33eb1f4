//! Workflow contexts on SQLite: one row per (tenant, instance) in `workflow_contexts`
//! (migration v3), written by the writer thread like every other write, read from the
//! reader pool. Expired rows are never read; each write deletes a few of them, so the
//! table stays bounded without the watchdog (ADR 023).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};
use traceway_core::Timestamp;

use super::schema::internal;
use super::writer::{Op, OpResult};
use super::SqliteStore;
use crate::workflows::{checked, checked_instance, decode_instance_cursor, encode_instance_cursor};
use crate::{
    BackendError, NewWorkflowContext, PageRequest, WorkflowContext, WorkflowContexts,
    WorkflowError, WorkflowStats, MAX_WORKFLOW_PAGE,
};

/// Deletes up to 16 expired rows, those one write deletes at most. The limit is written into the SQL: with
/// `LIMIT ?` SQLite (this build, with STAT4) re-prepared the statement on every execution,
/// about 80,000 instructions, a quarter of the server's work per PUT in callgrind.
const PURGE_SQL: &str = "DELETE FROM workflow_contexts WHERE (tenant, instance_id) IN \
     (SELECT tenant, instance_id FROM workflow_contexts WHERE expires_at <= ?1 LIMIT 16)";

/// A write to the table, run by the writer thread inside its group's transaction.
pub(crate) enum WorkflowOp {
    Put {
        tenant: String,
        ctx: Box<WorkflowContext>,
    },
    Delete {
        tenant: String,
        instance: String,
    },
}

/// Runs one write; `OpResult::Deleted` tells whether a live row was replaced or deleted.
pub(crate) fn execute(
    tx: &Transaction<'_>,
    op: WorkflowOp,
    now: Timestamp,
) -> Result<OpResult, BackendError> {
    let now_ns = now.unix_nanos();
    match op {
        WorkflowOp::Put { tenant, ctx } => {
            tx.prepare_cached(PURGE_SQL)
                .and_then(|mut s| s.execute(params![now_ns]))
                .map_err(internal)?;
            let body = serde_json::to_string(&ctx)
                .map_err(|e| BackendError::internal_by("encode context", e))?;
            tx.prepare_cached(
                "INSERT INTO workflow_contexts (tenant, instance_id, body, expires_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant, instance_id) \
                 DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    ctx.instance_id,
                    body,
                    ctx.expires_at.unix_nanos()
                ])
            })
            .map_err(internal)?;
            Ok(OpResult::Deleted(false))
        }
        WorkflowOp::Delete { tenant, instance } => {
            let n = tx
                .prepare_cached(
                    "DELETE FROM workflow_contexts WHERE tenant = ?1 AND instance_id = ?2 \
                     RETURNING expires_at > ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![tenant, instance, now_ns], |r| r.get::<_, bool>(0))
                        .optional()
                })
                .map_err(internal)?;
            Ok(OpResult::Deleted(n == Some(true)))
        }
    }
}

fn decode(body: &str) -> Result<WorkflowContext, BackendError> {
    serde_json::from_str(body).map_err(|e| BackendError::internal_by("decode context", e))
}

#[async_trait]
impl WorkflowContexts for SqliteStore {
    async fn put_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
        ctx: NewWorkflowContext,
        ttl: Duration,
    ) -> Result<WorkflowContext, WorkflowError> {
        let ctx = checked(instance, ctx, self.clock.now(), ttl)?;
        let op = Op::Workflow(WorkflowOp::Put {
            tenant: tenant.to_string(),
            ctx: Box::new(ctx.clone()),
        });
        match self.write(op).await? {
            OpResult::Deleted(_) => Ok(ctx),
            _ => Err(super::unexpected_reply()),
        }
    }

    async fn get_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Option<WorkflowContext>, WorkflowError> {
        checked_instance(instance)?;
        let (tenant, instance) = (tenant.to_string(), instance.to_string());
        self.read_point(move |c, now| {
            let body: Option<String> = c
                .prepare_cached(
                    "SELECT body FROM workflow_contexts WHERE tenant = ?1 AND instance_id = ?2 \
                     AND expires_at > ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![tenant, instance, now.unix_nanos()], |r| r.get(0))
                        .optional()
                })
                .map_err(internal)?;
            body.as_deref().map(decode).transpose()
        })
        .await
    }

    async fn delete_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<bool, WorkflowError> {
        checked_instance(instance)?;
        let op = Op::Workflow(WorkflowOp::Delete {
            tenant: tenant.to_string(),
            instance: instance.to_string(),
        });
        match self.write(op).await? {
            OpResult::Deleted(d) => Ok(d),
            _ => Err(super::unexpected_reply()),
        }
    }

    async fn workflow_stats(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> Result<WorkflowStats, WorkflowError> {
        let after = page
            .cursor
            .as_deref()
            .map(decode_instance_cursor)
            .transpose()?
            .unwrap_or_default();
        let limit = page.limit.clamp(1, MAX_WORKFLOW_PAGE);
        let tenant = tenant.to_string();
        self.read(move |c, now| {
            let now = now.unix_nanos();
            let count: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM workflow_contexts WHERE tenant = ?1 AND expires_at > ?2",
                )
                .and_then(|mut s| s.query_row(params![tenant, now], |r| r.get(0)))
                .map_err(internal)?;
            let mut stmt = c
                .prepare_cached(
                    "SELECT instance_id FROM workflow_contexts WHERE tenant = ?1 \
                     AND instance_id > ?2 AND expires_at > ?3 ORDER BY instance_id LIMIT ?4",
                )
                .map_err(internal)?;
            let mut instances: Vec<String> = stmt
                .query_map(params![tenant, after, now, limit + 1], |r| r.get(0))
                .map_err(internal)?
                .collect::<Result<_, _>>()
                .map_err(internal)?;
            let next_cursor = if instances.len() > limit as usize {
                instances.truncate(limit as usize);
                instances.last().map(|l| encode_instance_cursor(l))
            } else {
                None
            };
            Ok(WorkflowStats {
                count: count.max(0) as u64,
                instances,
                next_cursor,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    fn put(tx: &Transaction<'_>, instance: &str, now: i64, expires: i64) {
        let ctx = WorkflowContext {
            instance_id: instance.to_string(),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
            agent: None,
            metadata: Default::default(),
            stored_at: Timestamp::from_unix_nanos(now),
            expires_at: Timestamp::from_unix_nanos(expires),
        };
        let op = WorkflowOp::Put {
            tenant: "t".into(),
            ctx: Box::new(ctx),
        };
        execute(tx, op, Timestamp::from_unix_nanos(now)).expect("put");
    }

    /// Each PUT deletes at most 16 expired rows, and its statements stay prepared from one
    /// PUT to the next (a re-prepare compiles the SQL again on every write).
    #[test]
    fn a_put_purges_sixteen_expired_rows_without_re_preparing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn =
            super::super::schema::open_writer_connection(&dir.path().join("t.db")).expect("open");
        let tx = conn.transaction().expect("begin");
        for i in 0..20 {
            put(&tx, &format!("old-{i}"), 1_000, 2_000 + i);
        }
        let expired = |tx: &Transaction<'_>| -> i64 {
            tx.query_row(
                "SELECT count(*) FROM workflow_contexts WHERE expires_at <= 1000000",
                [],
                |r| r.get(0),
            )
            .expect("count")
        };
        assert_eq!(expired(&tx), 20);
        put(&tx, "new-0", 1_000_000, 9_000_000);
        assert_eq!(expired(&tx), 4, "one PUT deletes 16 expired rows");
        for i in 1..5 {
            put(&tx, &format!("new-{i}"), 1_000_000 + i, 9_000_000);
        }
        assert_eq!(expired(&tx), 0);
        let s = tx.prepare_cached(PURGE_SQL).expect("cached");
        assert_eq!(s.get_status(StatementStatus::RePrepare), 0);
    }
}
