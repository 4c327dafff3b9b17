//! What each client op does. Every refusal is an `error` frame with the client's `ref`; the socket stays open.

use std::collections::BTreeMap;

use omnigate_connectors::model::{Channel, Content, ConversationId, CustomerId, Identity, IdentityKind};

use super::session::{Gone, Role, Session};
use crate::bus::{BusError, Participant, Route};
use crate::channels::ViaRequest;
use crate::customers::{self, IdentityChange};
use crate::protocol::{self, parse_frame, ClientOp, FrameText};
use crate::telemetry::metrics;

/// Longest disposition code.
const MAX_DISPOSITION_LEN: usize = 64;
/// Longest transfer, link or unlink reason.
const MAX_REASON_CHARS: usize = 500;
/// Longest identity value an agent may link.
const MAX_IDENTITY_BYTES: usize = 256;

/// A refusal to send back as an `error` frame.
struct Refusal {
    code: &'static str,
    message: String,
}

impl From<BusError> for Refusal {
    fn from(error: BusError) -> Refusal {
        Refusal {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn conversation_id(raw: &str) -> Result<ConversationId, Refusal> {
    ConversationId::parse(raw).map_err(|e| refuse("invalid_frame", e.to_string()))
}

impl Session {
    pub(super) async fn handle_text(&mut self, text: &str) -> Result<(), Gone> {
        let frame = match parse_frame(text, self.role == Role::Agent) {
            Ok(frame) => frame,
            Err(error) => {
                metrics::input_rejected(error.code());
                tracing::warn!(%error, "frame refused");
                return self
                    .send(protocol::error(None, error.code(), &error.to_string()))
                    .await;
            }
        };
        let reference = frame.reference.as_deref();
        match self.dispatch(frame.op, reference).await {
            Ok(Some(reply)) => self.send(reply).await,
            Ok(None) => Ok(()),
            Err(refusal) => {
                metrics::input_rejected(refusal.code);
                tracing::warn!(code = refusal.code, message = %refusal.message, "op refused");
                self.send(protocol::error(reference, refusal.code, &refusal.message))
                    .await
            }
        }
    }

    fn check_client_msg_id(&self, client_msg_id: &str) -> Result<(), Refusal> {
        let max = self.state.settings.limits.max_client_msg_id_len;
        if client_msg_id.is_empty()
            || client_msg_id.len() > max
            || !client_msg_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(refuse(
                "invalid_frame",
                format!("client_msg_id must be 1..={max} printable ascii characters"),
            ));
        }
        Ok(())
    }

    fn check_text(&self, text: &str) -> Result<(), Refusal> {
        let max = self.state.settings.limits.max_message_chars;
        if text.trim().is_empty() {
            return Err(refuse("invalid_frame", "text is empty"));
        }
        if text.chars().count() > max {
            return Err(refuse(
                "too_long",
                format!("text is longer than {max} characters"),
            ));
        }
        Ok(())
    }

    fn agent(&self) -> Result<String, Refusal> {
        match &self.who {
            Participant::Agent(agent) => Ok(agent.clone()),
            Participant::Customer(_) => Err(refuse("unknown_op", "agents only")),
        }
    }

    /// The route of a reply through the channel the agent picked, resolved before anything is stored.
    async fn pick_route(&self, agent: &str, id: &ConversationId, via: &ViaRequest) -> Result<Route, Refusal> {
        let customer = self.state.bus.customer_of(agent.to_owned(), id.clone()).await?;
        let hub = self.state.channels.as_ref().ok_or_else(|| {
            refuse(
                "channel_not_configured",
                format!(
                    "no {} connector is configured",
                    via.channel.chars().take(64).collect::<String>()
                ),
            )
        })?;
        let route = hub
            .pick_route(&customer, via)
            .await
            .map_err(|error| refuse(error.code(), error.to_string()))?;
        tracing::info!(conversation_id = %id, agent_id = %agent, channel = route.via.channel.as_str(), account = %route.via.account, "reply routed through the channel the agent picked");
        Ok(route)
    }

    /// `customer.link` / `customer.unlink`: allowed on a conversation the agent is offered or assigned.
    async fn change_identity(
        &mut self,
        id: String,
        change: IdentityChange,
        kind: IdentityKind,
        value: String,
        reason: String,
        reference: Option<&str>,
    ) -> Result<Option<FrameText>, Refusal> {
        if reason.trim().is_empty() {
            return Err(refuse("invalid_frame", "reason is required"));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(refuse(
                "too_long",
                format!("reason is longer than {MAX_REASON_CHARS} characters"),
            ));
        }
        if value.is_empty() || value.len() > MAX_IDENTITY_BYTES || value.chars().any(char::is_control) {
            return Err(refuse(
                "invalid_frame",
                format!("identity.value must be 1..={MAX_IDENTITY_BYTES} bytes of text"),
            ));
        }
        let agent = self.agent()?;
        let id = conversation_id(&id)?;
        let customer = self.state.bus.customer_of(agent.clone(), id.clone()).await?;
        let identity = Identity {
            kind,
            value,
            verified: false,
        };
        let d = customers::change_identity(&*self.state.store, &customer, change, identity, &agent, reason)
            .await
            .map_err(|error| refuse(error.code(), error.to_string()))?;
        tracing::info!(conversation_id = %id, agent_id = %agent, ?change, "customer identity changed by an agent");
        Ok(Some(protocol::ok(reference, d)))
    }

    async fn dispatch(
        &mut self,
        op: ClientOp,
        reference: Option<&str>,
    ) -> Result<Option<FrameText>, Refusal> {
        let bus = self.state.bus.clone();
        match op {
            ClientOp::Hello { .. } => Err(refuse("invalid_frame", "already authenticated")),
            ClientOp::Ping => Ok(Some(protocol::pong(reference))),
            ClientOp::SmsSegments { text } => {
                self.check_text(&text)?;
                Ok(Some(protocol::ok(reference, protocol::sms_segments(&text))))
            }
            ClientOp::Ack {
                conversation_id: id,
                seq,
            } => {
                bus.delivered(self.who.clone(), conversation_id(&id)?, seq).await;
                Ok(None)
            }
            ClientOp::MessageSend {
                conversation_id: id,
                client_msg_id,
                content,
                via,
            } => {
                self.check_client_msg_id(&client_msg_id)?;
                match (&content, &self.who) {
                    (Content::Text { text }, _) => self.check_text(text)?,
                    // An agent's image uploaded through `POST /agent/v1/media`, sent by the channel's connector.
                    (
                        Content::Media {
                            kind, provider_ref, ..
                        },
                        Participant::Agent(_),
                    ) if kind == "image" && !provider_ref.is_empty() && provider_ref.len() <= 128 => {}
                    _ => {
                        return Err(refuse(
                            "unsupported_content",
                            "only text content (and an agent's uploaded image) is accepted on this channel",
                        ))
                    }
                }
                let id = id.as_deref().map(conversation_id).transpose()?;
                let ack = match &self.who {
                    Participant::Customer(customer) if self.app_id.is_some() => {
                        let queue = self
                            .app_id
                            .as_deref()
                            .and_then(|app| self.state.apps.get(app))
                            .and_then(|app| app.queue.clone());
                        bus.customer_send(
                            customer.clone(),
                            Channel::App,
                            queue,
                            id,
                            client_msg_id.clone(),
                            content,
                            BTreeMap::new(),
                        )
                        .await?
                    }
                    Participant::Customer(customer) => {
                        let queue = self
                            .widget_key
                            .as_ref()
                            .and_then(|k| self.state.settings.widget_queue(k));
                        let attributes = self
                            .widget_key
                            .as_ref()
                            .map(|k| self.state.settings.widget_attributes(k))
                            .unwrap_or_default();
                        bus.customer_send(
                            customer.clone(),
                            Channel::Web,
                            queue,
                            id,
                            client_msg_id.clone(),
                            content,
                            attributes,
                        )
                        .await?
                    }
                    Participant::Agent(agent) => {
                        let id = id.ok_or_else(|| refuse("invalid_frame", "conversation_id is required"))?;
                        let route = match via {
                            Some(via) => Some(self.pick_route(agent, &id, &via).await?),
                            None => None,
                        };
                        bus.agent_message(agent.clone(), id, client_msg_id.clone(), content, route)
                            .await?
                    }
                };
                Ok(Some(protocol::message_ack(
                    reference,
                    &ack.conversation,
                    &client_msg_id,
                    &ack.message_id,
                    ack.seq,
                    ack.at_ms,
                )))
            }
            ClientOp::NoteSend {
                conversation_id: id,
                client_msg_id,
                text,
            } => {
                let agent = self.agent()?;
                self.check_client_msg_id(&client_msg_id)?;
                self.check_text(&text)?;
                let ack = bus
                    .agent_note(agent, conversation_id(&id)?, client_msg_id.clone(), text)
                    .await?;
                Ok(Some(protocol::message_ack(
                    reference,
                    &ack.conversation,
                    &client_msg_id,
                    &ack.message_id,
                    ack.seq,
                    ack.at_ms,
                )))
            }
            ClientOp::Typing {
                conversation_id: id,
                state,
            } => {
                bus.typing(self.who.clone(), conversation_id(&id)?, state).await;
                Ok(None)
            }
            ClientOp::Read {
                conversation_id: id,
                up_to_seq,
            } => {
                bus.read(self.who.clone(), conversation_id(&id)?, up_to_seq)
                    .await?;
                Ok(None)
            }
            ClientOp::PresenceSet { state } => {
                let d = bus.presence(self.agent()?, state).await?;
                Ok(Some(protocol::ok(reference, d)))
            }
            ClientOp::OfferAccept { conversation_id: id } => {
                let id = conversation_id(&id)?;
                let d = bus.accept(self.agent()?, id.clone()).await?;
                let customer = d["customer_id"].as_str().and_then(|c| CustomerId::parse(c).ok());
                if self.send(protocol::ok(reference, d)).await.is_err() {
                    return Ok(None);
                }
                let Some(customer) = customer else { return Ok(None) };
                // Read after the accept, in this connection's task: the bus is never held up by history.
                let store = std::sync::Arc::clone(&self.state.store);
                let history = &self.state.settings.history;
                match customers::context_frame(&*store, &customer, &id, history).await {
                    Ok(frame) => Ok(frame),
                    Err(error) => {
                        tracing::warn!(conversation_id = %id, %error, "customer context not sent");
                        Ok(None)
                    }
                }
            }
            ClientOp::CustomerLink {
                conversation_id: id,
                kind,
                value,
                reason,
            } => {
                self.change_identity(id, IdentityChange::Link, kind, value, reason, reference)
                    .await
            }
            ClientOp::CustomerUnlink {
                conversation_id: id,
                kind,
                value,
                reason,
            } => {
                self.change_identity(id, IdentityChange::Unlink, kind, value, reason, reference)
                    .await
            }
            ClientOp::OfferReject { conversation_id: id } => {
                let d = bus.reject(self.agent()?, conversation_id(&id)?).await?;
                Ok(Some(protocol::ok(reference, d)))
            }
            ClientOp::WrapUpDone { conversation_id: id } => {
                let d = bus.wrap_up_done(self.agent()?, conversation_id(&id)?).await?;
                Ok(Some(protocol::ok(reference, d)))
            }
            ClientOp::Close {
                conversation_id: id,
                disposition,
            } => {
                if disposition.len() > MAX_DISPOSITION_LEN || disposition.chars().any(char::is_control) {
                    return Err(refuse(
                        "invalid_frame",
                        format!("disposition must be at most {MAX_DISPOSITION_LEN} bytes of text"),
                    ));
                }
                let disposition = if disposition.is_empty() {
                    "unspecified".to_owned()
                } else {
                    disposition
                };
                let d = bus
                    .close(self.agent()?, conversation_id(&id)?, disposition)
                    .await?;
                Ok(Some(protocol::ok(reference, d)))
            }
            ClientOp::Transfer {
                conversation_id: id,
                to,
                reason,
            } => {
                if reason.chars().count() > MAX_REASON_CHARS {
                    return Err(refuse(
                        "too_long",
                        format!("reason is longer than {MAX_REASON_CHARS} characters"),
                    ));
                }
                let d = bus
                    .transfer(self.agent()?, conversation_id(&id)?, to, reason)
                    .await?;
                Ok(Some(protocol::ok(reference, d)))
            }
        }
    }
}
