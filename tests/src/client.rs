use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{http_request, TestGateway};

/// How long a test waits for an expected frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw websocket client speaking JSON frames.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
    /// Frames read while looking for another one ([`WsClient::recv_until`]); read again first.
    mailbox: VecDeque<Value>,
}

impl WsClient {
    /// Connects to `url`.
    ///
    /// # Panics
    /// When the handshake fails.
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        WsClient {
            ws,
            next_ref: 0,
            mailbox: VecDeque::new(),
        }
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends several texts in one write to the socket, as a client with several frames in flight may.
    pub async fn send_texts_at_once(&mut self, texts: &[String]) {
        for text in texts {
            self.ws.feed(Message::text(text.as_str())).await.expect("send");
        }
        self.ws.flush().await.expect("flush");
    }

    /// Sends raw bytes as a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// Sends `{"op", "ref", "d"}` with a fresh ref and returns the ref.
    pub async fn send_op(&mut self, op: &str, d: Value) -> String {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        self.send_text(&json!({"op": op, "ref": reference, "d": d}).to_string())
            .await;
        reference
    }

    /// The next JSON frame (from the mailbox first), `Err(code)` on a close frame, `None` if the socket ended.
    pub async fn next_frame(&mut self) -> Option<Result<Value, u16>> {
        if let Some(frame) = self.mailbox.pop_front() {
            return Some(Ok(frame));
        }
        self.next_frame_from_socket().await
    }

    async fn next_frame_from_socket(&mut self) -> Option<Result<Value, u16>> {
        loop {
            let message = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(Ok(
                        serde_json::from_str(text.as_str()).expect("server frame is json")
                    ))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Err(frame.map_or(1005, |f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next JSON frame.
    ///
    /// # Panics
    /// When the socket closes or nothing arrives in time.
    pub async fn recv(&mut self) -> Value {
        match self.next_frame().await {
            Some(Ok(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame whose `op` is `op`, skipping ephemeral frames of other ops (`queue.position`,
    /// `typing`, `presence.updated`, `offer.rescinded`).
    ///
    /// # Panics
    /// When a frame of any other op arrives first, or on timeout.
    pub async fn recv_op(&mut self, op: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["op"] == op {
                return frame;
            }
            let skippable = ["queue.position", "typing", "presence.updated"];
            assert!(
                skippable.contains(&frame["op"].as_str().unwrap_or("")),
                "expected {op}, got {frame}"
            );
        }
    }

    /// The first frame that satisfies `matches`, searching the mailbox first; frames read past are kept in the
    /// mailbox, in order, for later reads.
    ///
    /// # Panics
    /// When the socket closes or nothing matching arrives in time.
    pub async fn recv_until(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(index) = self.mailbox.iter().position(&matches) {
            return self.mailbox.remove(index).expect("index is in range");
        }
        loop {
            match self.next_frame_from_socket().await {
                Some(Ok(frame)) if matches(&frame) => return frame,
                Some(Ok(frame)) => self.mailbox.push_back(frame),
                other => panic!("expected a matching frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    ///
    /// # Panics
    /// When the socket ends without a close frame.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match self.next_frame().await {
                Some(Ok(_)) => continue,
                Some(Err(code)) => return code,
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Whether a frame arrives within `within`.
    pub async fn quiet_for(&mut self, within: Duration) -> Option<Value> {
        if let Some(frame) = self.mailbox.pop_front() {
            return Some(frame);
        }
        match tokio::time::timeout(within, self.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => Some(serde_json::from_str(text.as_str()).expect("json")),
            _ => None,
        }
    }

    /// Drops the TCP connection without a close handshake (a killed client).
    pub fn kill(self) {
        drop(self.ws);
    }

    /// Closes politely.
    pub async fn close(mut self) {
        drop(
            self.ws
                .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }))
                .await,
        );
    }
}

/// A web chat customer.
pub struct Customer {
    /// Its socket.
    pub ws: WsClient,
    /// The chat token.
    pub token: String,
    /// The session id from `ready`.
    pub session_id: String,
    /// The `ready` frame.
    pub ready: Value,
}

impl Customer {
    /// Opens a chat session with the demo widget key and connects.
    pub async fn start(gateway: &TestGateway) -> Customer {
        let response = http_request(
            gateway.public,
            "POST",
            "/chat/v1/sessions",
            &[("content-type", "application/json")],
            br#"{"widget_key":"demo-widget-key"}"#,
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.body);
        let token = response.json()["token"].as_str().expect("token").to_owned();
        Customer::connect(gateway, &token, json!(null)).await
    }

    /// Connects with `token`, sending `resume` (null for none).
    pub async fn connect(gateway: &TestGateway, token: &str, resume: Value) -> Customer {
        let mut ws = WsClient::connect(&gateway.ws_url("/chat/v1/ws")).await;
        let mut d = json!({"token": token, "client": "test/1"});
        if !resume.is_null() {
            d["resume"] = resume;
        }
        ws.send_op("hello", d).await;
        let ready = ws.recv_op("ready").await;
        let session_id = ready["d"]["session_id"].as_str().expect("session_id").to_owned();
        Customer {
            ws,
            token: token.to_owned(),
            session_id,
            ready,
        }
    }

    /// Sends a text message and returns the `message.ack` frame's `d`.
    pub async fn say(&mut self, conversation: Option<&str>, client_msg_id: &str, text: &str) -> Value {
        let mut d = json!({"client_msg_id": client_msg_id, "content": {"type": "text", "text": text}});
        if let Some(c) = conversation {
            d["conversation_id"] = json!(c);
        }
        let reference = self.ws.send_op("message.send", d).await;
        let ack = self.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
        assert_eq!(ack["op"], "message.ack", "{ack}");
        ack["d"].clone()
    }

    /// The next `event` frame's `d`, skipping ephemeral frames.
    pub async fn next_event(&mut self) -> Value {
        self.ws.recv_op("event").await["d"].clone()
    }

    /// The next `message.created` event from an agent (the customer's own messages are echoed to all its
    /// devices; they are skipped here).
    pub async fn next_message(&mut self) -> Value {
        loop {
            let event = self.next_event().await;
            if event["type"] == "message.created" && event["actor"]["type"] == "agent" {
                return event;
            }
        }
    }
}

/// An agent.
pub struct Agent {
    /// Its socket.
    pub ws: WsClient,
    /// Its id.
    pub id: String,
    /// The `ready` frame.
    pub ready: Value,
}

impl Agent {
    /// Connects, says hello and sets itself available.
    pub async fn online(gateway: &TestGateway, id: &str) -> Agent {
        let mut agent = Agent::connect(gateway, id, json!(null)).await;
        agent.set_presence("available").await;
        agent
    }

    /// Connects and says hello (presence unchanged).
    pub async fn connect(gateway: &TestGateway, id: &str, resume: Value) -> Agent {
        let mut ws = WsClient::connect(&gateway.ws_url("/agent/v1/ws")).await;
        let mut d = json!({"token": gateway.agent_token(id), "client": "test-console/1"});
        if !resume.is_null() {
            d["resume"] = resume;
        }
        ws.send_op("hello", d).await;
        let ready = ws.recv_op("ready").await;
        Agent {
            ws,
            id: id.to_owned(),
            ready,
        }
    }

    /// Sends an op and waits for its `ok` (or panics on `error`).
    pub async fn request(&mut self, op: &str, d: Value) -> Value {
        let reference = self.ws.send_op(op, d).await;
        let reply = self.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
        assert_eq!(reply["op"], "ok", "{op} failed: {reply}");
        reply["d"].clone()
    }

    /// Sends an op and returns its error frame's code.
    pub async fn request_error(&mut self, op: &str, d: Value) -> String {
        let reference = self.ws.send_op(op, d).await;
        let reply = self.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
        assert_eq!(reply["op"], "error", "{op} should fail: {reply}");
        reply["d"]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Sets presence.
    pub async fn set_presence(&mut self, state: &str) {
        self.request("presence.set", json!({"state": state})).await;
    }

    /// Waits for the next offer; returns its conversation id.
    pub async fn next_offer(&mut self) -> String {
        let offer = self.ws.recv_until(|f| f["op"] == "offer").await;
        offer["d"]["conversation_id"]
            .as_str()
            .expect("conversation_id")
            .to_owned()
    }

    /// Accepts an offer.
    pub async fn accept(&mut self, conversation: &str) {
        self.request("offer.accept", json!({"conversation_id": conversation}))
            .await;
    }

    /// Waits for an offer and accepts it; returns the conversation id.
    pub async fn take_next(&mut self) -> String {
        let conversation = self.next_offer().await;
        self.accept(&conversation).await;
        conversation
    }

    /// Sends a message and returns the ack's `d`.
    pub async fn say(&mut self, conversation: &str, client_msg_id: &str, text: &str) -> Value {
        let d = json!({"conversation_id": conversation, "client_msg_id": client_msg_id, "content": {"type": "text", "text": text}});
        let reference = self.ws.send_op("message.send", d).await;
        let ack = self.ws.recv_until(|f| f["ref"] == reference.as_str()).await;
        assert_eq!(ack["op"], "message.ack", "{ack}");
        ack["d"].clone()
    }

    /// The next `message.created` event in `conversation` not sent by this agent.
    pub async fn next_message_in(&mut self, conversation: &str) -> Value {
        let me = self.id.clone();
        self.ws
            .recv_until(|f| {
                f["op"] == "event"
                    && f["d"]["conversation_id"] == conversation
                    && f["d"]["type"] == "message.created"
                    && f["d"]["actor"]["id"] != me.as_str()
            })
            .await["d"]
            .clone()
    }
}
