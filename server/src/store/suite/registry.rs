//! Registering task types and keeping tokens.

use super::*;

async fn registration_with_a_conflicting_entry_writes_nothing(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store
        .register_task_types(&[spec("invoice_generation", "billing")])
        .await
        .unwrap();
    let err = store
        .register_task_types(&[
            spec("welcome_email", "user_management"),
            spec("invoice_generation", "user_management"),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists(ref m) if m.contains("belongs to domain 'billing'")),
        "{err}"
    );
    assert!(
        store
            .get_task_type("welcome_email")
            .await
            .unwrap()
            .is_none()
    );
    let unregistered = store
        .enqueue(vec![new_task("welcome_email")])
        .await
        .unwrap_err();
    assert!(matches!(unregistered, Error::FailedPrecondition(_)));
}

async fn tokens_are_found_by_hash_and_revoked_once(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    use crate::auth::tokens::{hash, issue};
    use crate::auth::{DomainScope, Role};
    let billing = issue("billing-agent", Role::Agent, vec!["billing".into()]).unwrap();
    let admin = issue("ops", Role::Admin, vec![]).unwrap();
    store.create_token(&billing).await.unwrap();
    store.create_token(&admin).await.unwrap();

    let found = store
        .find_token(&hash(&billing.token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.role, Role::Agent);
    assert_eq!(
        found.domains,
        DomainScope::from_list(vec!["billing".into()])
    );
    assert_eq!(found.revoked_at, None);
    assert!(
        store
            .find_token(&hash("tp_nope_0"))
            .await
            .unwrap()
            .is_none()
    );

    assert!(store.revoke_token(&billing.record.id).await.unwrap());
    assert!(
        !store.revoke_token(&billing.record.id).await.unwrap(),
        "revoking twice changes nothing"
    );
    assert!(!store.revoke_token("no-such-id").await.unwrap());
    let revoked = store
        .find_token(&hash(&billing.token))
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());

    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|t| t.id == admin.record.id && t.domains == DomainScope::All)
    );
}

crate::on_every_backend!(
    registration_with_a_conflicting_entry_writes_nothing,
    tokens_are_found_by_hash_and_revoked_once,
);
