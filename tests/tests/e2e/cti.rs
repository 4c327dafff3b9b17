//! CTI end to end: signed `cti-webhook/1` events become a voice conversation applied in `seq` order, routed
//! with voice capacity, and the telephony side is told (signed) which agent took the call (issue 4).

use omnigate_config::{Cti, SecretString};
use omnigate_connectors::cti::signature::{sign_headers, WebhookSecret};
use omnigate_tests::{
    assert_eventually, cti_event, http_request, post_cti_event, Agent, FakeCtiReceiver, TestGateway,
    CTI_SECRET,
};
use serde_json::Value;

async fn gateway(receiver: &FakeCtiReceiver) -> TestGateway {
    let cti = Cti {
        secret: SecretString::from(CTI_SECRET.to_owned()),
        previous_secret: None,
        tenant: "acme".to_owned(),
        connect_url: receiver.url(),
        queue: String::new(),
        reorder_gap_ms: 3_000,
        max_body_bytes: 64 * 1024,
    };
    TestGateway::spawn_with(move |config| config.channels.cti = Some(cti)).await
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
