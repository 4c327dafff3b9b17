//! The AES-256-CBC envelope of WeChat safe mode and WeCom callbacks (PROTOCOLS.md §1.6).
//!
//! Plaintext ("FullStr") = `random(16) || msg_len (u32 BE, bytes) || msg || receive_id`, padded with PKCS#7 over a
//! **32-byte** block, encrypted with AES-256-CBC (IV = first 16 key bytes), then base64. The key is
//! `base64(EncodingAESKey + "=")`, decoded leniently because real keys are often non-canonical base64.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::error::InboundError;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// PKCS#7 block size WeChat pads to (not AES's 16).
pub const PAD_BLOCK: usize = 32;

/// Base64 that accepts non-zero trailing bits, as Python's decoder does for WeChat keys.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an `EncodingAESKey` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 43 characters of `[A-Za-z0-9]`.
    #[error("EncodingAESKey must be 43 characters of [A-Za-z0-9]")]
    Shape,
    /// Does not decode to 32 bytes.
    #[error("EncodingAESKey does not decode to 32 bytes")]
    Decode,
}

/// A decoded `EncodingAESKey`: 32 key bytes, the first 16 of which are the IV.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(..)")
    }
}

impl AesKey {
    /// Decodes the 43-character `EncodingAESKey` from the console.
    ///
    /// # Errors
    /// [`KeyError`] when it has the wrong shape.
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<Self, KeyError> {
        if encoding_aes_key.len() != 43 || !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::Shape);
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| KeyError::Decode)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Decode)?;
        Ok(Self(key))
    }

    /// The raw 32 key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

/// Pads `data` with PKCS#7 over a 32-byte block: 1..=32 bytes of value n.
pub fn pkcs7_pad(data: &mut Vec<u8>) {
    let n = PAD_BLOCK - data.len() % PAD_BLOCK;
    // n is in 1..=32, so it fits a byte.
    data.extend(std::iter::repeat_n(n as u8, n));
}

/// Strips 32-byte-block PKCS#7 padding, checking `1 ≤ n ≤ 32` and every pad byte.
///
/// # Errors
/// [`InboundError::Decrypt`] for an invalid pad.
pub fn pkcs7_unpad(data: &[u8]) -> Result<&[u8], InboundError> {
    let n = usize::from(
        *data
            .last()
            .ok_or_else(|| InboundError::Decrypt("empty plaintext".into()))?,
    );
    if n == 0 || n > PAD_BLOCK || n > data.len() {
        return Err(InboundError::Decrypt(format!("invalid pkcs#7 pad byte {n}")));
    }
    let (content, pad) = data.split_at(data.len() - n);
    if pad.iter().any(|&b| usize::from(b) != n) {
        return Err(InboundError::Decrypt("inconsistent pkcs#7 padding".into()));
    }
    Ok(content)
}

/// Builds FullStr for `msg` and `receive_id`, pads it and encrypts it; returns the base64 `Encrypt` value.
///
/// `random16` must be fresh random bytes for every message in production; tests fix it.
///
/// # Panics
/// When `msg` is 4 GiB or longer (its length must fit the u32 field).
pub fn encrypt(key: &AesKey, random16: &[u8; 16], msg: &[u8], receive_id: &str) -> String {
    let mut buf = full_str(random16, msg, receive_id);
    pkcs7_pad(&mut buf);
    let len = buf.len();
    let ciphertext = Aes256CbcEnc::new(key.bytes().into(), &key.iv().into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .expect("buffer is padded to a multiple of the AES block");
    STANDARD.encode(ciphertext)
}

fn full_str(random16: &[u8; 16], msg: &[u8], receive_id: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + 4 + msg.len() + receive_id.len() + PAD_BLOCK);
    buf.extend_from_slice(random16);
    let len = u32::try_from(msg.len()).expect("a WeChat message is far below 4 GiB");
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
    buf.extend_from_slice(receive_id.as_bytes());
    buf
}

/// A decrypted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The sender's random prefix.
    pub random16: [u8; 16],
    /// The message (UTF-8 XML or JSON).
    pub msg: String,
    /// The trailing id (AppID or CorpID); already checked against the expected one.
    pub receive_id: String,
    /// How many pad bytes were stripped (1..=32).
    pub pad: usize,
}

/// Decrypts the base64 `Encrypt` value and checks that the trailing id equals `expected_receive_id`.
///
/// Verify `msg_signature` before calling this.
///
/// # Errors
/// [`InboundError::Decrypt`] for bad base64, a length that is not a positive multiple of 16, bad padding, a
/// truncated layout or a non-UTF-8 message; [`InboundError::WrongRecipient`] for another AppID/CorpID.
pub fn decrypt(key: &AesKey, encrypt: &str, expected_receive_id: &str) -> Result<Decrypted, InboundError> {
    let mut buf = STANDARD
        .decode(encrypt.trim())
        .map_err(|e| InboundError::Decrypt(format!("Encrypt is not base64: {e}")))?;
    if buf.is_empty() || buf.len() % 16 != 0 {
        return Err(InboundError::Decrypt(format!(
            "ciphertext of {} bytes is not a positive multiple of 16",
            buf.len()
        )));
    }
    let plain = Aes256CbcDec::new(key.bytes().into(), &key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| InboundError::Decrypt("aes-cbc failed".into()))?;
    let padded_len = plain.len();
    let content = pkcs7_unpad(plain)?;
    let pad = padded_len - content.len();
    if content.len() < 20 {
        return Err(InboundError::Decrypt(
            "plaintext shorter than its 20-byte header".into(),
        ));
    }
    let mut random16 = [0u8; 16];
    random16.copy_from_slice(&content[..16]);
    let msg_len = u32::from_be_bytes([content[16], content[17], content[18], content[19]]) as usize;
    let rest = &content[20..];
    if msg_len > rest.len() {
        return Err(InboundError::Decrypt(format!(
            "msg_len {msg_len} exceeds the {} bytes present",
            rest.len()
        )));
    }
    let (msg, receive_id) = rest.split_at(msg_len);
    let receive_id = std::str::from_utf8(receive_id)
        .map_err(|_| InboundError::Decrypt("receive id is not utf-8".into()))?;
    if receive_id != expected_receive_id {
        return Err(InboundError::WrongRecipient {
            expected: expected_receive_id.to_owned(),
            got: receive_id.to_owned(),
        });
    }
    let msg =
        String::from_utf8(msg.to_vec()).map_err(|_| InboundError::Decrypt("message is not utf-8".into()))?;
    Ok(Decrypted {
        random16,
        msg,
        receive_id: receive_id.to_owned(),
        pad,
    })
}

/// Decrypts with the first key that yields a valid envelope (current key first, then the previous one during an
/// EncodingAESKey rotation), and returns the index of the key that worked so the reply uses the same key.
///
/// # Errors
/// The error of the last key tried; [`InboundError::WrongRecipient`] is returned at once since a different key
/// cannot fix it.
pub fn decrypt_with_any(
    keys: &[AesKey],
    encrypt: &str,
    expected_receive_id: &str,
) -> Result<(usize, Decrypted), InboundError> {
    let mut last = InboundError::Decrypt("no EncodingAESKey configured".into());
    for (index, key) in keys.iter().enumerate() {
        match decrypt(key, encrypt, expected_receive_id) {
            Ok(decrypted) => return Ok((index, decrypted)),
            Err(e @ InboundError::WrongRecipient { .. }) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{hex, vectors, vstr};
    use proptest::prelude::*;

    fn key(s: &str) -> AesKey {
        AesKey::from_encoding_aes_key(s).unwrap()
    }

    fn random16(s: &str) -> [u8; 16] {
        s.as_bytes().try_into().unwrap()
    }

    #[test]
    fn gateway_key_is_non_canonical_and_decodes_leniently() {
        let v = vectors();
        let gw = &v["wechat"]["gateway_vectors"];
        let encoding = vstr(gw, &["encoding_aes_key"]);
        assert_eq!(gw["encoding_aes_key_is_canonical_base64"], false);
        assert!(
            STANDARD.decode(format!("{encoding}=")).is_err(),
            "strict base64 must reject this key"
        );
        let k = key(encoding);
        assert_eq!(hex(k.bytes()), vstr(gw, &["aes_key_hex"]));
        assert_eq!(hex(&k.iv()), vstr(gw, &["iv_hex"]));
        let wecom = &v["wechat"]["wecom_callback_vectors"];
        assert_eq!(wecom["encoding_aes_key_is_canonical_base64"], false);
        assert!(AesKey::from_encoding_aes_key(vstr(wecom, &["encoding_aes_key"])).is_ok());
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(AesKey::from_encoding_aes_key("short"), Err(KeyError::Shape));
        assert_eq!(
            AesKey::from_encoding_aes_key(&format!("{}+", "A".repeat(42))),
            Err(KeyError::Shape)
        );
    }

    #[test]
    fn official_inbound_decrypts_to_the_documented_layout() {
        let v = vectors();
        let s = &v["wechat"]["official_doc_vectors"]["safe_mode_inbound"];
        let encrypt = vstr(s, &["body", "Encrypt"]);
        assert_eq!(
            STANDARD.decode(encrypt).unwrap().len() as u64,
            s["expected_ciphertext_bytes"].as_u64().unwrap()
        );
        let d = decrypt(&key(vstr(s, &["encoding_aes_key"])), encrypt, vstr(s, &["appid"])).unwrap();
        // random16 is 16 ASCII characters, as wechatpy generates it.
        assert_eq!(&d.random16, vstr(s, &["expected_random16"]).as_bytes());
        assert_eq!(d.msg.len() as u64, s["expected_msg_len"].as_u64().unwrap());
        assert_eq!(d.msg, vstr(s, &["expected_plaintext"]));
        assert_eq!(d.pad as u64, s["expected_pkcs7_pad"].as_u64().unwrap());
        assert_eq!(
            (20 + d.msg.len() + d.receive_id.len()) as u64,
            s["expected_fullstr_bytes"].as_u64().unwrap()
        );
    }

    #[test]
    fn official_reply_encrypts_byte_exact() {
        let v = vectors();
        let s = &v["wechat"]["official_doc_vectors"]["safe_mode_reply"];
        let k = key(vstr(s, &["encoding_aes_key"]));
        let encrypt = encrypt(
            &k,
            &random16(vstr(s, &["random16"])),
            vstr(s, &["plaintext"]).as_bytes(),
            vstr(s, &["appid"]),
        );
        assert_eq!(encrypt, vstr(s, &["expected_encrypt"]));
        assert_eq!(
            STANDARD.decode(&encrypt).unwrap().len() as u64,
            s["expected_ciphertext_bytes"].as_u64().unwrap()
        );
        let d = decrypt(&k, &encrypt, vstr(s, &["appid"])).unwrap();
        assert_eq!(d.pad as u64, s["expected_pkcs7_pad"].as_u64().unwrap());
        assert_eq!(
            (20 + d.msg.len() + d.receive_id.len()) as u64,
            s["expected_fullstr_bytes"].as_u64().unwrap()
        );
    }

    #[test]
    fn gateway_inbound_text_encrypts_and_decrypts_byte_exact() {
        let v = vectors();
        let gw = &v["wechat"]["gateway_vectors"];
        let s = &gw["safe_mode_inbound_text"];
        let k = key(vstr(gw, &["encoding_aes_key"]));
        let plaintext = vstr(s, &["plaintext_xml"]);
        assert_eq!(
            plaintext.len() as u64,
            s["plaintext_utf8_bytes"].as_u64().unwrap()
        );
        assert_eq!(
            plaintext.chars().count() as u64,
            s["plaintext_chars"].as_u64().unwrap()
        );
        let fs = full_str(
            &random16(vstr(s, &["random16"])),
            plaintext.as_bytes(),
            vstr(gw, &["appid"]),
        );
        assert_eq!(hex(&fs[16..20]), vstr(s, &["msg_len_field_hex"]));
        assert_eq!(fs.len() as u64, s["fullstr_bytes"].as_u64().unwrap());
        let encrypt = encrypt(
            &k,
            &random16(vstr(s, &["random16"])),
            plaintext.as_bytes(),
            vstr(gw, &["appid"]),
        );
        assert_eq!(encrypt, vstr(s, &["expected_encrypt"]));
        assert_eq!(
            STANDARD.decode(&encrypt).unwrap().len() as u64,
            s["ciphertext_bytes"].as_u64().unwrap()
        );
        let d = decrypt(&k, &encrypt, vstr(gw, &["appid"])).unwrap();
        assert_eq!(d.msg, plaintext);
        assert_eq!(d.pad as u64, s["pkcs7_pad"].as_u64().unwrap());
        assert_eq!(&d.random16, vstr(s, &["random16"]).as_bytes());
    }

    #[test]
    fn padding_edge_cases_pad_32_and_pad_17() {
        let v = vectors();
        let gw = &v["wechat"]["gateway_vectors"];
        let k = key(vstr(gw, &["encoding_aes_key"]));
        for case in gw["padding_edge_cases"].as_array().unwrap() {
            let plaintext = vstr(case, &["plaintext"]);
            let r = random16(vstr(case, &["random16"]));
            assert_eq!(
                full_str(&r, plaintext.as_bytes(), vstr(gw, &["appid"])).len() as u64,
                case["fullstr_bytes"].as_u64().unwrap()
            );
            let encrypt = encrypt(&k, &r, plaintext.as_bytes(), vstr(gw, &["appid"]));
            assert_eq!(
                encrypt,
                vstr(case, &["expected_encrypt"]),
                "{}",
                vstr(case, &["label"])
            );
            assert_eq!(
                STANDARD.decode(&encrypt).unwrap().len() as u64,
                case["ciphertext_bytes"].as_u64().unwrap()
            );
            let d = decrypt(&k, vstr(case, &["expected_encrypt"]), vstr(gw, &["appid"])).unwrap();
            assert_eq!(d.pad as u64, case["pkcs7_pad"].as_u64().unwrap());
            assert_eq!(d.msg, plaintext);
        }
    }

    #[test]
    fn a_16_byte_unpadder_would_reject_pad_32_but_ours_accepts_and_checks_range() {
        let mut data = b"abc".to_vec();
        pkcs7_pad(&mut data);
        assert_eq!(data.len(), 32);
        assert_eq!(pkcs7_unpad(&data).unwrap(), b"abc");
        let mut full = vec![7u8; 32];
        pkcs7_pad(&mut full);
        assert_eq!(full.len(), 64);
        assert_eq!(full[63], 32);
        assert!(pkcs7_unpad(&[1, 2, 0]).is_err());
        assert!(pkcs7_unpad(&[33; 64]).is_err());
        assert!(pkcs7_unpad(&[1, 3, 2]).is_err());
    }

    #[test]
    fn wrong_appid_is_rejected_with_403() {
        let v = vectors();
        let gw = &v["wechat"]["gateway_vectors"];
        let k = key(vstr(gw, &["encoding_aes_key"]));
        let err = decrypt(
            &k,
            vstr(gw, &["safe_mode_inbound_text", "expected_encrypt"]),
            "wx0000000000000000",
        )
        .unwrap_err();
        assert_eq!(
            err,
            InboundError::WrongRecipient {
                expected: "wx0000000000000000".into(),
                got: vstr(gw, &["appid"]).into()
            }
        );
        assert_eq!(err.http_status(), 403);
    }

    #[test]
    fn tampered_or_foreign_ciphertext_fails_to_decrypt() {
        let v = vectors();
        let gw = &v["wechat"]["gateway_vectors"];
        let k = key(vstr(gw, &["encoding_aes_key"]));
        let other = key(&"B".repeat(43));
        let encrypt = vstr(gw, &["safe_mode_inbound_text", "expected_encrypt"]);
        assert!(decrypt(&other, encrypt, vstr(gw, &["appid"])).is_err());
        assert!(decrypt(&k, "not base64!", vstr(gw, &["appid"])).is_err());
        assert!(decrypt(&k, &STANDARD.encode([0u8; 15]), vstr(gw, &["appid"])).is_err());
        assert!(decrypt(&k, "", vstr(gw, &["appid"])).is_err());
    }

    #[test]
    fn rotation_tries_the_previous_key() {
        let v = vectors();
        let gw = &v["wechat"]["gateway_vectors"];
        let keys = [key(&"B".repeat(43)), key(vstr(gw, &["encoding_aes_key"]))];
        let (index, d) = decrypt_with_any(
            &keys,
            vstr(gw, &["safe_mode_inbound_text", "expected_encrypt"]),
            vstr(gw, &["appid"]),
        )
        .unwrap();
        assert_eq!(index, 1);
        assert!(d.msg.starts_with("<xml>"));
        assert!(decrypt_with_any(&[], "", "x").is_err());
    }

    proptest! {
        #[test]
        fn encrypt_then_decrypt_round_trips(
            msg in proptest::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect::<String>()),
            r in any::<[u8; 16]>(),
            appid in "[a-z0-9]{1,32}",
        ) {
            let k = key("Gw8tVx3kQm7Zr2Lp9Nc4Hb6Jd1Fs5Ty0Ue3Wa8Xo2Ri");
            let encrypt = encrypt(&k, &r, msg.as_bytes(), &appid);
            let d = decrypt(&k, &encrypt, &appid).unwrap();
            prop_assert_eq!(d.msg, msg);
            prop_assert_eq!(d.random16, r);
            prop_assert!((1..=PAD_BLOCK).contains(&d.pad));
            prop_assert_eq!(STANDARD.decode(&encrypt).unwrap().len() % PAD_BLOCK, 0);
        }
    }
}
