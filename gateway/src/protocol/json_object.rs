//! A JSON object written field by field into a buffer, for the frames of every relayed message.
//!
//! Keys are `'static` identifiers written as they are. Strings are escaped by [`write_str`], byte for byte
//! as serde_json escapes them (a proptest holds it to that), eight bytes at a time; other values go through
//! serde_json. A `#[derive(Serialize)]` struct costs more here: serde_json escapes each of its keys again at
//! every call, walks its state machine for each field and tests every byte of a string on its own (a profile
//! of relay put the two `event` frames of each relayed message at 11% of the gateway's core).

use serde::Serialize;

/// One JSON object being written; [`JsonObject::end`] closes it.
pub(super) struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    /// Opens an object at the end of `out`.
    #[inline]
    pub(super) fn begin(out: &'a mut Vec<u8>) -> JsonObject<'a> {
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    // Inlined, so that each call's key is a constant whose copy needs no call to memcpy.
    #[inline(always)]
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
    #[inline]
    pub(super) fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.key(key);
        serde_json::to_writer(&mut *self.out, value)
    }

    /// Writes `"key":"value"`.
    #[inline]
    pub(super) fn str_field(&mut self, key: &'static str, value: &str) {
        self.key(key);
        write_str(self.out, value);
    }

    /// Writes `"key":"value"` for a literal that needs no escaping (a frame's `op`, an object's `type`).
    #[inline]
    pub(super) fn literal_field(&mut self, key: &'static str, value: &'static str) {
        debug_assert!(
            !value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'),
            "{value} needs escaping"
        );
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
    }

    /// Writes `"key":"2023-11-14T22:13:20.042Z"` from [`omnigate_connectors::time::rfc3339_ms_bytes`]'s
    /// digits and separators, which need no escaping.
    #[inline]
    pub(super) fn timestamp_field(&mut self, key: &'static str, rfc3339: &[u8; 24]) {
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(rfc3339);
        self.out.push(b'"');
    }

    /// Opens the object under `key`; this object's next field comes after that one ends.
    #[inline]
    pub(super) fn object(&mut self, key: &'static str) -> JsonObject<'_> {
        self.key(key);
        JsonObject::begin(self.out)
    }

    /// Closes the object.
    #[inline]
    pub(super) fn end(self) {
        self.out.push(b'}');
    }
}

/// Writes `value` as a JSON string: the same bytes as `serde_json::to_writer` (`"`, `\\` and control
/// characters escaped, `\b \f \n \r \t` by name and the others as `\u00xx`; everything else as it is).
fn write_str(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0; // the first byte not yet copied
    let mut at = 0;
    while at < bytes.len() {
        // Eight bytes at a time while none of them needs escaping.
        if !needs_escape(word_at(bytes, at)) {
            at += 8;
            continue;
        }
        let byte = bytes[at];
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => {
                at += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(escape);
        at += 1;
        start = at;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

const HEX: [u8; 16] = *b"0123456789abcdef";

/// The eight bytes of `bytes` from `at` (`at < bytes.len()`) as a little-endian word, padded with spaces
/// (which need no escaping) past the end.
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [b' '; 8];
    match bytes.get(at..at + 8) {
        Some(eight) => word.copy_from_slice(eight),
        None => {
            let rest = &bytes[at..];
            word[..rest.len()].copy_from_slice(rest);
        }
    }
    u64::from_le_bytes(word)
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\\`.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte below `n` (n <= 0x80) leaves its high bit set in `(byte - n) & !byte`; a zero byte is one below 1.
    let below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGH;
    below(word, 0x20) | below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1)
        != 0
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    proptest::proptest! {
        /// Any string, and strings dense in what needs escaping, come out as serde_json writes them.
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(
            value in "\\PC*|(?s).{0,64}|[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}é😀a]{0,64}"
        ) {
            let mut ours = Vec::new();
            write_str(&mut ours, &value);
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn every_byte_that_needs_escaping_is_found_at_every_position_of_a_word() {
        for byte in (0u8..0x80).chain([0xc3, 0xa9]) {
            for position in 0..8 {
                let mut word = *b"abcdefgh";
                word[position] = byte;
                let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                assert_eq!(
                    needs_escape(u64::from_le_bytes(word)),
                    expected,
                    "{byte:#x} at {position}"
                );
            }
        }
    }

    #[test]
    fn writes_nested_objects_with_escaped_values() {
        let mut out = Vec::new();
        let mut outer = JsonObject::begin(&mut out);
        outer.field("op", "event").unwrap();
        let mut d = outer.object("d");
        d.str_field("text", "a \"b\"\n\u{1}你");
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
