//! Many customers and agents at once: every message reaches the right party once, in order.

use std::collections::BTreeMap;

use omnigate_tests::{Agent, Customer, TestGateway};
use serde_json::json;
use tokio::sync::watch;

const CONVERSATIONS: usize = 200;
const AGENTS: usize = 20;
const MESSAGES: usize = 5;

/// Accepts every offer and answers every customer message with `re: <text>`; returns what each conversation
/// delivered to it.
async fn agent_loop(mut agent: Agent, mut done: watch::Receiver<bool>) -> BTreeMap<String, Vec<String>> {
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let frame = tokio::select! {
            _ = done.changed() => return received,
            frame = agent.ws.next_frame() => match frame {
                Some(Ok(frame)) => frame,
                other => panic!("agent {} lost its socket: {other:?}", agent.id),
            },
        };
        match frame["op"].as_str() {
            Some("offer") => {
                let conversation = frame["d"]["conversation_id"].as_str().unwrap().to_owned();
                agent
                    .ws
                    .send_op("offer.accept", json!({"conversation_id": conversation}))
                    .await;
            }
            Some("event")
                if frame["d"]["type"] == "message.created" && frame["d"]["actor"]["type"] == "customer" =>
            {
                let conversation = frame["d"]["conversation_id"].as_str().unwrap().to_owned();
                let text = frame["d"]["message"]["content"]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                received
                    .entry(conversation.clone())
                    .or_default()
                    .push(text.clone());
                let d = json!({"conversation_id": conversation, "client_msg_id": format!("re-{text}"), "content": {"type": "text", "text": format!("re: {text}")}});
                agent.ws.send_op("message.send", d).await;
            }
            Some("error") => panic!("agent {} got an error: {frame}", agent.id),
            _ => {}
        }
    }
}

async fn customer_run(gateway: &TestGateway, index: usize) -> (String, Vec<String>, Vec<String>) {
    let mut customer = Customer::start(gateway).await;
    let sent: Vec<String> = (0..MESSAGES).map(|m| format!("c{index}-m{m}")).collect();
    let conversation = customer.say(None, &sent[0], &sent[0]).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for text in &sent[1..] {
        customer.say(Some(&conversation), text, text).await;
    }
    let mut replies = Vec::new();
    let mut last_seq = 0;
    while replies.len() < MESSAGES {
        let event = customer.next_event().await;
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "customer {index} saw a gap or a repeat");
        last_seq = seq;
        if event["type"] == "message.created" && event["actor"]["type"] == "agent" {
            replies.push(event["message"]["content"]["text"].as_str().unwrap().to_owned());
        }
    }
    (conversation, sent, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_conversations_and_twenty_agents_deliver_every_message_once_in_order() {
    let gateway = TestGateway::spawn_with(|c| {
        c.agents = omnigate_tests::agents(AGENTS, (CONVERSATIONS / AGENTS) as u32);
        c.limits.connections_per_ip = 1000;
        // Each agent answers 50 messages within a second or two: far above a person's pace.
        c.limits.frames_per_second = 10_000;
        c.limits.frame_burst = 10_000;
        c.limits.sessions_per_widget_key_per_minute = 10_000;
    })
    .await;
    let (done_tx, done_rx) = watch::channel(false);
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let agent = Agent::online(&gateway, &format!("agent-{i}")).await;
        agents.push(tokio::spawn(agent_loop(agent, done_rx.clone())));
    }
    let gateway = std::sync::Arc::new(gateway);
    let customers: Vec<_> = (0..CONVERSATIONS)
        .map(|i| {
            let gateway = std::sync::Arc::clone(&gateway);
            tokio::spawn(async move { customer_run(&gateway, i).await })
        })
        .collect();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for customer in customers {
        let (conversation, sent, replies) = customer.await.expect("customer task");
        let wanted: Vec<String> = sent.iter().map(|t| format!("re: {t}")).collect();
        assert_eq!(replies, wanted, "replies in {conversation} arrive once, in order");
        expected.insert(conversation, sent);
    }
    done_tx.send(true).expect("agents listening");
    let mut delivered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut per_agent = Vec::new();
    for agent in agents {
        let received = agent.await.expect("agent task");
        per_agent.push(received.len());
        for (conversation, texts) in received {
            assert!(
                delivered.insert(conversation.clone(), texts).is_none(),
                "{conversation} went to two agents"
            );
        }
    }
    assert_eq!(
        delivered, expected,
        "every customer message reached exactly one agent once, in order"
    );
    assert!(
        per_agent.iter().all(|n| *n <= CONVERSATIONS / AGENTS),
        "no agent over capacity: {per_agent:?}"
    );
}
