//! The Redis backend's identity graph, customer history, erasure and audit log.
//!
//! Every graph change is one Lua script, so a merge (moving identities, conversations, history and aliases,
//! then writing the redirect) is never seen half done, and racing resolutions serialize. The scripts find
//! the keys they touch as they go (a merge moves the identities it finds), so they need one Redis, not a
//! cluster (`docs/redis.md`).

use omnigate_connectors::model::{CustomerId, Identity, IdentityKind};
use redis::Script;

use super::redis::RedisStore;
use super::{
    AuditEntry, ConversationHistory, ConversationRecord, ErasureReport, EventKind, GraphChange, LinkRecord,
    StoreError, StoredEvent, HISTORY_SCAN_EVENTS,
};

/// Helpers every graph script starts with. `ARGV[1]` is always the key prefix.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function cust(c, part) return P .. 'cust:' .. c .. ':' .. part end
local function ident(field) return P .. 'ident:' .. field end
local function canon(c)
  for _ = 1, 64 do
    local nxt = redis.call('GET', cust(c, 'merged_into'))
    if not nxt then return c end
    c = nxt
  end
  return c
end
local function owner(field)
  local c = redis.call('GET', ident(field))
  if not c then return nil end
  return canon(c)
end
local function attach(c, field, verified)
  redis.call('SET', ident(field), c)
  if redis.call('HGET', cust(c, 'idents'), field) ~= '1' then
    redis.call('HSET', cust(c, 'idents'), field, verified)
  end
end
local function record(c, action, identity, other, change)
  local r = '{"action":"' .. action .. '"'
  if identity then r = r .. ',"identity":' .. identity end
  if other then r = r .. ',"other":"' .. other .. '"' end
  redis.call('RPUSH', cust(c, 'links'), r .. ',"change":' .. change .. '}')
end
local function merge(from, into, change)
  local fields = redis.call('HGETALL', cust(from, 'idents'))
  for j = 1, #fields, 2 do
    redis.call('SET', ident(fields[j]), into)
    if redis.call('HGET', cust(into, 'idents'), fields[j]) ~= '1' then
      redis.call('HSET', cust(into, 'idents'), fields[j], fields[j + 1])
    end
  end
  local convs = redis.call('ZRANGE', cust(from, 'convs'), 0, -1, 'WITHSCORES')
  for j = 1, #convs, 2 do
    redis.call('ZADD', cust(into, 'convs'), convs[j + 1], convs[j])
  end
  for _, l in ipairs(redis.call('LRANGE', cust(from, 'links'), 0, -1)) do
    redis.call('RPUSH', cust(into, 'links'), l)
  end
  for _, a in ipairs(redis.call('SMEMBERS', cust(from, 'aliases'))) do
    redis.call('SADD', cust(into, 'aliases'), a)
  end
  redis.call('SADD', cust(into, 'aliases'), from)
  redis.call('DEL', cust(from, 'idents'), cust(from, 'convs'), cust(from, 'links'), cust(from, 'aliases'))
  redis.call('SET', cust(from, 'merged_into'), into)
  record(into, 'merged_from', nil, from, change)
end
"#;

/// ARGV: prefix, candidate customer, identity field, `1`/`0` verified, identity TTL (0: none).
const RESOLVE: &str = r#"
local field = ARGV[3]
local c = owner(field)
if not c then
  c = ARGV[2]
  attach(c, field, ARGV[4])
end
if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', ident(field), ARGV[5]) end
return c
"#;

/// ARGV: prefix, candidate customer, change JSON, then (field, identity JSON) per verified identity.
const RESOLVE_VERIFIED: &str = r#"
local change = ARGV[3]
local survivor = nil
local merged, seen = {}, {}
for i = 4, #ARGV, 2 do
  local c = owner(ARGV[i])
  if c and redis.call('HGET', cust(c, 'idents'), ARGV[i]) == '1' and not seen[c] then
    seen[c] = true
    if survivor then table.insert(merged, c) else survivor = c end
  end
end
survivor = survivor or ARGV[2]
for _, from in ipairs(merged) do merge(from, survivor, change) end
for i = 4, #ARGV, 2 do
  local c = owner(ARGV[i])
  if c and c ~= survivor then
    redis.call('HDEL', cust(c, 'idents'), ARGV[i])
    record(c, 'claimed', ARGV[i + 1], survivor, change)
    record(survivor, 'claimed', ARGV[i + 1], c, change)
  end
  attach(survivor, ARGV[i], '1')
end
return survivor
"#;

/// ARGV: prefix, customer. Returns its survivor.
const CANONICAL: &str = "return canon(ARGV[2])";

/// ARGV: prefix, customer, field, identity JSON, `1`/`0` verified, change JSON.
const LINK: &str = r#"
local target = canon(ARGV[2])
local field, identity, change = ARGV[3], ARGV[4], ARGV[6]
local previous = owner(field)
if previous == target then previous = nil end
if previous then
  redis.call('HDEL', cust(previous, 'idents'), field)
  record(previous, 'unlinked', identity, target, change)
end
attach(target, field, ARGV[5])
record(target, 'linked', identity, previous, change)
return target
"#;

/// ARGV: prefix, fresh customer, field, identity JSON, change JSON. Returns the fresh customer or nil.
const UNLINK: &str = r#"
local fresh, field, identity, change = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local previous = owner(field)
if not previous then return false end
local verified = redis.call('HGET', cust(previous, 'idents'), field) or '0'
redis.call('HDEL', cust(previous, 'idents'), field)
record(previous, 'unlinked', identity, fresh, change)
attach(fresh, field, verified)
record(fresh, 'linked', identity, previous, change)
return fresh
"#;

/// ARGV: prefix, customer, `idents` or `links`. The survivor's identity hash (flat) or link list.
const READ: &str = r#"
local c = canon(ARGV[2])
if ARGV[3] == 'idents' then return redis.call('HGETALL', cust(c, 'idents')) end
return redis.call('LRANGE', cust(c, 'links'), 0, -1)
"#;

/// Saves a conversation's summary, sets the TTLs of its keys for its state (closing starts the retention
/// clock, reopening stops it) and indexes it under its customer (the survivor of any merge).
/// KEYS: summary, log, customer index, idempotency hash, closed marker. ARGV: prefix, summary JSON, `1` when
/// closed, TTL of summary, log and index (0 removes any TTL), TTL of the idempotency hash (0 removes any
/// TTL), customer, created at, conversation id.
const SAVE: &str = r#"
local ttl = tonumber(ARGV[4])
local idem = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if ARGV[3] == '1' then
  if ttl > 0 then
    redis.call('SET', KEYS[5], '1', 'EX', ttl)
  else
    redis.call('SET', KEYS[5], '1')
  end
else
  redis.call('DEL', KEYS[5])
end
for i = 2, 3 do
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
end
if idem > 0 then redis.call('EXPIRE', KEYS[4], idem) else redis.call('PERSIST', KEYS[4]) end
redis.call('ZADD', cust(canon(ARGV[6]), 'convs'), ARGV[7], ARGV[8])
return 1
"#;

/// ARGV: prefix, customer, conversations (0: all), messages, events scanned. Per conversation, newest
/// first: `{summary, last close event or '', last assignment event or '', newest message, …}`.
const HISTORY: &str = r#"
local c = canon(ARGV[2])
local want, messages, scan = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', cust(c, 'convs'), 0, -1)) do
  if want > 0 and #out >= want then break end
  local conv = P .. 'conv:{' .. id .. '}:'
  local summary = redis.call('GET', conv .. 'summary')
  if summary then
    local entry = {summary, '', ''}
    if messages > 0 then
      local events = redis.call('LRANGE', conv .. 'log', -scan, -1)
      local found = 0
      for i = #events, 1, -1 do
        local e = events[i]
        if found < messages and string.find(e, '"type":"message.created"', 1, true) then
          found = found + 1
          entry[#entry + 1] = e
        elseif entry[2] == '' and string.find(e, '"type":"conversation.closed"', 1, true) then
          entry[2] = e
        elseif entry[3] == '' and string.find(e, '"type":"conversation.assigned"', 1, true) then
          entry[3] = e
        end
      end
    end
    out[#out + 1] = entry
  end
end
return out
"#;

/// ARGV: prefix, customer. Returns `{identities, link records, conversations, events, merged ids}`.
const ERASE: &str = r#"
local c = canon(ARGV[2])
local fields = redis.call('HKEYS', cust(c, 'idents'))
for _, f in ipairs(fields) do
  if owner(f) == c then redis.call('DEL', ident(f)) end
end
local links = redis.call('LLEN', cust(c, 'links'))
local ids = redis.call('ZRANGE', cust(c, 'convs'), 0, -1)
local events = 0
for _, id in ipairs(ids) do
  local conv = P .. 'conv:{' .. id .. '}:'
  events = events + redis.call('LLEN', conv .. 'log')
  redis.call('DEL', conv .. 'log', conv .. 'cidx', conv .. 'idem', conv .. 'summary', conv .. 'closed')
end
local aliases = redis.call('SMEMBERS', cust(c, 'aliases'))
for _, a in ipairs(aliases) do redis.call('DEL', cust(a, 'merged_into')) end
redis.call('DEL', cust(c, 'idents'), cust(c, 'links'), cust(c, 'convs'), cust(c, 'aliases'))
local profiles = redis.call('DEL', P .. 'cust:{' .. c .. '}:profile')
local devices_key = P .. 'push:{devices}:of:' .. c
local devices = redis.call('HKEYS', devices_key)
for _, d in ipairs(devices) do
  local owner_key = P .. 'push:{devices}:owner:' .. d
  if redis.call('GET', owner_key) == c then redis.call('DEL', owner_key) end
end
redis.call('DEL', devices_key)
return {#fields, links, #ids, events, #aliases, profiles, #devices}
"#;

/// The graph scripts, hashed once.
#[derive(Debug)]
pub(super) struct GraphScripts {
    resolve: Script,
    resolve_verified: Script,
    canonical: Script,
    link: Script,
    unlink: Script,
    read: Script,
    save: Script,
    history: Script,
    erase: Script,
}

impl GraphScripts {
    pub(super) fn new() -> GraphScripts {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        GraphScripts {
            resolve: script(RESOLVE),
            resolve_verified: script(RESOLVE_VERIFIED),
            canonical: script(CANONICAL),
            link: script(LINK),
            unlink: script(UNLINK),
            read: script(READ),
            save: script(SAVE),
            history: script(HISTORY),
            erase: script(ERASE),
        }
    }
}

fn kind_name(kind: IdentityKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// `<kind>:<value>`: the identity's field in a customer's identity hash and the tail of its key.
pub(super) fn identity_field(identity: &Identity) -> String {
    format!("{}:{}", kind_name(identity.kind), identity.value)
}

fn parse_field(field: &str, verified: &str) -> Result<Identity, StoreError> {
    let (kind, value) = field
        .split_once(':')
        .ok_or_else(|| StoreError::Corrupt(format!("identity field {field:?}")))?;
    let kind: IdentityKind = serde_json::from_value(serde_json::Value::String(kind.to_owned()))
        .map_err(|error| StoreError::Corrupt(format!("identity kind {kind:?}: {error}")))?;
    Ok(Identity {
        kind,
        value: value.to_owned(),
        verified: verified == "1",
    })
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(format!("does not serialize: {error}")))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

fn optional_event(raw: &[u8]) -> Result<Option<EventKind>, StoreError> {
    if raw.is_empty() {
        return Ok(None);
    }
    Ok(Some(decode::<StoredEvent>("stored event", raw)?.kind))
}

fn customer(raw: &str) -> Result<CustomerId, StoreError> {
    CustomerId::parse(raw).map_err(|error| StoreError::Corrupt(format!("customer id: {error}")))
}

fn flag(verified: bool) -> &'static str {
    if verified {
        "1"
    } else {
        "0"
    }
}

impl RedisStore {
    fn prefix(&self) -> &str {
        &self.settings.key_prefix
    }

    fn audit_key(&self) -> String {
        format!("{}audit", self.prefix())
    }

    pub(super) async fn graph_resolve(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        let mut call = self.graph.resolve.prepare_invoke();
        call.arg(self.prefix())
            .arg(CustomerId::generate().as_str())
            .arg(identity_field(identity))
            .arg(flag(identity.verified))
            .arg(self.settings.identity_ttl_secs);
        let mut conn = self.conn.clone();
        let raw: String = self
            .bounded("resolve customer", call.invoke_async(&mut conn))
            .await?;
        customer(&raw)
    }

    pub(super) async fn graph_resolve_verified(
        &self,
        identities: &[Identity],
    ) -> Result<CustomerId, StoreError> {
        let verified: Vec<&Identity> = identities.iter().filter(|i| i.verified).collect();
        if verified.is_empty() {
            let first = identities.first().ok_or_else(|| {
                StoreError::Corrupt("resolve_verified needs at least one identity".to_owned())
            })?;
            return self.graph_resolve(first).await;
        }
        let change = GraphChange {
            actor: "system".to_owned(),
            reason: "verified identities observed together".to_owned(),
            at_ms: crate::clock::unix_ms(),
        };
        let mut call = self.graph.resolve_verified.prepare_invoke();
        call.arg(self.prefix())
            .arg(CustomerId::generate().as_str())
            .arg(json(&change)?);
        for identity in verified {
            call.arg(identity_field(identity)).arg(json(identity)?);
        }
        let mut conn = self.conn.clone();
        let raw: String = self
            .bounded("resolve verified", call.invoke_async(&mut conn))
            .await?;
        customer(&raw)
    }

    pub(super) async fn graph_canonical(&self, of: &CustomerId) -> Result<CustomerId, StoreError> {
        let mut call = self.graph.canonical.prepare_invoke();
        call.arg(self.prefix()).arg(of.as_str());
        let mut conn = self.conn.clone();
        let raw: String = self
            .bounded("canonical customer", call.invoke_async(&mut conn))
            .await?;
        customer(&raw)
    }

    pub(super) async fn graph_link(
        &self,
        to: &CustomerId,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<CustomerId, StoreError> {
        let mut call = self.graph.link.prepare_invoke();
        call.arg(self.prefix())
            .arg(to.as_str())
            .arg(identity_field(identity))
            .arg(json(identity)?)
            .arg(flag(identity.verified))
            .arg(json(change)?);
        let mut conn = self.conn.clone();
        let raw: String = self
            .bounded("link identity", call.invoke_async(&mut conn))
            .await?;
        customer(&raw)
    }

    pub(super) async fn graph_unlink(
        &self,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<Option<CustomerId>, StoreError> {
        let mut call = self.graph.unlink.prepare_invoke();
        call.arg(self.prefix())
            .arg(CustomerId::generate().as_str())
            .arg(identity_field(identity))
            .arg(json(identity)?)
            .arg(json(change)?);
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .bounded("unlink identity", call.invoke_async(&mut conn))
            .await?;
        raw.as_deref().map(customer).transpose()
    }

    async fn graph_read(&self, of: &CustomerId, what: &'static str) -> Result<Vec<String>, StoreError> {
        let mut call = self.graph.read.prepare_invoke();
        call.arg(self.prefix()).arg(of.as_str()).arg(what);
        let mut conn = self.conn.clone();
        self.bounded("read customer", call.invoke_async(&mut conn)).await
    }

    pub(super) async fn graph_identities(&self, of: &CustomerId) -> Result<Vec<Identity>, StoreError> {
        let flat = self.graph_read(of, "idents").await?;
        let mut identities = flat
            .chunks(2)
            .map(|pair| parse_field(&pair[0], pair.get(1).map_or("0", String::as_str)))
            .collect::<Result<Vec<_>, _>>()?;
        identities.sort();
        Ok(identities)
    }

    pub(super) async fn graph_links(&self, of: &CustomerId) -> Result<Vec<LinkRecord>, StoreError> {
        self.graph_read(of, "links")
            .await?
            .iter()
            .map(|raw| decode("link record", raw.as_bytes()))
            .collect()
    }

    /// Saves a summary with its retention TTLs and indexes it under its customer (one script).
    pub(super) async fn graph_save(
        &self,
        keys: [String; 5],
        record: &ConversationRecord,
        closed: bool,
        ttls: (u64, u64),
    ) -> Result<(), StoreError> {
        let mut call = self.graph.save.prepare_invoke();
        for key in keys {
            call.key(key);
        }
        call.arg(self.prefix())
            .arg(json(record)?)
            .arg(if closed { "1" } else { "0" })
            .arg(ttls.0)
            .arg(ttls.1)
            .arg(record.customer.as_str())
            .arg(record.created_at_ms)
            .arg(record.id.as_str());
        let mut conn = self.conn.clone();
        self.bounded("save conversation", call.invoke_async::<()>(&mut conn))
            .await
    }

    pub(super) async fn graph_history(
        &self,
        of: &CustomerId,
        conversations: usize,
        messages: usize,
    ) -> Result<Vec<ConversationHistory>, StoreError> {
        let mut call = self.graph.history.prepare_invoke();
        call.arg(self.prefix())
            .arg(of.as_str())
            .arg(conversations)
            .arg(messages)
            .arg(HISTORY_SCAN_EVENTS);
        let mut conn = self.conn.clone();
        let raw: Vec<Vec<Vec<u8>>> = self
            .bounded("customer history", call.invoke_async(&mut conn))
            .await?;
        raw.into_iter()
            .map(|entry| {
                let mut parts = entry.into_iter();
                let record: ConversationRecord =
                    decode("conversation summary", &parts.next().unwrap_or_default())?;
                let closed = parts.next().unwrap_or_default();
                let disposition = match optional_event(&closed)? {
                    Some(EventKind::Closed { disposition }) => Some(disposition),
                    _ => None,
                };
                let assigned = parts.next().unwrap_or_default();
                let agent = match optional_event(&assigned)? {
                    Some(EventKind::Assigned { agent_id, .. }) => Some(agent_id),
                    _ => None,
                };
                let mut messages = parts
                    .map(|e| decode::<StoredEvent>("stored event", &e))
                    .collect::<Result<Vec<_>, _>>()?;
                messages.reverse();
                Ok(ConversationHistory {
                    record,
                    messages,
                    disposition,
                    agent,
                })
            })
            .collect()
    }

    pub(super) async fn graph_erase(&self, of: &CustomerId) -> Result<ErasureReport, StoreError> {
        let mut call = self.graph.erase.prepare_invoke();
        call.arg(self.prefix()).arg(of.as_str());
        let mut conn = self.conn.clone();
        let counts: (u64, u64, u64, u64, u64, u64, u64) = self
            .bounded("erase customer", call.invoke_async(&mut conn))
            .await?;
        let (identities, link_records, conversations, events, merged_ids, profiles, devices) = counts;
        Ok(ErasureReport {
            identities,
            link_records,
            conversations,
            events,
            merged_ids,
            profiles,
            devices,
        })
    }

    pub(super) async fn graph_append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut push = redis::cmd("RPUSH");
        push.arg(self.audit_key()).arg(json(entry)?);
        let mut conn = self.conn.clone();
        self.bounded("append audit", push.query_async::<()>(&mut conn))
            .await
    }

    pub(super) async fn graph_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut range = redis::cmd("LRANGE");
        range
            .arg(self.audit_key())
            .arg(-(limit.min(1 << 30) as i64))
            .arg(-1);
        let mut conn = self.conn.clone();
        let raw: Vec<Vec<u8>> = self
            .bounded("audit entries", range.query_async(&mut conn))
            .await?;
        raw.iter().map(|e| decode("audit entry", e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_fields_round_trip_with_colons_in_the_value() {
        let identity = Identity {
            kind: IdentityKind::WechatUnionId,
            value: "o:6_b".to_owned(),
            verified: true,
        };
        assert_eq!(identity_field(&identity), "wechat_union_id:o:6_b");
        assert_eq!(parse_field(&identity_field(&identity), "1").unwrap(), identity);
    }
}
