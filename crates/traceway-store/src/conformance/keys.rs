//! Conformance: API keys ([`crate::ApiKeys`]).

use std::time::Duration;

use traceway_core::apikey::{hash_secret, secret_matches};
use traceway_core::{Credentials, KeyScope, KeyScopes};

use super::Harness;
use crate::{ApiKey, Clock, KeyError, StoredKey};

fn new_key(h: &Harness, tenant: &str, name: &str, scopes: &[KeyScope]) -> (Credentials, StoredKey) {
    let c = Credentials::generate();
    let k = StoredKey {
        key: ApiKey {
            key_id: c.key_id.clone(),
            tenant: tenant.into(),
            name: name.into(),
            scopes: KeyScopes::of(scopes),
            created_at: h.clock.now(),
            revoked_at: None,
            last_used_at: None,
        },
        secret_hash: hash_secret(&c.secret),
    };
    (c, k)
}

/// A created key is found by its id alone, with its tenant, scopes and hash; the secret
/// itself is not stored.
pub async fn key_is_found_by_id_with_its_tenant_and_hash(h: &Harness) {
    let (c, k) = new_key(h, "tenant-a", "ci", &[KeyScope::Ingest, KeyScope::Read]);
    h.store.create_key(k.clone()).await.expect("create");
    let got = h
        .store
        .get_key(&c.key_id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got, k);
    assert!(secret_matches(&c.secret, &got.secret_hash));
    assert_ne!(got.secret_hash, c.secret);
    assert_eq!(
        h.store
            .get_key(&Credentials::generate().key_id)
            .await
            .expect("get"),
        None
    );
    let again = h.store.create_key(k).await;
    assert!(
        matches!(again, Err(KeyError::KeyIdExists(_))),
        "an id is never reused: {again:?}"
    );
}

/// A listing shows one tenant's keys, oldest first, and no other tenant's.
pub async fn keys_are_listed_per_tenant_oldest_first(h: &Harness) {
    let (_, a1) = new_key(h, "tenant-a", "first", &[KeyScope::Admin]);
    h.store.create_key(a1.clone()).await.expect("a1");
    h.clock.advance(Duration::from_secs(1));
    let (_, b1) = new_key(h, "tenant-b", "other", &[KeyScope::Read]);
    h.store.create_key(b1.clone()).await.expect("b1");
    h.clock.advance(Duration::from_secs(1));
    let (_, a2) = new_key(h, "tenant-a", "second", &[KeyScope::Ingest]);
    h.store.create_key(a2.clone()).await.expect("a2");
    let a = h.store.list_keys("tenant-a").await.expect("list a");
    assert_eq!(a, vec![a1.key, a2.key]);
    let b = h.store.list_keys("tenant-b").await.expect("list b");
    assert_eq!(b, vec![b1.key]);
    assert!(h.store.list_keys("tenant-c").await.expect("c").is_empty());
}

/// Revocation is per tenant, keeps its first time, and the key stays listed as revoked.
pub async fn revocation_is_per_tenant_and_kept(h: &Harness) {
    let (c, k) = new_key(h, "tenant-a", "ci", &[KeyScope::Ingest]);
    h.store.create_key(k).await.expect("create");
    assert!(
        !h.store.revoke_key("tenant-b", &c.key_id).await.expect("b"),
        "another tenant cannot revoke it"
    );
    assert_eq!(
        h.store
            .get_key(&c.key_id)
            .await
            .expect("get")
            .expect("k")
            .key
            .revoked_at,
        None
    );
    h.clock.advance(Duration::from_secs(5));
    let when = h.clock.now();
    assert!(h.store.revoke_key("tenant-a", &c.key_id).await.expect("a"));
    h.clock.advance(Duration::from_secs(5));
    assert!(h
        .store
        .revoke_key("tenant-a", &c.key_id)
        .await
        .expect("again"));
    let got = h.store.get_key(&c.key_id).await.expect("get").expect("k");
    assert_eq!(got.key.revoked_at, Some(when));
    let listed = h.store.list_keys("tenant-a").await.expect("list");
    assert_eq!(listed[0].revoked_at, Some(when));
    assert!(!h
        .store
        .revoke_key("tenant-a", &Credentials::generate().key_id)
        .await
        .expect("unknown"));
}

/// A recorded use only moves forward.
pub async fn last_use_moves_forward_only(h: &Harness) {
    let (c, k) = new_key(h, "tenant-a", "ci", &[KeyScope::Read]);
    h.store.create_key(k).await.expect("create");
    let t1 = h.clock.now().saturating_add(Duration::from_secs(10));
    let t0 = h.clock.now().saturating_add(Duration::from_secs(5));
    h.store.touch_key(&c.key_id, t1).await.expect("touch");
    h.store.touch_key(&c.key_id, t0).await.expect("older");
    let got = h.store.get_key(&c.key_id).await.expect("get").expect("k");
    assert_eq!(got.key.last_used_at, Some(t1));
    // A use of a key that does not exist creates nothing.
    let ghost = Credentials::generate().key_id;
    h.store.touch_key(&ghost, t1).await.expect("ghost");
    assert_eq!(h.store.get_key(&ghost).await.expect("get"), None);
}
