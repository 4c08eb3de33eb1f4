//! API keys on SQLite: one table, keyed by the public id, so that a verification is one
//! primary-key read on a reader connection; writes go through the single writer.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use traceway_core::{KeyScopes, Timestamp};

use super::schema::internal;
use super::writer::{Op, OpResult};
use super::SqliteStore;
use crate::{ApiKey, ApiKeys, BackendError, KeyError, StoredKey, MAX_KEYS_PER_TENANT};

/// The schema step that adds the table (appended to the migrations).
pub(crate) const MIGRATION: &str = r#"
    CREATE TABLE api_keys (
        key_id       TEXT    PRIMARY KEY,
        tenant       TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        scopes       TEXT    NOT NULL,
        secret_hash  TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        revoked_at   INTEGER,
        last_used_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at);
"#;

/// A key write, run in the writer's transaction.
pub(crate) enum KeyOp {
    Create(StoredKey),
    Revoke { tenant: String, key_id: String },
    Touch { key_id: String, at: Timestamp },
}

/// Its answer.
pub(crate) enum KeyReply {
    Done,
    Changed(bool),
}

/// Runs `op` in the writer's transaction. A refusal writes nothing (the group's other
/// commands still commit).
pub(crate) fn execute(
    tx: &Transaction<'_>,
    op: KeyOp,
    now: Timestamp,
) -> Result<KeyReply, KeyError> {
    match op {
        KeyOp::Create(k) => {
            let taken: bool = tx
                .prepare_cached("SELECT 1 FROM api_keys WHERE key_id = ?1")
                .and_then(|mut s| s.exists(params![k.key.key_id]))
                .map_err(internal)?;
            if taken {
                return Err(KeyError::KeyIdExists(k.key.key_id));
            }
            let held: i64 = tx
                .prepare_cached("SELECT count(*) FROM api_keys WHERE tenant = ?1")
                .and_then(|mut s| s.query_row(params![k.key.tenant], |r| r.get(0)))
                .map_err(internal)?;
            if held as usize >= MAX_KEYS_PER_TENANT {
                return Err(KeyError::TenantFull);
            }
            tx.prepare_cached(
                "INSERT INTO api_keys (key_id, tenant, name, scopes, secret_hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    k.key.key_id,
                    k.key.tenant,
                    k.key.name,
                    k.key.scopes.to_csv(),
                    k.secret_hash,
                    k.key.created_at.unix_nanos(),
                ])
            })
            .map_err(internal)?;
            Ok(KeyReply::Done)
        }
        KeyOp::Revoke { tenant, key_id } => {
            let exists: bool = tx
                .prepare_cached("SELECT 1 FROM api_keys WHERE key_id = ?1 AND tenant = ?2")
                .and_then(|mut s| s.exists(params![key_id, tenant]))
                .map_err(internal)?;
            tx.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?3 \
                 WHERE key_id = ?1 AND tenant = ?2 AND revoked_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![key_id, tenant, now.unix_nanos()]))
            .map_err(internal)?;
            Ok(KeyReply::Changed(exists))
        }
        KeyOp::Touch { key_id, at } => {
            tx.prepare_cached(
                "UPDATE api_keys SET last_used_at = ?2 \
                 WHERE key_id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )
            .and_then(|mut s| s.execute(params![key_id, at.unix_nanos()]))
            .map_err(internal)?;
            Ok(KeyReply::Done)
        }
    }
}

const COLUMNS: &str =
    "key_id, tenant, name, scopes, secret_hash, created_at, revoked_at, last_used_at";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiKey, String, String)> {
    let scopes: String = r.get(3)?;
    Ok((
        ApiKey {
            key_id: r.get(0)?,
            tenant: r.get(1)?,
            name: r.get(2)?,
            scopes: KeyScopes::default(),
            created_at: Timestamp::from_unix_nanos(r.get(5)?),
            revoked_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_unix_nanos),
            last_used_at: r.get::<_, Option<i64>>(7)?.map(Timestamp::from_unix_nanos),
        },
        scopes,
        r.get(4)?,
    ))
}

/// A row whose scopes do not parse grants nothing rather than failing the read.
fn with_scopes((mut key, scopes, hash): (ApiKey, String, String)) -> StoredKey {
    key.scopes = KeyScopes::from_csv(&scopes).unwrap_or_else(|e| {
        tracing::warn!(key_id = %key.key_id, error = %e, "stored key has unreadable scopes; it grants nothing");
        KeyScopes::default()
    });
    StoredKey {
        key,
        secret_hash: hash,
    }
}

fn get(conn: &Connection, key_id: &str) -> Result<Option<StoredKey>, BackendError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = ?1"))
        .and_then(|mut s| s.query_row(params![key_id], read_row).optional())
        .map(|r| r.map(with_scopes))
        .map_err(internal)
}

fn list(conn: &Connection, tenant: &str) -> Result<Vec<ApiKey>, BackendError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE tenant = ?1 ORDER BY created_at, key_id LIMIT ?2"
        ))
        .map_err(internal)?;
    let rows = s
        .query_map(params![tenant, MAX_KEYS_PER_TENANT as i64], read_row)
        .map_err(internal)?;
    rows.map(|r| r.map(|row| with_scopes(row).key))
        .collect::<Result<_, _>>()
        .map_err(internal)
}

impl SqliteStore {
    async fn key_write(&self, op: KeyOp) -> Result<KeyReply, KeyError> {
        match self.write(Op::Keys(op)).await? {
            OpResult::Keys(r) => Ok(r),
            _ => Err(super::unexpected_reply()),
        }
    }
}

#[async_trait]
impl ApiKeys for SqliteStore {
    async fn create_key(&self, key: StoredKey) -> Result<(), KeyError> {
        self.key_write(KeyOp::Create(key)).await.map(|_| ())
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<StoredKey>, KeyError> {
        let key_id = key_id.to_string();
        self.read(move |c, _| get(c, &key_id)).await
    }

    async fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, KeyError> {
        let tenant = tenant.to_string();
        self.read(move |c, _| list(c, &tenant)).await
    }

    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool, KeyError> {
        let op = KeyOp::Revoke {
            tenant: tenant.to_string(),
            key_id: key_id.to_string(),
        };
        match self.key_write(op).await? {
            KeyReply::Changed(found) => Ok(found),
            KeyReply::Done => Ok(true),
        }
    }

    async fn touch_key(&self, key_id: &str, at: Timestamp) -> Result<(), KeyError> {
        let op = KeyOp::Touch {
            key_id: key_id.to_string(),
            at,
        };
        self.key_write(op).await.map(|_| ())
    }
}
