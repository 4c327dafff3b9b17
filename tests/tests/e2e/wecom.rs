//! WeChat Customer Service (WeCom kf) end to end: the doorbell triggers `kf/sync_msg` pulls from the stored
//! cursor, every page becomes messages once, and replies leave through `kf/send_msg` (issue 4).

use omnigate_config::{SecretString, WecomAccount};
use omnigate_connectors::wechat::crypto::{self, AesKey};
use omnigate_connectors::wechat::signature;
use omnigate_tests::{
    assert_eventually, http_request, Agent, FakeWecom, TestGateway, FAKE_JPEG, OPEN_KFID, WECOM_AES_KEY,
    WECOM_CORP_ID, WECOM_SECRET, WECOM_TOKEN,
};

const CUSTOMER: &str = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw";

#[tokio::test]
async fn a_doorbell_pulls_from_the_cursor_and_replies_go_through_send_msg() {
    let fake = FakeWecom::start().await;
    let account = WecomAccount {
        id: "kf".to_owned(),
        corp_id: WECOM_CORP_ID.to_owned(),
        secret: SecretString::from(WECOM_SECRET.to_owned()),
        token: SecretString::from(WECOM_TOKEN.to_owned()),
        encoding_aes_key: SecretString::from(WECOM_AES_KEY.to_owned()),
        queue: String::new(),
        api_base_url: fake.base_url(),
        message_quota: 5,
        max_body_bytes: 64 * 1024,
        rate_per_second: 100,
    };
    let gateway = TestGateway::spawn_with(move |config| config.channels.wecom.push(account)).await;
    let mut lin = Agent::online(&gateway, "lin").await;

    // The URL check: the echostr comes encrypted, the answer is its plaintext.
    let key = AesKey::from_encoding_aes_key(WECOM_AES_KEY).unwrap();
    let echostr = crypto::encrypt(&key, b"0123456789abcdef", b"5927782489442352469", WECOM_CORP_ID);
    let sig = signature::msg_signature(WECOM_TOKEN, "1763892000", "n", &echostr);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("msg_signature", &sig)
        .append_pair("timestamp", "1763892000")
        .append_pair("nonce", "n")
        .append_pair("echostr", &echostr)
        .finish();
    let check = http_request(
        gateway.public,
        "GET",
        &format!("/channels/wecom/kf?{query}"),
        &[],
        b"",
    )
    .await;
    assert_eq!((check.status, check.body.as_str()), (200, "5927782489442352469"));

    for (i, text) in ["你好", "我的卡丢了", "请尽快处理"].iter().enumerate() {
        fake.customer_writes(CUSTOMER, &format!("msg{i}"), text).await;
    }
    let rung = fake.ring(&gateway, "kf").await;
    assert_eq!((rung.status, rung.body.as_str()), (200, "success"));
    let offer = lin.ws.recv_until(|f| f["op"] == "offer").await;
    assert_eq!(offer["d"]["channel"], "wechat_kf");
    let conversation = offer["d"]["conversation_id"].as_str().unwrap().to_owned();
    lin.accept(&conversation).await;
    for text in ["你好", "我的卡丢了", "请尽快处理"] {
        assert_eq!(
            lin.next_message_in(&conversation).await["message"]["content"]["text"],
            text
        );
    }
    assert_eq!(fake.cursors_seen().await, [None, Some("cur_2".to_owned())]);

    // The next doorbell pulls from the stored cursor: only the new message arrives.
    fake.customer_writes(CUSTOMER, "msg3", "还在吗").await;
    fake.ring(&gateway, "kf").await;
    assert_eq!(
        lin.next_message_in(&conversation).await["message"]["content"]["text"],
        "还在吗"
    );
    assert_eventually!(fake.cursors_seen().await.len() == 3, "a third pull");
    assert_eq!(fake.cursors_seen().await[2], Some("cur_3".to_owned()));

    lin.say(&conversation, "a-1", "已为您冻结").await;
    let sent = lin
        .ws
        .recv_until(|f| {
            f["op"] == "event" && f["d"]["type"] == "delivery.updated" && f["d"]["state"] == "sent"
        })
        .await;
    let messages = fake.sent().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["touser"], CUSTOMER);
    assert_eq!(messages[0]["open_kfid"], OPEN_KFID);
    assert_eq!(messages[0]["text"]["content"], "已为您冻结");
    assert_eq!(sent["d"]["provider_message_id"], messages[0]["msgid"]);

    // An image the agent uploaded goes out as WeCom temporary material through `kf/send_msg`.
    let auth = format!("Bearer {}", gateway.agent_token("lin"));
    let image = [FAKE_JPEG, &[1u8; 64][..]].concat();
    let upload = http_request(
        gateway.public,
        "POST",
        "/agent/v1/media",
        &[("authorization", auth.as_str()), ("content-type", "image/jpeg")],
        &image,
    )
    .await;
    assert_eq!(upload.status, 201, "{}", upload.body);
    let upload_id = upload.json()["upload_id"].as_str().unwrap().to_owned();
    let d = serde_json::json!({
        "conversation_id": conversation, "client_msg_id": "img-1",
        "content": {"type": "media", "kind": "image", "provider_ref": upload_id},
    });
    let reference = lin.ws.send_op("message.send", d).await;
    lin.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
    assert_eventually!(fake.sent().await.len() == 2, "the image is sent");
    let uploads = fake.uploads().await;
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes, image);
    let messages = fake.sent().await;
    assert_eq!(messages[1]["msgtype"], "image");
    assert_eq!(messages[1]["image"]["media_id"], uploads[0].media_id.as_str());
    assert_eq!(fake.violations().await, Vec::<String>::new());
}
