//! The mobile app channel end to end (issue 4 item 5): app credentials and the bank-signed identity, app
//! conversations routed and relayed, device registration, and the signed push webhook for customers who are
//! not connected or do not ack in time.

use omnigate_config::{Push, SecretString};
use omnigate_tests::{
    app_config, app_customer, app_session, assert_eventually, devices_request, http_request, identity_claims,
    identity_token_hs256, identity_token_rs256, Agent, Customer, FakePush, TestGateway, APP_ID, APP_KEY,
    BANK_SECRET, PUSH_SECRET,
};
use serde_json::{json, Value};

/// Short enough for tests, long enough for an ack on loopback.
const ACK_TIMEOUT_MS: u64 = 1_500;

async fn gateway(push: Option<&FakePush>) -> TestGateway {
    let push = push.map(|p| Push {
        url: p.url(),
        secret: SecretString::from(PUSH_SECRET.to_owned()),
        include_preview: true,
        ack_timeout_ms: ACK_TIMEOUT_MS,
        max_attempts: 5,
        retry_base_ms: 50,
        retry_max_ms: 200,
        request_timeout_ms: 2_000,
    });
    TestGateway::spawn_with(move |config| {
        config.channels.app = vec![app_config()];
        config.channels.push = push;
    })
    .await
}

fn session_token(response: &omnigate_tests::HttpResponse) -> (String, String) {
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    (
        body["token"].as_str().expect("token").to_owned(),
        body["customer_id"].as_str().expect("customer_id").to_owned(),
    )
}

#[tokio::test]
async fn the_same_bank_user_is_the_same_customer_across_sessions_and_key_types() {
    let gateway = gateway(None).await;
    let hs = identity_token_hs256(&identity_claims("cust-1001", json!({})), BANK_SECRET);
    let (_, first) = session_token(&app_session(&gateway, APP_ID, APP_KEY, &hs).await);
    let again = identity_token_hs256(
        &identity_claims("cust-1001", json!({"phone": "+8613800138000"})),
        BANK_SECRET,
    );
    let (_, second) = session_token(&app_session(&gateway, APP_ID, APP_KEY, &again).await);
    let rs = identity_token_rs256(&identity_claims("cust-1001", json!({})));
    let (_, third) = session_token(&app_session(&gateway, APP_ID, APP_KEY, &rs).await);
    assert!(first.starts_with("u_"), "{first}");
    assert_eq!(
        (&first, &first),
        (&second, &third),
        "one customer per bank user id"
    );
    let other = identity_token_hs256(&identity_claims("cust-2002", json!({})), BANK_SECRET);
    let (_, different) = session_token(&app_session(&gateway, APP_ID, APP_KEY, &other).await);
    assert_ne!(first, different);

    // The web widget form keeps working next to the app form.
    let mut web = Customer::start(&gateway).await;
    let ack = web.say(None, "w1", "hello from the web").await;
    assert!(ack["conversation_id"].is_string());
}

#[tokio::test]
async fn bad_app_credentials_and_bad_identity_tokens_get_401_with_a_reason() {
    let gateway = gateway(None).await;
    let good = identity_token_hs256(&identity_claims("cust-1", json!({})), BANK_SECRET);
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "unknown app",
            "other-app".into(),
            good.clone(),
            "unknown app or wrong app_key",
        ),
        (
            "wrong key",
            APP_ID.into(),
            good.clone(),
            "unknown app or wrong app_key",
        ),
        (
            "expired",
            APP_ID.into(),
            identity_token_hs256(
                &identity_claims("cust-1", json!({"iat": 1_000, "exp": 1_100})),
                BANK_SECRET,
            ),
            "expired",
        ),
        (
            "bad signature",
            APP_ID.into(),
            identity_token_hs256(
                &identity_claims("cust-1", json!({})),
                "not-the-bank-secret-0123456789abcdef",
            ),
            "signature is invalid",
        ),
        (
            "wrong audience",
            APP_ID.into(),
            identity_token_hs256(
                &identity_claims("cust-1", json!({"aud": "someone-else"})),
                BANK_SECRET,
            ),
            "audience is wrong",
        ),
        (
            "wrong issuer",
            APP_ID.into(),
            identity_token_rs256(&identity_claims("cust-1", json!({"iss": "https://evil.example"}))),
            "issuer is wrong",
        ),
        (
            "phone not E.164",
            APP_ID.into(),
            identity_token_hs256(
                &identity_claims("cust-1", json!({"phone": "138 0013 8000"})),
                BANK_SECRET,
            ),
            "phone must be an E.164",
        ),
        ("not a jwt", APP_ID.into(), "garbage".into(), "malformed"),
    ];
    for (what, app_id, token, reason) in cases {
        let key = if what == "wrong key" {
            "not-the-app-key-0123456789"
        } else {
            APP_KEY
        };
        let response = app_session(&gateway, &app_id, key, &token).await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(reason), "{what}: {message}");
        assert!(
            response.header("x-request-id").is_some(),
            "{what}: a request id to find the log line"
        );
    }
    let missing = http_request(
        gateway.public,
        "POST",
        "/chat/v1/sessions",
        &[("content-type", "application/json")],
        json!({"app_id": APP_ID, "app_key": APP_KEY})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(missing.status, 400, "{}", missing.body);
}

#[tokio::test]
async fn an_app_conversation_is_channel_app_routes_and_relays() {
    let gateway = gateway(None).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let (mut customer, customer_id) = app_customer(&gateway, "cust-relay").await;
    let ack = customer.say(None, "m1", "my card was declined").await;
    let conversation = ack["conversation_id"].as_str().unwrap().to_owned();

    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "app", "{offer}");
    assert_eq!(offer["d"]["customer_id"], customer_id.as_str());
    assert_eq!(offer["d"]["conversation_id"], conversation.as_str());
    lin.accept(&conversation).await;
    lin.say(&conversation, "a1", "let me check that for you").await;
    let reply = customer.next_message().await;
    assert_eq!(reply["message"]["content"]["text"], "let me check that for you");
    customer.say(Some(&conversation), "m2", "thanks").await;
    loop {
        let relayed = lin.next_message_in(&conversation).await;
        if relayed["message"]["content"]["text"] == "thanks" {
            break;
        }
    }

    // The log records the channel: the agent's view of `conversation.created` says `app`.
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
    let events = response.json()["events"].as_array().unwrap().clone();
    let created = events
        .iter()
        .find(|e| e["type"] == "conversation.created")
        .expect("conversation.created in the log");
    assert_eq!(created["channel"], "app", "{created}");
}

async fn customer_events(gateway: &TestGateway, token: &str, conversation: &str) -> Vec<Value> {
    let auth = format!("Bearer {token}");
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
async fn device_registration_checks_its_input_and_is_idempotent() {
    let gateway = gateway(None).await;
    let (customer, customer_id) = app_customer(&gateway, "cust-devices").await;
    let token = customer.token.clone();
    let device = json!({"platform": "apns", "token": "a1b2c3d4e5f6", "app_id": APP_ID});

    assert_eq!(devices_request(&gateway, "POST", "", &device).await.status, 401);
    assert_eq!(
        devices_request(&gateway, "POST", "not.a.token", &device)
            .await
            .status,
        401
    );
    let web = Customer::start(&gateway).await;
    let from_web = devices_request(&gateway, "POST", &web.token, &device).await;
    assert_eq!(
        from_web.status, 401,
        "a web session has no app: {}",
        from_web.body
    );

    for (what, body) in [
        (
            "bad platform",
            json!({"platform": "blackberry", "token": "x", "app_id": APP_ID}),
        ),
        (
            "empty token",
            json!({"platform": "fcm", "token": "  ", "app_id": APP_ID}),
        ),
        (
            "other app",
            json!({"platform": "fcm", "token": "t", "app_id": "other-app"}),
        ),
        ("not json", json!("platform=fcm")),
        (
            "unknown field",
            json!({"platform": "fcm", "token": "t", "surprise": 1}),
        ),
    ] {
        let response = devices_request(&gateway, "POST", &token, &body).await;
        assert_eq!(response.status, 400, "{what}: {}", response.body);
    }

    for _ in 0..2 {
        let ok = devices_request(&gateway, "POST", &token, &device).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.json()["customer_id"], customer_id.as_str());
        assert_eq!(ok.json()["platform"], "apns");
    }
    let removed = devices_request(&gateway, "DELETE", &token, &device).await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    let again = devices_request(&gateway, "DELETE", &token, &device).await;
    assert_eq!(again.status, 404, "{}", again.body);
}

/// An app customer with a registered device and a conversation `lin` has accepted.
async fn customer_with_device(
    gateway: &TestGateway,
    lin: &mut Agent,
    sub: &str,
) -> (Customer, String, String) {
    let (mut customer, customer_id) = app_customer(gateway, sub).await;
    let device = json!({"platform": "fcm", "token": format!("fcm-token-{sub}"), "app_id": APP_ID});
    let registered = devices_request(gateway, "POST", &customer.token, &device).await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let ack = customer.say(None, "m1", "hello").await;
    let conversation = ack["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(lin.take_next().await, conversation);
    (customer, customer_id, conversation)
}

async fn wait_for_pushes(push: &FakePush, count: usize) -> Vec<Value> {
    assert_eventually!(
        push.pushes().await.len() >= count,
        "expected {count} pushes, got {:?} (violations {:?})",
        push.pushes().await,
        push.violations().await
    );
    let pushes = push.pushes().await;
    assert_eq!(pushes.len(), count, "{pushes:?}");
    assert_eq!(push.violations().await, Vec::<String>::new());
    pushes
}

#[tokio::test]
async fn a_reply_to_a_customer_whose_socket_is_gone_is_pushed_once_signed_and_retried() {
    let push = FakePush::start().await;
    let gateway = gateway(Some(&push)).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let (customer, customer_id, conversation) = customer_with_device(&gateway, &mut lin, "cust-gone").await;
    let customer_token = customer.token.clone();
    customer.ws.close().await;
    // A round trip through the bus after the close, so the socket's detach is behind us.
    lin.set_presence("available").await;

    push.fail_next(1).await;
    lin.say(&conversation, "a1", "your new card is on its way").await;
    let pushes = wait_for_pushes(&push, 1).await;
    let first = &pushes[0];
    assert_eq!(first["customer_id"], customer_id.as_str());
    assert_eq!(first["conversation_id"], conversation.as_str());
    assert_eq!(first["preview"], "your new card is on its way");
    assert_eq!(first["badge"], 1);
    assert_eq!(first["devices"][0]["token"], "fcm-token-cust-gone");
    let attempts = push.attempts().await;
    assert_eq!(attempts.len(), 2, "one 503, then delivered: {attempts:?}");
    assert_eq!(attempts[0], attempts[1], "a retry keeps its webhook-id");
    let events = customer_events(&gateway, &customer_token, &conversation).await;
    let seq = events
        .iter()
        .find(|e| e["message"]["content"]["text"] == "your new card is on its way")
        .map(|e| e["seq"].clone())
        .expect("the reply is in the customer's log");
    assert_eq!(
        first["seq"], seq,
        "the push names the customer's seq to resume from"
    );

    // The next reply is one more push, with the unread count; the first was not repeated.
    lin.say(&conversation, "a2", "anything else?").await;
    let pushes = wait_for_pushes(&push, 2).await;
    assert_eq!(pushes[1]["seq"], seq.as_u64().unwrap() + 1);
    assert_eq!(pushes[1]["badge"], 2);
}

#[tokio::test]
async fn a_message_not_acked_within_the_timeout_is_pushed_once() {
    let push = FakePush::start().await;
    let gateway = gateway(Some(&push)).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let (mut customer, _, conversation) = customer_with_device(&gateway, &mut lin, "cust-silent").await;

    lin.say(&conversation, "a1", "are you there?").await;
    let first = customer.next_message().await;
    let pushes = wait_for_pushes(&push, 1).await;
    assert_eq!(pushes[0]["seq"], first["seq"], "{pushes:?}");

    lin.say(&conversation, "a2", "still there?").await;
    let second = customer.next_message().await;
    let pushes = wait_for_pushes(&push, 2).await;
    let seqs: Vec<&Value> = pushes.iter().map(|p| &p["seq"]).collect();
    assert_eq!(seqs, vec![&first["seq"], &second["seq"]], "each message once");
}

#[tokio::test]
async fn a_message_acked_in_time_is_not_pushed() {
    let push = FakePush::start().await;
    let gateway = gateway(Some(&push)).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let (mut customer, _, conversation) = customer_with_device(&gateway, &mut lin, "cust-acks").await;

    lin.say(&conversation, "a1", "first").await;
    let first = customer.next_message().await;
    customer
        .ws
        .send_op(
            "ack",
            json!({"conversation_id": conversation, "seq": first["seq"]}),
        )
        .await;
    // The second message is left unacked: its push comes after the first one's deadline, so a push for the
    // first would have arrived before it.
    lin.say(&conversation, "a2", "second").await;
    let second = customer.next_message().await;
    let pushes = wait_for_pushes(&push, 1).await;
    assert_eq!(
        pushes[0]["seq"], second["seq"],
        "only the unacked message: {pushes:?}"
    );
    assert_eq!(pushes[0]["badge"], 1);
}

#[tokio::test]
async fn a_customer_without_a_registered_device_gets_no_push() {
    let push = FakePush::start().await;
    let gateway = gateway(Some(&push)).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let (mut bare, _) = app_customer(&gateway, "cust-no-device").await;
    let ack = bare.say(None, "m1", "hello").await;
    let bare_conversation = ack["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(lin.take_next().await, bare_conversation);
    let (with_device, _, conversation) = customer_with_device(&gateway, &mut lin, "cust-has-device").await;
    bare.ws.close().await;
    with_device.ws.close().await;
    lin.set_presence("available").await;

    // The reply to the customer without a device comes first; only the other one is pushed.
    lin.say(&bare_conversation, "a1", "no device here").await;
    lin.say(&conversation, "a1", "this one buzzes").await;
    let pushes = wait_for_pushes(&push, 1).await;
    assert_eq!(pushes[0]["conversation_id"], conversation.as_str());
    assert_eventually!(
        http_request(gateway.admin, "GET", "/metrics", &[], b"")
            .await
            .body
            .contains("omnigate_push_requests_total{outcome=\"no_device\"}"),
        "the skipped push is counted"
    );
    assert_eq!(push.pushes().await.len(), 1);
}
