//! The Redis backend: several gateway processes share one context store.
//!
//! Every call goes over one shared multiplexed connection ([`ConnectionManager`], which reconnects by
//! itself) and is bounded by the configured command timeout, so a dead or paused Redis makes calls fail
//! with [`StoreError::Unavailable`] instead of stalling the session bus. Appends are one Lua script each
//! (idempotency check, gapless numbering in both views, write: atomic and one round trip); pages are one
//! read-only script. The key layout is in `docs/redis.md`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use omnigate_connectors::model::{ConversationId, CustomerId, Identity};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script};
use serde::Serialize;

use super::{
    Actor, Appended, AuditEntry, ContextStore, ConversationHistory, ConversationRecord, ConversationStatus,
    CustomerProfile, Device, ErasureReport, EventKind, EventPage, GraphChange, Held, Inbox, LinkRecord,
    NewEvent, PushPlatform, StoreError, StoredEvent, View,
};

/// Marks errors the scripts raise on data they cannot make sense of (reported as [`StoreError::Corrupt`]).
const CORRUPT_MARKER: &str = "OGCORRUPT";

/// Appends one event. KEYS: log, customer index, idempotency hash, closed marker. ARGV: idempotency key (empty for none),
/// `1` when the customer sees the event, the event's JSON after its numbering (without the opening brace),
/// TTL in seconds (0 keeps the keys). Returns `{1, seq, customer_seq or 0, ''}` for a new event (the caller
/// has the rest of it) and `{0, 0, 0, original}` for a duplicate.
pub(crate) const APPEND_LUA: &str = r#"
local key = ARGV[1]
if key ~= '' then
  local seen = redis.call('HGET', KEYS[3], key)
  if seen then
    local original = redis.call('LINDEX', KEYS[1], tonumber(seen) - 1)
    if not original then
      return redis.error_reply('OGCORRUPT idempotency key points at missing seq ' .. seen)
    end
    return {0, 0, 0, original}
  end
end
local seq = redis.call('LLEN', KEYS[1]) + 1
local customer_seq = 0
local customer_json = 'null'
if ARGV[2] == '1' then
  customer_seq = redis.call('ZCARD', KEYS[2]) + 1
  customer_json = customer_seq
  redis.call('ZADD', KEYS[2], seq, seq)
end
local event = '{"seq":' .. seq .. ',"customer_seq":' .. customer_json .. ',' .. ARGV[3]
redis.call('RPUSH', KEYS[1], event)
if key ~= '' then
  redis.call('HSET', KEYS[3], key, seq)
end
local ttl = tonumber(ARGV[4])
-- A closed conversation keeps the retention TTL its close set (a read watermark after close must not renew it).
if ttl > 0 and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {1, seq, customer_seq, ''}
"#;

/// Registers a device. KEYS: the device's owner key, the new owner's device hash. ARGV: the new owner's
/// customer id, the device's field (`<platform>:<token>`), its JSON, the prefix of device hashes (the old
/// owner's hash is that prefix + their id). Moves the device from a previous owner in the same script.
pub(crate) const REGISTER_DEVICE_LUA: &str = r#"
local previous = redis.call('GET', KEYS[1])
if previous and previous ~= ARGV[1] then
  redis.call('HDEL', ARGV[4] .. previous, ARGV[2])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"#;

/// Unregisters a device if `ARGV[1]` owns it. KEYS: the owner key, the owner's device hash. ARGV: customer
/// id, the device's field. Returns 1 when it was removed.
pub(crate) const UNREGISTER_DEVICE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"#;

/// Reads a page of one view. KEYS: log, customer index. ARGV: `agent` or `customer`, position after which
/// to read, the most events to return. Returns the view's last position followed by the events.
pub(crate) const PAGE_LUA: &str = r#"
local after = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if ARGV[1] == 'agent' then
  local last = redis.call('LLEN', KEYS[1])
  if limit == 0 or after >= last then
    return {tostring(last)}
  end
  local events = redis.call('LRANGE', KEYS[1], after, after + limit - 1)
  table.insert(events, 1, tostring(last))
  return events
end
local last = redis.call('ZCARD', KEYS[2])
local out = {tostring(last)}
if limit == 0 or after >= last then
  return out
end
local seqs = redis.call('ZRANGE', KEYS[2], after, after + limit - 1)
for _, seq in ipairs(seqs) do
  local event = redis.call('LINDEX', KEYS[1], tonumber(seq) - 1)
  if not event then
    return redis.error_reply('OGCORRUPT customer index points at missing seq ' .. seq)
  end
  out[#out + 1] = event
end
return out
"#;

/// The most events one page may ask for; larger limits are clamped (Lua numbers are doubles).
const MAX_PAGE: usize = 1 << 30;

/// How to reach Redis, how to name keys and how long they live.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key (e.g. `og:`).
    pub key_prefix: String,
    /// Bound on connecting, at start and on each reconnection attempt.
    pub connect_timeout: Duration,
    /// Bound on every command, waiting for a reconnection included.
    pub command_timeout: Duration,
    /// Conversation keys expire this long after their last write; 0 keeps them.
    pub conversation_ttl_secs: u64,
    /// Identity keys expire this long after their last resolution; 0 keeps them.
    pub identity_ttl_secs: u64,
    /// How long closed conversations and profiles are kept (`[retention]`).
    pub retention: super::Retention,
}

impl RedisSettings {
    /// The settings in the `[store]` section.
    pub fn from_config(store: &omnigate_config::Store) -> RedisSettings {
        RedisSettings {
            url: store.redis_url.clone(),
            key_prefix: store.key_prefix.clone(),
            connect_timeout: Duration::from_millis(store.connect_timeout_ms),
            command_timeout: Duration::from_millis(store.command_timeout_ms),
            conversation_ttl_secs: store.conversation_ttl_secs,
            identity_ttl_secs: store.identity_ttl_secs,
            retention: super::Retention::default(),
        }
    }

    /// These settings with the `[retention]` section's TTLs.
    pub fn with_retention(mut self, retention: &omnigate_config::Retention) -> RedisSettings {
        self.retention = super::Retention::from_config(retention);
        self
    }
}

/// [`ContextStore`] on Redis.
pub struct RedisStore {
    pub(super) conn: ConnectionManager,
    pub(super) settings: RedisSettings,
    pub(super) graph: super::redis_graph::GraphScripts,
    append: Script,
    page: Script,
    register_device: Script,
    unregister_device: Script,
    /// The value of `<prefix>epoch` when this store connected: if Redis loses it (a restart without
    /// persistence, a flush), it lost the logs this gateway's state refers to.
    epoch: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.settings.key_prefix)
            .field("command_timeout", &self.settings.command_timeout)
            .finish_non_exhaustive()
    }
}

/// The event's fields after its numbering, serialized in one go; the append script prepends the numbers.
#[derive(Serialize)]
struct EventBody<'a> {
    at_ms: u64,
    actor: &'a Actor,
    kind: &'a EventKind,
}

impl RedisStore {
    /// Connects within `connect_timeout` and reads the epoch marker (setting it on an empty Redis), which
    /// later readiness checks compare against to notice that Redis lost its data.
    ///
    /// # Errors
    /// [`StoreError::Misconfigured`] for a malformed URL, [`StoreError::Unavailable`] when Redis does not
    /// answer in time.
    pub async fn connect(settings: RedisSettings) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|error| StoreError::Misconfigured(format!("redis url {:?}: {error}", settings.url)))?;
        // Reconnection rounds of four attempts: the second 1-2 s after the first (redis-rs's fixed first
        // delay, with jitter), the others 200-400 ms apart; a failed round is started again by the next
        // call, so a Redis that is back is found within about two seconds. No response timeout here:
        // `bounded` puts one timer on every call, reconnection waits included.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(settings.connect_timeout)
            .set_factor(2)
            .set_max_delay(200)
            .set_number_of_retries(3);
        let connecting = ConnectionManager::new_with_config(client, config);
        let conn = match tokio::time::timeout(settings.connect_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to redis at {}: {error}",
                    settings.url
                )))
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to redis at {} within {} ms",
                    settings.url,
                    settings.connect_timeout.as_millis()
                )))
            }
        };
        let mut store = RedisStore {
            conn,
            settings,
            graph: super::redis_graph::GraphScripts::new(),
            append: Script::new(APPEND_LUA),
            page: Script::new(PAGE_LUA),
            register_device: Script::new(REGISTER_DEVICE_LUA),
            unregister_device: Script::new(UNREGISTER_DEVICE_LUA),
            epoch: String::new(),
        };
        // The first gateway on an empty Redis sets the epoch; the others adopt it.
        let candidate = uuid::Uuid::new_v4().simple().to_string();
        let mut set = redis::cmd("SET");
        set.arg(store.epoch_key()).arg(&candidate).arg("NX").arg("GET");
        let mut conn = store.conn.clone();
        let existing: Option<String> = store.bounded("epoch", set.query_async(&mut conn)).await?;
        store.epoch = existing.unwrap_or(candidate);
        Ok(store)
    }

    fn conversation_key(&self, id: &ConversationId, part: &str) -> String {
        conversation_key(&self.settings.key_prefix, id, part)
    }

    /// `<prefix>push:{devices}:of:` (+ customer id): a customer's devices. The `{devices}` hash tag keeps every
    /// device key in one cluster slot, as the register script (which touches two customers) requires.
    fn devices_prefix(&self) -> String {
        format!("{}push:{{devices}}:of:", self.settings.key_prefix)
    }

    /// `<prefix>push:{devices}:owner:<platform>:<token>`: the customer a device belongs to.
    fn device_owner_key(&self, platform: PushPlatform, token: &str) -> String {
        format!(
            "{}push:{{devices}}:owner:{}:{token}",
            self.settings.key_prefix,
            platform.as_str()
        )
    }

    /// TTLs (conversation keys, idempotency hash) for an open or closed conversation: an open one lives
    /// `conversation_ttl_secs` after its last write; a closed one `closed_conversation_secs` after the close
    /// (or as an open one when retention keeps it). 0 means no TTL.
    fn ttls(&self, closed: bool) -> (u64, u64) {
        let open = self.settings.conversation_ttl_secs;
        if !closed {
            return (open, open);
        }
        let retention = &self.settings.retention;
        let ttl = if retention.closed_conversation_secs > 0 {
            retention.closed_conversation_secs
        } else {
            open
        };
        let idem = if retention.idempotency_after_close_secs > 0 {
            retention.idempotency_after_close_secs
        } else {
            ttl
        };
        (ttl, idem)
    }

    fn epoch_key(&self) -> String {
        format!("{}epoch", self.settings.key_prefix)
    }

    /// Runs one Redis call within the command timeout, turning its failure into a [`StoreError`].
    pub(super) async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.settings.command_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(what, &error)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis {what} timed out after {} ms",
                self.settings.command_timeout.as_millis()
            ))),
        }
    }
}

/// `<prefix>conv:{<id>}:<part>`. The braces are a cluster hash tag: every key of one conversation lives in
/// one slot, as its scripts require.
fn conversation_key(prefix: &str, id: &ConversationId, part: &str) -> String {
    format!("{prefix}conv:{{{id}}}:{part}")
}

/// `<prefix>cust:{<id>}:profile`; the hash tag keeps a customer's keys in one slot.
fn profile_key(prefix: &str, customer: &CustomerId) -> String {
    format!("{prefix}cust:{{{customer}}}:profile")
}

fn classify(what: &str, error: &RedisError) -> StoreError {
    let text = error.to_string();
    if text.contains(CORRUPT_MARKER) || error.kind() == ErrorKind::TypeError {
        StoreError::Corrupt(format!("redis {what}: {text}"))
    } else {
        StoreError::Unavailable(format!("redis {what}: {text}"))
    }
}

fn decode_event(raw: &[u8]) -> Result<StoredEvent, StoreError> {
    serde_json::from_slice(raw).map_err(|error| StoreError::Corrupt(format!("stored event: {error}")))
}

#[async_trait]
impl ContextStore for RedisStore {
    async fn append(&self, conversation: &ConversationId, event: NewEvent) -> Result<Appended, StoreError> {
        let body = serde_json::to_string(&EventBody {
            at_ms: event.at_ms,
            actor: &event.actor,
            kind: &event.kind,
        })
        .map_err(|error| StoreError::Corrupt(format!("event does not serialize: {error}")))?;
        let body = body.strip_prefix('{').unwrap_or(&body);
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(self.conversation_key(conversation, "log"))
            .key(self.conversation_key(conversation, "cidx"))
            .key(self.conversation_key(conversation, "idem"))
            .key(self.conversation_key(conversation, "closed"))
            .arg(event.idempotency_key.as_deref().unwrap_or(""))
            .arg(if event.kind.customer_visible() { "1" } else { "0" })
            .arg(body)
            .arg(self.settings.conversation_ttl_secs);
        let mut conn = self.conn.clone();
        let (new, seq, customer_seq, original): (u8, u64, u64, Vec<u8>) =
            self.bounded("append", invocation.invoke_async(&mut conn)).await?;
        if new == 0 {
            return Ok(Appended::Duplicate(Arc::new(decode_event(&original)?)));
        }
        // The hot path: the script returns only the numbers, the rest is what was sent.
        Ok(Appended::New(Arc::new(StoredEvent {
            seq,
            customer_seq: (customer_seq > 0).then_some(customer_seq),
            at_ms: event.at_ms,
            actor: event.actor,
            kind: event.kind,
        })))
    }

    async fn events_after(
        &self,
        conversation: &ConversationId,
        view: View,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let mut invocation = self.page.prepare_invoke();
        invocation
            .key(self.conversation_key(conversation, "log"))
            .key(self.conversation_key(conversation, "cidx"))
            .arg(match view {
                View::Agent => "agent",
                View::Customer => "customer",
            })
            .arg(after)
            .arg(limit.min(MAX_PAGE));
        let mut conn = self.conn.clone();
        let raw: Vec<Vec<u8>> = self.bounded("page", invocation.invoke_async(&mut conn)).await?;
        let mut raw = raw.into_iter();
        let last = raw
            .next()
            .and_then(|last| std::str::from_utf8(&last).ok()?.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Corrupt("page without its last position".to_owned()))?;
        let events = raw.map(|e| decode_event(&e)).collect::<Result<Vec<_>, _>>()?;
        Ok(EventPage { events, last })
    }

    async fn customer_position(&self, conversation: &ConversationId, seq: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.conversation_key(conversation, "cidx");
        let mut count = redis::cmd("ZCOUNT");
        count.arg(key).arg("-inf").arg(seq);
        self.bounded("customer position", count.query_async(&mut conn))
            .await
    }

    async fn agent_position(
        &self,
        conversation: &ConversationId,
        customer_seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        if customer_seq == 0 {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let key = self.conversation_key(conversation, "cidx");
        let rank = customer_seq - 1;
        let mut range = redis::cmd("ZRANGE");
        range.arg(key).arg(rank).arg(rank);
        let seqs: Vec<u64> = self
            .bounded("agent position", range.query_async(&mut conn))
            .await?;
        Ok(seqs.first().copied())
    }

    async fn save_conversation(&self, record: &ConversationRecord) -> Result<(), StoreError> {
        let closed = record.status == ConversationStatus::Closed;
        let keys =
            ["summary", "log", "cidx", "idem", "closed"].map(|part| self.conversation_key(&record.id, part));
        self.graph_save(keys, record, closed, self.ttls(closed)).await
    }

    async fn load_conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.conversation_key(id, "summary"));
        let raw: Option<String> = self
            .bounded("load conversation", get.query_async(&mut conn))
            .await?;
        raw.map(|raw| {
            serde_json::from_str(&raw)
                .map_err(|error| StoreError::Corrupt(format!("conversation summary: {error}")))
        })
        .transpose()
    }

    async fn resolve_customer(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        self.graph_resolve(identity).await
    }

    async fn resolve_verified(&self, identities: &[Identity]) -> Result<CustomerId, StoreError> {
        self.graph_resolve_verified(identities).await
    }

    async fn canonical_customer(&self, customer: &CustomerId) -> Result<CustomerId, StoreError> {
        self.graph_canonical(customer).await
    }

    async fn link_identity(
        &self,
        customer: &CustomerId,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<CustomerId, StoreError> {
        self.graph_link(customer, identity, change).await
    }

    async fn unlink_identity(
        &self,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<Option<CustomerId>, StoreError> {
        self.graph_unlink(identity, change).await
    }

    async fn identities_of(&self, customer: &CustomerId) -> Result<Vec<Identity>, StoreError> {
        self.graph_identities(customer).await
    }

    async fn link_history(&self, customer: &CustomerId) -> Result<Vec<LinkRecord>, StoreError> {
        self.graph_links(customer).await
    }

    async fn customer_conversations(
        &self,
        customer: &CustomerId,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        Ok(self
            .graph_history(customer, 0, 0)
            .await?
            .into_iter()
            .map(|h| h.record)
            .collect())
    }

    async fn customer_history(
        &self,
        customer: &CustomerId,
        conversations: usize,
        messages: usize,
    ) -> Result<Vec<ConversationHistory>, StoreError> {
        if conversations == 0 {
            return Ok(Vec::new());
        }
        self.graph_history(customer, conversations, messages).await
    }

    async fn erase_customer(&self, customer: &CustomerId) -> Result<ErasureReport, StoreError> {
        self.graph_erase(customer).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.graph_append_audit(entry).await
    }

    async fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.graph_audit(limit).await
    }

    async fn register_device(&self, customer: &CustomerId, device: &Device) -> Result<(), StoreError> {
        let json = serde_json::to_string(device)
            .map_err(|error| StoreError::Corrupt(format!("device does not serialize: {error}")))?;
        let mut invocation = self.register_device.prepare_invoke();
        invocation
            .key(self.device_owner_key(device.platform, &device.token))
            .key(format!("{}{customer}", self.devices_prefix()))
            .arg(customer.as_str())
            .arg(format!("{}:{}", device.platform.as_str(), device.token))
            .arg(json)
            .arg(self.devices_prefix());
        let mut conn = self.conn.clone();
        self.bounded("register device", invocation.invoke_async::<()>(&mut conn))
            .await
    }

    async fn unregister_device(
        &self,
        customer: &CustomerId,
        platform: PushPlatform,
        token: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.unregister_device.prepare_invoke();
        invocation
            .key(self.device_owner_key(platform, token))
            .key(format!("{}{customer}", self.devices_prefix()))
            .arg(customer.as_str())
            .arg(format!("{}:{token}", platform.as_str()));
        let mut conn = self.conn.clone();
        let removed: u8 = self
            .bounded("unregister device", invocation.invoke_async(&mut conn))
            .await?;
        Ok(removed == 1)
    }

    async fn devices(&self, customer: &CustomerId) -> Result<Vec<Device>, StoreError> {
        let mut vals = redis::cmd("HVALS");
        vals.arg(format!("{}{customer}", self.devices_prefix()));
        let mut conn = self.conn.clone();
        let raw: Vec<String> = self.bounded("devices", vals.query_async(&mut conn)).await?;
        let mut devices = raw
            .iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|error| StoreError::Corrupt(format!("stored device: {error}")))
            })
            .collect::<Result<Vec<Device>, _>>()?;
        devices.sort();
        Ok(devices)
    }

    async fn save_profile(&self, customer: &CustomerId, profile: &CustomerProfile) -> Result<(), StoreError> {
        let json = serde_json::to_string(profile)
            .map_err(|error| StoreError::Corrupt(format!("profile does not serialize: {error}")))?;
        let mut set = redis::cmd("SET");
        set.arg(profile_key(&self.settings.key_prefix, customer))
            .arg(json);
        if self.settings.retention.profile_secs > 0 {
            set.arg("EX").arg(self.settings.retention.profile_secs);
        }
        let mut conn = self.conn.clone();
        self.bounded("save profile", set.query_async::<()>(&mut conn))
            .await
    }

    async fn load_profile(&self, customer: &CustomerId) -> Result<Option<CustomerProfile>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(profile_key(&self.settings.key_prefix, customer));
        let mut conn = self.conn.clone();
        let raw: Option<String> = self.bounded("load profile", get.query_async(&mut conn)).await?;
        raw.map(|raw| {
            serde_json::from_str(&raw)
                .map_err(|error| StoreError::Corrupt(format!("customer profile: {error}")))
        })
        .transpose()
    }

    async fn delete_profile(&self, customer: &CustomerId) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        del.arg(profile_key(&self.settings.key_prefix, customer));
        let mut conn = self.conn.clone();
        self.bounded("delete profile", del.query_async::<()>(&mut conn))
            .await
    }

    /// Checks that Redis answers and still holds what this gateway wrote: the epoch read at connect.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.epoch_key());
        let epoch: Option<String> = self.bounded("ping", get.query_async(&mut conn)).await?;
        if epoch.as_deref() == Some(self.epoch.as_str()) {
            Ok(())
        } else {
            Err(StoreError::Corrupt(
                "redis lost its data since this gateway connected (its epoch key is gone or changed): \
                 restart the gateway, and give redis persistence"
                    .to_owned(),
            ))
        }
    }

    async fn hold(&self, inbox: Inbox, key: &str, value: &str) -> Result<(), StoreError> {
        let mut hset = redis::cmd("HSET");
        hset.arg(held_key(&self.settings.key_prefix, inbox))
            .arg(key)
            .arg(value);
        let mut conn = self.conn.clone();
        self.bounded("hold", hset.query_async::<()>(&mut conn)).await
    }

    async fn release(&self, inbox: Inbox, key: &str) -> Result<(), StoreError> {
        let mut hdel = redis::cmd("HDEL");
        hdel.arg(held_key(&self.settings.key_prefix, inbox)).arg(key);
        let mut conn = self.conn.clone();
        self.bounded("release", hdel.query_async::<()>(&mut conn)).await
    }

    async fn held(&self, inbox: Inbox) -> Result<Vec<Held>, StoreError> {
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(held_key(&self.settings.key_prefix, inbox));
        let mut conn = self.conn.clone();
        let map: std::collections::BTreeMap<String, String> =
            self.bounded("held", hgetall.query_async(&mut conn)).await?;
        Ok(map.into_iter().map(|(key, value)| Held { key, value }).collect())
    }
}

/// `<prefix>held:<inbox>`: one hash per inbox of held records.
fn held_key(prefix: &str, inbox: Inbox) -> String {
    format!("{prefix}held:{}", inbox.as_str())
}

#[cfg(test)]
mod tests {
    use omnigate_connectors::model::{ConversationId, Identity, IdentityKind};

    use super::*;

    fn settings() -> RedisSettings {
        RedisSettings {
            url: "redis://127.0.0.1:1/0".to_owned(),
            key_prefix: "t:".to_owned(),
            connect_timeout: Duration::from_millis(100),
            command_timeout: Duration::from_millis(100),
            conversation_ttl_secs: 0,
            identity_ttl_secs: 0,
            retention: super::super::Retention::default(),
        }
    }

    #[tokio::test]
    async fn a_malformed_url_is_a_configuration_error() {
        let error = RedisStore::connect(RedisSettings {
            url: "not a url".to_owned(),
            ..settings()
        })
        .await
        .expect_err("malformed url");
        assert!(matches!(error, StoreError::Misconfigured(_)), "{error:?}");
    }

    #[test]
    fn script_errors_marked_corrupt_are_corrupt_and_io_errors_are_unavailable() {
        let corrupt = RedisError::from((ErrorKind::ResponseError, "script", "OGCORRUPT bad".to_owned()));
        assert!(matches!(classify("append", &corrupt), StoreError::Corrupt(_)));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify("append", &io), StoreError::Unavailable(_)));
    }

    #[test]
    fn the_body_the_script_completes_decodes_as_a_stored_event() {
        let kind = EventKind::Queued {
            queue: "general".to_owned(),
        };
        let body = serde_json::to_string(&EventBody {
            at_ms: 7,
            actor: &Actor::System,
            kind: &kind,
        })
        .unwrap();
        let raw = format!("{{\"seq\":3,\"customer_seq\":null,{}", &body[1..]);
        let event = decode_event(raw.as_bytes()).unwrap();
        assert_eq!((event.seq, event.customer_seq, event.at_ms), (3, None, 7));
        assert_eq!(event.kind, kind);
    }

    #[test]
    fn keys_share_a_hash_tag_per_conversation_and_name_the_identity_kind() {
        let id = ConversationId::parse("c_1").unwrap();
        assert_eq!(conversation_key("t:", &id, "log"), "t:conv:{c_1}:log");
        assert_eq!(conversation_key("t:", &id, "cidx"), "t:conv:{c_1}:cidx");
        let identity = Identity {
            kind: IdentityKind::WechatOpenId,
            value: "o-1".to_owned(),
            verified: false,
        };
        assert_eq!(
            format!(
                "og:ident:{}",
                super::super::redis_graph::identity_field(&identity)
            ),
            "og:ident:wechat_open_id:o-1"
        );
    }
}
