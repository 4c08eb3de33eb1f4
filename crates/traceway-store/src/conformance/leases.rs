//! Leases and fencing.

use super::*;

/// One holder at a time; renewing keeps it; once it lapses another holder takes it with a
/// larger fencing token, and fenced writes with the old token are refused.
pub async fn lease_is_exclusive_renewable_and_fenced(h: &Harness) {
    let take = |holder: &'static str| async move {
        h.store
            .try_acquire_lease(WATCHDOG_LEASE, holder, LEASE_TTL)
            .await
            .expect("acquire")
    };
    let a = take("a").await.expect("free at first");
    assert_eq!(take("b").await, None, "held by a");
    let again = take("a").await.expect("the holder may take it again");
    assert_eq!(again.token, a.token, "same holder, same token");

    h.clock.advance(Duration::from_secs(20));
    let a = h
        .store
        .renew_lease(&a, LEASE_TTL)
        .await
        .expect("renew")
        .expect("still held");
    assert_eq!(
        a.expires_at,
        h.clock.now_for_tests().saturating_add(LEASE_TTL)
    );
    h.clock.advance(Duration::from_secs(20));
    assert_eq!(take("b").await, None, "renewed, still a's");
    h.store
        .sweep_orphans(&a, ORPHAN_AFTER, 10)
        .await
        .expect("the holder sweeps");
    h.store.purge_expired(&a, 10).await.expect("and purges");

    // a stops renewing; after the ttl b takes over.
    h.clock.advance(LEASE_TTL);
    assert_eq!(
        h.store.renew_lease(&a, LEASE_TTL).await.expect("renew"),
        None,
        "lapsed"
    );
    let b = take("b").await.expect("lapsed, so b takes it");
    assert!(b.token > a.token, "a new fencing token");
    let r = h.store.sweep_orphans(&a, ORPHAN_AFTER, 10).await;
    assert!(matches!(r, Err(LifecycleError::LeaseLost(_))), "{r:?}");
    let r = h.store.purge_expired(&a, 10).await;
    assert!(matches!(r, Err(LifecycleError::LeaseLost(_))), "{r:?}");
    assert!(
        !h.store.release_lease(&a).await.expect("release"),
        "not a's"
    );
    h.store
        .sweep_orphans(&b, ORPHAN_AFTER, 10)
        .await
        .expect("b sweeps");

    // Released: free at once, with a larger token still.
    assert!(h.store.release_lease(&b).await.expect("release"));
    let r = h.store.sweep_orphans(&b, ORPHAN_AFTER, 10).await;
    assert!(matches!(r, Err(LifecycleError::LeaseLost(_))), "{r:?}");
    let a2 = take("a").await.expect("free after release");
    assert!(a2.token > b.token);
    // Leases are independent of each other.
    let other = h
        .store
        .try_acquire_lease("other", "b", LEASE_TTL)
        .await
        .expect("acquire")
        .expect("another name is free");
    assert_eq!(other.holder, "b");
}
