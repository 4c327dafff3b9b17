//! Delivery guarantees: resume without loss or duplicates, idempotent sends, resync past the replay limit.

use omnigate_tests::{Agent, Customer, TestGateway};
use serde_json::json;

/// A conversation with `lin` assigned; returns the agent, the customer and the conversation id.
async fn assigned_conversation(gateway: &TestGateway) -> (Agent, Customer, String) {
    let mut lin = Agent::online(gateway, "lin").await;
    let mut customer = Customer::start(gateway).await;
    let conversation = customer.say(None, "c-0", "hello").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    lin.take_next().await;
    lin.next_message_in(&conversation).await;
    customer
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.assigned")
        .await;
    (lin, customer, conversation)
}

#[tokio::test]
async fn a_customer_killed_mid_conversation_resumes_with_exactly_the_missed_messages() {
    let gateway = TestGateway::spawn().await;
    let (mut lin, mut customer, conversation) = assigned_conversation(&gateway).await;
    lin.say(&conversation, "a-0", "before the drop").await;
    let cursor = customer.next_message().await["seq"].as_u64().unwrap();
    let (token, session) = (customer.token.clone(), customer.session_id.clone());
    customer.ws.kill();

    for i in 1..=3 {
        lin.say(&conversation, &format!("a-{i}"), &format!("missed {i}"))
            .await;
    }
    let resume = json!({"session_id": session, "cursors": {conversation.clone(): cursor}});
    let mut customer = Customer::connect(&gateway, &token, resume).await;
    assert_eq!(customer.ready["d"]["resumed"], true);
    let mut texts = Vec::new();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let event = customer.next_message().await;
        seqs.push(event["seq"].as_u64().unwrap());
        texts.push(event["message"]["content"]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(texts, ["missed 1", "missed 2", "missed 3"]);
    assert_eq!(seqs, [cursor + 1, cursor + 2, cursor + 3]);
    assert!(
        customer
            .ws
            .quiet_for(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "nothing is delivered twice"
    );

    lin.say(&conversation, "a-4", "live again").await;
    let live = customer.next_message().await;
    assert_eq!(
        (live["seq"].as_u64(), live["message"]["content"]["text"].as_str()),
        (Some(cursor + 4), Some("live again"))
    );
}

#[tokio::test]
async fn an_agent_killed_mid_conversation_resumes_with_exactly_the_missed_messages() {
    let gateway = TestGateway::spawn().await;
    let (lin, mut customer, conversation) = assigned_conversation(&gateway).await;
    let session = lin.ready["d"]["session_id"].as_str().unwrap().to_owned();
    let mut lin = lin;
    customer.say(Some(&conversation), "c-1", "are you there?").await;
    let cursor = lin.next_message_in(&conversation).await["seq"].as_u64().unwrap();
    lin.ws.kill();

    for i in 2..=4 {
        customer
            .say(Some(&conversation), &format!("c-{i}"), &format!("missed {i}"))
            .await;
    }
    let resume = json!({"session_id": session, "cursors": {conversation.clone(): cursor}});
    let mut lin = Agent::connect(&gateway, "lin", resume).await;
    assert_eq!(lin.ready["d"]["resumed"], true);
    assert_eq!(
        lin.ready["d"]["conversations"][0]["conversation_id"],
        conversation.as_str(),
        "still assigned"
    );
    let mut texts = Vec::new();
    for _ in 0..3 {
        texts.push(
            lin.next_message_in(&conversation).await["message"]["content"]["text"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(texts, ["missed 2", "missed 3", "missed 4"]);
    let rest = lin.ws.quiet_for(std::time::Duration::from_millis(300)).await;
    assert!(
        rest.as_ref().is_none_or(|f| f["d"]["type"] != "message.created"),
        "nothing is delivered twice: {rest:?}"
    );
}

#[tokio::test]
async fn a_send_retried_five_times_is_stored_once_and_acked_identically() {
    let gateway = TestGateway::spawn().await;
    let (mut lin, mut customer, conversation) = assigned_conversation(&gateway).await;
    let mut acks = Vec::new();
    for _ in 0..5 {
        acks.push(
            customer
                .say(Some(&conversation), "same-id", "transfer 100 CNY")
                .await,
        );
    }
    assert!(acks.windows(2).all(|w| w[0] == w[1]), "identical acks: {acks:?}");
    assert_eq!(
        lin.next_message_in(&conversation).await["message"]["content"]["text"],
        "transfer 100 CNY"
    );
    customer.say(Some(&conversation), "c-marker", "marker").await;
    assert_eq!(
        lin.next_message_in(&conversation).await["message"]["content"]["text"],
        "marker",
        "the retry was not delivered again"
    );

    let agent_acks = [
        lin.say(&conversation, "a-same", "once").await,
        lin.say(&conversation, "a-same", "once").await,
    ];
    assert_eq!(agent_acks[0], agent_acks[1]);
    let next = customer.next_message().await;
    assert_eq!(next["message"]["content"]["text"], "once");
    assert!(customer
        .ws
        .quiet_for(std::time::Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn a_cursor_too_far_behind_gets_resync_required_and_the_rest_api_fills_the_gap() {
    let gateway = TestGateway::spawn_with(|c| c.limits.replay_max_events = 8).await;
    let (mut lin, customer, conversation) = assigned_conversation(&gateway).await;
    let token = customer.token.clone();
    customer.ws.kill();
    for i in 0..12 {
        lin.say(&conversation, &format!("a-{i}"), &format!("m{i}")).await;
    }
    let mut customer =
        Customer::connect(&gateway, &token, json!({"cursors": {conversation.clone(): 1}})).await;
    let resync = customer.ws.recv_op("resync_required").await;
    assert_eq!(resync["d"]["reason"], "too_far_behind");
    let response = omnigate_tests::http_request(
        gateway.public,
        "GET",
        &format!("/chat/v1/conversations/{conversation}/events?after_seq=1&limit=100"),
        &[("authorization", &format!("Bearer {token}"))],
        b"",
    )
    .await;
    let page = response.json();
    let texts: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "message.created" && e["actor"]["type"] == "agent")
        .map(|e| e["message"]["content"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, (0..12).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(page["has_more"], false);
}

#[tokio::test]
async fn resuming_a_live_session_replaces_the_older_connection() {
    let gateway = TestGateway::spawn().await;
    let mut first = Customer::start(&gateway).await;
    let second = Customer::connect(&gateway, &first.token, json!({"session_id": first.session_id})).await;
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(first.ws.expect_close().await, 4009);
}
