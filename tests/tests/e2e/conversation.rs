//! A customer reaches an agent and back: offer, accept, messages, notes, typing, read, close, reopen.

use omnigate_tests::{http_request, Agent, Customer, TestGateway};
use serde_json::json;

#[tokio::test]
async fn customer_to_agent_and_back_through_offer_and_accept() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;

    let ack = customer.say(None, "c-1", "where is my card?").await;
    let conversation = ack["conversation_id"].as_str().unwrap().to_owned();
    assert!(ack["seq"].as_u64().unwrap() >= 1);

    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["conversation_id"], conversation.as_str());
    assert_eq!(offer["d"]["preview"], "where is my card?");
    assert_eq!(offer["d"]["channel"], "web");
    lin.accept(&conversation).await;
    let assigned = lin.ws.recv_until(|f| f["op"] == "conversation.assigned").await;
    assert_eq!(assigned["d"]["conversation_id"], conversation.as_str());
    let first = lin.next_message_in(&conversation).await;
    assert_eq!(first["message"]["content"]["text"], "where is my card?");
    assert_eq!(first["actor"]["type"], "customer");

    let joined = customer
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.assigned")
        .await;
    assert_eq!(joined["d"]["agent_name"], "Lin");
    assert!(
        joined["d"].get("agent_id").is_none(),
        "customers see the agent's name only"
    );

    lin.say(&conversation, "a-1", "it was posted yesterday").await;
    let reply = customer.next_message().await;
    assert_eq!(reply["message"]["content"]["text"], "it was posted yesterday");
    assert_eq!(
        reply["message"]["sender"],
        json!({"type": "agent", "name": "Lin"})
    );

    customer.say(Some(&conversation), "c-2", "thank you").await;
    assert_eq!(
        lin.next_message_in(&conversation).await["message"]["content"]["text"],
        "thank you"
    );
}

#[tokio::test]
async fn frames_that_arrive_in_one_write_are_each_answered_and_relayed_in_order() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let hello = customer.say(None, "c-0", "hello").await;
    let conversation = hello["conversation_id"].as_str().unwrap().to_owned();
    let hello_seq = hello["seq"].as_u64().unwrap();
    assert_eq!(lin.take_next().await, conversation);
    assert_eq!(
        lin.next_message_in(&conversation).await["message"]["content"]["text"],
        "hello"
    );

    // More frames than the session handles between two flushes, a ping among them, all in one write.
    let count = 30;
    let mut frames: Vec<String> = (1..=count)
        .map(|k| {
            json!({"op": "message.send", "ref": format!("b{k}"), "d": {
                "conversation_id": conversation,
                "client_msg_id": format!("c-{k}"),
                "content": {"type": "text", "text": format!("m-{k}")},
            }})
            .to_string()
        })
        .collect();
    frames.insert(20, json!({"op": "ping", "ref": "p"}).to_string());
    customer.ws.send_texts_at_once(&frames).await;

    // Each frame's answer comes in the order sent, and what the bus sent for one message (its echo) comes
    // before the next message's ack, as when every frame was answered with a write of its own.
    let mut acked = Vec::new();
    let mut order = Vec::new();
    let mut pong_after = None;
    while order.len() < 2 * count {
        let frame = customer.ws.recv().await;
        let seq = frame["d"]["seq"].as_u64();
        match frame["op"].as_str() {
            Some("message.ack") => {
                assert_eq!(frame["ref"], format!("b{}", acked.len() + 1), "{frame}");
                acked.push(seq.unwrap());
                order.push(("ack", seq.unwrap()));
            }
            Some("pong") => pong_after = Some(acked.len()),
            Some("event") if frame["d"]["type"] == "message.created" && seq > Some(hello_seq) => {
                order.push(("echo", seq.unwrap()));
            }
            _ => {}
        }
    }
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "{acked:?}");
    let interleaved: Vec<_> = acked
        .iter()
        .flat_map(|&seq| [("ack", seq), ("echo", seq)])
        .collect();
    assert_eq!(order, interleaved);
    assert_eq!(pong_after, Some(20));
    for k in 1..=count {
        assert_eq!(
            lin.next_message_in(&conversation).await["message"]["content"]["text"],
            format!("m-{k}")
        );
    }
}

#[tokio::test]
async fn notes_typing_read_and_close_are_shown_to_the_right_side_only() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hello").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    lin.take_next().await;
    lin.next_message_in(&conversation).await;

    // Typing is relayed, never stored.
    customer
        .ws
        .send_op(
            "typing",
            json!({"conversation_id": conversation, "state": "start"}),
        )
        .await;
    let typing = lin.ws.recv_until(|f| f["op"] == "typing").await;
    assert_eq!(
        typing["d"],
        json!({"conversation_id": conversation, "from": "customer", "state": "start"})
    );

    // An internal note reaches the agent's log, never the customer.
    let note_ack = lin
        .ws
        .send_op(
            "note.send",
            json!({"conversation_id": conversation, "client_msg_id": "n-1", "text": "vip, handle with care"}),
        )
        .await;
    let ack = lin.ws.recv_until(|f| f["ref"] == note_ack.as_str()).await;
    assert_eq!(ack["op"], "message.ack");
    let note = lin
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "note.created")
        .await;
    assert_eq!(note["d"]["text"], "vip, handle with care");

    let reply_seq = lin.say(&conversation, "a-1", "how can I help?").await["seq"]
        .as_u64()
        .unwrap();
    let reply = customer.next_message().await;
    let customer_seq = reply["seq"].as_u64().unwrap();
    assert!(
        customer_seq < reply_seq,
        "the customer's numbering skips internal events"
    );

    // The customer reads up to the reply; the agent sees the watermark in its own numbering.
    customer
        .ws
        .send_op(
            "read",
            json!({"conversation_id": conversation, "up_to_seq": customer_seq}),
        )
        .await;
    let read = lin
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "read.updated")
        .await;
    assert_eq!(read["d"]["reader"], "customer");
    assert_eq!(read["d"]["up_to_seq"].as_u64(), Some(reply_seq));

    lin.request(
        "conversation.close",
        json!({"conversation_id": conversation, "disposition": "resolved"}),
    )
    .await;
    let closed = customer
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.closed")
        .await;
    assert!(closed["d"].get("disposition").is_none());

    // The customer's full log never contains the note or routing internals; seqs are gapless.
    let response = http_request(
        gateway.public,
        "GET",
        &format!("/chat/v1/conversations/{conversation}/events?after_seq=0"),
        &[("authorization", &format!("Bearer {}", customer.token))],
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let events = response.json()["events"].as_array().unwrap().clone();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        !types.contains(&"note.created") && !types.contains(&"conversation.offered"),
        "{types:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_message_within_the_window_reopens_a_closed_conversation() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hello").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    lin.take_next().await;
    lin.request(
        "conversation.close",
        json!({"conversation_id": conversation, "disposition": "resolved"}),
    )
    .await;

    let again = customer.say(None, "c-2", "one more thing").await;
    assert_eq!(
        again["conversation_id"],
        conversation.as_str(),
        "the same conversation reopens"
    );
    customer
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.reopened")
        .await;
    assert_eq!(lin.next_offer().await, conversation);
}

#[tokio::test]
async fn a_closed_conversation_past_the_window_is_refused_and_a_new_one_starts() {
    let gateway = TestGateway::spawn_with(|c| c.conversations.reopen_window_secs = 0).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hello").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    lin.take_next().await;
    lin.request(
        "conversation.close",
        json!({"conversation_id": conversation, "disposition": "resolved"}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let reference = customer
        .ws
        .send_op("message.send", json!({"conversation_id": conversation, "client_msg_id": "c-2", "content": {"type": "text", "text": "hi"}}))
        .await;
    let error = customer.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
    assert_eq!(error["d"]["code"], "conversation_closed");
    let fresh = customer.say(None, "c-3", "new question").await;
    assert_ne!(fresh["conversation_id"], conversation.as_str());
}

#[tokio::test]
async fn the_session_endpoint_lists_conversations_and_refreshes_tokens() {
    let gateway = TestGateway::spawn().await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = customer.say(None, "c-1", "hello").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let body = json!({"widget_key": "demo-widget-key", "refresh_token": customer.token}).to_string();
    let response = http_request(gateway.public, "POST", "/chat/v1/sessions", &[], body.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let session = response.json();
    assert_eq!(session["conversations"][0]["id"], conversation.as_str());
    assert!(session["conversations"][0]["last_seq"].as_u64().unwrap() >= 2);
    assert!(session["ws_url"].as_str().unwrap().ends_with("/chat/v1/ws"));

    let unknown = http_request(
        gateway.public,
        "POST",
        "/chat/v1/sessions",
        &[],
        br#"{"widget_key":"nope-nope"}"#,
    )
    .await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.json()["error"]["code"], "unauthorized");
    assert!(unknown.header("x-request-id").is_some_and(|id| !id.is_empty()));
    // A caller's own request id is kept, so its logs and ours name the same request.
    let traced = http_request(
        gateway.public,
        "POST",
        "/chat/v1/sessions",
        &[("x-request-id", "caller-req-7")],
        br#"{"widget_key":"nope-nope"}"#,
    )
    .await;
    assert_eq!(traced.status, 401);
    assert_eq!(traced.header("x-request-id"), Some("caller-req-7"));
    let malformed = http_request(gateway.public, "POST", "/chat/v1/sessions", &[], b"{oops").await;
    assert_eq!(malformed.status, 400);

    let other = Customer::start(&gateway).await;
    let forbidden = http_request(
        gateway.public,
        "GET",
        &format!("/chat/v1/conversations/{conversation}/events"),
        &[("authorization", &format!("Bearer {}", other.token))],
        b"",
    )
    .await;
    assert_eq!(
        forbidden.status, 404,
        "another customer cannot read the conversation"
    );
}

#[tokio::test]
async fn every_device_of_a_customer_receives_the_conversation() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut phone = Customer::start(&gateway).await;
    let conversation = phone.say(None, "c-1", "hello from my phone").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut laptop = Customer::connect(
        &gateway,
        &phone.token,
        json!({"cursors": {conversation.clone(): 0}}),
    )
    .await;
    assert_ne!(
        laptop.session_id, phone.session_id,
        "a second device is a second session"
    );
    let replayed = laptop
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "message.created")
        .await;
    assert_eq!(replayed["d"]["message"]["content"]["text"], "hello from my phone");

    lin.take_next().await;
    lin.ws
        .send_op(
            "typing",
            json!({"conversation_id": conversation, "state": "start"}),
        )
        .await;
    let typing = laptop.ws.recv_until(|f| f["op"] == "typing").await;
    assert_eq!(typing["d"]["from"], "agent");
    lin.say(&conversation, "a-1", "hi on both devices").await;
    assert_eq!(
        phone.next_message().await["message"]["content"]["text"],
        "hi on both devices"
    );
    assert_eq!(
        laptop.next_message().await["message"]["content"]["text"],
        "hi on both devices"
    );

    laptop
        .say(Some(&conversation), "c-2", "typed on the laptop")
        .await;
    let echo = phone
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["message"]["content"]["text"] == "typed on the laptop")
        .await;
    assert_eq!(
        echo["d"]["actor"]["type"], "customer",
        "the customer's other devices see its own messages"
    );
}

#[tokio::test]
async fn a_widgets_attributes_travel_with_its_conversations_to_the_offer() {
    let gateway = TestGateway::spawn_with(|c| {
        c.webchat.widgets[0].attributes = [
            ("language".to_owned(), "english".to_owned()),
            ("site".to_owned(), "cards".to_owned()),
        ]
        .into();
    })
    .await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    customer.say(None, "c-1", "hello").await;
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(
        offer["d"]["attributes"],
        json!({"language": "english", "site": "cards"})
    );
}
