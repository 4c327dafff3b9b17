//! Guards that every vector group of `shared/protocols/vectors.json` is covered by a test: a group added to the
//! file without a test here fails the build's tests. The table says where each group is tested.

use std::collections::BTreeSet;

use crate::util::vectors;

/// `(path of the vector group, tests that use it byte for byte)`.
const COVERAGE: &[(&str, &str)] = &[
    ("wechat.official_doc_vectors.token", "wechat::signature::tests::official_url_check_and_plain_post_signatures"),
    ("wechat.official_doc_vectors.url_verification", "wechat::tests::official_url_check_echoes_echostr"),
    ("wechat.official_doc_vectors.plain_mode_post", "wechat::tests::plain_mode_post_is_received_and_checked"),
    (
        "wechat.official_doc_vectors.safe_mode_inbound",
        "wechat::crypto::tests::official_inbound_decrypts_to_the_documented_layout, \
         wechat::tests::official_json_safe_mode_inbound_is_received",
    ),
    (
        "wechat.official_doc_vectors.safe_mode_reply",
        "wechat::crypto::tests::official_reply_encrypts_byte_exact, wechat::tests::official_json_reply_matches",
    ),
    (
        "wechat.gateway_url_verification",
        "wechat::signature::tests::gateway_url_check_signature_and_its_negative, \
         wechat::tests::gateway_url_check_answers_the_exact_body_and_rejects_a_bad_signature",
    ),
    (
        "wechat.gateway_vectors.encoding_aes_key",
        "wechat::crypto::tests::gateway_key_is_non_canonical_and_decodes_leniently",
    ),
    (
        "wechat.gateway_vectors.safe_mode_inbound_text",
        "wechat::crypto::tests::gateway_inbound_text_encrypts_and_decrypts_byte_exact, \
         wechat::tests::gateway_safe_mode_request_verifies_decrypts_and_normalizes, \
         wechat::tests::tampered_encrypt_is_rejected_by_msg_signature, \
         wechat::crypto::tests::wrong_appid_is_rejected_with_403",
    ),
    (
        "wechat.gateway_vectors.safe_mode_passive_reply_text",
        "wechat::tests::gateway_passive_reply_is_byte_exact, \
         wechat::wire::tests::passive_text_reply_matches_the_vector_plaintext",
    ),
    ("wechat.gateway_vectors.padding_edge_cases", "wechat::crypto::tests::padding_edge_cases_pad_32_and_pad_17"),
    ("wechat.custom_send_examples", "wechat::api::tests::send_bodies_match_the_documented_shapes"),
    ("wechat.wecom_callback_vectors.url_verification", "wecom::tests::url_verification_decrypts_echostr"),
    ("wechat.wecom_callback_vectors.inbound_post", "wecom::tests::inbound_post_decrypts_to_the_expected_plaintext"),
    (
        "wechat.wecom_callback_vectors.kf_msg_or_event_callback",
        "wecom::tests::kf_doorbell_encrypts_byte_exact_and_yields_token_and_open_kfid, \
         wecom::wire::tests::doorbell_implies_the_documented_sync_call",
    ),
    ("twilio.twilio_docs_example", "twilio::signature::tests::every_form_vector_signs_byte_exact"),
    (
        "twilio.gateway_inbound_sms",
        "twilio::signature::tests::default_port_variant_is_accepted, \
         twilio::tests::gateway_sms_raw_body_parses_validates_and_normalizes, \
         twilio::tests::tampered_body_and_missing_signature_fail",
    ),
    (
        "twilio.gateway_message_status_callback",
        "twilio::tests::status_callback_with_query_string_validates",
    ),
    ("twilio.gateway_voice_status_callback", "twilio::signature::tests::every_form_vector_signs_byte_exact"),
    ("twilio.gateway_gather_action_empty_value", "twilio::signature::tests::every_form_vector_signs_byte_exact"),
    ("twilio.gateway_json_body_variant", "twilio::signature::tests::json_body_variant_checks_the_hash_and_the_url"),
    ("twilio.repeated_parameter_rule", "twilio::signature::tests::repeated_parameters_follow_the_reference_rule"),
    ("twilio.shared_key_hmac_sha256_variant", "twilio::signature::tests::shared_key_sha256_variant"),
    (
        "cti_webhook_proposal.events",
        "cti::signature::tests::every_event_signature_matches_and_verifies, \
         cti::wire::tests::the_four_vector_events_parse_into_types",
    ),
    ("cti_webhook_proposal.tamper_check", "cti::signature::tests::tampered_body_is_rejected_with_401"),
];

/// Keys that describe rather than test (documentation, provenance, shared inputs of the groups above).
const DESCRIPTIVE: &[&str] = &[
    "_doc",
    "_meta",
    "source",
    "verified_with",
    "compatible_mode_note",
    "secret",
    "secret_key_hex",
    "appid",
    "aes_key_hex",
    "iv_hex",
    "encoding_aes_key_is_canonical_base64",
    "note_on_key_decoding",
    "receive_id_corpid",
];

fn groups(v: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let wechat_nested = [
        "official_doc_vectors",
        "gateway_vectors",
        "wecom_callback_vectors",
    ];
    for (top, value) in v.as_object().expect("vectors.json is an object") {
        if DESCRIPTIVE.contains(&top.as_str()) {
            continue;
        }
        for (key, inner) in value.as_object().expect("top-level groups are objects") {
            if DESCRIPTIVE.contains(&key.as_str()) {
                continue;
            }
            if top == "wechat" && wechat_nested.contains(&key.as_str()) {
                for leaf in inner
                    .as_object()
                    .expect("nested wechat groups are objects")
                    .keys()
                {
                    // token / encoding_aes_key are the shared inputs; the key has its own test.
                    if DESCRIPTIVE.contains(&leaf.as_str())
                        || (leaf == "token" && key != "official_doc_vectors")
                        || (leaf == "encoding_aes_key" && key == "wecom_callback_vectors")
                    {
                        continue;
                    }
                    out.insert(format!("{top}.{key}.{leaf}"));
                }
            } else {
                out.insert(format!("{top}.{key}"));
            }
        }
    }
    out
}

#[test]
fn every_vector_group_is_covered_by_a_named_test() {
    let in_file = groups(&vectors());
    let covered: BTreeSet<String> = COVERAGE.iter().map(|(path, _)| (*path).to_owned()).collect();
    let uncovered: Vec<_> = in_file.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&in_file).collect();
    assert!(
        uncovered.is_empty(),
        "vector groups without a test: {uncovered:?}"
    );
    assert!(
        stale.is_empty(),
        "coverage entries for vectors that no longer exist: {stale:?}"
    );
    let v = vectors();
    assert_eq!(
        v["cti_webhook_proposal"]["events"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(
        v["wechat"]["gateway_vectors"]["padding_edge_cases"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}
