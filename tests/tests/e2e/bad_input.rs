//! Bad input gets the documented error frame or close code; the server and other connections carry on.

use std::time::Duration;

use omnigate_tests::{Agent, Customer, TestGateway, WsClient};
use serde_json::json;
use tokio::time::Instant;

async fn error_code(ws: &mut WsClient) -> String {
    let frame = ws.recv_until(|f| f["op"] == "error").await;
    frame["d"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn malformed_and_unknown_frames_get_error_frames_and_the_socket_stays_usable() {
    let gateway = TestGateway::spawn().await;
    let mut customer = Customer::start(&gateway).await;
    customer.ws.send_text("{not json").await;
    assert_eq!(error_code(&mut customer.ws).await, "invalid_json");
    customer.ws.send_text(r#"{"op":"teleport","d":{}}"#).await;
    assert_eq!(error_code(&mut customer.ws).await, "unknown_op");
    customer
        .ws
        .send_text(r#"{"op":"offer.accept","d":{"conversation_id":"c_1"}}"#)
        .await;
    assert_eq!(
        error_code(&mut customer.ws).await,
        "unknown_op",
        "agent ops are not customer ops"
    );
    customer
        .ws
        .send_text(r#"{"op":"message.send","d":{"client_msg_id":"x"}}"#)
        .await;
    assert_eq!(error_code(&mut customer.ws).await, "invalid_frame");
    customer
        .ws
        .send_op(
            "message.send",
            json!({"client_msg_id": "x", "content": {"type": "text", "text": "é".repeat(4001)}}),
        )
        .await;
    assert_eq!(error_code(&mut customer.ws).await, "too_long");
    customer.ws.send_op("message.send", json!({"conversation_id": "c_unknown", "client_msg_id": "x", "content": {"type": "text", "text": "hi"}})).await;
    assert_eq!(error_code(&mut customer.ws).await, "not_found");
    customer.ws.send_binary(vec![1, 2, 3]).await;
    assert_eq!(error_code(&mut customer.ws).await, "invalid_frame");
    let ack = customer.say(None, "ok-1", "still works").await;
    assert!(ack["conversation_id"].is_string());
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_others_are_unaffected() {
    let gateway = TestGateway::spawn_with(|c| c.limits.max_frame_bytes = 8 * 1024).await;
    let mut bystander = Customer::start(&gateway).await;
    let mut attacker = Customer::start(&gateway).await;
    attacker
        .ws
        .send_text(&format!(r#"{{"op":"ping","d":"{}"}}"#, "x".repeat(64 * 1024)))
        .await;
    assert_eq!(attacker.ws.expect_close().await, 1009);
    assert!(bystander.say(None, "b-1", "fine").await["conversation_id"].is_string());
}

#[tokio::test]
async fn a_flood_of_frames_is_rate_limited_then_closed_with_4008() {
    let gateway = TestGateway::spawn_with(|c| {
        c.limits.frames_per_second = 5;
        c.limits.frame_burst = 5;
        c.limits.rate_limit_strikes = 10;
    })
    .await;
    let mut bystander = Customer::start(&gateway).await;
    let mut flooder = Customer::start(&gateway).await;
    for _ in 0..40 {
        flooder.ws.send_text(r#"{"op":"ping"}"#).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        match flooder.ws.next_frame().await {
            Some(Ok(frame)) if frame["op"] == "pong" => pongs += 1,
            Some(Ok(frame)) if frame["d"]["code"] == "rate_limited" => limited += 1,
            Some(Ok(frame)) => panic!("unexpected {frame}"),
            Some(Err(code)) => break code,
            None => panic!("no close frame"),
        }
    };
    assert_eq!(code, 4008);
    assert!(
        pongs >= 5 && limited >= 1,
        "pongs {pongs}, rate_limited {limited}"
    );
    bystander.ws.send_op("ping", json!(null)).await;
    assert_eq!(bystander.ws.recv_op("pong").await["op"], "pong");
}

#[tokio::test]
async fn bad_and_expired_tokens_close_with_4001_and_4002() {
    let gateway = TestGateway::spawn().await;
    let mut ws = WsClient::connect(&gateway.ws_url("/chat/v1/ws")).await;
    ws.send_op("hello", json!({"token": "garbage"})).await;
    assert_eq!(ws.expect_close().await, 4001);

    // An agent token is not a customer token.
    let mut ws = WsClient::connect(&gateway.ws_url("/chat/v1/ws")).await;
    ws.send_op("hello", json!({"token": gateway.agent_token("lin")}))
        .await;
    assert_eq!(ws.expect_close().await, 4001);

    let config = omnigate_tests::test_config();
    let tokens = omnigate_gateway::auth::TokenAuthority::new(&config.auth.jwt_secret);
    let expired = omnigate_gateway::mint_agent_token(&tokens, "lin", 0);
    let mut ws = WsClient::connect(&gateway.ws_url("/agent/v1/ws")).await;
    ws.send_op("hello", json!({"token": expired})).await;
    assert_eq!(ws.expect_close().await, 4002);

    let stranger = omnigate_gateway::mint_agent_token(&tokens, "mallory", 60);
    let mut ws = WsClient::connect(&gateway.ws_url("/agent/v1/ws")).await;
    ws.send_op("hello", json!({"token": stranger})).await;
    assert_eq!(
        ws.expect_close().await,
        4001,
        "a token for an unknown agent is refused"
    );

    let mut ws = WsClient::connect(&gateway.ws_url("/chat/v1/ws")).await;
    ws.send_op("ping", json!(null)).await;
    assert_eq!(ws.expect_close().await, 4000, "the first frame must be hello");

    assert!(
        Agent::online(&gateway, "lin").await.ready["d"]["agent"]["id"] == "lin",
        "the server is still up"
    );
}

#[tokio::test]
async fn silence_past_two_heartbeats_and_a_missing_hello_close_with_4000() {
    let gateway = TestGateway::spawn_with(|c| {
        c.limits.heartbeat_ms = 100;
        c.limits.hello_timeout_ms = 200;
    })
    .await;
    let mut silent = Customer::start(&gateway).await;
    assert_eq!(silent.ready["d"]["heartbeat_ms"], 100);
    assert_eq!(silent.ws.expect_close().await, 4000);
    let mut mute = WsClient::connect(&gateway.ws_url("/chat/v1/ws")).await;
    assert_eq!(mute.expect_close().await, 4000);
}

#[tokio::test]
async fn frames_keep_a_connection_alive_past_many_heartbeat_timeouts_until_they_stop() {
    let gateway = TestGateway::spawn_with(|c| c.limits.heartbeat_ms = 150).await;
    let mut chatty = Customer::start(&gateway).await;
    // The session closes after 300 ms of silence; pings every 40 ms for 1.2 s keep moving that deadline, and
    // the session's one timer, firing at an old deadline, must wait for the new one instead of closing.
    let started = Instant::now();
    let mut last_ping = started;
    while started.elapsed() < Duration::from_millis(1_200) {
        last_ping = Instant::now();
        chatty.ws.send_op("ping", json!(null)).await;
        assert_eq!(chatty.ws.recv_op("pong").await["op"], "pong");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(chatty.ws.expect_close().await, 4000);
    let silent_for = last_ping.elapsed();
    assert!(
        silent_for >= Duration::from_millis(290),
        "closed {silent_for:?} after the last ping"
    );
}

#[tokio::test]
async fn connections_per_ip_and_sessions_per_widget_key_are_capped() {
    let gateway = TestGateway::spawn_with(|c| {
        c.limits.connections_per_ip = 2;
        c.limits.sessions_per_widget_key_per_minute = 3;
    })
    .await;
    let _a = Customer::start(&gateway).await;
    let _b = Customer::start(&gateway).await;
    let mut third = WsClient::connect(&gateway.ws_url("/chat/v1/ws")).await;
    assert_eq!(third.expect_close().await, 4008);
    // Two sessions were opened above; the limit of three allows one more, then 429.
    let ok = omnigate_tests::http_request(
        gateway.public,
        "POST",
        "/chat/v1/sessions",
        &[],
        br#"{"widget_key":"demo-widget-key"}"#,
    )
    .await;
    assert_eq!(ok.status, 200);
    let limited = omnigate_tests::http_request(
        gateway.public,
        "POST",
        "/chat/v1/sessions",
        &[],
        br#"{"widget_key":"demo-widget-key"}"#,
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
}
