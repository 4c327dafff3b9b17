//! The issue 5 headline scenario: a verified app user writes in the app, then calls from the phone number
//! the bank vouched for. The call resolves to the same customer, is offered first to the agent who has the
//! app chat, and that agent sees the app conversation the moment the call is accepted.

use omnigate_tests::{
    app_config, app_session, cti_event, identity_claims, identity_token_hs256, post_cti_event, Agent,
    Customer, FakeCtiReceiver, TestGateway, APP_ID, APP_KEY, BANK_SECRET, CTI_SECRET,
};
use serde_json::{json, Value};

const PHONE: &str = "+8613912345678";

async fn gateway(receiver: &FakeCtiReceiver) -> TestGateway {
    let cti = receiver.config();
    TestGateway::spawn_with(move |config| {
        config.channels.app = vec![app_config()];
        config.channels.cti = Some(cti);
    })
    .await
}

async fn call_event(gateway: &TestGateway, id: &str, kind: &str, seq: u64, fields: &str) {
    let body = cti_event(id, kind, "call_x1", seq, fields);
    let response = post_cti_event(gateway, id, &body, CTI_SECRET, None).await;
    assert_eq!(response.status / 100, 2, "{id}: {}", response.body);
}

#[tokio::test]
async fn a_verified_app_user_who_calls_from_the_vouched_phone_reaches_the_app_chats_agent_with_its_history() {
    let receiver = FakeCtiReceiver::start().await;
    let gateway = gateway(&receiver).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    // The bank's backend signs the user id and the phone it has verified; the app opens a session.
    let identity = identity_token_hs256(
        &identity_claims("bank-user-77", json!({"phone": PHONE})),
        BANK_SECRET,
    );
    let session = app_session(&gateway, APP_ID, APP_KEY, &identity).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let session: Value = session.json();
    let customer_id = session["customer_id"].as_str().expect("customer id").to_owned();
    let token = session["token"].as_str().expect("token").to_owned();
    let mut app = Customer::connect(&gateway, &token, Value::Null).await;

    let chat = app
        .say(None, "a-1", "my card payment to the landlord was declined twice")
        .await["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    assert_eq!(lin.next_offer().await, chat);
    lin.accept(&chat).await;
    lin.ws.recv_until(|f| f["op"] == "customer.context").await;

    // Another agent is idle: without the link the router would pick them for the call.
    let mut chen = Agent::online(&gateway, "chen").await;

    // The customer calls from the vouched-for number (the caller number itself is unverified).
    call_event(
        &gateway,
        "x1",
        "call.offered",
        1,
        &format!(r#"{{"direction":"inbound","from":"{PHONE}","to":"+864000000000"}}"#),
    )
    .await;
    call_event(&gateway, "x2", "call.queued", 2, r#"{"queue":"general"}"#).await;

    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await["d"].clone();
    assert_eq!(offer["channel"], "voice");
    assert_eq!(
        offer["customer_id"],
        customer_id.as_str(),
        "the caller number resolves to the app user through the verified phone"
    );
    assert_eq!(offer["linked_conversation_id"], chat.as_str());
    let call = offer["conversation_id"].as_str().expect("call id").to_owned();
    assert!(
        chen.ws
            .quiet_for(std::time::Duration::from_millis(300))
            .await
            .is_none_or(|f| f["op"] != "offer"),
        "the idle agent is not offered the call first"
    );

    lin.accept(&call).await;
    let context = lin.ws.recv_until(|f| f["op"] == "customer.context").await["d"].clone();
    assert_eq!(context["customer_id"], customer_id.as_str());
    let conversations = context["conversations"].as_array().expect("conversations");
    let app_chat = conversations
        .iter()
        .find(|c| c["conversation_id"] == chat.as_str())
        .unwrap_or_else(|| panic!("the app chat is in the context: {context}"));
    assert_eq!(app_chat["channel"], "app");
    let texts: Vec<&str> = app_chat["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["message"]["content"]["text"].as_str())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("declined twice")),
        "the agent sees what the customer wrote in the app: {app_chat}"
    );
}
