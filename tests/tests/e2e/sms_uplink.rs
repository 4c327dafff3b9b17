//! Aliyun and Tencent SMS uplinks end to end: the secret path token and peer allowlist guard the unsigned
//! callbacks; a batch item delivered twice makes one message (issue 4).

use std::net::IpAddr;

use omnigate_config::{SecretString, SmsProvider, SmsUplink};
use omnigate_tests::{http_request, Agent, TestGateway};

const TOKEN: &str = "uplink-token-0123456789abcdef";

fn uplink(id: &str, provider: SmsProvider, allowed_ips: Vec<IpAddr>) -> SmsUplink {
    SmsUplink {
        id: id.to_owned(),
        provider,
        path_token: SecretString::from(TOKEN.to_owned()),
        allowed_ips,
        queue: String::new(),
        max_body_bytes: 64 * 1024,
    }
}

async fn post(gateway: &TestGateway, path: &str, body: &str) -> (u16, String) {
    let response = http_request(
        gateway.public,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await;
    (response.status, response.body)
}

#[tokio::test]
async fn aliyun_and_tencent_uplinks_become_messages_once_behind_the_path_token() {
    let gateway = TestGateway::spawn_with(|config| {
        config.channels.sms_uplinks = vec![
            uplink("ali", SmsProvider::Aliyun, vec![]),
            uplink("tc", SmsProvider::Tencent, vec!["127.0.0.1".parse().unwrap()]),
            uplink("locked", SmsProvider::Aliyun, vec!["192.0.2.1".parse().unwrap()]),
        ];
    })
    .await;
    let mut lin = Agent::online(&gateway, "lin").await;

    let batch = r#"[{"phone_number":"13800138000","content":"余额查询","send_time":"2026-11-23 10:00:00","dest_code":"1234","sequence_id":1001},
                    {"phone_number":"13800138000","content":"余额查询","send_time":"2026-11-23 10:00:00","dest_code":"1234","sequence_id":"1001"}]"#;
    let path = format!("/channels/sms/aliyun/ali/{TOKEN}");
    for _ in 0..2 {
        let (status, body) = post(&gateway, &path, batch).await;
        assert_eq!(status, 200);
        assert_eq!(body, omnigate_connectors::sms_cn::wire::ALIYUN_SUCCESS_BODY);
    }
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "sms_aliyun");
    let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    lin.accept(&conversation).await;
    let first = lin.next_message_in(&conversation).await;
    assert_eq!(first["message"]["content"]["text"], "余额查询");

    let tencent = r#"{"extend":"","mobile":"13900139000","nationcode":"86","sign":"银行","text":"挂失","time":1763892000}"#;
    let (status, body) = post(&gateway, &format!("/channels/sms/tencent/tc/{TOKEN}"), tencent).await;
    assert_eq!(
        (status, body.as_str()),
        (200, omnigate_connectors::sms_cn::wire::TENCENT_SUCCESS_BODY)
    );
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "sms_tencent");
    assert_eq!(offer["d"]["preview"], "挂失");

    let wrong = format!("/channels/sms/aliyun/ali/{}", TOKEN.replace('0', "1"));
    assert_eq!(post(&gateway, &wrong, batch).await.0, 403);
    assert_eq!(
        post(&gateway, &format!("/channels/sms/tencent/ali/{TOKEN}"), tencent)
            .await
            .0,
        404
    );
    assert_eq!(
        post(&gateway, &format!("/channels/sms/aliyun/locked/{TOKEN}"), batch)
            .await
            .0,
        403
    );
    assert_eq!(post(&gateway, &path, "{not json").await.0, 400);

    // The duplicate item and the retried batch made one message.
    lin.say(&conversation, "a-1", "noted").await;
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
    let customer_messages = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "message.created" && e["actor"]["type"] == "customer")
        .count();
    assert_eq!(customer_messages, 1, "{events}");
}
