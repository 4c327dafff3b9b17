//! Routing through the gateway: reject, offer timeout, transfer, disconnect grace.

use omnigate_tests::{Agent, Customer, TestGateway};
use serde_json::json;

fn two_agents(config: &mut omnigate_config::Config) {
    config.agents = omnigate_tests::agents(2, 2);
}

#[tokio::test]
async fn a_rejected_offer_goes_to_another_agent_and_never_back() {
    let gateway = TestGateway::spawn_with(two_agents).await;
    let mut first = Agent::online(&gateway, "agent-0").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hi").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.next_offer().await, conversation);
    let mut second = Agent::online(&gateway, "agent-1").await;
    first
        .request("offer.reject", json!({"conversation_id": conversation}))
        .await;
    assert_eq!(second.next_offer().await, conversation);
    assert_eq!(
        first
            .request_error("offer.accept", json!({"conversation_id": conversation}))
            .await,
        "not_allowed"
    );
    second.accept(&conversation).await;
    assert_eq!(
        second.next_message_in(&conversation).await["message"]["content"]["text"],
        "hi"
    );
}

#[tokio::test]
async fn an_unanswered_offer_times_out_and_moves_on() {
    let gateway = TestGateway::spawn_with(|c| {
        two_agents(c);
        c.routing.offer_timeout_secs = 1;
    })
    .await;
    let mut a = Agent::online(&gateway, "agent-0").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hi").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(a.next_offer().await, conversation);
    let rescinded = a.ws.recv_until(|f| f["op"] == "offer.rescinded").await;
    assert_eq!(rescinded["d"]["reason"], "timeout");
    let mut b = Agent::online(&gateway, "agent-1").await;
    assert_eq!(b.next_offer().await, conversation);
}

#[tokio::test]
async fn only_the_assigned_agent_may_act_on_a_conversation() {
    let gateway = TestGateway::spawn_with(two_agents).await;
    let mut a = Agent::online(&gateway, "agent-0").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hi").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.take_next().await;
    let mut b = Agent::online(&gateway, "agent-1").await;
    let send = json!({"conversation_id": conversation, "client_msg_id": "x", "content": {"type": "text", "text": "intrude"}});
    let reference = b.ws.send_op("message.send", send).await;
    let refusal = b.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
    assert_eq!(refusal["d"]["code"], "not_allowed");
    assert_eq!(
        b.request_error("conversation.close", json!({"conversation_id": conversation}))
            .await,
        "not_allowed"
    );
}

#[tokio::test]
async fn a_transfer_to_another_agent_hands_over_the_history() {
    let gateway = TestGateway::spawn_with(two_agents).await;
    let mut a = Agent::online(&gateway, "agent-0").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "my card is blocked").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.take_next().await;
    a.say(&conversation, "a-1", "let me get a colleague").await;
    let mut b = Agent::online(&gateway, "agent-1").await;
    a.request(
        "conversation.transfer",
        json!({"conversation_id": conversation, "to_agent": "agent-1", "reason": "cards team"}),
    )
    .await;
    let unassigned = a.ws.recv_until(|f| f["op"] == "conversation.unassigned").await;
    assert_eq!(unassigned["d"]["reason"], "transferred");
    assert_eq!(b.take_next().await, conversation);
    let texts = [
        b.next_message_in(&conversation).await["message"]["content"]["text"].clone(),
        b.next_message_in(&conversation).await["message"]["content"]["text"].clone(),
    ];
    assert_eq!(
        texts,
        [json!("my card is blocked"), json!("let me get a colleague")]
    );
    b.say(&conversation, "b-1", "cards team here").await;
    loop {
        let message = customer.next_message().await;
        if message["message"]["content"]["text"] == "cards team here" {
            break;
        }
    }
}

#[tokio::test]
async fn an_agent_that_drops_keeps_its_conversation_within_the_grace_window() {
    let gateway = TestGateway::spawn_with(|c| {
        two_agents(c);
        c.routing.disconnect_grace_secs = 1;
    })
    .await;
    let mut a = Agent::online(&gateway, "agent-0").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hi").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.take_next().await;
    a.ws.kill();
    let a = Agent::connect(&gateway, "agent-0", json!(null)).await;
    assert_eq!(
        a.ready["d"]["conversations"][0]["conversation_id"],
        conversation.as_str()
    );

    // Gone past the grace window: the conversation is re-queued and offered to someone else.
    a.ws.kill();
    let mut b = Agent::online(&gateway, "agent-1").await;
    assert_eq!(b.next_offer().await, conversation);
}

#[tokio::test]
async fn a_transfer_to_a_queue_keeps_the_conversation_and_offers_it_there() {
    let gateway = TestGateway::spawn().await;
    let mut chen = Agent::online(&gateway, "chen").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer
        .say(None, "c-1", "my credit card was charged twice")
        .await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chen.take_next().await, conversation);
    // The cards queue first wants card experts (proficiency 4): Lin, not Chen (no cards skill).
    let mut lin = Agent::online(&gateway, "lin").await;
    chen.request(
        "conversation.transfer",
        json!({"conversation_id": conversation, "to_queue": "cards", "reason": "card dispute"}),
    )
    .await;
    assert_eq!(lin.take_next().await, conversation);
    let transferred = lin
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.transferred")
        .await;
    assert_eq!(
        (
            transferred["d"]["to_queue"].as_str(),
            transferred["d"]["reason"].as_str()
        ),
        (Some("cards"), Some("card dispute"))
    );
    assert_eq!(
        chen.request_error(
            "conversation.transfer",
            json!({"conversation_id": conversation, "to_queue": "nowhere"})
        )
        .await,
        "not_allowed"
    );
}

#[tokio::test]
async fn waiting_customers_are_told_their_position_as_the_queue_moves() {
    let gateway = TestGateway::spawn_with(|c| c.agents = omnigate_tests::agents(1, 1)).await;
    let mut agent = Agent::online(&gateway, "agent-0").await;
    let mut first = Customer::start(&gateway).await;
    let busy = first.say(None, "a-1", "first").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent.take_next().await;

    let mut second = Customer::start(&gateway).await;
    let waiting = second.say(None, "b-1", "second").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut third = Customer::start(&gateway).await;
    third.say(None, "c-1", "third").await;
    let position = |f: &serde_json::Value| f["op"] == "queue.position";
    assert_eq!(second.ws.recv_until(position).await["d"]["position"], 1);
    assert_eq!(third.ws.recv_until(position).await["d"]["position"], 2);

    agent
        .request(
            "conversation.close",
            json!({"conversation_id": busy, "disposition": "resolved"}),
        )
        .await;
    assert_eq!(
        agent.next_offer().await,
        waiting,
        "the longest waiting goes first"
    );
    assert_eq!(
        third.ws.recv_until(position).await["d"]["position"],
        1,
        "the queue moved up"
    );
}

#[tokio::test]
async fn every_offer_is_logged_with_the_routers_explanation() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hi").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    lin.take_next().await;
    let offered = lin
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.offered")
        .await;
    let explanation = &offered["d"]["explanation"];
    assert_eq!(explanation["chosen"], json!(["lin"]), "{offered}");
    assert!(explanation["agents_scanned"].as_u64().unwrap() >= 1);
    assert!(!explanation["why"].as_str().unwrap().is_empty());
    assert_eq!(offered["d"]["conversation_id"], conversation.as_str());
}

#[tokio::test]
async fn an_agent_missing_offers_in_a_row_is_told_it_is_no_longer_routable() {
    let gateway = TestGateway::spawn_with(|c| {
        two_agents(c);
        c.routing.max_consecutive_misses = 1;
    })
    .await;
    let mut a = Agent::online(&gateway, "agent-0").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hi").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(a.next_offer().await, conversation);
    a.request("offer.reject", json!({"conversation_id": conversation}))
        .await;
    let notice =
        a.ws.recv_until(|f| f["op"] == "presence.updated" && f["d"]["routable"] == false)
            .await;
    assert_eq!(notice["d"]["reason"], "missed_offers");
    a.set_presence("available").await;
    let mut other = Customer::start(&gateway).await;
    let next = other.say(None, "c-2", "hello").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        a.next_offer().await,
        next,
        "routable again after setting itself available"
    );
}

#[tokio::test]
async fn outside_business_hours_the_customer_is_told_and_the_conversation_closes() {
    // Open only on the day after tomorrow (UTC), so the queue is closed now whatever day the test runs.
    let days_since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    let open_day =
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][((days_since_epoch + 3 + 2) % 7) as usize];
    let gateway = TestGateway::spawn_with(|c| {
        for queue in &mut c.routing.queues {
            queue.hours = vec![format!("{open_day} 09:00-17:00")];
        }
    })
    .await;
    let _lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hello?").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = customer
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.routing_ended")
        .await;
    assert_eq!(ended["d"]["outcome"], "out_of_hours");
    assert_eq!(ended["d"]["reason"], "queue_closed");
    assert_eq!(ended["d"]["conversation_id"], conversation.as_str());
}
