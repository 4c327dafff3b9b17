//! A deliberately small XML reader for the flat `<xml>…</xml>` documents WeChat and WeCom send.
//!
//! It refuses DOCTYPE (and with it every entity declaration, so no XXE and no billion laughs), processing
//! instructions and entity references other than the five predefined ones and character references. Only the
//! root's direct children are collected, as `name → text`; deeper elements (e.g. `ScanCodeInfo`) are tolerated and
//! skipped, and unknown elements are kept so callers ignore what they do not know.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::InboundError;

/// Depth beyond which a document is refused (the flat documents we read have depth 2 or 3).
const MAX_DEPTH: usize = 16;

/// The root's direct children of a flat XML document, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatXml {
    /// Root element name (`xml` for WeChat).
    pub root: String,
    /// Child element name → its text (CDATA and text nodes concatenated, entities resolved).
    pub fields: BTreeMap<String, String>,
}

impl FlatXml {
    /// The text of child `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The text of child `name`.
    ///
    /// # Errors
    /// [`InboundError::Malformed`] when it is absent.
    pub fn require(&self, name: &str) -> Result<&str, InboundError> {
        self.get(name)
            .ok_or_else(|| InboundError::Malformed(format!("xml element <{name}> is missing")))
    }
}

/// Parses `body` (at most `limit` bytes) into a [`FlatXml`].
///
/// # Errors
/// [`InboundError::TooLarge`] over `limit`, [`InboundError::UnsafeXml`] for DOCTYPE or processing instructions,
/// [`InboundError::Malformed`] for invalid UTF-8, broken XML, unknown entities or a missing root.
pub fn parse_flat(body: &[u8], limit: usize) -> Result<FlatXml, InboundError> {
    crate::util::check_size(body, limit)?;
    let text = std::str::from_utf8(body).map_err(|_| InboundError::malformed("xml body is not utf-8"))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;

    let mut doc = FlatXml::default();
    let mut depth = 0usize;
    let mut current: Option<(String, String)> = None;
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| InboundError::Malformed(format!("xml: {e}")))?;
        match event {
            Event::DocType(_) => return Err(InboundError::UnsafeXml("DOCTYPE / entity declarations")),
            Event::PI(_) => return Err(InboundError::UnsafeXml("processing instruction")),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(start) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(InboundError::malformed("xml nested too deeply"));
                }
                let name = element_name(start.name().as_ref())?;
                match depth {
                    1 if seen_root => return Err(InboundError::malformed("xml has more than one root")),
                    1 => {
                        seen_root = true;
                        doc.root = name;
                    }
                    2 => current = Some((name, String::new())),
                    _ => {}
                }
            }
            Event::Empty(start) => {
                let name = element_name(start.name().as_ref())?;
                match depth {
                    0 if seen_root => return Err(InboundError::malformed("xml has more than one root")),
                    0 => {
                        seen_root = true;
                        doc.root = name;
                    }
                    1 => {
                        doc.fields.entry(name).or_default();
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some((name, value)) = current.take() {
                        // A repeated element keeps its first value; WeChat never repeats root children.
                        doc.fields.entry(name).or_insert(value);
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                let unescaped = t
                    .unescape()
                    .map_err(|e| InboundError::Malformed(format!("xml text: {e}")))?;
                match (&mut current, depth) {
                    (Some((_, value)), 2) => value.push_str(&unescaped),
                    (_, 0) | (_, 1) if !unescaped.trim().is_empty() => {
                        return Err(InboundError::malformed("xml has text outside elements"));
                    }
                    _ => {}
                }
            }
            Event::CData(c) => {
                let decoded = c
                    .decode()
                    .map_err(|e| InboundError::Malformed(format!("xml cdata: {e}")))?;
                if let (Some((_, value)), 2) = (&mut current, depth) {
                    value.push_str(&decoded);
                }
            }
            Event::Eof => break,
        }
    }
    if !seen_root {
        return Err(InboundError::malformed("xml has no root element"));
    }
    if depth != 0 {
        return Err(InboundError::malformed("xml ends inside an element"));
    }
    Ok(doc)
}

fn element_name(raw: &[u8]) -> Result<String, InboundError> {
    String::from_utf8(raw.to_vec()).map_err(|_| InboundError::malformed("xml element name is not utf-8"))
}

/// Wraps `text` in a CDATA section, splitting any `]]>` so the result stays well-formed.
pub(crate) fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    #[test]
    fn reads_cdata_and_plain_text_and_keeps_unknown_elements() {
        let doc = parse_flat(
            b"<xml><A><![CDATA[x & <y>]]></A><B>1 &amp; 2</B><Unknown>u</Unknown><Nested><C>z</C></Nested></xml>",
            LIMIT,
        )
        .unwrap();
        assert_eq!(doc.root, "xml");
        assert_eq!(doc.get("A"), Some("x & <y>"));
        assert_eq!(doc.get("B"), Some("1 & 2"));
        assert_eq!(doc.get("Unknown"), Some("u"));
        assert_eq!(doc.get("Nested"), Some(""));
        assert_eq!(doc.get("C"), None);
    }

    #[test]
    fn refuses_xxe_and_billion_laughs() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><A>&x;</A></xml>"#;
        assert_eq!(
            parse_flat(xxe, LIMIT),
            Err(InboundError::UnsafeXml("DOCTYPE / entity declarations"))
        );
        let lol = br#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><xml><A>&lol2;</A></xml>"#;
        assert_eq!(parse_flat(lol, LIMIT).unwrap_err().http_status(), 400);
    }

    #[test]
    fn refuses_entity_declarations_outside_a_doctype() {
        assert!(parse_flat(br#"<xml><!ENTITY x "y"><A>&x;</A></xml>"#, LIMIT).is_err());
        assert!(parse_flat(b"<xml><A>&#x26;&#38;</A></xml>", LIMIT).is_ok_and(|d| d.get("A") == Some("&&")));
        assert!(parse_flat(b"<xml><A>a & b</A></xml>", LIMIT).is_err());
    }

    #[test]
    fn refuses_undeclared_entities_and_processing_instructions() {
        assert!(matches!(
            parse_flat(b"<xml><A>&lol;</A></xml>", LIMIT),
            Err(InboundError::Malformed(_))
        ));
        assert_eq!(
            parse_flat(b"<?php evil ?><xml/>", LIMIT),
            Err(InboundError::UnsafeXml("processing instruction"))
        );
    }

    #[test]
    fn refuses_oversized_and_broken_input() {
        let big = vec![b' '; LIMIT + 1];
        assert_eq!(parse_flat(&big, LIMIT).unwrap_err().http_status(), 413);
        assert!(parse_flat(b"<xml><A>1</B></xml>", LIMIT).is_err());
        assert!(parse_flat(b"<xml><A>1</A>", LIMIT).is_err());
        assert!(parse_flat(b"", LIMIT).is_err());
        assert!(parse_flat(b"<a/><b/>", LIMIT).is_err());
        assert!(parse_flat(b"\xff\xfe", LIMIT).is_err());
    }

    #[test]
    fn cdata_escapes_its_terminator() {
        let wrapped = cdata("a]]>b");
        let doc = parse_flat(format!("<xml><A>{wrapped}</A></xml>").as_bytes(), LIMIT).unwrap();
        assert_eq!(doc.get("A"), Some("a]]>b"));
    }
}
