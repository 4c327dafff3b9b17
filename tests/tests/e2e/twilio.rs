//! Twilio SMS end to end: signed inbound webhooks (a retry makes one message), replies through the fake
//! Messages API checking auth and fields, segment counts, status callbacks and dead letters (issue 4).

use omnigate_config::Config;
use omnigate_tests::{
    http_request, twilio_webhook, Agent, FakeTwilio, TestGateway, TwilioScript, TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN, TWILIO_NUMBER,
};
use serde_json::Value;

const CUSTOMER: &str = "+8613800138000";

async fn gateway(fake: &FakeTwilio, change: impl FnOnce(&mut Config)) -> TestGateway {
    let account = fake.account();
    let gateway = TestGateway::spawn_with(move |config| {
        config.channels.twilio.push(account);
        config.channels.outbox.retry_base_ms = 20;
        config.channels.outbox.retry_max_ms = 100;
        change(config);
    })
    .await;
    fake.expect_status_callback(&format!("http://{}/channels/twilio/us/status", gateway.public))
        .await;
    gateway
}

fn sms<'a>(sid: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("AccountSid", TWILIO_ACCOUNT_SID),
        ("From", CUSTOMER),
        ("To", TWILIO_NUMBER),
        ("Body", body),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("SmsStatus", "received"),
        ("ApiVersion", "2010-04-01"),
        ("FromCountry", "CN"),
    ]
}

async fn delivery(agent: &mut Agent, conversation: &str, state: &str) -> Value {
    agent
        .ws
        .recv_until(|f| {
            f["op"] == "event"
                && f["d"]["conversation_id"] == conversation
                && f["d"]["type"] == "delivery.updated"
                && f["d"]["state"] == state
        })
        .await["d"]
        .clone()
}

#[tokio::test]
async fn a_retried_sms_is_one_message_and_replies_go_out_with_segments_and_status() {
    let fake = FakeTwilio::start().await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let params = sms(
        "SM11111111111111111111111111111111",
        "my card is blocked & 100% stuck",
    );
    for _ in 0..2 {
        let response = twilio_webhook(&gateway, "/channels/twilio/us/sms", &params, TWILIO_AUTH_TOKEN).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.body, omnigate_connectors::twilio::EMPTY_TWIML);
        assert_eq!(response.header("content-type"), Some("text/xml"));
    }
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "sms_twilio");
    let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    lin.accept(&conversation).await;
    let auth = format!("Bearer {}", gateway.agent_token("lin"));
    let events = http_request(
        gateway.public,
        "GET",
        &format!("/chat/v1/conversations/{conversation}/events"),
        &[("authorization", auth.as_str())],
        b"",
    )
    .await
    .json()["events"]
        .clone();
    let count = |t: &str| {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == t)
            .count()
    };
    assert_eq!(
        (count("message.created"), count("channel.received")),
        (1, 1),
        "{events}"
    );

    // 71 CJK characters need UCS-2: two segments, shown before the provider is called.
    let long = "您".repeat(71);
    lin.say(&conversation, "a-1", &long).await;
    let pending = delivery(&mut lin, &conversation, "pending").await;
    assert_eq!(pending["segments"], 2);
    let sent = delivery(&mut lin, &conversation, "sent").await;
    let sid = sent["provider_message_id"].as_str().unwrap().to_owned();
    let forms = fake.sent().await;
    assert_eq!(forms.len(), 1);
    assert!(forms[0].contains(&("To".to_owned(), CUSTOMER.to_owned())));
    assert!(forms[0].contains(&("Body".to_owned(), long.clone())));

    let status = |s: &'static str| {
        vec![
            ("MessageSid", sid.as_str()),
            ("AccountSid", TWILIO_ACCOUNT_SID),
            ("MessageStatus", s),
            ("SmsStatus", s),
            ("From", TWILIO_NUMBER),
            ("To", CUSTOMER),
            ("ApiVersion", "2010-04-01"),
        ]
    };
    for s in ["delivered", "delivered", "sent"] {
        let response = twilio_webhook(
            &gateway,
            "/channels/twilio/us/status",
            &status(s),
            TWILIO_AUTH_TOKEN,
        )
        .await;
        assert!(
            response.status == 204 || response.status == 200,
            "{}",
            response.status
        );
    }
    let delivered = delivery(&mut lin, &conversation, "delivered").await;
    assert_eq!(delivered["provider_message_id"], sid.as_str());
    lin.say(&conversation, "a-2", "ok").await;
    let pending = delivery(&mut lin, &conversation, "pending").await;
    assert_eq!(pending["segments"], 1);
    let next = lin
        .ws
        .recv_until(|f| {
            f["op"] == "event" && f["d"]["type"] == "delivery.updated" && f["d"]["state"] != "pending"
        })
        .await;
    assert_eq!(
        next["d"]["state"], "sent",
        "a repeated or late callback logs nothing: {next}"
    );
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_twilio_outage_is_retried_and_a_bad_number_is_dead_lettered() {
    let fake = FakeTwilio::start().await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let params = sms("SM22222222222222222222222222222222", "hello");
    twilio_webhook(&gateway, "/channels/twilio/us/sms", &params, TWILIO_AUTH_TOKEN).await;
    let conversation = lin.take_next().await;

    fake.script([TwilioScript::Error(500, 20500)]).await;
    lin.say(&conversation, "a-1", "first").await;
    let retrying = delivery(&mut lin, &conversation, "retrying").await;
    assert_eq!(retrying["attempt"], 1);
    let sent = delivery(&mut lin, &conversation, "sent").await;
    assert_eq!(sent["attempt"], 2);

    fake.script([TwilioScript::Error(400, 21211)]).await;
    lin.say(&conversation, "a-2", "second").await;
    let failed = delivery(&mut lin, &conversation, "failed").await;
    assert_eq!(failed["reason"], "invalid_recipient");
    assert_eq!(failed["attempt"], 1);
    assert!(failed["detail"].as_str().unwrap().contains("21211"), "{failed}");
    assert_eq!(fake.attempts().await, 3);
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn twilio_webhooks_with_a_bad_signature_or_another_account_are_refused() {
    let fake = FakeTwilio::start().await;
    let gateway = gateway(&fake, |_| {}).await;
    let params = sms("SM33333333333333333333333333333333", "hi");
    let forged = twilio_webhook(&gateway, "/channels/twilio/us/sms", &params, "not-the-token").await;
    assert_eq!(forged.status, 403);
    let mut foreign = params.clone();
    foreign[2] = ("AccountSid", "ACffffffffffffffffffffffffffffffff");
    assert_eq!(
        twilio_webhook(&gateway, "/channels/twilio/us/sms", &foreign, TWILIO_AUTH_TOKEN)
            .await
            .status,
        403
    );
    let unsigned = http_request(
        gateway.public,
        "POST",
        "/channels/twilio/us/sms",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"MessageSid=SM1",
    )
    .await;
    assert_eq!(unsigned.status, 403);
    let incomplete = twilio_webhook(
        &gateway,
        "/channels/twilio/us/sms",
        &params[..2],
        TWILIO_AUTH_TOKEN,
    )
    .await;
    assert_eq!(incomplete.status, 400);
    assert_eq!(
        twilio_webhook(&gateway, "/channels/twilio/nope/sms", &params, TWILIO_AUTH_TOKEN)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_send_that_timed_out_is_not_sent_twice_and_the_agent_is_told() {
    let fake = FakeTwilio::start().await;
    let gateway = gateway(&fake, |config| config.channels.outbox.request_timeout_ms = 300).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let params = sms("SM44444444444444444444444444444444", "hello");
    twilio_webhook(&gateway, "/channels/twilio/us/sms", &params, TWILIO_AUTH_TOKEN).await;
    let conversation = lin.take_next().await;

    // Twilio took the message but answered after our timeout: retrying would text the customer twice.
    fake.script([TwilioScript::SlowAccept(1_000)]).await;
    lin.say(&conversation, "a-1", "only once").await;
    let failed = delivery(&mut lin, &conversation, "failed").await;
    assert_eq!(failed["attempt"], 1);
    assert!(
        failed["detail"].as_str().unwrap().contains("may have been sent"),
        "{failed}"
    );
    assert!(
        !failed["detail"].as_str().unwrap().contains("retried"),
        "{failed}"
    );
    assert_eq!(fake.attempts().await, 1);
    assert_eq!(fake.sent().await.len(), 1);
}

#[tokio::test]
async fn an_agent_sees_how_many_sms_parts_a_draft_takes_before_sending_it() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let short = lin
        .request(
            "sms.segments",
            serde_json::json!({"text": "Your card is on its way."}),
        )
        .await;
    assert_eq!(
        (short["encoding"].as_str(), short["segments"].as_u64()),
        (Some("gsm7"), Some(1))
    );
    assert_eq!(short["remaining_in_segment"], 160 - 24);
    // 161 GSM-7 characters need two parts of 153.
    let long = lin
        .request("sms.segments", serde_json::json!({"text": "a".repeat(161)}))
        .await;
    assert_eq!(
        (long["segments"].as_u64(), long["units_per_segment"].as_u64()),
        (Some(2), Some(153))
    );
    // One Chinese character switches the whole text to UCS-2 (70 per part, 67 when split).
    let chinese = lin
        .request(
            "sms.segments",
            serde_json::json!({"text": format!("您好{}", "a".repeat(70))}),
        )
        .await;
    assert_eq!(
        (
            chinese["encoding"].as_str(),
            chinese["segments"].as_u64(),
            chinese["units"].as_u64()
        ),
        (Some("ucs2"), Some(2), Some(72))
    );
    // An empty draft is refused like an empty message, and the socket stays usable.
    let reference = lin
        .ws
        .send_op("sms.segments", serde_json::json!({"text": " "}))
        .await;
    let refused = lin.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
    assert_eq!(refused["op"], "error", "{refused}");
    assert_eq!(refused["d"]["code"], "invalid_frame");
    let again = lin
        .request("sms.segments", serde_json::json!({"text": "ok"}))
        .await;
    assert_eq!(again["segments"], 1);
}
