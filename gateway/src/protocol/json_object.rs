//! A JSON object written field by field into a buffer, for the frames of every relayed message.
//!
//! Keys are `'static` identifiers written as they are; values go through serde_json, so strings are escaped
//! exactly as in every other frame. A `#[derive(Serialize)]` struct costs more here: serde_json escapes each
//! of its keys again at every call, and walks its state machine for each field (a profile of relay put the two
//! `event` frames of each relayed message at 11% of the gateway's core).

use serde::Serialize;

/// One JSON object being written; [`JsonObject::end`] closes it.
pub(super) struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    /// Opens an object at the end of `out`.
    pub(super) fn begin(out: &'a mut Vec<u8>) -> JsonObject<'a> {
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{key} needs escaping"
        );
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// Writes `"key":value`.
    pub(super) fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.key(key);
        serde_json::to_writer(&mut *self.out, value)
    }

    /// Opens the object under `key`; this object's next field comes after that one ends.
    pub(super) fn object(&mut self, key: &'static str) -> JsonObject<'_> {
        self.key(key);
        JsonObject::begin(self.out)
    }

    /// Closes the object.
    pub(super) fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn writes_nested_objects_with_escaped_values() {
        let mut out = Vec::new();
        let mut outer = JsonObject::begin(&mut out);
        outer.field("op", "event").unwrap();
        let mut d = outer.object("d");
        d.field("text", "a \"b\"\n\u{1}你").unwrap();
        d.field("seq", &7u64).unwrap();
        d.object("empty").end();
        d.field("list", &[1, 2]).unwrap();
        d.end();
        outer.field("after", &None::<u8>).unwrap();
        outer.end();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"op": "event", "d": {"text": "a \"b\"\n\u{1}你", "seq": 7, "empty": {}, "list": [1, 2]}, "after": null})
        );
        assert!(text.starts_with(r#"{"op":"event","d":{"text":"a \"b\"\n\u0001你","seq":7,"empty":{}"#));
    }
}
