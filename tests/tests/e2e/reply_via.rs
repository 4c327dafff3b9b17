//! An agent's reply through the channel the agent picks (`message.send` `via`, issue 4 item 6): an Aliyun
//! uplink customer answered by SMS through Twilio, app and web customers answered on their linked phone,
//! refusals that store nothing, and a retried send that goes out once.

use omnigate_config::{Config, SecretString, SmsProvider, SmsUplink};
use omnigate_tests::{
    app_config, app_session, http_request, identity_claims, identity_token_hs256, twilio_webhook, Agent,
    Customer, FakeTwilio, TestGateway, APP_ID, APP_KEY, BANK_SECRET, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
    TWILIO_NUMBER,
};
use serde_json::{json, Value};

const TOKEN: &str = "uplink-token-0123456789abcdef";

async fn gateway(fake: &FakeTwilio, change: impl FnOnce(&mut Config)) -> TestGateway {
    let account = fake.account();
    let gateway = TestGateway::spawn_with(move |config| {
        config.channels.twilio.push(account);
        config.channels.sms_uplinks = vec![SmsUplink {
            id: "ali".to_owned(),
            provider: SmsProvider::Aliyun,
            path_token: SecretString::from(TOKEN.to_owned()),
            allowed_ips: Vec::new(),
            queue: String::new(),
            max_body_bytes: 64 * 1024,
        }];
        config.channels.outbox.retry_base_ms = 20;
        config.channels.outbox.retry_max_ms = 100;
        change(config);
    })
    .await;
    fake.expect_status_callback(&format!("http://{}/channels/twilio/us/status", gateway.public))
        .await;
    gateway
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

/// `message.send` with `via`; returns the reply frame (`message.ack` or `error`).
async fn send_via(
    agent: &mut Agent,
    conversation: &str,
    client_msg_id: &str,
    text: &str,
    via: Value,
) -> Value {
    let d = json!({
        "conversation_id": conversation, "client_msg_id": client_msg_id,
        "content": {"type": "text", "text": text}, "via": via,
    });
    let reference = agent.ws.send_op("message.send", d).await;
    agent.ws.recv_until(|f| f["ref"] == reference.as_str()).await
}

/// The agents' `message.created` events in the conversation's log.
async fn agent_messages(gateway: &TestGateway, agent: &str, conversation: &str) -> Vec<Value> {
    let auth = format!("Bearer {}", gateway.agent_token(agent));
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
    events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "message.created" && e["actor"]["type"] == "agent")
        .cloned()
        .collect()
}

fn texts_to(forms: &[Vec<(String, String)>], to: &str) -> Vec<String> {
    forms
        .iter()
        .filter(|f| f.contains(&("To".to_owned(), to.to_owned())))
        .filter_map(|f| f.iter().find(|(k, _)| k == "Body").map(|(_, v)| v.clone()))
        .collect()
}

#[tokio::test]
async fn an_aliyun_uplink_customer_is_answered_by_sms_through_twilio_once_per_client_msg_id() {
    let fake = FakeTwilio::start().await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let batch = r#"[{"phone_number":"13800138000","content":"卡被锁了","send_time":"2026-11-23 10:00:00","dest_code":"1234","sequence_id":2001}]"#;
    let response = http_request(
        gateway.public,
        "POST",
        &format!("/channels/sms/aliyun/ali/{TOKEN}"),
        &[("content-type", "application/json")],
        batch.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let conversation = lin.take_next().await;

    // Without `via`, the uplink has no send API: a visible dead letter telling the agent what to do.
    lin.say(&conversation, "a-0", "we are looking into it").await;
    let failed = delivery(&mut lin, &conversation, "failed").await;
    assert_eq!(failed["reason"], "no_outbound", "{failed}");
    assert!(
        failed["detail"].as_str().unwrap().contains("sms_twilio"),
        "{failed}"
    );

    // Through Twilio: stored once in the uplink conversation, with the route in the log.
    let ack = send_via(
        &mut lin,
        &conversation,
        "a-1",
        "您的卡已解锁",
        json!({"channel": "sms_twilio"}),
    )
    .await;
    assert_eq!(ack["op"], "message.ack", "{ack}");
    let message_id = ack["d"]["message_id"].as_str().unwrap().to_owned();
    let created = lin
        .ws
        .recv_until(|f| {
            f["op"] == "event"
                && f["d"]["type"] == "message.created"
                && f["d"]["message"]["id"] == message_id.as_str()
        })
        .await;
    assert_eq!(
        created["d"]["message"]["via"],
        json!({"channel": "sms_twilio", "account": "us"})
    );
    let pending = lin
        .ws
        .recv_until(|f| {
            f["d"]["type"] == "delivery.updated"
                && f["d"]["state"] == "pending"
                && f["d"]["message_id"] == message_id.as_str()
        })
        .await["d"]
        .clone();
    assert_eq!(
        (pending["channel"].clone(), pending["segments"].clone()),
        (json!("sms_twilio"), json!(1))
    );
    let sent = delivery(&mut lin, &conversation, "sent").await;
    assert_eq!(sent["message_id"], message_id.as_str());
    let sid = sent["provider_message_id"].as_str().unwrap().to_owned();
    assert_eq!(texts_to(&fake.sent().await, "+8613800138000"), ["您的卡已解锁"]);

    // Twilio's status callback reaches the agent in the uplink conversation.
    let status = [
        ("MessageSid", sid.as_str()),
        ("AccountSid", TWILIO_ACCOUNT_SID),
        ("MessageStatus", "delivered"),
        ("SmsStatus", "delivered"),
        ("From", TWILIO_NUMBER),
        ("To", "+8613800138000"),
        ("ApiVersion", "2010-04-01"),
    ];
    let response = twilio_webhook(&gateway, "/channels/twilio/us/status", &status, TWILIO_AUTH_TOKEN).await;
    assert!(response.status / 100 == 2, "{}", response.status);
    let delivered = delivery(&mut lin, &conversation, "delivered").await;
    assert_eq!(delivered["message_id"], message_id.as_str());

    // A retried send is answered from the original and sends nothing; the next message is the only other SMS.
    let retry = send_via(
        &mut lin,
        &conversation,
        "a-1",
        "您的卡已解锁",
        json!({"channel": "sms_twilio"}),
    )
    .await;
    assert_eq!(retry["op"], "message.ack", "{retry}");
    assert_eq!(retry["d"]["message_id"], message_id.as_str());
    let next = send_via(
        &mut lin,
        &conversation,
        "a-2",
        "还有别的问题吗",
        json!({"channel": "sms_twilio", "account": "us"}),
    )
    .await;
    let next_id = next["d"]["message_id"].as_str().unwrap().to_owned();
    lin.ws
        .recv_until(|f| {
            f["op"] == "event"
                && f["d"]["type"] == "delivery.updated"
                && f["d"]["state"] == "sent"
                && f["d"]["message_id"] == next_id.as_str()
        })
        .await;
    assert_eq!(
        texts_to(&fake.sent().await, "+8613800138000"),
        ["您的卡已解锁", "还有别的问题吗"]
    );
    assert_eq!(agent_messages(&gateway, "lin", &conversation).await.len(), 3);

    // A provider's permanent refusal dead-letters a picked route like any reply.
    fake.script([omnigate_tests::TwilioScript::Error(400, 21211)])
        .await;
    let bad = send_via(
        &mut lin,
        &conversation,
        "a-3",
        "再见",
        json!({"channel": "sms_twilio"}),
    )
    .await;
    assert_eq!(bad["op"], "message.ack", "{bad}");
    let failed = lin
        .ws
        .recv_until(|f| {
            f["op"] == "event"
                && f["d"]["type"] == "delivery.updated"
                && f["d"]["state"] == "failed"
                && f["d"]["message_id"] == bad["d"]["message_id"]
        })
        .await;
    assert_eq!(failed["d"]["reason"], "invalid_recipient", "{failed}");
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn app_and_web_customers_are_answered_on_their_linked_phone_and_refusals_store_nothing() {
    let fake = FakeTwilio::start().await;
    let gateway = gateway(&fake, |config| config.channels.app = vec![app_config()]).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    // An app user whose phone the bank vouched for in the identity token.
    let identity = identity_token_hs256(
        &identity_claims("bank-user-9", json!({"phone": "+8613911112222"})),
        BANK_SECRET,
    );
    let session = app_session(&gateway, APP_ID, APP_KEY, &identity).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let token = session.json()["token"].as_str().unwrap().to_owned();
    let mut app = Customer::connect(&gateway, &token, Value::Null).await;
    let app_chat = app.say(None, "c-1", "I am on a train, text me").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(lin.take_next().await, app_chat);
    let ack = send_via(
        &mut lin,
        &app_chat,
        "a-1",
        "Texting you now",
        json!({"channel": "sms_twilio"}),
    )
    .await;
    assert_eq!(ack["op"], "message.ack", "{ack}");
    delivery(&mut lin, &app_chat, "sent").await;
    assert_eq!(
        texts_to(&fake.sent().await, "+8613911112222"),
        ["Texting you now"]
    );

    // A web visitor with no phone: refused, nothing stored, nothing sent.
    let mut web = Customer::start(&gateway).await;
    let web_chat = web.say(None, "w-1", "hello").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(lin.take_next().await, web_chat);
    let refused = send_via(
        &mut lin,
        &web_chat,
        "a-1",
        "by sms",
        json!({"channel": "sms_twilio"}),
    )
    .await;
    assert_eq!(
        (refused["op"].clone(), refused["d"]["code"].clone()),
        (json!("error"), json!("no_address_on_channel")),
        "{refused}"
    );
    for (via, code) in [
        (json!({"channel": "carrier_pigeon"}), "invalid_request"),
        (json!({"channel": "web"}), "invalid_request"),
        (json!({"channel": "sms_aliyun"}), "invalid_request"),
        (
            json!({"channel": "sms_twilio", "account": "eu"}),
            "channel_not_configured",
        ),
        (json!({"channel": "wechat_oa"}), "channel_not_configured"),
    ] {
        let refused = send_via(&mut lin, &web_chat, "a-1", "by sms", via.clone()).await;
        assert_eq!(refused["op"], "error", "{via}: {refused}");
        assert_eq!(refused["d"]["code"], code, "{via}: {refused}");
    }
    // A malformed `via` fails parsing: an error frame without the ref (the frame was not understood).
    let d = json!({"conversation_id": web_chat, "client_msg_id": "a-1", "content": {"type": "text", "text": "x"}, "via": {"channel": 7}});
    lin.ws.send_op("message.send", d).await;
    let malformed = lin.ws.recv_until(|f| f["op"] == "error").await;
    assert_eq!(malformed["d"]["code"], "invalid_frame", "{malformed}");
    assert_eq!(
        agent_messages(&gateway, "lin", &web_chat).await,
        Vec::<Value>::new()
    );

    // The agent links the number the visitor gave; the same client_msg_id now goes out by SMS.
    lin.request(
        "customer.link",
        json!({"conversation_id": web_chat, "identity": {"kind": "phone", "value": "+8613733334444"}, "reason": "stated in chat"}),
    )
    .await;
    let ack = send_via(
        &mut lin,
        &web_chat,
        "a-1",
        "by sms",
        json!({"channel": "sms_twilio"}),
    )
    .await;
    assert_eq!(ack["op"], "message.ack", "{ack}");
    let sent = delivery(&mut lin, &web_chat, "sent").await;
    assert_eq!(sent["message_id"], ack["d"]["message_id"]);
    assert_eq!(texts_to(&fake.sent().await, "+8613733334444"), ["by sms"]);
    let stored = agent_messages(&gateway, "lin", &web_chat).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["message"]["via"]["channel"], "sms_twilio");
    // The web visitor's socket shows the reply too, without the route.
    let seen = web.next_message().await;
    assert_eq!(seen["message"]["content"]["text"], "by sms");
    assert_eq!(seen["message"].get("via"), None, "{seen}");
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_picked_route_kept_in_the_outbox_is_resumed_the_same_way_after_a_restart() {
    use omnigate_tests::{assert_eventually, RedisServer, TwilioScript};

    let redis = RedisServer::start().await;
    let prefix = TestGateway::fresh_prefix();
    let fake = FakeTwilio::start().await;
    let spawn = |retry_base_ms: u64| {
        let fake = fake.clone();
        let redis_url = redis.url();
        let prefix = prefix.clone();
        async move {
            gateway(&fake, move |config| {
                config.store.backend = omnigate_config::StoreBackend::Redis;
                config.store.redis_url = redis_url;
                config.store.key_prefix = prefix;
                config.store.command_timeout_ms = 500;
                config.channels.outbox.retry_base_ms = retry_base_ms;
                config.channels.outbox.retry_max_ms = retry_base_ms.max(100);
            })
            .await
        }
    };
    // The first retry would wait a minute: the restart comes before it.
    let first = spawn(60_000).await;
    let mut lin = Agent::online(&first, "lin").await;
    let batch = r#"[{"phone_number":"13800138000","content":"在吗","send_time":"2026-11-23 10:00:00","dest_code":"1234","sequence_id":3001}]"#;
    let response = http_request(
        first.public,
        "POST",
        &format!("/channels/sms/aliyun/ali/{TOKEN}"),
        &[("content-type", "application/json")],
        batch.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let conversation = lin.take_next().await;
    fake.script([TwilioScript::Error(500, 20500)]).await;
    let ack = send_via(
        &mut lin,
        &conversation,
        "a-1",
        "在的",
        json!({"channel": "sms_twilio"}),
    )
    .await;
    assert_eq!(ack["op"], "message.ack", "{ack}");
    let retrying = delivery(&mut lin, &conversation, "retrying").await;
    assert_eq!(retrying["channel"], "sms_twilio");
    let held = redis.command(&format!("HGETALL {prefix}held:outbox"));
    assert!(
        held.contains(r#""route":{"via":{"channel":"sms_twilio","account":"us"}"#),
        "{held}"
    );
    first.stop().await;
    assert_eq!(fake.attempts().await, 1);

    // Resumed through Twilio, not through the uplink conversation's own channel (which has no send API).
    let second = spawn(20).await;
    assert_eventually!(
        texts_to(&fake.sent().await, "+8613800138000") == ["在的"],
        "the resumed job went out through the picked route"
    );
    assert_eventually!(
        redis.command(&format!("HLEN {prefix}held:outbox")) == ":0\r\n",
        "the delivered job is released"
    );
    assert_eq!(fake.violations().await, Vec::<String>::new());
    second.stop().await;
}

#[tokio::test]
async fn a_web_visitor_linked_to_a_wechat_openid_is_answered_through_the_official_account() {
    use omnigate_tests::{
        text_xml, wechat_account, wechat_push, FakeWechat, Mode, WECHAT_APPID, WECHAT_SECRET,
    };

    const OPENID: &str = "oGw_user_openid_000000000042";
    let twilio = FakeTwilio::start().await;
    let wechat = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let account = wechat_account(&wechat);
    let gateway = gateway(&twilio, move |config| config.channels.wechat.push(account)).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    // A web visitor without an OpenID: refused, nothing stored.
    let mut web = Customer::start(&gateway).await;
    let web_chat = web.say(None, "w-1", "I wrote to you on WeChat too").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(lin.take_next().await, web_chat);
    let refused = send_via(
        &mut lin,
        &web_chat,
        "a-1",
        "answering on WeChat",
        json!({"channel": "wechat_oa"}),
    )
    .await;
    assert_eq!(refused["d"]["code"], "no_address_on_channel", "{refused}");
    assert_eq!(
        agent_messages(&gateway, "lin", &web_chat).await,
        Vec::<Value>::new()
    );

    // The same person writes to the official account; the agent links that OpenID to the web visitor.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let response = wechat_push(
        &gateway,
        "main",
        &text_xml(OPENID, 42, "是我", now),
        Mode::Plain,
        OPENID,
    )
    .await;
    assert_eq!((response.status, response.body.as_str()), (200, "success"));
    lin.take_next().await;
    lin.request(
        "customer.link",
        json!({"conversation_id": web_chat, "identity": {"kind": "wechat_open_id", "value": OPENID}, "reason": "same person"}),
    )
    .await;
    let ack = send_via(
        &mut lin,
        &web_chat,
        "a-1",
        "answering on WeChat",
        json!({"channel": "wechat_oa", "account": "main"}),
    )
    .await;
    assert_eq!(ack["op"], "message.ack", "{ack}");
    let sent = delivery(&mut lin, &web_chat, "sent").await;
    assert_eq!(
        (sent["channel"].clone(), sent["message_id"].clone()),
        (json!("wechat_oa"), ack["d"]["message_id"].clone())
    );
    let custom = wechat.sent().await;
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0].body["touser"], OPENID);
    assert_eq!(custom[0].body["text"]["content"], "answering on WeChat");
    assert_eq!(wechat.violations().await, Vec::<String>::new());
    assert_eq!(twilio.sent().await.len(), 0);
}
