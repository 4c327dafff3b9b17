//! CTI end to end: signed `cti-webhook/1` events become a voice conversation applied in `seq` order, routed
//! with voice capacity, and the telephony side is told (signed) which agent took the call (issue 4).

use omnigate_connectors::cti::signature::{sign_headers, WebhookSecret};
use omnigate_tests::{
    assert_eventually, cti_event, http_request, post_cti_event, Agent, FakeCtiReceiver, RedisServer,
    TestGateway, CTI_SECRET,
};
use serde_json::Value;

async fn gateway(receiver: &FakeCtiReceiver) -> TestGateway {
    let cti = receiver.config();
    TestGateway::spawn_with(move |config| config.channels.cti = Some(cti)).await
}

async fn redis_gateway(redis: &RedisServer, prefix: &str, receiver: &FakeCtiReceiver) -> TestGateway {
    let cti = receiver.config();
    TestGateway::spawn_with_redis_prefix(redis, prefix, move |config| config.channels.cti = Some(cti)).await
}

/// Events of the call the CTI inbox still holds (accepted, not yet in their conversation).
fn held_count(redis: &RedisServer, prefix: &str) -> String {
    redis.command(&format!("HLEN {prefix}held:cti"))
}

async fn send(gateway: &TestGateway, id: &str, kind: &str, seq: u64, fields: &str) {
    let body = cti_event(id, kind, "call_7f3c", seq, fields);
    let response = post_cti_event(gateway, id, &body, CTI_SECRET, None).await;
    assert_eq!(
        response.status / 100,
        2,
        "{id}: {} {}",
        response.status,
        response.body
    );
}

fn call_events(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "message.created")
        .map(|e| {
            e["message"]["content"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn agent_events(gateway: &TestGateway, conversation: &str) -> Vec<Value> {
    let auth = format!("Bearer {}", gateway.agent_token("lin"));
    let response = http_request(
        gateway.public,
        "GET",
        &format!("/chat/v1/conversations/{conversation}/events"),
        &[("authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_call_is_a_voice_conversation_applied_in_seq_order_and_the_agent_is_connected() {
    let receiver = FakeCtiReceiver::start().await;
    let gateway = gateway(&receiver).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    send(
        &gateway,
        "evt_1",
        "call.offered",
        1,
        r#"{"direction":"inbound","from":"+8613800138000","to":"+864000000000"}"#,
    )
    .await;
    // seq 3 (queued) before seq 2 (IVR input): held back, then both applied in order, so the call is routed
    // only once queued, with the IVR input as routing attributes.
    send(&gateway, "evt_3", "call.queued", 3, r#"{"queue":"cards"}"#).await;
    while let Some(frame) = lin.ws.quiet_for(std::time::Duration::from_millis(300)).await {
        assert_ne!(
            frame["op"], "offer",
            "a call in the IVR is not routed yet: {frame}"
        );
    }
    let ivr = r#"{"menu":"main","digits":"2","intent":"card_lost"}"#;
    send(&gateway, "evt_2", "call.ivr_input", 2, ivr).await;
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "voice");
    assert_eq!(offer["d"]["attributes"]["ivr.intent"], "card_lost");
    assert_eq!(offer["d"]["attributes"]["ivr.digits"], "2");
    assert_eq!(offer["d"]["attributes"]["queue"], "cards");
    let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    // A retry of an applied event is a no-op.
    send(&gateway, "evt_2", "call.ivr_input", 2, ivr).await;

    lin.accept(&conversation).await;
    assert_eventually!(
        receiver.connects().await.len() == 1,
        "the telephony system was told to connect lin"
    );
    let connect = &receiver.connects().await[0];
    assert_eq!(
        (connect["call_id"].as_str(), connect["agent_id"].as_str()),
        (Some("call_7f3c"), Some("lin"))
    );

    send(
        &gateway,
        "evt_4",
        "call.answered",
        4,
        r#"{"answered_by":"agent","agent_id":"lin"}"#,
    )
    .await;
    send(
        &gateway,
        "evt_5",
        "call.ended",
        5,
        r#"{"hangup_by":"customer","cause":"normal_clearing"}"#,
    )
    .await;
    send(
        &gateway,
        "evt_6",
        "call.recording_available",
        6,
        r#"{"recording_id":"rec_1","url":"https://rec.example/rec_1","duration_ms":1000,"format":"wav"}"#,
    )
    .await;
    let recording = lin
        .ws
        .recv_until(|f| {
            f["op"] == "event" && f["d"]["message"]["content"]["name"] == "call.recording_available"
        })
        .await;
    assert_eq!(
        recording["d"]["message"]["content"]["detail"],
        "https://rec.example/rec_1"
    );
    let events = agent_events(&gateway, &conversation).await;
    assert_eq!(
        call_events(&events),
        [
            "call.offered",
            "call.ivr_input",
            "call.queued",
            "call.answered",
            "call.ended",
            "call.recording_available"
        ]
    );
    let ivr = events
        .iter()
        .find(|e| e["message"]["content"]["name"] == "call.ivr_input")
        .unwrap();
    assert!(ivr["message"]["content"]["detail"]
        .as_str()
        .unwrap()
        .contains("card_lost"));
    assert_eq!(
        events.iter().filter(|e| e["type"] == "channel.received").count(),
        6
    );
    assert_eq!(receiver.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn cti_events_with_a_bad_signature_or_an_old_timestamp_are_refused() {
    let receiver = FakeCtiReceiver::start().await;
    let gateway = gateway(&receiver).await;
    let body = cti_event(
        "evt_x",
        "call.offered",
        "call_x",
        1,
        r#"{"direction":"inbound","from":"+1","to":"+2"}"#,
    );
    let other = "whsec_ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=";
    assert_eq!(
        post_cti_event(&gateway, "evt_x", &body, other, None).await.status,
        401
    );
    let stale = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 400;
    assert_eq!(
        post_cti_event(&gateway, "evt_x", &body, CTI_SECRET, Some(stale))
            .await
            .status,
        401
    );
    assert_eq!(
        post_cti_event(&gateway, "evt_y", &body, CTI_SECRET, None)
            .await
            .status,
        400,
        "id differs"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let secret = WebhookSecret::parse(CTI_SECRET).unwrap();
    let signed = sign_headers(&[secret], "evt_x", now, body.as_bytes());
    let mut headers: Vec<(&str, &str)> = signed.iter().map(|(n, v)| (*n, v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let tampered = body.replace("+1", "+9");
    let response = http_request(
        gateway.public,
        "POST",
        "/channels/cti/v1/events",
        &headers,
        tampered.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 401, "a body changed after signing");
    let malformed = post_cti_event(&gateway, "evt_x", "{", CTI_SECRET, None).await;
    assert_eq!(malformed.status, 400);
}

const OFFERED: &str = r#"{"direction":"inbound","from":"+8613800138000","to":"+864000000000"}"#;
const IVR: &str = r#"{"menu":"main","digits":"2","intent":"card_lost"}"#;
const QUEUED: &str = r#"{"queue":"cards"}"#;

#[tokio::test]
async fn a_cti_event_held_behind_a_gap_survives_a_gateway_restart_and_is_applied_when_the_gap_fills() {
    // Issue 4 item 4: an event answered 2xx while it waits in the reorder buffer must not die with the process.
    let redis = RedisServer::start().await;
    let prefix = TestGateway::fresh_prefix();
    let receiver = FakeCtiReceiver::start().await;
    let first = redis_gateway(&redis, &prefix, &receiver).await;
    send(&first, "evt_1", "call.offered", 1, OFFERED).await;
    send(&first, "evt_3", "call.queued", 3, QUEUED).await;
    assert_eq!(
        held_count(&redis, &prefix),
        ":1\r\n",
        "seq 3 is kept while it waits for 2"
    );
    first.stop().await;

    let second = redis_gateway(&redis, &prefix, &receiver).await;
    let mut lin = Agent::online(&second, "lin").await;
    send(&second, "evt_2", "call.ivr_input", 2, IVR).await;
    // seq 3 came back from the store and follows seq 2: the call is routed with the IVR input.
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "voice");
    assert_eq!(offer["d"]["attributes"]["ivr.intent"], "card_lost");
    assert_eq!(offer["d"]["attributes"]["queue"], "cards");
    let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    lin.accept(&conversation).await;
    let events = agent_events(&second, &conversation).await;
    let applied: Vec<String> = call_events(&events)
        .into_iter()
        .filter(|name| name != "call.offered")
        .collect();
    assert_eq!(applied, ["call.ivr_input", "call.queued"]);
    assert_eventually!(
        held_count(&redis, &prefix) == ":0\r\n",
        "applied events are released from the CTI inbox"
    );
    // The caller kept with the held event names the customer, not a placeholder.
    let received = events
        .iter()
        .find(|e| e["type"] == "channel.received")
        .expect("audit record");
    assert_eq!(received["from"]["value"], "+8613800138000", "{received}");
    second.stop().await;
}

/// POSTs an event until it is answered 2xx, as the telephony platform retries; returns how many 5xx it got.
async fn send_until_accepted(gateway: &TestGateway, id: &str, kind: &str, seq: u64, fields: &str) -> u32 {
    let body = cti_event(id, kind, "call_burst", seq, fields);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut refused = 0;
    loop {
        let response = post_cti_event(gateway, id, &body, CTI_SECRET, None).await;
        match response.status {
            200..=299 => return refused,
            500..=599 => refused += 1,
            other => panic!("{id}: unexpected {other} {}", response.body),
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never accepted");
        // The platform's retry interval, not a wait for something to happen.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_redis_outage_during_a_cti_burst_loses_nothing_that_was_answered_2xx() {
    let mut redis = RedisServer::start_persistent().await;
    let prefix = TestGateway::fresh_prefix();
    let receiver = FakeCtiReceiver::start().await;
    let gateway = redis_gateway(&redis, &prefix, &receiver).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let burst = [
        ("evt_b1", "call.offered", OFFERED),
        ("evt_b2", "call.ivr_input", IVR),
        ("evt_b3", "call.queued", QUEUED),
        (
            "evt_b4",
            "call.answered",
            r#"{"answered_by":"agent","agent_id":"lin"}"#,
        ),
        ("evt_b5", "call.held", r#"{"agent_id":"lin"}"#),
        ("evt_b6", "call.resumed", r#"{"agent_id":"lin"}"#),
        (
            "evt_b7",
            "call.ended",
            r#"{"hangup_by":"customer","cause":"normal_clearing"}"#,
        ),
    ];
    for (seq, (id, kind, fields)) in burst.iter().enumerate().take(2) {
        assert_eq!(
            send_until_accepted(&gateway, id, kind, seq as u64 + 1, fields).await,
            0
        );
    }
    redis.stop();
    // While the store is down nothing can be kept: refused, so the platform retries (seq 4 before 3 too).
    for (seq, (id, kind, fields)) in burst.iter().enumerate().skip(2).take(2).rev() {
        let body = cti_event(id, kind, "call_burst", seq as u64 + 1, fields);
        let response = post_cti_event(&gateway, id, &body, CTI_SECRET, None).await;
        assert_eq!(response.status, 503, "{id} during the outage: {}", response.body);
    }
    redis.restart().await;
    for (seq, (id, kind, fields)) in burst.iter().enumerate().skip(2) {
        send_until_accepted(&gateway, id, kind, seq as u64 + 1, fields).await;
    }
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    lin.accept(&conversation).await;
    let expected: Vec<&str> = burst.iter().map(|(_, kind, _)| *kind).collect();
    let mut events: Vec<Value>;
    assert_eventually!(
        {
            events = agent_events(&gateway, &conversation).await;
            call_events(&events).len() >= expected.len()
        },
        "every accepted event reaches the conversation"
    );
    assert_eq!(call_events(&events), expected, "each once, in seq order");
    assert_eventually!(
        held_count(&redis, &prefix) == ":0\r\n",
        "nothing is left in the CTI inbox"
    );
}

async fn send_call(gateway: &TestGateway, call: &str, id: &str, kind: &str, seq: u64, fields: &str) {
    let body = cti_event(id, kind, call, seq, fields);
    let response = post_cti_event(gateway, id, &body, CTI_SECRET, None).await;
    assert_eq!(
        response.status / 100,
        2,
        "{id}: {} {}",
        response.status,
        response.body
    );
}

#[tokio::test]
async fn a_call_transferred_on_the_telephony_side_is_re_routed_to_the_target_agent_or_queue() {
    let receiver = FakeCtiReceiver::start().await;
    let gateway = gateway(&receiver).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    send_call(&gateway, "call_tr", "evt_t1", "call.offered", 1, OFFERED).await;
    send_call(&gateway, "call_tr", "evt_t2", "call.queued", 2, QUEUED).await;
    let conversation = lin.take_next().await;
    assert_eventually!(receiver.connects().await.len() == 1, "lin is connected");

    // A blind transfer to Chen: the conversation leaves Lin and is offered to Chen, who is then connected.
    let mut chen = Agent::online(&gateway, "chen").await;
    let to_chen = r#"{"kind":"blind","to":{"type":"agent","id":"chen"},"from_agent_id":"lin"}"#;
    send_call(&gateway, "call_tr", "evt_t3", "call.transferred", 3, to_chen).await;
    let offer = chen.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["conversation_id"], conversation.as_str());
    assert_eq!(offer["d"]["channel"], "voice");
    lin.ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.transferred")
        .await;
    chen.accept(&conversation).await;
    assert_eventually!(receiver.connects().await.len() == 2, "chen is connected");
    assert_eq!(receiver.connects().await[1]["agent_id"], "chen");
    // A retry of the transfer event changes nothing.
    send_call(&gateway, "call_tr", "evt_t3", "call.transferred", 3, to_chen).await;

    // A transfer to the cards queue, without `from_agent_id`: the call leaves Chen (the agent connected last)
    // and the queue's expert, Lin, gets it.
    let to_cards = r#"{"kind":"queue","to":{"type":"queue","id":"cards"}}"#;
    send_call(&gateway, "call_tr", "evt_t4", "call.transferred", 4, to_cards).await;
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["conversation_id"], conversation.as_str());
    lin.accept(&conversation).await;
    assert_eventually!(receiver.connects().await.len() == 3, "lin is connected again");
    assert_eq!(receiver.connects().await[2]["agent_id"], "lin");
    let events = agent_events(&gateway, &conversation).await;
    let transfers: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "conversation.transferred")
        .map(|e| {
            (
                e["from_agent_id"].as_str().unwrap_or_default(),
                e["to_agent_id"]
                    .as_str()
                    .or(e["to_queue"].as_str())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(transfers, [("lin", "chen"), ("chen", "cards")], "{events:?}");
    assert_eq!(receiver.violations().await, Vec::<String>::new());
}
