//! WeChat Official Account end to end: WeChat's pushes in plain and safe mode, the fake WeChat API checking
//! every call the gateway makes, retries, dead letters and the access-token owner (issue 4).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omnigate_config::Config;
use omnigate_connectors::wechat::signature;
use omnigate_tests::{
    http_request, image_xml, signed_push, text_xml, wechat_account, wechat_push, Agent, FakeWechat, Mode,
    SendScript, TestGateway, FAKE_JPEG, WECHAT_APPID, WECHAT_ORIGINAL_ID, WECHAT_SECRET, WECHAT_TOKEN,
};
use serde_json::Value;

const OPENID: &str = "oGw_user_openid_000000000001";

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn gateway(fake: &FakeWechat, change: impl FnOnce(&mut Config)) -> TestGateway {
    let account = wechat_account(fake);
    TestGateway::spawn_with(move |config| {
        config.channels.wechat.push(account);
        config.channels.outbox.retry_base_ms = 20;
        config.channels.outbox.retry_max_ms = 100;
        change(config);
    })
    .await
}

async fn push_ok(gateway: &TestGateway, xml: &str, mode: Mode) {
    let response = wechat_push(gateway, "main", xml, mode, OPENID).await;
    assert_eq!((response.status, response.body.as_str()), (200, "success"));
}

/// Reads `delivery.updated` events of the agent until one has state `until`; returns all states seen.
async fn delivery_until(agent: &mut Agent, conversation: &str, until: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let event = agent
            .ws
            .recv_until(|f| {
                f["op"] == "event"
                    && f["d"]["conversation_id"] == conversation
                    && f["d"]["type"] == "delivery.updated"
            })
            .await["d"]
            .clone();
        let done = event["state"] == until;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn states(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap().to_owned(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn agent_events(gateway: &TestGateway, agent: &str, conversation: &str) -> Vec<Value> {
    let auth = format!("Bearer {}", gateway.agent_token(agent));
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
async fn a_wechat_customer_and_an_agent_hold_a_whole_conversation() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    push_ok(
        &gateway,
        &text_xml(OPENID, 24_300_000_000_000_001, "你好，我要查余额", now_secs()),
        Mode::Safe,
    )
    .await;
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "wechat_oa");
    assert_eq!(offer["d"]["preview"], "你好，我要查余额");
    let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    lin.accept(&conversation).await;
    let first = lin.next_message_in(&conversation).await;
    assert_eq!(first["message"]["content"]["text"], "你好，我要查余额");

    lin.say(&conversation, "a-1", "您好，请稍等").await;
    let delivery = delivery_until(&mut lin, &conversation, "sent").await;
    assert_eq!(
        states(&delivery),
        [("pending".to_owned(), 0), ("sent".to_owned(), 1)]
    );
    let sent = fake.sent().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["touser"], OPENID);
    assert_eq!(sent[0].body["msgtype"], "text");
    assert_eq!(sent[0].body["text"]["content"], "您好，请稍等");

    push_ok(
        &gateway,
        &image_xml(OPENID, 24_300_000_000_000_002, "MEDIA_1", now_secs()),
        Mode::Plain,
    )
    .await;
    let image = lin.next_message_in(&conversation).await;
    assert_eq!(image["message"]["content"]["type"], "media");
    assert_eq!(image["message"]["content"]["kind"], "image");
    assert_eq!(image["message"]["content"]["provider_ref"], "MEDIA_1");
    // The agent fetches the image from WeChat on demand, with its own token.
    let auth = format!("Bearer {}", gateway.agent_token("lin"));
    let media = |id: &'static str, auth: Option<String>| {
        let gateway = &gateway;
        async move {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
            http_request(
                gateway.public,
                "GET",
                &format!("/channels/wechat/main/media/{id}"),
                &headers,
                b"",
            )
            .await
        }
    };
    let fetched = media("MEDIA_1", Some(auth.clone())).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.header("content-type"), Some("image/jpeg"));
    assert_eq!(
        fetched.body.as_bytes(),
        String::from_utf8_lossy(FAKE_JPEG).as_bytes()
    );
    assert_eq!(media("MEDIA_1", None).await.status, 401);
    assert_eq!(media("EXPIRED", Some(auth)).await.status, 404);

    let events = agent_events(&gateway, "lin", &conversation).await;
    let received: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "channel.received")
        .collect();
    assert_eq!(received.len(), 2, "each inbound message keeps its raw payload");
    assert!(
        received[0]["raw"].as_str().unwrap().contains("你好，我要查余额"),
        "the decrypted payload is kept for audit"
    );
    assert_eq!(received[0]["from"]["value"], OPENID);
    lin.request(
        "conversation.close",
        serde_json::json!({"conversation_id": conversation, "disposition": "resolved"}),
    )
    .await;
    lin.ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.closed")
        .await;
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

/// Fails when an offer reaches the agent within a short quiet period.
async fn assert_no_offer(agent: &mut Agent) {
    while let Some(frame) = agent.ws.quiet_for(Duration::from_millis(300)).await {
        assert_ne!(
            frame["op"], "offer",
            "nothing refused or repeated may be routed: {frame}"
        );
    }
}

#[tokio::test]
async fn the_same_wechat_message_delivered_four_times_is_one_message() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let xml = text_xml(OPENID, 24_300_000_000_000_042, "retry me", now_secs());
    let deliveries = (0..4).map(|_| wechat_push(&gateway, "main", &xml, Mode::Safe, OPENID));
    for response in futures_util::future::join_all(deliveries).await {
        assert_eq!((response.status, response.body.as_str()), (200, "success"));
    }
    let conversation = lin.take_next().await;
    let events = agent_events(&gateway, "lin", &conversation).await;
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("message.created"), 1, "{events:?}");
    assert_eq!(count("channel.received"), 1);
    assert_eq!(count("conversation.created"), 1);
    assert_no_offer(&mut lin).await;
}

#[tokio::test]
async fn provider_outage_is_retried_and_an_expired_token_is_refreshed_once() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    push_ok(&gateway, &text_xml(OPENID, 1, "hello", now_secs()), Mode::Plain).await;
    let conversation = lin.take_next().await;

    fake.script([SendScript::Status(500), SendScript::Status(502)])
        .await;
    lin.say(&conversation, "a-1", "first").await;
    let delivery = delivery_until(&mut lin, &conversation, "sent").await;
    assert_eq!(
        states(&delivery),
        [
            ("pending".to_owned(), 0),
            ("retrying".to_owned(), 1),
            ("retrying".to_owned(), 2),
            ("sent".to_owned(), 3)
        ]
    );
    assert_eq!(delivery[1]["reason"], "provider_unavailable");
    assert_eq!(fake.sent().await.len(), 1);
    assert_eq!(fake.token_requests().await.len(), 1);

    fake.expire_token().await;
    lin.say(&conversation, "a-2", "second").await;
    let delivery = delivery_until(&mut lin, &conversation, "sent").await;
    assert_eq!(
        states(&delivery),
        [("pending".to_owned(), 0), ("sent".to_owned(), 1)]
    );
    let sent = fake.sent().await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].body["text"]["content"], "second");
    assert_ne!(
        sent[1].access_token, sent[0].access_token,
        "sent with the refreshed token"
    );
    assert_eq!(fake.token_requests().await.len(), 2, "refreshed exactly once");
    assert_eq!(fake.send_attempts().await, 5);
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_closed_window_and_a_used_up_quota_reach_the_agent_as_dead_letters() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |config| config.channels.wechat[0].message_quota = 1).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    push_ok(&gateway, &text_xml(OPENID, 1, "hello", now_secs()), Mode::Plain).await;
    let conversation = lin.take_next().await;

    lin.say(&conversation, "a-1", "one").await;
    delivery_until(&mut lin, &conversation, "sent").await;
    lin.say(&conversation, "a-2", "two").await;
    let failed = delivery_until(&mut lin, &conversation, "failed").await;
    let last = failed.last().unwrap();
    assert_eq!(last["reason"], "quota_exhausted");
    assert!(last["detail"].as_str().unwrap().contains("quota"), "{last}");
    assert_eq!(
        fake.send_attempts().await,
        1,
        "a send the window forbids never reaches WeChat"
    );

    // The customer writes again: a fresh window; WeChat itself now says the window is closed (45015).
    push_ok(
        &gateway,
        &text_xml(OPENID, 2, "still there?", now_secs()),
        Mode::Plain,
    )
    .await;
    lin.next_message_in(&conversation).await;
    fake.script([SendScript::Errcode(45015)]).await;
    lin.say(&conversation, "a-3", "yes").await;
    let failed = delivery_until(&mut lin, &conversation, "failed").await;
    let last = failed.last().unwrap();
    assert_eq!(last["reason"], "window_closed");
    assert_eq!(last["attempt"], 1, "a permanent refusal is not retried");
    assert!(last["detail"].as_str().unwrap().contains("45015"), "{last}");
    lin.say(&conversation, "a-4", "hello?").await;
    let failed = delivery_until(&mut lin, &conversation, "failed").await;
    assert_eq!(failed.last().unwrap()["reason"], "window_closed");
    assert_eq!(fake.send_attempts().await, 2);
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_wechat_requests_are_refused_without_processing() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    let sig = signature::signature(WECHAT_TOKEN, "1700000000", "n0nce");
    let check = format!(
        "/channels/wechat/main?signature={sig}&timestamp=1700000000&nonce=n0nce&echostr=4375120948345356249"
    );
    let ok = http_request(gateway.public, "GET", &check, &[], b"").await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "4375120948345356249"));
    let forged = check.replace("nonce=n0nce", "nonce=n0nce2");
    assert_eq!(
        http_request(gateway.public, "GET", &forged, &[], b"")
            .await
            .status,
        403
    );
    let unknown = check.replace("/main?", "/other?");
    assert_eq!(
        http_request(gateway.public, "GET", &unknown, &[], b"")
            .await
            .status,
        404
    );

    let xml = text_xml(OPENID, 7, "hi", now_secs());
    let (query, body) = signed_push(&xml, Mode::Plain, 1_700_000_000, "n0nce", OPENID);
    let post = |q: String, b: Vec<u8>| async move {
        http_request(
            gateway.public,
            "POST",
            &format!("/channels/wechat/main?{q}"),
            &[],
            &b,
        )
        .await
        .status
    };
    assert_eq!(
        post(query.replace("n0nce", "other"), body.clone().into_bytes()).await,
        403
    );
    assert_eq!(post(query.clone(), b"<xml><unclosed>".to_vec()).await, 400);
    let xxe = r#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>"#;
    assert_eq!(post(query.clone(), xxe.as_bytes().to_vec()).await, 400);
    assert_eq!(post(query.clone(), vec![b'a'; 70 * 1024]).await, 413);
    let (safe_query, safe_body) = signed_push(&xml, Mode::Safe, 1_700_000_000, "n0nce", OPENID);
    let tampered = safe_body.replacen("<![CDATA[", "<![CDATA[A", 2);
    assert_eq!(post(safe_query, tampered.into_bytes()).await, 403);
    let foreign = xml.replace(WECHAT_ORIGINAL_ID, "gh_someone_else");
    let (q, b) = signed_push(&foreign, Mode::Plain, 1_700_000_000, "n0nce", OPENID);
    assert_eq!(post(q, b.into_bytes()).await, 403);

    assert_no_offer(&mut lin).await;
}

#[tokio::test]
async fn after_an_unsubscribe_a_reply_is_dead_lettered_without_calling_wechat() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    push_ok(&gateway, &text_xml(OPENID, 1, "bye", now_secs()), Mode::Plain).await;
    let conversation = lin.take_next().await;
    assert_eq!(
        lin.next_message_in(&conversation).await["message"]["content"]["text"],
        "bye"
    );
    let unsubscribe = format!(
        "<xml><ToUserName><![CDATA[{WECHAT_ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>",
        now_secs()
    );
    push_ok(&gateway, &unsubscribe, Mode::Safe).await;
    let event = lin.next_message_in(&conversation).await;
    assert_eq!(
        event["message"]["content"],
        serde_json::json!({"type": "event", "name": "unsubscribe", "detail": ""})
    );
    lin.say(&conversation, "a-1", "are you there?").await;
    let failed = delivery_until(&mut lin, &conversation, "failed").await;
    assert_eq!(failed.last().unwrap()["reason"], "window_closed");
    assert_eq!(fake.send_attempts().await, 0);
}

#[tokio::test]
async fn a_waiting_wechat_customer_is_messaged_its_place_in_the_queue() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |config| {
        config.routing.position_message_thresholds = vec![5, 1];
        config.routing.position_message = "您前面还有 {position} 位, about {minutes} min".to_owned();
    })
    .await;
    // No agent is online: the conversation waits at position 1.
    push_ok(&gateway, &text_xml(OPENID, 77, "有人吗", now_secs()), Mode::Plain).await;
    omnigate_tests::assert_eventually!(fake.sent().await.len() == 1, "no position message was sent");
    let sent = fake.sent().await;
    assert_eq!(sent[0].body["touser"], OPENID);
    assert_eq!(
        sent[0].body["text"]["content"],
        "您前面还有 1 位, about a few min"
    );
    assert!(
        fake.violations().await.is_empty(),
        "{:?}",
        fake.violations().await
    );
}

#[tokio::test]
async fn an_outbox_job_retrying_against_a_failing_provider_survives_a_restart_and_is_delivered_once() {
    // Issue 4 item 7: nothing acknowledged to the agent is dropped, not even by a restart.
    use omnigate_connectors::model::ConversationId;
    use omnigate_gateway::store::{ContextStore, EventKind, RedisSettings, RedisStore, View};
    use omnigate_tests::{assert_eventually, RedisServer};

    let redis = RedisServer::start().await;
    let prefix = TestGateway::fresh_prefix();
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let spawn = |retry_base_ms: u64| {
        let account = wechat_account(&fake);
        TestGateway::spawn_with_redis_prefix(&redis, &prefix, move |config| {
            config.channels.wechat.push(account);
            config.channels.outbox.retry_base_ms = retry_base_ms;
            config.channels.outbox.retry_max_ms = retry_base_ms.max(100);
        })
    };
    // The first retry would wait a minute: the restart comes before it.
    let first = spawn(60_000).await;
    let mut lin = Agent::online(&first, "lin").await;
    push_ok(&first, &text_xml(OPENID, 1, "hello", now_secs()), Mode::Plain).await;
    let conversation = lin.take_next().await;
    fake.script([SendScript::Status(500)]).await;
    lin.say(&conversation, "a-1", "kept across a restart").await;
    let delivery = delivery_until(&mut lin, &conversation, "retrying").await;
    assert_eq!(
        states(&delivery),
        [("pending".to_owned(), 0), ("retrying".to_owned(), 1)]
    );
    let held = || redis.command(&format!("HLEN {prefix}held:outbox"));
    assert_eq!(held(), ":1\r\n", "the job is kept while it waits");
    first.stop().await;
    assert_eq!(fake.sent().await.len(), 0);

    let second = spawn(20).await;
    assert_eventually!(
        fake.sent().await.len() == 1,
        "the resumed job is delivered once the provider answers"
    );
    let sent = fake.sent().await;
    assert_eq!(sent[0].body["touser"], OPENID);
    assert_eq!(sent[0].body["text"]["content"], "kept across a restart");
    assert_eventually!(held() == ":0\r\n", "the delivered job is released");
    // The log shows the resumed attempt count: the restart did not start the job over.
    let store = RedisStore::connect(RedisSettings {
        url: redis.url(),
        key_prefix: prefix.clone(),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        conversation_ttl_secs: 3600,
        identity_ttl_secs: 0,
        retention: Default::default(),
    })
    .await
    .expect("store");
    let id = ConversationId::parse(&conversation).unwrap();
    let mut logged: Vec<(String, u32)>;
    assert_eventually!(
        {
            let page = store.events_after(&id, View::Agent, 0, 200).await.unwrap();
            logged = page
                .events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::DeliveryUpdated { state, attempt, .. } => Some((state.clone(), *attempt)),
                    _ => None,
                })
                .collect();
            logged.last().is_some_and(|(state, _)| state == "sent")
        },
        "the sent state is logged"
    );
    assert_eq!(
        logged,
        [
            ("pending".to_owned(), 0),
            ("retrying".to_owned(), 1),
            ("sent".to_owned(), 2)
        ]
    );
    second.stop().await;
    assert_eq!(fake.sent().await.len(), 1, "exactly once");
    assert_eq!(fake.send_attempts().await, 2);
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

/// Sends a `message.send` with these `d` fields and waits for its ack.
async fn send_media(agent: &mut Agent, d: Value) {
    let reference = agent.ws.send_op("message.send", d).await;
    let ack = agent.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
    assert_eq!(ack["op"], "message.ack", "{ack}");
}

#[tokio::test]
async fn an_agent_uploads_an_image_and_the_wechat_customer_gets_it_as_temporary_material() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let gateway = gateway(&fake, |config| config.channels.media_max_bytes = 1024).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    push_ok(
        &gateway,
        &text_xml(OPENID, 1, "can you send the form?", now_secs()),
        Mode::Plain,
    )
    .await;
    let conversation = lin.take_next().await;

    let auth = format!("Bearer {}", gateway.agent_token("lin"));
    let upload = |content_type: &'static str, body: Vec<u8>, auth: Option<String>| async move {
        let mut headers = vec![("content-type", content_type)];
        let auth = auth.unwrap_or_default();
        if !auth.is_empty() {
            headers.push(("authorization", auth.as_str()));
        }
        http_request(gateway.public, "POST", "/agent/v1/media", &headers, &body).await
    };
    let image = [FAKE_JPEG, &[7u8; 100][..]].concat();
    assert_eq!(upload("image/jpeg", image.clone(), None).await.status, 401);
    let customer_token = "Bearer not-an-agent".to_owned();
    assert_eq!(
        upload("image/jpeg", image.clone(), Some(customer_token))
            .await
            .status,
        401
    );
    assert_eq!(
        upload("text/plain", b"hello".to_vec(), Some(auth.clone()))
            .await
            .status,
        415
    );
    assert_eq!(
        upload("image/png", image.clone(), Some(auth.clone()))
            .await
            .status,
        415,
        "the bytes are a JPEG, not a PNG"
    );
    let too_big = [FAKE_JPEG, &[0u8; 1024][..]].concat();
    assert_eq!(
        upload("image/jpeg", too_big, Some(auth.clone())).await.status,
        413
    );
    let response = upload("image/jpeg", image.clone(), Some(auth.clone())).await;
    assert_eq!(response.status, 201, "{}", response.body);
    let uploaded = response.json();
    assert_eq!(uploaded["content_type"], "image/jpeg");
    assert_eq!(uploaded["size"], image.len());
    let upload_id = uploaded["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(
        fake.upload_attempts().await,
        0,
        "nothing reaches WeChat before a send"
    );

    // A token that expired meanwhile: the upload is refused with 42001, the token refreshed once, the upload
    // and the send go through.
    lin.say(&conversation, "a-1", "here it comes").await;
    delivery_until(&mut lin, &conversation, "sent").await;
    fake.expire_token().await;
    let send_image = |client_msg_id: &str| {
        serde_json::json!({
            "conversation_id": conversation,
            "client_msg_id": client_msg_id,
            "content": {"type": "media", "kind": "image", "provider_ref": upload_id},
        })
    };
    send_media(&mut lin, send_image("img-1")).await;
    let delivery = delivery_until(&mut lin, &conversation, "sent").await;
    assert_eq!(
        states(&delivery),
        [("pending".to_owned(), 0), ("sent".to_owned(), 1)]
    );
    let uploads = fake.uploads().await;
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].bytes, image,
        "the multipart part carries the agent's bytes"
    );
    assert_eq!(uploads[0].content_type, "image/jpeg");
    assert!(uploads[0].file_name.ends_with(".jpg"), "{}", uploads[0].file_name);
    let sent = fake.sent().await;
    let last = &sent.last().unwrap().body;
    assert_eq!(
        (last["msgtype"].as_str(), last["touser"].as_str()),
        (Some("image"), Some(OPENID))
    );
    assert_eq!(last["image"]["media_id"], uploads[0].media_id.as_str());
    assert_eq!(fake.upload_attempts().await, 2, "refused once, then accepted");
    assert_eq!(fake.token_requests().await.len(), 2, "refreshed exactly once");

    // The same image again: its media_id is cached for the material's 3 days, nothing is uploaded again.
    send_media(&mut lin, send_image("img-2")).await;
    delivery_until(&mut lin, &conversation, "sent").await;
    assert_eq!(fake.upload_attempts().await, 2);
    let sent = fake.sent().await;
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2].body["image"]["media_id"], uploads[0].media_id.as_str());

    // An upload id the gateway never issued is a dead letter the agent can act on.
    let mut unknown = send_image("img-3");
    unknown["content"]["provider_ref"] = serde_json::json!("up_0000");
    send_media(&mut lin, unknown).await;
    let delivery = delivery_until(&mut lin, &conversation, "failed").await;
    assert_eq!(delivery.last().unwrap()["reason"], "content_rejected");
    assert_eq!(fake.violations().await, Vec::<String>::new());
}

#[tokio::test]
async fn on_redis_two_users_pushing_at_once_into_open_conversations_are_stored_once_each_with_their_records()
{
    // A provider's message to a conversation the bus holds is pipelined like a websocket send: its message
    // and its `channel.received` record are appended by one item, while other conversations' appends are
    // in flight. Two users push at once, each retrying one push; every message is answered `success`,
    // stored once with its record, in order, and reaches the agent once.
    use omnigate_tests::RedisServer;

    const OTHER: &str = "oGw_user_openid_000000000002";
    const MESSAGES: u64 = 5;
    let redis = RedisServer::start().await;
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let account = wechat_account(&fake);
    let gateway = TestGateway::spawn_with_redis(&redis, move |config| {
        config.channels.wechat.push(account);
    })
    .await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let users = [(OPENID, 24_300_000_000_000_100), (OTHER, 24_300_000_000_000_200)];
    let mut conversations = Vec::new();
    for (openid, first_id) in users {
        let response = wechat_push(
            &gateway,
            "main",
            &text_xml(openid, first_id, "hello", now_secs()),
            Mode::Safe,
            openid,
        )
        .await;
        assert_eq!((response.status, response.body.as_str()), (200, "success"));
        let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
        let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
        lin.accept(&conversation).await;
        lin.next_message_in(&conversation).await;
        conversations.push(conversation);
    }

    let user_pushes = |openid: &'static str, first_id: u64| {
        let gateway = &gateway;
        async move {
            for n in 1..=MESSAGES {
                let xml = text_xml(openid, first_id + n, &format!("{openid} {n}"), now_secs());
                // The third is pushed twice, as WeChat does when an answer is late.
                for _ in 0..if n == 3 { 2 } else { 1 } {
                    let response = wechat_push(gateway, "main", &xml, Mode::Safe, openid).await;
                    assert_eq!((response.status, response.body.as_str()), (200, "success"));
                }
            }
        }
    };
    tokio::join!(
        user_pushes(users[0].0, users[0].1),
        user_pushes(users[1].0, users[1].1)
    );

    for (conversation, (openid, _)) in conversations.iter().zip(users) {
        for n in 1..=MESSAGES {
            let delivered = lin.next_message_in(conversation).await;
            assert_eq!(delivered["message"]["content"]["text"], format!("{openid} {n}"));
        }
        let events = agent_events(&gateway, "lin", conversation).await;
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
        let texts: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "message.created")
            .map(|e| e["message"]["content"]["text"].as_str().unwrap_or_default())
            .collect();
        let mut expected = vec!["hello".to_owned()];
        expected.extend((1..=MESSAGES).map(|n| format!("{openid} {n}")));
        assert_eq!(texts, expected, "each message once, in order");
        let records = events.iter().filter(|e| e["type"] == "channel.received").count();
        assert_eq!(records, expected.len(), "each message with its record");
    }
}
