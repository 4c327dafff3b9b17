//! One customer across channels (issue 5): verified identities merge customers, an agent links and unlinks
//! identities with a reason, a call during an open chat is linked to it and offered to the chat's agent,
//! the agent who accepts sees the customer's other conversations, and an admin erases the customer.

use std::time::{SystemTime, UNIX_EPOCH};

use omnigate_tests::RedisServer;
use omnigate_tests::{
    cti_event, http_request, post_cti_event, text_xml, wechat_account, wechat_push, Agent, Customer,
    FakeCtiReceiver, FakeWechat, HttpResponse, Mode, TestGateway, CTI_SECRET, WECHAT_APPID, WECHAT_SECRET,
};
use serde_json::{json, Value};

/// `auth.admin_token` of the demo configuration.
const ADMIN_TOKEN: &str = "demo-only-admin-token-change-me-0123456789";
const CALLER: &str = "+8613800138000";

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn gateway_with_cti(receiver: &FakeCtiReceiver) -> TestGateway {
    let cti = receiver.config();
    TestGateway::spawn_with(move |config| config.channels.cti = Some(cti)).await
}

async fn cti_send(gateway: &TestGateway, call: &str, id: &str, kind: &str, seq: u64, fields: &str) {
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

async fn admin(gateway: &TestGateway, method: &str, path: &str, token: &str, body: &[u8]) -> HttpResponse {
    let auth = format!("Bearer {token}");
    http_request(
        gateway.admin,
        method,
        path,
        &[
            ("authorization", auth.as_str()),
            ("x-omnigate-actor", "dpo-alice"),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

async fn customer_events(gateway: &TestGateway, token: &str, conversation: &str) -> HttpResponse {
    let auth = format!("Bearer {token}");
    http_request(
        gateway.public,
        "GET",
        &format!("/chat/v1/conversations/{conversation}/events"),
        &[("authorization", auth.as_str())],
        b"",
    )
    .await
}

fn history_actions(d: &Value) -> Vec<(String, String)> {
    d["history"]
        .as_array()
        .or_else(|| d["link_history"].as_array())
        .expect("a link history")
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["change"]["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_call_during_a_chat_is_linked_offered_to_the_chat_agent_and_erasure_removes_the_customer() {
    let receiver = FakeCtiReceiver::start().await;
    let gateway = gateway_with_cti(&receiver).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    // A web chat; lin takes it and sees the customer's (so far only) conversation.
    let mut customer = Customer::start(&gateway).await;
    let chat = customer
        .say(None, "c-1", "my card was swallowed by the ATM")
        .await["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    assert_eq!(lin.next_offer().await, chat);
    lin.accept(&chat).await;
    let context = lin.ws.recv_until(|f| f["op"] == "customer.context").await["d"].clone();
    assert_eq!(context["conversation_id"], chat.as_str());
    assert_eq!(context["conversations"][0]["conversation_id"], chat.as_str());
    let customer_id = context["customer_id"].as_str().expect("customer id").to_owned();

    // The customer gives their number: lin links it, with a reason; a link needs one.
    let phone = json!({"kind": "phone", "value": CALLER});
    let missing = lin
        .request_error(
            "customer.link",
            json!({"conversation_id": chat, "identity": phone}),
        )
        .await;
    assert_eq!(missing, "invalid_frame");
    let linked = lin
        .request(
            "customer.link",
            json!({"conversation_id": chat, "identity": phone, "reason": "customer stated the number in chat"}),
        )
        .await;
    assert_eq!(linked["customer_id"], customer_id.as_str());
    assert!(
        linked["identities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["value"] == CALLER),
        "{linked}"
    );
    assert_eq!(
        history_actions(&linked).last(),
        Some(&(
            "linked".to_owned(),
            "customer stated the number in chat".to_owned()
        ))
    );

    // Chen comes online and is idle; the customer calls while the chat is open: the call is linked to the
    // chat and offered to lin first.
    let mut chen = Agent::online(&gateway, "chen").await;
    cti_send(
        &gateway,
        "call_1",
        "e1",
        "call.offered",
        1,
        &format!(r#"{{"direction":"inbound","from":"{CALLER}","to":"+864000000000"}}"#),
    )
    .await;
    cti_send(
        &gateway,
        "call_1",
        "e2",
        "call.queued",
        2,
        r#"{"queue":"general"}"#,
    )
    .await;
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "voice");
    assert_eq!(
        offer["d"]["customer_id"],
        customer_id.as_str(),
        "the caller's number resolves to the chat's customer"
    );
    assert_eq!(offer["d"]["linked_conversation_id"], chat.as_str());
    let call = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    assert!(
        chen.ws
            .quiet_for(std::time::Duration::from_millis(200))
            .await
            .is_none_or(|f| f["op"] != "offer"),
        "chen is not offered the call"
    );
    let linked_event = lin
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "conversation.linked")
        .await;
    assert_eq!(
        linked_event["d"]["conversation_id"],
        chat.as_str(),
        "the chat's log records the link"
    );
    assert_eq!(linked_event["d"]["linked_conversation_id"], call.as_str());
    assert_eq!(linked_event["d"]["channel"], "voice");

    // Accepting the call brings the chat with its messages.
    lin.accept(&call).await;
    let context = lin.ws.recv_until(|f| f["op"] == "customer.context").await["d"].clone();
    let conversations = context["conversations"].as_array().expect("conversations");
    assert_eq!(conversations.len(), 2, "{context}");
    assert_eq!(conversations[0]["conversation_id"], call.as_str(), "newest first");
    assert_eq!(conversations[1]["conversation_id"], chat.as_str());
    assert_eq!(conversations[1]["channel"], "web");
    assert_eq!(
        conversations[1]["messages"][0]["message"]["content"]["text"],
        "my card was swallowed by the ATM"
    );

    // The number was wrong after all: unlinked, with a reason, and it shows in the history.
    let unlinked = lin
        .request(
            "customer.unlink",
            json!({"conversation_id": call, "identity": phone, "reason": "caller is the customer's spouse"}),
        )
        .await;
    assert_ne!(unlinked["unlinked_to"], customer_id.as_str());
    assert!(unlinked["identities"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["value"] != CALLER));
    let shown = admin(
        &gateway,
        "GET",
        &format!("/admin/v1/customers/{customer_id}"),
        ADMIN_TOKEN,
        b"",
    )
    .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(
        history_actions(&shown.json()),
        vec![
            (
                "linked".to_owned(),
                "customer stated the number in chat".to_owned()
            ),
            (
                "unlinked".to_owned(),
                "caller is the customer's spouse".to_owned()
            ),
        ]
    );
    assert_eq!(shown.json()["conversations"].as_array().map(Vec::len), Some(2));

    // Erasure: a bad token and a missing reason are refused; then everything goes, and the audit says so.
    let refused = admin(
        &gateway,
        "DELETE",
        &format!("/admin/v1/customers/{customer_id}"),
        "wrong",
        br#"{"reason":"x"}"#,
    )
    .await;
    assert_eq!(refused.status, 401);
    let no_reason = admin(
        &gateway,
        "DELETE",
        &format!("/admin/v1/customers/{customer_id}"),
        ADMIN_TOKEN,
        b"{}",
    )
    .await;
    assert_eq!(no_reason.status, 400, "{}", no_reason.body);
    assert_eq!(
        customer_events(&gateway, &customer.token, &chat).await.status,
        200
    );
    let erased = admin(
        &gateway,
        "DELETE",
        &format!("/admin/v1/customers/{customer_id}"),
        ADMIN_TOKEN,
        br#"{"reason":"erasure request #42"}"#,
    )
    .await;
    assert_eq!(erased.status, 200, "{}", erased.body);
    let entry = erased.json();
    assert_eq!(entry["actor"], "admin:dpo-alice");
    assert_eq!(entry["counts"]["conversations"], 2);
    assert_eq!(
        entry["counts"]["identities"], 1,
        "the web visitor id (the phone was unlinked)"
    );
    assert!(entry["counts"]["events"].as_u64().unwrap() >= 6, "{entry}");
    assert_eq!(
        customer.ws.expect_close().await,
        4010,
        "the customer's socket is closed"
    );
    lin.ws
        .recv_until(|f| f["op"] == "conversation.unassigned" && f["d"]["conversation_id"] == call.as_str())
        .await;

    assert_eq!(
        customer_events(&gateway, &customer.token, &chat).await.status,
        404
    );
    let gone = admin(
        &gateway,
        "GET",
        &format!("/admin/v1/customers/{customer_id}"),
        ADMIN_TOKEN,
        b"",
    )
    .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    let again = admin(
        &gateway,
        "DELETE",
        &format!("/admin/v1/customers/{customer_id}"),
        ADMIN_TOKEN,
        br#"{"reason":"again"}"#,
    )
    .await;
    assert_eq!(again.status, 404);
    let audit = admin(&gateway, "GET", "/admin/v1/audit", ADMIN_TOKEN, b"").await;
    assert_eq!(audit.status, 200);
    let entries = audit.json()["entries"].as_array().cloned().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["customer"], customer_id.as_str());
    assert_eq!(entries[0]["reason"], "erasure request #42");
    assert!(
        !audit.body.contains("swallowed"),
        "the audit never holds erased content"
    );
}

fn with_union_id(xml: &str, union_id: &str) -> String {
    xml.replace(
        "</xml>",
        &format!("<UnionId><![CDATA[{union_id}]]></UnionId></xml>"),
    )
}

#[tokio::test]
async fn an_open_id_seen_with_a_known_union_id_merges_its_customer_into_the_union_ids() {
    let fake = FakeWechat::start(WECHAT_APPID, WECHAT_SECRET).await;
    let account = wechat_account(&fake);
    let gateway = TestGateway::spawn_with(move |config| config.channels.wechat.push(account)).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let (open_a, open_b, union) = (
        "oA_customer_openid_0001",
        "oB_customer_openid_0002",
        "oU_customer_union_0001",
    );
    let push = |xml: String, openid: &'static str| {
        let gateway = &gateway;
        async move {
            let response = wechat_push(gateway, "main", &xml, Mode::Plain, openid).await;
            assert_eq!((response.status, response.body.as_str()), (200, "success"));
        }
    };

    push(
        with_union_id(&text_xml(open_a, 1, "first", now_secs()), union),
        open_a,
    )
    .await;
    let first = lin.ws.recv_until(|f| f["op"] == "offer").await["d"].clone();
    let survivor = first["customer_id"].as_str().unwrap().to_owned();
    push(text_xml(open_b, 2, "second", now_secs()), open_b).await;
    let second = lin.ws.recv_until(|f| f["op"] == "offer").await["d"].clone();
    let merged = second["customer_id"].as_str().unwrap().to_owned();
    assert_ne!(survivor, merged, "an OpenID alone proves nothing about another");

    // The second OpenID arrives with the same UnionID: one customer now, the merged id redirecting.
    push(
        with_union_id(&text_xml(open_b, 3, "third", now_secs()), union),
        open_b,
    )
    .await;
    let shown = admin(
        &gateway,
        "GET",
        &format!("/admin/v1/customers/{merged}"),
        ADMIN_TOKEN,
        b"",
    )
    .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let d = shown.json();
    assert_eq!(d["customer_id"], survivor.as_str());
    let mut identities: Vec<(String, String, bool)> = d["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["value"].as_str().unwrap().to_owned(),
                i["verified"].as_bool().unwrap(),
            )
        })
        .collect();
    identities.sort();
    assert_eq!(
        identities,
        vec![
            ("wechat_open_id".to_owned(), open_a.to_owned(), true),
            ("wechat_open_id".to_owned(), open_b.to_owned(), true),
            ("wechat_union_id".to_owned(), union.to_owned(), true),
        ]
    );
    let conversations: Vec<&str> = d["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        conversations.len(),
        2,
        "both customers' conversations: {conversations:?}"
    );
    assert!(history_actions(&d)
        .iter()
        .any(|(action, _)| action == "merged_from"));
}

#[tokio::test]
async fn erasure_on_redis_leaves_nothing_of_the_customer_but_the_audit_entry() {
    let redis = RedisServer::start().await;
    let gateway = TestGateway::spawn_with_redis(&redis, |_| {}).await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let chat = customer.say(None, "c-1", "please forget me").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    lin.take_next().await;
    let context = lin.ws.recv_until(|f| f["op"] == "customer.context").await["d"].clone();
    let customer_id = context["customer_id"].as_str().unwrap().to_owned();
    assert_eq!(
        context["conversations"][0]["messages"][0]["message"]["content"]["text"],
        "please forget me"
    );
    lin.request(
        "customer.link",
        json!({"conversation_id": chat, "identity": {"kind": "phone", "value": CALLER}, "reason": "stated"}),
    )
    .await;
    lin.say(&chat, "a-1", "noted").await;

    let erased = admin(
        &gateway,
        "DELETE",
        &format!("/admin/v1/customers/{customer_id}"),
        ADMIN_TOKEN,
        br#"{"reason":"right to erasure"}"#,
    )
    .await;
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.json()["counts"]["conversations"], 1);
    assert_eq!(
        erased.json()["counts"]["identities"],
        2,
        "the web visitor id and the linked phone"
    );
    assert_eq!(erased.json()["counts"]["link_records"], 1);
    let keys = redis.command("KEYS *");
    let left: Vec<&str> = keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    assert!(
        left.iter()
            .all(|k| k.ends_with(":epoch") || k.ends_with(":audit")),
        "only the epoch and the audit log remain: {left:?}"
    );
    assert_eq!(
        customer_events(&gateway, &customer.token, &chat).await.status,
        404
    );
    let audit = admin(&gateway, "GET", "/admin/v1/audit?limit=5", ADMIN_TOKEN, b"").await;
    assert_eq!(audit.json()["entries"][0]["actor"], "admin:dpo-alice");
    assert_eq!(
        audit.json()["entries"][0]["counts"]["events"],
        erased.json()["counts"]["events"]
    );
}
