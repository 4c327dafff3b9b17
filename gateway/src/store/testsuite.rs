//! The conformance suite every [`ContextStore`] backend must pass.

use omnigate_connectors::model::{
    Channel, Content, ConversationId, CustomerId, Identity, IdentityKind, MessageId,
};

use super::*;

fn message(text: &str, key: Option<&str>) -> NewEvent {
    NewEvent {
        at_ms: 1,
        actor: Actor::System,
        kind: EventKind::Message {
            message_id: MessageId::generate(),
            client_msg_id: key.unwrap_or("").to_owned(),
            content: Content::Text {
                text: text.to_owned(),
            },
        },
        idempotency_key: key.map(str::to_owned),
    }
}

fn note(text: &str) -> NewEvent {
    NewEvent {
        at_ms: 1,
        actor: Actor::System,
        kind: EventKind::Note {
            message_id: MessageId::generate(),
            client_msg_id: String::new(),
            text: text.to_owned(),
        },
        idempotency_key: None,
    }
}

/// Runs every check against `store`.
pub(crate) async fn run(store: &dyn ContextStore) {
    numbering_is_gapless_in_both_views(store).await;
    idempotent_appends_return_the_original(store).await;
    pages_respect_position_and_limit(store).await;
    identities_resolve_to_one_customer(store).await;
    conversation_records_round_trip(store).await;
    store.ping().await.expect("ping");
}

async fn numbering_is_gapless_in_both_views(store: &dyn ContextStore) {
    let c = ConversationId::generate();
    let a = store.append(&c, message("a", None)).await.unwrap();
    let n = store.append(&c, note("internal")).await.unwrap();
    let b = store.append(&c, message("b", None)).await.unwrap();
    assert_eq!((a.event().seq, a.event().customer_seq), (1, Some(1)));
    assert_eq!((n.event().seq, n.event().customer_seq), (2, None));
    assert_eq!((b.event().seq, b.event().customer_seq), (3, Some(2)));
    assert_eq!(store.customer_position(&c, 2).await.unwrap(), 1);
    assert_eq!(store.customer_position(&c, 3).await.unwrap(), 2);
    assert_eq!(store.agent_position(&c, 2).await.unwrap(), Some(3));
    assert_eq!(store.agent_position(&c, 3).await.unwrap(), None);
    let customer = store.events_after(&c, View::Customer, 0, 10).await.unwrap();
    assert_eq!(customer.last, 2);
    assert!(customer.events.iter().all(|e| e.kind.customer_visible()));
}

async fn idempotent_appends_return_the_original(store: &dyn ContextStore) {
    let c = ConversationId::generate();
    let first = store.append(&c, message("hello", Some("k1"))).await.unwrap();
    let again = store.append(&c, message("hello", Some("k1"))).await.unwrap();
    assert!(matches!(first, Appended::New(_)));
    assert!(matches!(again, Appended::Duplicate(_)));
    assert_eq!(first.event(), again.event());
    assert_eq!(
        store
            .events_after(&c, View::Agent, 0, 10)
            .await
            .unwrap()
            .events
            .len(),
        1
    );
    let other = ConversationId::generate();
    assert!(matches!(
        store.append(&other, message("hello", Some("k1"))).await.unwrap(),
        Appended::New(_)
    ));
}

async fn pages_respect_position_and_limit(store: &dyn ContextStore) {
    let c = ConversationId::generate();
    for i in 0..10 {
        store.append(&c, message(&i.to_string(), None)).await.unwrap();
    }
    let page = store.events_after(&c, View::Agent, 4, 3).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(page.last, 10);
    let empty = store
        .events_after(&ConversationId::generate(), View::Agent, 0, 3)
        .await
        .unwrap();
    assert_eq!((empty.events.len(), empty.last), (0, 0));
}

async fn identities_resolve_to_one_customer(store: &dyn ContextStore) {
    let visitor = Identity {
        kind: IdentityKind::WebVisitor,
        value: format!("v_{}", CustomerId::generate()),
        verified: false,
    };
    let first = store.resolve_customer(&visitor).await.unwrap();
    assert_eq!(store.resolve_customer(&visitor).await.unwrap(), first);
    let phone = Identity {
        kind: IdentityKind::Phone,
        value: visitor.value.clone(),
        verified: true,
    };
    assert_ne!(store.resolve_customer(&phone).await.unwrap(), first);
}

async fn conversation_records_round_trip(store: &dyn ContextStore) {
    let record = ConversationRecord {
        id: ConversationId::generate(),
        customer: CustomerId::generate(),
        channel: Channel::Web,
        queue: "general".into(),
        status: ConversationStatus::Queued,
        agent: None,
        created_at_ms: 5,
        closed_at_ms: None,
    };
    store.save_conversation(&record).await.unwrap();
    assert_eq!(store.load_conversation(&record.id).await.unwrap(), Some(record));
    assert_eq!(
        store
            .load_conversation(&ConversationId::generate())
            .await
            .unwrap(),
        None
    );
}
