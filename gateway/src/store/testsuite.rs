//! The conformance suite every [`ContextStore`] backend must pass: numbering, idempotency, paging,
//! identities, summaries, profiles, close and reopen, and the same under concurrent callers.
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
            via: None,
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
    a_reply_keeps_the_channel_the_agent_picked(&*store).await;
    pages_respect_position_and_limit(&*store).await;
    identities_resolve_to_one_customer(&*store).await;
    conversation_records_round_trip(&*store).await;
    profiles_round_trip_and_delete(&*store).await;
    closing_and_reopening_keeps_the_log_readable(&*store).await;
    concurrent_appends_are_gapless_and_unique(&store).await;
    concurrent_retries_store_one_event(&store).await;
    concurrent_resolutions_create_one_customer(&store).await;
    devices_register_idempotently_move_and_unregister(&*store).await;
    a_device_raced_for_ends_with_one_customer(&store).await;
    verified_pairs_merge_customers(&*store).await;
    unverified_identities_never_merge(&*store).await;
    links_and_unlinks_are_recorded(&*store).await;
    history_reads_recent_conversations_across_channels(&*store).await;
    erasure_removes_every_kind_of_customer_data(&*store).await;
    concurrent_merges_lose_no_identity(&store).await;
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

/// A reply sent through the channel the agent picked keeps its `via` in the log (also when a retry is
/// answered from the original); other messages have none.
async fn a_reply_keeps_the_channel_the_agent_picked(store: &dyn ContextStore) {
    let c = ConversationId::generate();
    let via = super::Via {
        channel: omnigate_connectors::model::Channel::SmsTwilio,
        account: "us".to_owned(),
    };
    let picked = |text: &str| {
        let mut event = message(text, Some("picked"));
        if let EventKind::Message { via: v, .. } = &mut event.kind {
            *v = Some(via.clone());
        }
        event
    };
    store.append(&c, message("plain", Some("plain"))).await.unwrap();
    let first = store.append(&c, picked("by sms")).await.unwrap();
    let again = store.append(&c, picked("by sms")).await.unwrap();
    assert!(matches!(again, Appended::Duplicate(_)));
    assert_eq!(first.event(), again.event());
    let vias: Vec<Option<super::Via>> = store
        .events_after(&c, View::Agent, 0, 10)
        .await
        .unwrap()
        .events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Message { via, .. } => Some(via),
            _ => None,
        })
        .collect();
    assert_eq!(vias, [None, Some(via)]);
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

fn device(platform: PushPlatform, token: &str) -> Device {
    Device {
        platform,
        token: token.to_owned(),
        app_id: "bank-ios".to_owned(),
    }
}

/// Registering twice keeps one entry; another customer registering the token takes it over; only the owner
/// can unregister it.
async fn devices_register_idempotently_move_and_unregister(store: &dyn ContextStore) {
    let alice = CustomerId::generate();
    let bob = CustomerId::generate();
    let token = format!("apns-{}", CustomerId::generate());
    let phone = device(PushPlatform::Apns, &token);
    let tablet = device(PushPlatform::Fcm, &format!("fcm-{token}"));
    assert_eq!(store.devices(&alice).await.unwrap(), Vec::<Device>::new());
    store.register_device(&alice, &phone).await.unwrap();
    store.register_device(&alice, &phone).await.unwrap();
    store.register_device(&alice, &tablet).await.unwrap();
    let mut both = vec![phone.clone(), tablet.clone()];
    both.sort();
    assert_eq!(store.devices(&alice).await.unwrap(), both, "idempotent");

    // The same token under another platform is another device.
    let same_token_hms = device(PushPlatform::Hms, &token);
    store.register_device(&bob, &same_token_hms).await.unwrap();
    assert_eq!(store.devices(&alice).await.unwrap(), both);

    store.register_device(&bob, &phone).await.unwrap();
    assert_eq!(
        store.devices(&alice).await.unwrap(),
        vec![tablet.clone()],
        "moved away"
    );
    let mut bobs = vec![phone.clone(), same_token_hms];
    bobs.sort();
    assert_eq!(store.devices(&bob).await.unwrap(), bobs);

    assert!(
        !store
            .unregister_device(&alice, PushPlatform::Apns, &token)
            .await
            .unwrap(),
        "not alice's any more"
    );
    assert!(store
        .unregister_device(&bob, PushPlatform::Apns, &token)
        .await
        .unwrap());
    assert!(
        !store
            .unregister_device(&bob, PushPlatform::Apns, &token)
            .await
            .unwrap(),
        "already gone"
    );
    assert_eq!(store.devices(&bob).await.unwrap().len(), 1);
    // A device re-registered after removal is back.
    store.register_device(&alice, &phone).await.unwrap();
    assert_eq!(store.devices(&alice).await.unwrap(), both);
}

/// Customers racing to register one token: it ends up listed for exactly one of them, its owner.
async fn a_device_raced_for_ends_with_one_customer(store: &Arc<dyn ContextStore>) {
    const RACERS: usize = 8;
    let token = format!("fcm-race-{}", CustomerId::generate());
    let customers: Vec<CustomerId> = (0..RACERS).map(|_| CustomerId::generate()).collect();
    let mut racers = JoinSet::new();
    for customer in customers.clone() {
        let store = Arc::clone(store);
        let d = device(PushPlatform::Fcm, &token);
        racers.spawn(async move { store.register_device(&customer, &d).await });
    }
    while let Some(done) = racers.join_next().await {
        done.expect("racer task").expect("concurrent register");
    }
    let mut holders = 0;
    for customer in &customers {
        let devices = store.devices(customer).await.unwrap();
        holders += devices.iter().filter(|d| d.token == token).count();
    }
    assert_eq!(holders, 1, "one customer holds the raced token");
}

async fn profiles_round_trip_and_delete(store: &dyn ContextStore) {
    let customer = CustomerId::generate();
    assert_eq!(store.load_profile(&customer).await.unwrap(), None);
    let profile = CustomerProfile {
        tier: Some("private_banking".into()),
        tags: ["mortgage".to_owned(), "family".to_owned()].into(),
        language: Some("zh".into()),
        relationship_manager: Some("lin".into()),
        risk_flags: ["pep".to_owned()].into(),
        crm_fetched_at_ms: Some(1_700_000_000_000),
    };
    store.save_profile(&customer, &profile).await.unwrap();
    assert_eq!(
        store.load_profile(&customer).await.unwrap(),
        Some(profile.clone())
    );
    let other = CustomerId::generate();
    assert_eq!(
        store.load_profile(&other).await.unwrap(),
        None,
        "profiles are per customer"
    );
    let changed = CustomerProfile {
        tier: Some("vip".into()),
        ..CustomerProfile::default()
    };
    store.save_profile(&customer, &changed).await.unwrap();
    assert_eq!(
        store.load_profile(&customer).await.unwrap(),
        Some(changed),
        "a save replaces the profile"
    );
    store.delete_profile(&customer).await.unwrap();
    assert_eq!(store.load_profile(&customer).await.unwrap(), None);
    store
        .delete_profile(&customer)
        .await
        .expect("deleting a missing profile succeeds");
}

/// Closing starts the retention clock and reopening stops it; neither touches what is stored now.
async fn closing_and_reopening_keeps_the_log_readable(store: &dyn ContextStore) {
    let c = ConversationId::generate();
    let first = store
        .append(&c, message("before close", Some("k-close")))
        .await
        .unwrap();
    let mut record = ConversationRecord {
        id: c.clone(),
        customer: CustomerId::generate(),
        channel: Channel::Web,
        queue: "general".into(),
        status: ConversationStatus::Closed,
        agent: None,
        created_at_ms: 1,
        closed_at_ms: Some(2),
    };
    store.save_conversation(&record).await.unwrap();
    assert_eq!(store.load_conversation(&c).await.unwrap(), Some(record.clone()));
    let after = store.append(&c, message("after close", None)).await.unwrap();
    assert_eq!(after.event().seq, 2);
    record.status = ConversationStatus::New;
    record.closed_at_ms = None;
    store.save_conversation(&record).await.unwrap();
    assert_eq!(store.load_conversation(&c).await.unwrap(), Some(record));
    let again = store
        .append(&c, message("before close", Some("k-close")))
        .await
        .unwrap();
    assert!(
        matches!(again, Appended::Duplicate(_)),
        "idempotency keys survive a reopen"
    );
    assert_eq!(again.event(), first.event());
    assert_eq!(store.events_after(&c, View::Agent, 0, 10).await.unwrap().last, 2);
}

fn unique(kind: IdentityKind, verified: bool) -> Identity {
    Identity {
        kind,
        value: format!("id-{}", uuid::Uuid::new_v4().simple()),
        verified,
    }
}

fn change(reason: &str) -> GraphChange {
    GraphChange {
        actor: "agent:a1".to_owned(),
        reason: reason.to_owned(),
        at_ms: 42,
    }
}

fn record_of(customer: &CustomerId, channel: Channel, created_at_ms: u64) -> ConversationRecord {
    ConversationRecord {
        id: ConversationId::generate(),
        customer: customer.clone(),
        channel,
        queue: "general".into(),
        status: ConversationStatus::Assigned,
        agent: Some("a1".to_owned()),
        created_at_ms,
        closed_at_ms: None,
    }
}

fn strip(identity: &Identity) -> (IdentityKind, String) {
    (identity.kind, identity.value.clone())
}

/// An OpenID seen with its UnionID, and later another account's OpenID with the same UnionID: the two
/// customers become one, the merged id redirects, and conversations follow.
async fn verified_pairs_merge_customers(store: &dyn ContextStore) {
    let open_a = unique(IdentityKind::WechatOpenId, true);
    let union = unique(IdentityKind::WechatUnionId, true);
    let open_b = unique(IdentityKind::WechatOpenId, true);
    let a = store
        .resolve_verified(&[open_a.clone(), union.clone()])
        .await
        .unwrap();
    let b = store
        .resolve_verified(std::slice::from_ref(&open_b))
        .await
        .unwrap();
    assert_ne!(a, b, "unrelated identities are different customers");
    let conv_a = record_of(&a, Channel::WechatOa, 10);
    let conv_b = record_of(&b, Channel::WechatOa, 20);
    store.save_conversation(&conv_a).await.unwrap();
    store.save_conversation(&conv_b).await.unwrap();

    let survivor = store
        .resolve_verified(&[open_b.clone(), union.clone()])
        .await
        .unwrap();
    assert_eq!(
        survivor, b,
        "the customer of the first verified identity survives"
    );
    assert_eq!(
        store.canonical_customer(&a).await.unwrap(),
        b,
        "the merged id redirects"
    );
    assert_eq!(store.canonical_customer(&b).await.unwrap(), b);
    let unverified_a = Identity {
        verified: false,
        ..open_a.clone()
    };
    assert_eq!(store.resolve_customer(&unverified_a).await.unwrap(), b);
    let held: BTreeSet<_> = store.identities_of(&a).await.unwrap().iter().map(strip).collect();
    let expected: BTreeSet<_> = [&open_a, &union, &open_b].into_iter().map(strip).collect();
    assert_eq!(
        held, expected,
        "the survivor holds every identity, read through the merged id too"
    );
    assert!(store.identities_of(&b).await.unwrap().iter().all(|i| i.verified));
    let conversations: Vec<ConversationId> = store
        .customer_conversations(&b)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        conversations,
        vec![conv_b.id.clone(), conv_a.id.clone()],
        "newest first, merged ones included"
    );
    // A conversation saved later under the merged id lands with the survivor.
    let late = record_of(&a, Channel::SmsTwilio, 30);
    store.save_conversation(&late).await.unwrap();
    assert_eq!(store.customer_conversations(&b).await.unwrap()[0].id, late.id);
    let history = store.link_history(&b).await.unwrap();
    assert!(
        history.iter().any(|r| r.action == LinkAction::MergedFrom
            && r.other.as_ref() == Some(&a)
            && r.change.actor == "system"),
        "{history:?}"
    );
}

/// Unverified data resolves or creates, never merges; a verified observation claims an identity that was
/// only held unverified, without merging its holder.
async fn unverified_identities_never_merge(store: &dyn ContextStore) {
    let visitor = unique(IdentityKind::WebVisitor, false);
    let other_visitor = unique(IdentityKind::WebVisitor, false);
    let first = store
        .resolve_verified(&[visitor.clone(), other_visitor.clone()])
        .await
        .unwrap();
    assert_eq!(first, store.resolve_customer(&visitor).await.unwrap());
    assert_ne!(
        first,
        store.resolve_customer(&other_visitor).await.unwrap(),
        "not linked: not proven"
    );

    // A caller number seen first (CTI, unverified) and then verified by the app.
    let phone = unique(IdentityKind::Phone, false);
    let caller = store.resolve_customer(&phone).await.unwrap();
    let caller_conv = record_of(&caller, Channel::Voice, 5);
    store.save_conversation(&caller_conv).await.unwrap();
    let app_user = unique(IdentityKind::AppUser, true);
    let verified_phone = Identity {
        verified: true,
        ..phone.clone()
    };
    let customer = store
        .resolve_verified(&[app_user.clone(), verified_phone.clone()])
        .await
        .unwrap();
    assert_ne!(customer, caller, "the unverified holder is not merged");
    assert_eq!(store.canonical_customer(&caller).await.unwrap(), caller);
    assert_eq!(
        store.resolve_customer(&phone).await.unwrap(),
        customer,
        "the number now resolves to the verified customer"
    );
    assert!(store.identities_of(&caller).await.unwrap().is_empty());
    assert_eq!(
        store.customer_conversations(&caller).await.unwrap().len(),
        1,
        "its conversations stay"
    );
    assert!(store.customer_conversations(&customer).await.unwrap().is_empty());
    assert!(store
        .link_history(&caller)
        .await
        .unwrap()
        .iter()
        .any(|r| r.action == LinkAction::Claimed && r.other.as_ref() == Some(&customer)));

    // Once verified, an unverified observation of the number (a CTI call) only resolves to it.
    let again = store.resolve_customer(&phone).await.unwrap();
    assert_eq!(again, customer);
    let held = store.identities_of(&customer).await.unwrap();
    assert!(
        held.contains(&verified_phone) && held.contains(&app_user),
        "{held:?}"
    );
}

async fn links_and_unlinks_are_recorded(store: &dyn ContextStore) {
    let phone = unique(IdentityKind::Phone, false);
    let wechat = unique(IdentityKind::WechatOpenId, false);
    let by_phone = store.resolve_customer(&phone).await.unwrap();
    let by_wechat = store.resolve_customer(&wechat).await.unwrap();
    let linked = store
        .link_identity(
            &by_phone,
            &wechat,
            &change("customer confirmed the number on the call"),
        )
        .await
        .unwrap();
    assert_eq!(linked, by_phone);
    assert_eq!(store.resolve_customer(&wechat).await.unwrap(), by_phone);
    assert_eq!(store.identities_of(&by_phone).await.unwrap().len(), 2);
    assert!(store.identities_of(&by_wechat).await.unwrap().is_empty());
    let history = store.link_history(&by_phone).await.unwrap();
    let last = history.last().expect("a link record");
    assert_eq!(last.action, LinkAction::Linked);
    assert_eq!(last.identity.as_ref().map(strip), Some(strip(&wechat)));
    assert_eq!(last.other.as_ref(), Some(&by_wechat));
    assert_eq!(last.change, change("customer confirmed the number on the call"));
    assert_eq!(
        store
            .link_history(&by_wechat)
            .await
            .unwrap()
            .last()
            .map(|r| r.action),
        Some(LinkAction::Unlinked)
    );

    let fresh = store
        .unlink_identity(&wechat, &change("wrong person"))
        .await
        .unwrap()
        .expect("the identity was held");
    assert_ne!(fresh, by_phone);
    assert_eq!(store.resolve_customer(&wechat).await.unwrap(), fresh);
    assert_eq!(
        store
            .identities_of(&by_phone)
            .await
            .unwrap()
            .iter()
            .map(strip)
            .collect::<Vec<_>>(),
        vec![strip(&phone)]
    );
    let history = store.link_history(&by_phone).await.unwrap();
    assert_eq!(
        history.last().map(|r| (r.action, r.change.reason.as_str())),
        Some((LinkAction::Unlinked, "wrong person"))
    );
    assert_eq!(
        store
            .unlink_identity(&unique(IdentityKind::Phone, false), &change("x"))
            .await
            .unwrap(),
        None,
        "nobody holds an unseen identity"
    );
}

fn message_at(text: &str, at_ms: u64) -> NewEvent {
    NewEvent {
        at_ms,
        ..message(text, None)
    }
}

async fn history_reads_recent_conversations_across_channels(store: &dyn ContextStore) {
    let customer = store
        .resolve_customer(&unique(IdentityKind::Phone, false))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (n, channel) in [Channel::Web, Channel::WechatOa, Channel::Voice]
        .into_iter()
        .enumerate()
    {
        let record = record_of(&customer, channel, 100 + n as u64);
        store.save_conversation(&record).await.unwrap();
        for i in 0..3 {
            store
                .append(&record.id, message_at(&format!("{n}-{i}"), i))
                .await
                .unwrap();
            store.append(&record.id, note("between")).await.unwrap();
        }
        if n == 2 {
            let assigned = NewEvent {
                at_ms: 8,
                actor: Actor::System,
                kind: EventKind::Assigned {
                    agent_id: "a7".to_owned(),
                    agent_name: "Agent 7".to_owned(),
                },
                idempotency_key: None,
            };
            store.append(&record.id, assigned).await.unwrap();
        }
        if n == 1 {
            let closed = NewEvent {
                at_ms: 9,
                actor: Actor::System,
                kind: EventKind::Closed {
                    disposition: "complaint".to_owned(),
                },
                idempotency_key: None,
            };
            store.append(&record.id, closed).await.unwrap();
        }
        ids.push(record.id);
    }
    let history = store.customer_history(&customer, 2, 2).await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.record.id.clone()).collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone()],
        "the two newest, newest first"
    );
    let texts: Vec<Vec<&str>> = history
        .iter()
        .map(|h| h.messages.iter().filter_map(text_of).collect())
        .collect();
    assert_eq!(
        texts,
        vec![vec!["2-1", "2-2"], vec!["1-1", "1-2"]],
        "the last messages, oldest first"
    );
    assert_eq!(history[0].disposition, None);
    assert_eq!(
        history[0].agent.as_deref(),
        Some("a7"),
        "the agent of the last assignment"
    );
    assert_eq!(history[1].agent, None);
    assert_eq!(history[1].disposition.as_deref(), Some("complaint"));
    assert_eq!(store.customer_history(&customer, 10, 0).await.unwrap().len(), 3);
    assert!(store.customer_history(&customer, 0, 5).await.unwrap().is_empty());
}

async fn erasure_removes_every_kind_of_customer_data(store: &dyn ContextStore) {
    let phone = unique(IdentityKind::Phone, true);
    let app = unique(IdentityKind::AppUser, true);
    let old = store.resolve_verified(std::slice::from_ref(&app)).await.unwrap();
    let customer = store
        .resolve_verified(std::slice::from_ref(&phone))
        .await
        .unwrap();
    let merged_conv = record_of(&old, Channel::App, 1);
    store.save_conversation(&merged_conv).await.unwrap();
    store.append(&merged_conv.id, message("app", None)).await.unwrap();
    assert_eq!(
        store
            .resolve_verified(&[phone.clone(), app.clone()])
            .await
            .unwrap(),
        customer
    );
    let conv = record_of(&customer, Channel::Voice, 2);
    store.save_conversation(&conv).await.unwrap();
    store.append(&conv.id, message("call", None)).await.unwrap();
    store.append(&conv.id, note("n")).await.unwrap();
    store
        .link_identity(
            &customer,
            &unique(IdentityKind::WebVisitor, false),
            &change("same person"),
        )
        .await
        .unwrap();

    store
        .save_profile(
            &customer,
            &CustomerProfile {
                tier: Some("vip".into()),
                ..CustomerProfile::default()
            },
        )
        .await
        .unwrap();
    let token = format!("apns-erase-{customer}");
    store
        .register_device(&customer, &device(PushPlatform::Apns, &token))
        .await
        .unwrap();

    let report = store.erase_customer(&old).await.unwrap();
    assert_eq!(
        report,
        ErasureReport {
            identities: 3,
            link_records: 2,
            conversations: 2,
            events: 3,
            merged_ids: 1,
            profiles: 1,
            devices: 1,
        }
    );
    assert_eq!(store.load_profile(&customer).await.unwrap(), None);
    assert!(store.devices(&customer).await.unwrap().is_empty());
    let newcomer = CustomerId::generate();
    store
        .register_device(&newcomer, &device(PushPlatform::Apns, &token))
        .await
        .unwrap();
    assert_eq!(
        store.devices(&newcomer).await.unwrap().len(),
        1,
        "the erased customer's device token is free for its next owner"
    );
    for id in [&conv.id, &merged_conv.id] {
        assert_eq!(store.load_conversation(id).await.unwrap(), None);
        assert_eq!(store.events_after(id, View::Agent, 0, 10).await.unwrap().last, 0);
    }
    assert!(store.identities_of(&customer).await.unwrap().is_empty());
    assert!(store.link_history(&customer).await.unwrap().is_empty());
    assert!(store.customer_conversations(&customer).await.unwrap().is_empty());
    assert_eq!(
        store.canonical_customer(&old).await.unwrap(),
        old,
        "the redirect is gone too"
    );
    let reborn = store.resolve_customer(&phone).await.unwrap();
    assert_ne!(reborn, customer, "an erased identity is unknown");
    assert_eq!(
        store.erase_customer(&customer).await.unwrap(),
        ErasureReport::default()
    );

    let entry = AuditEntry {
        at_ms: 7,
        actor: "admin:dpo".to_owned(),
        action: "customer.erased".to_owned(),
        customer: customer.clone(),
        reason: "gdpr request 17".to_owned(),
        counts: report,
    };
    store.append_audit(&entry).await.unwrap();
    let entries = store.audit_entries(1000).await.unwrap();
    assert_eq!(entries.last(), Some(&entry));
    assert_eq!(store.audit_entries(1).await.unwrap(), vec![entry]);
}

/// Many tasks link a chain of verified identities pairwise while conversations are saved: in the end one
/// customer holds them all and every conversation, and every old id redirects to it.
async fn concurrent_merges_lose_no_identity(store: &Arc<dyn ContextStore>) {
    const CHAIN: usize = 16;
    let identities: Vec<Identity> = (0..=CHAIN).map(|_| unique(IdentityKind::Phone, true)).collect();
    let mut customers = Vec::new();
    let mut conversations = BTreeSet::new();
    for identity in &identities {
        let customer = store
            .resolve_verified(std::slice::from_ref(identity))
            .await
            .unwrap();
        let record = record_of(&customer, Channel::SmsTwilio, 1);
        store.save_conversation(&record).await.unwrap();
        conversations.insert(record.id);
        customers.push(customer);
    }
    let extras: Vec<Identity> = (0..CHAIN)
        .map(|_| unique(IdentityKind::WebVisitor, false))
        .collect();
    let mut tasks = JoinSet::new();
    for i in 0..CHAIN {
        let store = Arc::clone(store);
        let pair = [identities[i + 1].clone(), identities[i].clone()];
        let customer = customers[i].clone();
        let extra = extras[i].clone();
        tasks.spawn(async move {
            // An agent links an identity to the old id while merges run.
            store
                .link_identity(&customer, &extra, &change("hammer"))
                .await
                .expect("concurrent link");
            store.resolve_verified(&pair).await.expect("concurrent merge");
            let record = record_of(&customer, Channel::Web, 2);
            store.save_conversation(&record).await.expect("concurrent save");
            store
                .resolve_customer(&Identity {
                    verified: false,
                    ..pair[0].clone()
                })
                .await
                .expect("concurrent resolve");
            record.id
        });
    }
    while let Some(done) = tasks.join_next().await {
        conversations.insert(done.expect("merge task"));
    }
    let survivor = store.resolve_customer(&identities[0]).await.unwrap();
    for (identity, customer) in identities.iter().zip(&customers) {
        assert_eq!(
            store.resolve_customer(identity).await.unwrap(),
            survivor,
            "no identity left behind"
        );
        assert_eq!(
            store.canonical_customer(customer).await.unwrap(),
            survivor,
            "every old id redirects"
        );
    }
    let held: BTreeSet<_> = store
        .identities_of(&survivor)
        .await
        .unwrap()
        .iter()
        .map(strip)
        .collect();
    assert_eq!(
        held,
        identities.iter().chain(&extras).map(strip).collect(),
        "the survivor holds every identity, linked ones included"
    );
    let found: BTreeSet<ConversationId> = store
        .customer_conversations(&survivor)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(found, conversations, "no conversation lost in a merge");
    let merges = store
        .link_history(&survivor)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.action == LinkAction::MergedFrom)
        .count();
    assert_eq!(merges, CHAIN, "one merge per customer merged away");
}
