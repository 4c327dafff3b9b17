//! Chinese SMS uplinks: Aliyun SmsUp batch push and Tencent Cloud reply callbacks (PROTOCOLS.md §2.5).
//!
//! Entry points: [`wire::parse_aliyun`] + [`normalize::aliyun_batch`], answered with
//! [`wire::ALIYUN_SUCCESS_BODY`]; [`wire::parse_tencent_reply`] + [`normalize::tencent_to_inbound`], answered with
//! [`wire::TENCENT_SUCCESS_BODY`]; [`wire::parse_tencent_reports`] for delivery reports.

pub mod normalize;
pub mod wire;
