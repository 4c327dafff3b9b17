//! WeChat Official Account wire types: the callback query, the pushed messages and events, passive replies.

use std::collections::BTreeMap;

use crate::error::InboundError;
use crate::xml::{cdata, parse_flat};

/// The query string WeChat puts on every callback (PROTOCOLS.md §1.2, §1.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackQuery {
    /// `signature` (SHA-1 of token, timestamp, nonce).
    pub signature: Option<String>,
    /// `timestamp` as sent (kept as text: it is hashed as text).
    pub timestamp: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `echostr` (GET URL check only).
    pub echostr: Option<String>,
    /// `openid` of the sender (current pushes).
    pub openid: Option<String>,
    /// `encrypt_type`: absent or `raw` for plaintext, `aes` for compatible and safe mode.
    pub encrypt_type: Option<String>,
    /// `msg_signature` (compatible and safe mode).
    pub msg_signature: Option<String>,
}

impl CallbackQuery {
    /// Parses a raw query string (without `?`); unknown parameters are ignored, the first of a repeated one wins.
    pub fn parse(raw_query: &str) -> Self {
        let mut q = Self::default();
        for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
            let slot = match name.as_ref() {
                "signature" => &mut q.signature,
                "timestamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                "echostr" => &mut q.echostr,
                "openid" => &mut q.openid,
                "encrypt_type" => &mut q.encrypt_type,
                "msg_signature" => &mut q.msg_signature,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        q
    }

    /// Whether the body is encrypted (`encrypt_type=aes`).
    pub fn is_encrypted(&self) -> bool {
        self.encrypt_type.as_deref() == Some("aes")
    }

    /// The value of a required parameter.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] when absent.
    pub fn require<'a>(field: &'a Option<String>, name: &str) -> Result<&'a str, InboundError> {
        field
            .as_deref()
            .ok_or_else(|| InboundError::Malformed(format!("query parameter {name} is missing")))
    }
}

/// The data format the account is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `<xml>…</xml>` (the historical default).
    Xml,
    /// A flat JSON object.
    Json,
}

impl BodyFormat {
    /// The format a request's `Content-Type` announces (`text/xml`, `application/xml`, `application/json`,
    /// parameters ignored); `None` when it names neither, in which case [`Fields::parse`] sniffs the body.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/xml" | "application/xml" => Some(Self::Xml),
            "application/json" | "text/json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The `Content-Type` of a reply in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Xml => "text/xml; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        }
    }
}

/// The `Content-Type` of the URL-check answer (the bare `echostr`) and of the `success` acknowledgement.
pub const PLAIN_CONTENT_TYPE: &str = "text/plain";

/// A pushed body flattened to `field → text`, whatever its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The format it came in.
    pub format: BodyFormat,
    /// Top-level fields; JSON numbers and booleans are kept as their literal text, nested values are dropped.
    pub map: BTreeMap<String, String>,
}

impl Fields {
    /// Parses an XML or JSON body, telling them apart by the first non-blank byte.
    ///
    /// # Errors
    /// [`InboundError::TooLarge`] over `limit`; [`InboundError::UnsafeXml`] / [`InboundError::Malformed`] for bad
    /// input.
    pub fn parse(body: &[u8], limit: usize) -> Result<Self, InboundError> {
        crate::util::check_size(body, limit)?;
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Self::parse_json(body),
            Some(b'<') => {
                let doc = parse_flat(body, limit)?;
                Ok(Self {
                    format: BodyFormat::Xml,
                    map: doc.fields,
                })
            }
            _ => Err(InboundError::malformed("body is neither xml nor json")),
        }
    }

    fn parse_json(body: &[u8]) -> Result<Self, InboundError> {
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(body).map_err(|e| InboundError::Malformed(format!("json: {e}")))?;
        let map = value
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Number(n) => Some((k, n.to_string())),
                serde_json::Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect();
        Ok(Self {
            format: BodyFormat::Json,
            map,
        })
    }

    /// The text of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// The text of `name`, present and non-empty.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] when absent.
    pub fn require(&self, name: &str) -> Result<&str, InboundError> {
        self.get(name)
            .ok_or_else(|| InboundError::Malformed(format!("field {name} is missing")))
    }
}

/// A message or event pushed to an Official Account (PROTOCOLS.md §1.3, §1.4).
#[derive(Debug, Clone, PartialEq)]
pub struct PushMessage {
    /// Our account's original id (`gh_…`).
    pub to_user_name: String,
    /// The sender's OpenID.
    pub from_user_name: String,
    /// The sender's UnionID, when the push carries one (`UnionId`; accounts bound to an Open Platform
    /// account): it proves which OpenIDs of the bank's accounts are one person.
    pub union_id: Option<String>,
    /// Unix seconds.
    pub create_time: i64,
    /// What was pushed.
    pub kind: PushKind,
}

/// The type-specific part of a [`PushMessage`].
#[derive(Debug, Clone, PartialEq)]
pub enum PushKind {
    /// `text`.
    Text {
        /// `MsgId`.
        msg_id: u64,
        /// `Content`.
        content: String,
    },
    /// `image`.
    Image {
        /// `MsgId`.
        msg_id: u64,
        /// `PicUrl`.
        pic_url: String,
        /// `MediaId`.
        media_id: String,
    },
    /// `voice`.
    Voice {
        /// `MsgId`.
        msg_id: u64,
        /// `MediaId`.
        media_id: String,
        /// `Format` (amr, speex…).
        format: String,
        /// `Recognition`, the speech-to-text result when enabled.
        recognition: Option<String>,
    },
    /// `video` or `shortvideo`.
    Video {
        /// `MsgId`.
        msg_id: u64,
        /// `MediaId`.
        media_id: String,
        /// `ThumbMediaId`.
        thumb_media_id: String,
        /// Whether it was a `shortvideo`.
        short: bool,
    },
    /// `location`.
    Location {
        /// `MsgId`.
        msg_id: u64,
        /// `Location_X`.
        latitude: f64,
        /// `Location_Y`.
        longitude: f64,
        /// `Scale`.
        scale: Option<u32>,
        /// `Label`.
        label: String,
    },
    /// `link`.
    Link {
        /// `MsgId`.
        msg_id: u64,
        /// `Title`.
        title: String,
        /// `Description`.
        description: String,
        /// `Url`.
        url: String,
    },
    /// `event`.
    Event(WechatEvent),
    /// A message type we do not handle (tolerated, not dropped).
    Unsupported {
        /// `MsgType`.
        msg_type: String,
        /// `MsgId`, when present.
        msg_id: Option<u64>,
    },
}

/// An `event` push.
#[derive(Debug, Clone, PartialEq)]
pub enum WechatEvent {
    /// `subscribe`, with `qrscene_<scene>` when the user followed through a parameterized QR code.
    Subscribe {
        /// `EventKey`.
        event_key: Option<String>,
    },
    /// `unsubscribe`.
    Unsubscribe,
    /// `SCAN` by an existing follower.
    Scan {
        /// `EventKey` (scene value).
        event_key: String,
    },
    /// `LOCATION` report.
    Location {
        /// `Latitude`.
        latitude: f64,
        /// `Longitude`.
        longitude: f64,
    },
    /// `CLICK` on a menu button.
    Click {
        /// `EventKey` (the button key).
        event_key: String,
    },
    /// `VIEW` on a menu link.
    View {
        /// `EventKey` (the target URL).
        url: String,
    },
    /// Any other event (e.g. `kf_create_session`), tolerated.
    Other {
        /// `Event`.
        event: String,
        /// `EventKey`, when present.
        event_key: Option<String>,
    },
}

impl WechatEvent {
    /// The `Event` value as WeChat spells it.
    pub fn name(&self) -> &str {
        match self {
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Scan { .. } => "SCAN",
            Self::Location { .. } => "LOCATION",
            Self::Click { .. } => "CLICK",
            Self::View { .. } => "VIEW",
            Self::Other { event, .. } => event,
        }
    }

    /// The `EventKey` value (empty when absent).
    pub fn key(&self) -> &str {
        match self {
            Self::Subscribe { event_key } | Self::Other { event_key, .. } => {
                event_key.as_deref().unwrap_or("")
            }
            Self::Scan { event_key } | Self::Click { event_key } => event_key,
            Self::View { url } => url,
            Self::Unsubscribe | Self::Location { .. } => "",
        }
    }
}

impl PushMessage {
    /// Reads a message from its fields; unknown fields are ignored.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] when a required field is missing or not a number where one is needed.
    pub fn from_fields(f: &Fields) -> Result<Self, InboundError> {
        let msg_type = f.require("MsgType")?;
        let kind = match msg_type {
            "text" => PushKind::Text {
                msg_id: msg_id(f)?,
                content: f.require("Content")?.to_owned(),
            },
            "image" => PushKind::Image {
                msg_id: msg_id(f)?,
                pic_url: f.get("PicUrl").unwrap_or_default().to_owned(),
                media_id: f.require("MediaId")?.to_owned(),
            },
            "voice" => PushKind::Voice {
                msg_id: msg_id(f)?,
                media_id: f.require("MediaId")?.to_owned(),
                format: f.get("Format").unwrap_or_default().to_owned(),
                recognition: f.get("Recognition").filter(|r| !r.is_empty()).map(str::to_owned),
            },
            "video" | "shortvideo" => PushKind::Video {
                msg_id: msg_id(f)?,
                media_id: f.require("MediaId")?.to_owned(),
                thumb_media_id: f.get("ThumbMediaId").unwrap_or_default().to_owned(),
                short: msg_type == "shortvideo",
            },
            "location" => PushKind::Location {
                msg_id: msg_id(f)?,
                latitude: number(f, "Location_X")?,
                longitude: number(f, "Location_Y")?,
                scale: f.get("Scale").and_then(|s| s.trim().parse().ok()),
                label: f.get("Label").unwrap_or_default().to_owned(),
            },
            "link" => PushKind::Link {
                msg_id: msg_id(f)?,
                title: f.get("Title").unwrap_or_default().to_owned(),
                description: f.get("Description").unwrap_or_default().to_owned(),
                url: f.require("Url")?.to_owned(),
            },
            "event" => PushKind::Event(event(f)?),
            other => PushKind::Unsupported {
                msg_type: other.to_owned(),
                msg_id: f.get("MsgId").and_then(|m| m.trim().parse().ok()),
            },
        };
        Ok(Self {
            to_user_name: f.require("ToUserName")?.to_owned(),
            from_user_name: f.require("FromUserName")?.to_owned(),
            union_id: f
                .get("UnionId")
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            create_time: f
                .require("CreateTime")?
                .trim()
                .parse()
                .map_err(|_| InboundError::malformed("CreateTime is not an integer"))?,
            kind,
        })
    }

    /// `MsgId` for user messages, `None` for events.
    pub fn msg_id(&self) -> Option<u64> {
        match &self.kind {
            PushKind::Text { msg_id, .. }
            | PushKind::Image { msg_id, .. }
            | PushKind::Voice { msg_id, .. }
            | PushKind::Video { msg_id, .. }
            | PushKind::Location { msg_id, .. }
            | PushKind::Link { msg_id, .. } => Some(*msg_id),
            PushKind::Unsupported { msg_id, .. } => *msg_id,
            PushKind::Event(_) => None,
        }
    }
}

fn msg_id(f: &Fields) -> Result<u64, InboundError> {
    f.require("MsgId")?
        .trim()
        .parse()
        .map_err(|_| InboundError::malformed("MsgId is not a 64-bit integer"))
}

fn number(f: &Fields, name: &str) -> Result<f64, InboundError> {
    f.require(name)?
        .trim()
        .parse()
        .map_err(|_| InboundError::Malformed(format!("{name} is not a number")))
}

fn event(f: &Fields) -> Result<WechatEvent, InboundError> {
    let key = f.get("EventKey").map(str::to_owned);
    Ok(match f.require("Event")? {
        "subscribe" => WechatEvent::Subscribe {
            event_key: key.filter(|k| !k.is_empty()),
        },
        "unsubscribe" => WechatEvent::Unsubscribe,
        "SCAN" => WechatEvent::Scan {
            event_key: key.unwrap_or_default(),
        },
        "LOCATION" => WechatEvent::Location {
            latitude: number(f, "Latitude")?,
            longitude: number(f, "Longitude")?,
        },
        "CLICK" => WechatEvent::Click {
            event_key: key.unwrap_or_default(),
        },
        "VIEW" => WechatEvent::View {
            url: key.unwrap_or_default(),
        },
        other => WechatEvent::Other {
            event: other.to_owned(),
            event_key: key,
        },
    })
}

/// A passive reply, answered in the HTTP response (PROTOCOLS.md §1.5). To / from are swapped by the caller:
/// `to_user` is the customer's OpenID, `from_user` our original id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveReply {
    /// The customer's OpenID.
    pub to_user: String,
    /// Our account's original id.
    pub from_user: String,
    /// Unix seconds.
    pub create_time: i64,
    /// What to answer.
    pub body: PassiveReplyBody,
}

/// The type-specific part of a [`PassiveReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassiveReplyBody {
    /// `text`.
    Text(String),
    /// `image` by `MediaId`.
    Image {
        /// Uploaded media id.
        media_id: String,
    },
}

impl PassiveReply {
    /// The plaintext XML, in the layout WeChat and wechatpy use (no whitespace between elements).
    pub fn to_xml(&self) -> String {
        let (msg_type, body) = match &self.body {
            PassiveReplyBody::Text(text) => ("text", format!("<Content>{}</Content>", cdata(text))),
            PassiveReplyBody::Image { media_id } => (
                "image",
                format!("<Image><MediaId>{}</MediaId></Image>", cdata(media_id)),
            ),
        };
        format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{}</CreateTime>\
             <MsgType>{}</MsgType>{body}</xml>",
            cdata(&self.to_user),
            cdata(&self.from_user),
            self.create_time,
            cdata(msg_type),
        )
    }
}

/// The acknowledgement that tells WeChat not to retry and not to show an error (needs no encryption).
pub const ACK_BODY: &str = "success";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{vectors, vstr};

    const LIMIT: usize = 64 * 1024;

    fn parse(xml: &str) -> PushMessage {
        PushMessage::from_fields(&Fields::parse(xml.as_bytes(), LIMIT).unwrap()).unwrap()
    }

    fn wrap(inner: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>\
             <CreateTime>1700000000</CreateTime>{inner}</xml>"
        )
    }

    #[test]
    fn query_parsing_keeps_the_wechat_parameters() {
        let v = vectors();
        let req = vstr(
            &v,
            &[
                "wechat",
                "gateway_vectors",
                "safe_mode_inbound_text",
                "request",
                "path_and_query",
            ],
        );
        let q = CallbackQuery::parse(req.split_once('?').unwrap().1);
        assert_eq!(
            q.signature.as_deref(),
            Some("420ab7a8292b3e7205b5f17255450736fdabd78f")
        );
        assert_eq!(q.openid.as_deref(), Some("oGw_user_openid_000000000001"));
        assert!(q.is_encrypted());
        assert!(!CallbackQuery::parse("encrypt_type=raw").is_encrypted());
    }

    #[test]
    fn content_types_of_the_vectors() {
        let v = vectors();
        let g = &v["wechat"]["gateway_url_verification"]["expected_response"];
        assert_eq!(vstr(g, &["content_type"]), PLAIN_CONTENT_TYPE);
        let req = &v["wechat"]["gateway_vectors"]["safe_mode_inbound_text"]["request"];
        assert_eq!(vstr(req, &["method"]), "POST");
        let format = BodyFormat::from_content_type(vstr(req, &["content_type"])).unwrap();
        assert_eq!(format, BodyFormat::Xml);
        assert!(format.content_type().starts_with("text/xml"));
        assert_eq!(
            BodyFormat::from_content_type("application/json; charset=utf-8"),
            Some(BodyFormat::Json)
        );
        assert_eq!(BodyFormat::from_content_type("text/html"), None);
    }

    #[test]
    fn every_message_type_parses() {
        let text = parse(&wrap(
            "<MsgType><![CDATA[text]]></MsgType><Content>hi</Content><MsgId>24300000000000001</MsgId>",
        ));
        assert_eq!(
            text.kind,
            PushKind::Text {
                msg_id: 24_300_000_000_000_001,
                content: "hi".into()
            }
        );
        let image = parse(&wrap(
            "<MsgType>image</MsgType><PicUrl>http://p</PicUrl><MediaId>M1</MediaId><MsgId>2</MsgId>",
        ));
        assert_eq!(
            image.kind,
            PushKind::Image {
                msg_id: 2,
                pic_url: "http://p".into(),
                media_id: "M1".into()
            }
        );
        let voice = parse(&wrap(
            "<MsgType>voice</MsgType><MediaId>V</MediaId><Format>amr</Format><Recognition>退款</Recognition><MsgId>3</MsgId>",
        ));
        assert_eq!(
            voice.kind,
            PushKind::Voice {
                msg_id: 3,
                media_id: "V".into(),
                format: "amr".into(),
                recognition: Some("退款".into())
            }
        );
        let video = parse(&wrap(
            "<MsgType>shortvideo</MsgType><MediaId>S</MediaId><ThumbMediaId>T</ThumbMediaId><MsgId>4</MsgId>",
        ));
        assert_eq!(
            video.kind,
            PushKind::Video {
                msg_id: 4,
                media_id: "S".into(),
                thumb_media_id: "T".into(),
                short: true
            }
        );
        let loc = parse(&wrap(
            "<MsgType>location</MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[广州]]></Label><MsgId>5</MsgId>",
        ));
        assert_eq!(
            loc.kind,
            PushKind::Location {
                msg_id: 5,
                latitude: 23.134521,
                longitude: 113.358803,
                scale: Some(20),
                label: "广州".into()
            }
        );
        let link = parse(&wrap("<MsgType>link</MsgType><Title>T</Title><Description>D</Description><Url>http://u</Url><MsgId>6</MsgId>"));
        assert_eq!(link.msg_id(), Some(6));
        let odd = parse(&wrap("<MsgType>miniprogrampage</MsgType><MsgId>7</MsgId>"));
        assert_eq!(
            odd.kind,
            PushKind::Unsupported {
                msg_type: "miniprogrampage".into(),
                msg_id: Some(7)
            }
        );
    }

    #[test]
    fn every_event_parses() {
        let ev = |inner: &str| match parse(&wrap(&format!("<MsgType>event</MsgType>{inner}"))).kind {
            PushKind::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        };
        assert_eq!(
            ev("<Event>subscribe</Event>"),
            WechatEvent::Subscribe { event_key: None }
        );
        assert_eq!(
            ev("<Event>subscribe</Event><EventKey>qrscene_123</EventKey><Ticket>t</Ticket>"),
            WechatEvent::Subscribe {
                event_key: Some("qrscene_123".into())
            }
        );
        assert_eq!(
            ev("<Event>unsubscribe</Event><EventKey></EventKey>"),
            WechatEvent::Unsubscribe
        );
        assert_eq!(
            ev("<Event>CLICK</Event><EventKey>MENU_A</EventKey>").key(),
            "MENU_A"
        );
        assert_eq!(
            ev("<Event>VIEW</Event><EventKey>https://x</EventKey><MenuId>1</MenuId>"),
            WechatEvent::View {
                url: "https://x".into()
            }
        );
        assert_eq!(ev("<Event>SCAN</Event><EventKey>123</EventKey>").name(), "SCAN");
        assert_eq!(
            ev("<Event>LOCATION</Event><Latitude>1.5</Latitude><Longitude>2.5</Longitude><Precision>9</Precision>"),
            WechatEvent::Location { latitude: 1.5, longitude: 2.5 }
        );
        assert_eq!(ev("<Event>kf_create_session</Event>").name(), "kf_create_session");
    }

    #[test]
    fn json_bodies_parse_like_xml() {
        let v = vectors();
        let plaintext = vstr(
            &v,
            &[
                "wechat",
                "official_doc_vectors",
                "safe_mode_inbound",
                "expected_plaintext",
            ],
        );
        let f = Fields::parse(plaintext.as_bytes(), LIMIT).unwrap();
        assert_eq!(f.format, BodyFormat::Json);
        let m = PushMessage::from_fields(&f).unwrap();
        assert_eq!(m.create_time, 1_714_112_445);
        assert_eq!(
            m.kind,
            PushKind::Event(WechatEvent::Other {
                event: "debug_demo".into(),
                event_key: None
            })
        );
        let j = br#"{"ToUserName":"gh_a","FromUserName":"o1","CreateTime":1,"MsgType":"text","Content":"x","MsgId":18446744073709551615}"#;
        let m = PushMessage::from_fields(&Fields::parse(j, LIMIT).unwrap()).unwrap();
        assert_eq!(m.msg_id(), Some(u64::MAX));
    }

    #[test]
    fn missing_fields_are_malformed() {
        let err = PushMessage::from_fields(
            &Fields::parse(wrap("<MsgType>text</MsgType>").as_bytes(), LIMIT).unwrap(),
        );
        assert_eq!(err.unwrap_err().http_status(), 400);
        assert!(Fields::parse(b"success", LIMIT).is_err());
        assert!(Fields::parse(b"{\"a\":", LIMIT).is_err());
    }

    #[test]
    fn passive_text_reply_matches_the_vector_plaintext() {
        let v = vectors();
        let s = &v["wechat"]["gateway_vectors"]["safe_mode_passive_reply_text"];
        let reply = PassiveReply {
            to_user: "oGw_user_openid_000000000001".into(),
            from_user: "gh_0123456789ab".into(),
            create_time: 1_700_000_001,
            body: PassiveReplyBody::Text("您好，客服正在接入，请稍候。".into()),
        };
        assert_eq!(reply.to_xml(), vstr(s, &["plaintext_xml"]));
        let image = PassiveReply {
            body: PassiveReplyBody::Image { media_id: "M".into() },
            ..reply
        };
        let f = Fields::parse(image.to_xml().as_bytes(), LIMIT).unwrap();
        assert_eq!(f.get("MsgType"), Some("image"));
    }
}
