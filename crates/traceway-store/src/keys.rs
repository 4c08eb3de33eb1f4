//! The API-key concern of the contract: keys belong to a tenant, are found by their public
//! id in one indexed read, and are stored with the hash of their secret only (ADR 024).

use async_trait::async_trait;
use traceway_core::{KeyScopes, Timestamp};

use crate::{Decorates, KeyError};

/// A key as listed: everything but its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The public id (`twk_…`), unique across tenants.
    pub key_id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// A label chosen at creation.
    pub name: String,
    /// What it may do.
    pub scopes: KeyScopes,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<Timestamp>,
    /// When it was last used, as recorded (recording is throttled by the caller).
    pub last_used_at: Option<Timestamp>,
}

/// A key as stored, for verification: its listing and its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key.
    pub key: ApiKey,
    /// The hex SHA-256 of its secret ([`traceway_core::apikey::hash_secret`]).
    pub secret_hash: String,
}

/// The most keys one tenant may hold (revoked ones included); a listing returns them all.
pub const MAX_KEYS_PER_TENANT: usize = 1000;

/// API keys.
#[async_trait]
pub trait ApiKeys: Send + Sync + 'static {
    /// Stores a new key (`revoked_at` and `last_used_at` are ignored). Refused with
    /// [`KeyError::KeyIdExists`] if its id exists, or [`KeyError::TenantFull`] if the tenant
    /// already holds [`MAX_KEYS_PER_TENANT`] keys.
    async fn create_key(&self, key: StoredKey) -> Result<(), KeyError>;

    /// The key with this public id, whatever its tenant (the id is what a request
    /// presents); revoked keys are returned too, with `revoked_at` set.
    async fn get_key(&self, key_id: &str) -> Result<Option<StoredKey>, KeyError>;

    /// A tenant's keys, oldest first.
    async fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, KeyError>;

    /// Revokes a tenant's key; false if the tenant has no such key. Revoking twice keeps
    /// the first time.
    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool, KeyError>;

    /// Records a use of the key at `at` (kept if later than the one stored).
    async fn touch_key(&self, key_id: &str, at: Timestamp) -> Result<(), KeyError>;
}

/// [`ApiKeys`] for a decorator: every method goes to [`Decorates::inner`] unless the
/// decorator overrides it.
#[async_trait]
pub trait ApiKeysLayer: Decorates {
    /// [`ApiKeys::create_key`].
    async fn create_key(&self, key: StoredKey) -> Result<(), KeyError> {
        self.inner().create_key(key).await
    }

    /// [`ApiKeys::get_key`].
    async fn get_key(&self, key_id: &str) -> Result<Option<StoredKey>, KeyError> {
        self.inner().get_key(key_id).await
    }

    /// [`ApiKeys::list_keys`].
    async fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, KeyError> {
        self.inner().list_keys(tenant).await
    }

    /// [`ApiKeys::revoke_key`].
    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool, KeyError> {
        self.inner().revoke_key(tenant, key_id).await
    }

    /// [`ApiKeys::touch_key`].
    async fn touch_key(&self, key_id: &str, at: Timestamp) -> Result<(), KeyError> {
        self.inner().touch_key(key_id, at).await
    }
}

#[async_trait]
impl<T: ApiKeysLayer> ApiKeys for T {
    async fn create_key(&self, key: StoredKey) -> Result<(), KeyError> {
        ApiKeysLayer::create_key(self, key).await
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<StoredKey>, KeyError> {
        ApiKeysLayer::get_key(self, key_id).await
    }

    async fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, KeyError> {
        ApiKeysLayer::list_keys(self, tenant).await
    }

    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool, KeyError> {
        ApiKeysLayer::revoke_key(self, tenant, key_id).await
    }

    async fn touch_key(&self, key_id: &str, at: Timestamp) -> Result<(), KeyError> {
        ApiKeysLayer::touch_key(self, key_id, at).await
    }
}
