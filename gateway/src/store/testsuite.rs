//! The conformance suite every [`ContextStore`] backend must pass: numbering, idempotency, paging,
//! identities, summaries, and the same under concurrent callers.
//!
//! The memory backend runs it in the gateway's unit tests; the Redis backend runs it in `omnigate-tests`,
//! which starts its own `redis-server` (hence the `test-util` feature).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::task::JoinSet;

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

/// Runs every check against `store`. Call it from a multi-threaded runtime so the concurrent checks run in
/// parallel.
///
/// # Panics
/// When the store breaks the [`ContextStore`] contract.
pub async fn run(store: Arc<dyn ContextStore>) {
    numbering_is_gapless_in_both_views(&*store).await;
    idempotent_appends_return_the_original(&*store).await;
    pages_respect_position_and_limit(&*store).await;
    identities_resolve_to_one_customer(&*store).await;
    conversation_records_round_trip(&*store).await;
    concurrent_appends_are_gapless_and_unique(&store).await;
    concurrent_retries_store_one_event(&store).await;
    concurrent_resolutions_create_one_customer(&store).await;
    held_records_replace_release_and_list_per_inbox(&*store).await;
    store.ping().await.expect("ping");
}

/// Held records: a second hold of a key replaces it, a release drops it (twice is fine), inboxes do not see
/// each other's records, and the listing is sorted by key.
async fn held_records_replace_release_and_list_per_inbox(store: &dyn ContextStore) {
    assert_eq!(store.held(Inbox::Test).await.expect("held"), Vec::new());
    store.hold(Inbox::Test, "b", "one").await.expect("hold");
    store.hold(Inbox::Test, "a", "two").await.expect("hold");
    store.hold(Inbox::Test, "b", "three").await.expect("hold again");
    let held = |key: &str, value: &str| Held {
        key: key.to_owned(),
        value: value.to_owned(),
    };
    assert_eq!(
        store.held(Inbox::Test).await.expect("held"),
        vec![held("a", "two"), held("b", "three")]
    );
    assert!(
        store
            .held(Inbox::Cti)
            .await
            .expect("held")
            .iter()
            .all(|h| h.key != "a" && h.key != "b"),
        "another inbox does not see them"
    );
    store.release(Inbox::Test, "b").await.expect("release");
    store.release(Inbox::Test, "b").await.expect("release twice");
    store
        .release(Inbox::Test, "missing")
        .await
        .expect("release a missing key");
    assert_eq!(
        store.held(Inbox::Test).await.expect("held"),
        vec![held("a", "two")]
    );
    store.release(Inbox::Test, "a").await.expect("release");
    assert_eq!(store.held(Inbox::Test).await.expect("held"), Vec::new());
}

fn text_of(event: &StoredEvent) -> Option<&str> {
    match &event.kind {
        EventKind::Message {
            content: Content::Text { text },
            ..
        } => Some(text),
        EventKind::Note { text, .. } => Some(text),
        _ => None,
    }
}

/// Many writers on one conversation, half of the events hidden from the customer: both numberings stay
/// gapless and every event is stored once.
async fn concurrent_appends_are_gapless_and_unique(store: &Arc<dyn ContextStore>) {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let c = ConversationId::generate();
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(store);
        let c = c.clone();
        writers.spawn(async move {
            for i in 0..EACH {
                let text = format!("{w}-{i}");
                let event = if i % 2 == 0 {
                    message(&text, None)
                } else {
                    note(&text)
                };
                store.append(&c, event).await.expect("concurrent append");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer task");
    }
    let total = (WRITERS * EACH) as u64;
    let page = store
        .events_after(&c, View::Agent, 0, WRITERS * EACH + 10)
        .await
        .unwrap();
    assert_eq!(page.last, total);
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "agent numbering is gapless"
    );
    let texts: BTreeSet<&str> = page.events.iter().filter_map(text_of).collect();
    assert_eq!(texts.len(), WRITERS * EACH, "every event is stored exactly once");
    let customer_seqs: Vec<u64> = page.events.iter().filter_map(|e| e.customer_seq).collect();
    let visible = customer_seqs.len() as u64;
    assert_eq!(
        customer_seqs,
        (1..=visible).collect::<Vec<_>>(),
        "customer numbering is gapless and follows the agent numbering"
    );
    let customer = store
        .events_after(&c, View::Customer, 0, WRITERS * EACH)
        .await
        .unwrap();
    assert_eq!(customer.last, visible);
    assert!(customer.events.iter().all(|e| e.kind.customer_visible()));
}

/// A client retrying the same message on several connections at once gets one stored event.
async fn concurrent_retries_store_one_event(store: &Arc<dyn ContextStore>) {
    const RETRIES: usize = 16;
    let c = ConversationId::generate();
    let mut retries = JoinSet::new();
    for _ in 0..RETRIES {
        let store = Arc::clone(store);
        let c = c.clone();
        retries.spawn(async move { store.append(&c, message("once", Some("k-race"))).await });
    }
    let mut results = Vec::new();
    while let Some(done) = retries.join_next().await {
        results.push(done.expect("retry task").expect("concurrent retry"));
    }
    let new = results.iter().filter(|r| matches!(r, Appended::New(_))).count();
    assert_eq!(new, 1, "exactly one retry stores the event");
    assert!(results.iter().all(|r| r.event() == results[0].event()));
    let page = store.events_after(&c, View::Agent, 0, 10).await.unwrap();
    assert_eq!((page.events.len(), page.last), (1, 1));
}

/// Racing first contacts of one identity agree on one customer.
async fn concurrent_resolutions_create_one_customer(store: &Arc<dyn ContextStore>) {
    const RESOLVERS: usize = 16;
    let identity = Identity {
        kind: IdentityKind::Phone,
        value: format!("+86{}", &CustomerId::generate().as_str()[2..12]),
        verified: true,
    };
    let mut resolvers = JoinSet::new();
    for _ in 0..RESOLVERS {
        let store = Arc::clone(store);
        let identity = identity.clone();
        resolvers.spawn(async move { store.resolve_customer(&identity).await });
    }
    let mut customers = BTreeSet::new();
    while let Some(done) = resolvers.join_next().await {
        customers.insert(done.expect("resolver task").expect("concurrent resolve"));
    }
    assert_eq!(customers.len(), 1, "one customer per identity: {customers:?}");
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
    let second = store.events_after(&c, View::Customer, 1, 1).await.unwrap();
    assert_eq!(second.events, vec![b.event().clone()]);
    let agent = store.events_after(&c, View::Agent, 0, 10).await.unwrap();
    assert_eq!(
        agent.events,
        vec![a.event().clone(), n.event().clone(), b.event().clone()]
    );
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
