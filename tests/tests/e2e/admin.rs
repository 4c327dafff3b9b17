//! The admin listener and graceful shutdown.

use omnigate_tests::{http_request, Agent, Customer, TestGateway};

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_admin_listener() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    customer.say(None, "c-1", "hello").await;
    lin.take_next().await;

    assert_eq!(
        http_request(gateway.admin, "GET", "/healthz", &[], b"")
            .await
            .status,
        200
    );
    let ready = http_request(gateway.admin, "GET", "/readyz", &[], b"").await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let metrics = http_request(gateway.admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    for name in [
        "omnigate_messages_total",
        "omnigate_ws_connections",
        "omnigate_routing_decisions_total",
    ] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(
        http_request(gateway.public, "GET", "/nowhere", &[], b"")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1012_and_stops() {
    let gateway = TestGateway::spawn().await;
    let mut lin = Agent::online(&gateway, "lin").await;
    let mut customer = Customer::start(&gateway).await;
    let public = gateway.public;
    let stopping = tokio::spawn(gateway.stop());
    assert_eq!(customer.ws.expect_close().await, 1012);
    assert_eq!(lin.ws.expect_close().await, 1012);
    stopping.await.expect("stopped");
    assert!(
        tokio::net::TcpStream::connect(public).await.is_err(),
        "the listener is closed"
    );
}
