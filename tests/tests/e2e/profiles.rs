//! Customer profiles (issue 5, item 3): config rules and the signed CRM lookup fill them, they feed routing
//! (tier priority and skills, the relationship manager first) and the offer; retention TTLs (issue 5, item 7)
//! and the bus's eviction of closed conversations.

use std::collections::BTreeMap;
use std::time::Duration;

use omnigate_config::{Config, Crm, CustomerRule, TierPolicy, Widget};
use omnigate_gateway::bus::Held;
use omnigate_tests::{
    agents, http_request, Agent, CrmScript, Customer, FakeCrm, RedisServer, TestGateway, CRM_SECRET,
};
use serde_json::{json, Value};

/// A chat session from the widget `key`.
async fn customer_from(gateway: &TestGateway, key: &str) -> Customer {
    let body = json!({"widget_key": key}).to_string();
    let response = http_request(
        gateway.public,
        "POST",
        "/chat/v1/sessions",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let token = response.json()["token"].as_str().expect("token").to_owned();
    Customer::connect(gateway, &token, json!(null)).await
}

async fn opens(customer: &mut Customer, client_msg_id: &str) -> String {
    customer.say(None, client_msg_id, "hello").await["conversation_id"]
        .as_str()
        .expect("conversation_id")
        .to_owned()
}

async fn next_offer_frame(agent: &mut Agent) -> Value {
    agent.ws.recv_until(|f| f["op"] == "offer").await["d"].clone()
}

fn vip_tier(config: &mut Config, skills: Vec<String>) {
    config
        .customers
        .tiers
        .insert("vip".to_owned(), TierPolicy { priority: 5, skills });
}

fn with_crm(config: &mut Config, crm: &FakeCrm, timeout_ms: u64, cache_ttl_secs: u64) {
    config.customers.crm = Some(Crm {
        url: crm.url(),
        secret: CRM_SECRET.to_owned().into(),
        timeout_ms,
        cache_ttl_secs,
    });
}

async fn close(agent: &mut Agent, conversation: &str) {
    agent
        .request(
            "conversation.close",
            json!({"conversation_id": conversation, "disposition": "resolved"}),
        )
        .await;
}

#[tokio::test]
async fn a_rule_makes_a_vip_who_is_routed_ahead_of_earlier_standard_customers() {
    let gateway = TestGateway::spawn_with(|c| {
        c.agents = agents(1, 1);
        c.agents[0].skills.insert("vip".to_owned(), 3);
        c.webchat.widgets.push(Widget {
            key: "private-widget-key".to_owned(),
            name: "private banking site".to_owned(),
            queue: String::new(),
            attributes: BTreeMap::from([("segment".to_owned(), "vip".to_owned())]),
        });
        vip_tier(c, vec!["vip".to_owned()]);
        c.customers.rules.push(CustomerRule {
            attributes: BTreeMap::from([("segment".to_owned(), "vip".to_owned())]),
            tier: Some("vip".to_owned()),
            tags: vec!["premium".to_owned()],
            risk_flags: vec!["pep".to_owned()],
            ..CustomerRule::default()
        });
    })
    .await;
    let mut first = Customer::start(&gateway).await;
    let mut second = Customer::start(&gateway).await;
    let standard = opens(&mut first, "s-1").await;
    opens(&mut second, "s-2").await;
    let mut vip = customer_from(&gateway, "private-widget-key").await;
    let vip_conversation = opens(&mut vip, "v-1").await;

    let mut agent = Agent::online(&gateway, "agent-0").await;
    let offer = next_offer_frame(&mut agent).await;
    assert_eq!(offer["conversation_id"], vip_conversation.as_str(), "{offer}");
    assert_eq!(offer["customer_profile"]["tier"], "vip", "{offer}");
    assert_eq!(offer["customer_profile"]["tags"], json!(["premium"]));
    assert_eq!(offer["customer_profile"]["risk_flags"], json!(["pep"]));
    agent.accept(&vip_conversation).await;
    let assigned = agent.ws.recv_until(|f| f["op"] == "conversation.assigned").await;
    assert_eq!(assigned["d"]["customer_profile"]["risk_flags"], json!(["pep"]));
    close(&mut agent, &vip_conversation).await;
    let offer = next_offer_frame(&mut agent).await;
    assert_eq!(
        offer["conversation_id"],
        standard.as_str(),
        "then the earliest standard customer"
    );
    assert_eq!(offer["customer_profile"]["tier"], Value::Null);
}

#[tokio::test]
async fn a_signed_crm_answer_fills_the_offer_sends_the_customer_to_the_rm_and_is_cached() {
    let crm = FakeCrm::start(CrmScript::Answer(json!({
        "tier": "vip",
        "tags": ["mortgage"],
        "language": "en",
        "relationship_manager": "agent-1",
        "risk_flags": ["fraud_watch"],
        "crm_internal_field": 7,
    })))
    .await;
    let gateway = TestGateway::spawn_with(|c| {
        c.agents = agents(2, 2);
        vip_tier(c, Vec::new());
        with_crm(c, &crm, 2_000, 3_600);
    })
    .await;
    // agent-0 has waited longest; without the relationship manager it would be offered first.
    let mut other = Agent::online(&gateway, "agent-0").await;
    let mut rm = Agent::online(&gateway, "agent-1").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = opens(&mut customer, "m-1").await;

    let offer = next_offer_frame(&mut rm).await;
    assert_eq!(offer["conversation_id"], conversation.as_str());
    assert_eq!(
        offer["customer_profile"],
        json!({"tier": "vip", "tags": ["mortgage"], "language": "en", "relationship_manager": "agent-1", "risk_flags": ["fraud_watch"]})
    );
    assert!(
        other
            .ws
            .quiet_for(Duration::from_millis(300))
            .await
            .is_none_or(|f| f["op"] != "offer"),
        "the relationship manager is offered first"
    );
    let requests = crm.requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0]["identities"],
        json!([]),
        "a web visitor brings no identity yet"
    );
    assert!(crm.violations().await.is_empty(), "{:?}", crm.violations().await);

    // Reopened later: routed again with the cached answer, without asking the CRM.
    rm.accept(&conversation).await;
    close(&mut rm, &conversation).await;
    customer.say(Some(&conversation), "m-2", "one more thing").await;
    let again = next_offer_frame(&mut rm).await;
    assert_eq!(again["conversation_id"], conversation.as_str());
    assert_eq!(again["customer_profile"]["tier"], "vip");
    assert_eq!(crm.requests().await.len(), 1, "served from the cache");
}

#[tokio::test]
async fn a_hanging_or_failing_crm_delays_the_offer_by_at_most_its_timeout() {
    let crm = FakeCrm::start(CrmScript::Hang).await;
    let gateway = TestGateway::spawn_with(|c| {
        c.agents = agents(1, 3);
        vip_tier(c, Vec::new());
        // Cache nothing, so every routing asks the CRM.
        with_crm(c, &crm, 300, 0);
    })
    .await;
    let mut agent = Agent::online(&gateway, "agent-0").await;

    let mut hung = Customer::start(&gateway).await;
    let started = tokio::time::Instant::now();
    let conversation = opens(&mut hung, "h-1").await;
    let offer = next_offer_frame(&mut agent).await;
    assert_eq!(offer["conversation_id"], conversation.as_str());
    assert_eq!(offer["customer_profile"]["tier"], Value::Null);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "routed once the 300 ms timeout passed, after {waited:?}"
    );

    crm.set_script(CrmScript::Fail).await;
    let mut failed = Customer::start(&gateway).await;
    let conversation = opens(&mut failed, "f-1").await;
    let offer = next_offer_frame(&mut agent).await;
    assert_eq!(offer["conversation_id"], conversation.as_str());
    assert_eq!(offer["customer_profile"]["tier"], Value::Null);

    // A good answer is kept; when the CRM fails later, routing falls back to it.
    crm.set_script(CrmScript::Answer(json!({"tier": "vip"}))).await;
    let mut known = Customer::start(&gateway).await;
    let conversation = opens(&mut known, "k-1").await;
    let offer = next_offer_frame(&mut agent).await;
    assert_eq!(offer["customer_profile"]["tier"], "vip");
    agent.accept(&conversation).await;
    close(&mut agent, &conversation).await;
    crm.set_script(CrmScript::Fail).await;
    let asked = crm.requests().await.len();
    known.say(Some(&conversation), "k-2", "back again").await;
    let offer = next_offer_frame(&mut agent).await;
    assert_eq!(offer["conversation_id"], conversation.as_str());
    assert_eq!(offer["customer_profile"]["tier"], "vip", "the last good answer");
    assert_eq!(
        crm.requests().await.len(),
        asked + 1,
        "the CRM was asked and failed"
    );
    assert!(crm.violations().await.is_empty());
}

fn resp_lines(reply: &str) -> Vec<String> {
    reply
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_owned)
        .collect()
}

fn ttl(redis: &RedisServer, key: &str) -> i64 {
    redis
        .command(&format!("TTL {key}"))
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("integer reply")
}

#[tokio::test]
async fn on_redis_closing_sets_the_retention_ttls_and_reopening_clears_them() {
    let redis = RedisServer::start().await;
    let gateway = TestGateway::spawn_with_redis(&redis, |c| {
        c.agents = agents(1, 1);
        c.retention.closed_conversation_secs = 120;
        c.retention.idempotency_after_close_secs = 60;
    })
    .await;
    let mut agent = Agent::online(&gateway, "agent-0").await;
    let mut customer = Customer::start(&gateway).await;
    let conversation = opens(&mut customer, "r-1").await;
    agent.take_next().await;
    let keys = resp_lines(&redis.command(&format!("KEYS *conv:{{{conversation}}}:*")));
    let key = |part: &str| {
        keys.iter()
            .find(|k| k.ends_with(&format!(":{part}")))
            .unwrap_or_else(|| panic!("no {part} key in {keys:?}"))
            .clone()
    };
    let (log, cidx, idem, summary) = (key("log"), key("cidx"), key("idem"), key("summary"));
    let closed = log.replace(":log", ":closed");
    assert!(
        ttl(&redis, &log) > 120,
        "an open conversation lives conversation_ttl_secs"
    );

    close(&mut agent, &conversation).await;
    for k in [&log, &cidx, &summary, &closed] {
        let t = ttl(&redis, k);
        assert!(t > 60 && t <= 120, "{k}: TTL {t} after close");
    }
    let t = ttl(&redis, &idem);
    assert!(t > 0 && t <= 60, "idempotency keys: TTL {t} after close");

    // A watermark after close does not renew the retention TTL.
    customer
        .ws
        .send_op("read", json!({"conversation_id": conversation, "up_to_seq": 1}))
        .await;
    customer
        .ws
        .recv_until(|f| f["op"] == "event" && f["d"]["type"] == "read.updated")
        .await;
    assert!(ttl(&redis, &log) <= 120);

    customer.say(Some(&conversation), "r-2", "reopen please").await;
    for k in [&log, &cidx, &summary, &idem] {
        assert!(
            ttl(&redis, k) > 120,
            "{k} back on conversation_ttl_secs after reopen"
        );
    }
    assert_eq!(redis.command(&format!("EXISTS {closed}")), ":0\r\n");
}

async fn events_status(gateway: &TestGateway, customer: &Customer, conversation: &str) -> (u16, Value) {
    let response = http_request(
        gateway.public,
        "GET",
        &format!("/chat/v1/conversations/{conversation}/events?after_seq=0"),
        &[("authorization", &format!("Bearer {}", customer.token))],
        b"",
    )
    .await;
    let body = if response.status == 200 {
        response.json()
    } else {
        Value::Null
    };
    (response.status, body)
}

#[tokio::test]
async fn closed_conversations_leave_the_bus_after_their_window_and_the_memory_store_after_retention() {
    let gateway = TestGateway::spawn_with(|c| {
        c.agents = agents(1, 1);
        c.conversations.reopen_window_secs = 1;
        c.retention.closed_conversation_secs = 4;
        c.retention.idempotency_after_close_secs = 1;
        c.retention.sweep_interval_secs = 1;
    })
    .await;
    let mut agent = Agent::online(&gateway, "agent-0").await;
    let mut customers = Vec::new();
    for i in 0..5 {
        let mut customer = Customer::start(&gateway).await;
        let conversation = opens(&mut customer, &format!("e-{i}")).await;
        assert_eq!(agent.take_next().await, conversation);
        close(&mut agent, &conversation).await;
        customers.push((customer, conversation));
    }
    assert!(gateway.bus.held().await.unwrap().conversations >= 1);
    omnigate_tests::assert_eventually!(
        gateway.bus.held().await.unwrap().conversations == 0,
        "closed conversations are evicted after the reopen window: {:?}",
        gateway.bus.held().await
    );

    // Evicted, not forgotten: the log is read from the store, a message naming it is refused as closed,
    // and a new message starts a new conversation.
    let (customer, conversation) = &mut customers[0];
    let (status, page) = events_status(&gateway, customer, conversation).await;
    assert_eq!(status, 200);
    assert!(
        page["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "conversation.closed")),
        "{page}"
    );
    let send = json!({"conversation_id": conversation, "client_msg_id": "late", "content": {"type": "text", "text": "hello?"}});
    let reference = customer.ws.send_op("message.send", send).await;
    let refusal = customer.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
    assert_eq!(refusal["d"]["code"], "conversation_closed", "{refusal}");
    let fresh = opens(customer, "e-new").await;
    assert_ne!(fresh, *conversation);
    assert_eq!(agent.take_next().await, fresh);
    close(&mut agent, &fresh).await;

    // After `closed_conversation_secs` the embedded store's sweep removes the log and the summary.
    let (customer, conversation) = &customers[1];
    omnigate_tests::assert_eventually!(
        events_status(&gateway, customer, conversation).await.0 == 404,
        "the swept conversation is gone"
    );

    // Customers who left, with nothing held for them, leave memory too.
    for (customer, _) in customers {
        customer.ws.close().await;
    }
    omnigate_tests::assert_eventually!(
        gateway.bus.held().await.unwrap()
            == Held {
                conversations: 0,
                customers: 0
            },
        "nothing held once every conversation is closed and every customer gone: {:?}",
        gateway.bus.held().await
    );
}

#[tokio::test]
async fn a_caller_number_rule_and_the_crm_see_the_identity_of_a_call() {
    let receiver = omnigate_tests::FakeCtiReceiver::start().await;
    let crm = FakeCrm::start(CrmScript::Answer(json!({"tags": ["mortgage"]}))).await;
    let gateway = TestGateway::spawn_with(|c| {
        c.channels.cti = Some(receiver.config());
        vip_tier(c, Vec::new());
        c.customers.rules.push(CustomerRule {
            identity_kind: Some("phone".to_owned()),
            identity_prefix: Some("+8613800".to_owned()),
            tier: Some("vip".to_owned()),
            relationship_manager: Some("chen".to_owned()),
            ..CustomerRule::default()
        });
        with_crm(c, &crm, 2_000, 3_600);
    })
    .await;
    // lin has waited longest; chen is the caller's relationship manager.
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut chen = Agent::online(&gateway, "chen").await;
    for (id, kind, seq, fields) in [
        (
            "evt_1",
            "call.offered",
            1,
            r#"{"direction":"inbound","from":"+8613800138000","to":"+864000000000"}"#,
        ),
        ("evt_2", "call.queued", 2, r#"{"queue":"general"}"#),
    ] {
        let body = omnigate_tests::cti_event(id, kind, "call_rm", seq, fields);
        let response =
            omnigate_tests::post_cti_event(&gateway, id, &body, omnigate_tests::CTI_SECRET, None).await;
        assert_eq!(response.status / 100, 2, "{id}: {}", response.body);
    }
    let offer = next_offer_frame(&mut chen).await;
    assert_eq!(offer["channel"], "voice");
    assert_eq!(offer["customer_profile"]["tier"], "vip", "{offer}");
    assert_eq!(offer["customer_profile"]["relationship_manager"], "chen");
    assert_eq!(
        offer["customer_profile"]["tags"],
        json!(["mortgage"]),
        "the CRM's tags add to the rule's"
    );
    assert!(lin
        .ws
        .quiet_for(Duration::from_millis(300))
        .await
        .is_none_or(|f| f["op"] != "offer"));
    let requests = crm.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["identities"][0]["kind"], "phone");
    assert_eq!(requests[0]["identities"][0]["value"], "+8613800138000");
    assert!(crm.violations().await.is_empty());
}
