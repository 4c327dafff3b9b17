//! Webhook senders (mode `webhooks`): one task per sender, each playing one provider's user on one keep-alive
//! connection, as a provider's delivery worker does. A sender's webhooks go one at a time (the next after the
//! answer), so its messages have an order the agents can check. Every `retry_every`-th webhook is posted a
//! second time with the same bytes, as a provider retry, and a webhook whose answer was lost to a broken
//! connection is posted again the same way.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use tokio::time::sleep_until;

use crate::clients::{instant_at, Ctx, Phases};
use crate::hooks::{self, Provider, Request};
use crate::keepalive::KeepAlive;
use crate::proto::{self, Stamp};
use crate::rng::SplitMix64;
use crate::scenario::{LoadKind, Webhooks};
use crate::tally::{now_us, Tally};

/// Attempts of one webhook over broken connections before the sender gives up.
const ATTEMPTS: u32 = 3;

/// Which provider sender `idx` plays: senders are dealt out by the scenario's weights, round robin.
pub fn provider_of(mix: &Webhooks, idx: u32) -> Provider {
    let total = mix.wechat + mix.twilio + mix.cti;
    let slot = idx % total.max(1);
    if slot < mix.wechat {
        Provider::Wechat
    } else if slot < mix.wechat + mix.twilio {
        Provider::Twilio
    } else {
        Provider::Cti
    }
}

struct Sender {
    idx: u32,
    provider: Provider,
    conn: Option<KeepAlive>,
    rng: SplitMix64,
    /// CTI: the next event `seq` of the call.
    next_seq: u64,
}

impl Sender {
    fn request(&mut self, ctx: &Ctx, k: u64, text: &str) -> Request {
        let now_secs = now_us() / 1_000_000;
        match self.provider {
            Provider::Wechat => {
                let mut random16 = [0u8; 16];
                for chunk in random16.chunks_mut(8) {
                    chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
                }
                let msg_id = (u64::from(self.idx) << 32) | k;
                hooks::wechat_text(self.idx, msg_id, text, now_secs, &random16)
            }
            Provider::Twilio => hooks::twilio_sms(&format!("http://{}", ctx.addr), self.idx, k, text),
            Provider::Cti => {
                let seq = self.next_seq;
                self.next_seq += 1;
                hooks::cti_event(self.idx, seq, text, now_secs)
            }
            Provider::Json => hooks::json_message(self.idx, k, text),
        }
    }

    /// Posts `request` until it is answered, reconnecting over broken connections; returns the status.
    async fn post(&mut self, ctx: &Ctx, request: &Request, tally: &mut Tally) -> anyhow::Result<u16> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tally.reconnects += 1;
            }
            let conn = match self.conn.as_mut() {
                Some(conn) => conn,
                None => self.conn.insert(KeepAlive::connect(ctx.addr).await?),
            };
            match conn.post(request).await {
                Ok(status) => {
                    if conn.closed() {
                        self.conn = None;
                    }
                    return Ok(status);
                }
                Err(error) => {
                    self.conn = None;
                    last = Some(error);
                }
            }
        }
        Err(last.context("no attempt was made")?)
    }
}

/// One sender for the whole run; returns its tally.
pub async fn sender(ctx: Arc<Ctx>, mix: Arc<Webhooks>, provider: Provider, idx: u32) -> Tally {
    let mut tally = Tally::default();
    if let Err(error) = sender_run(&ctx, &mix, provider, idx, &mut tally).await {
        tally.error("sender_failed");
        ctx.report(&format!("sender {idx}"), &error);
    }
    tally
}

async fn sender_run(
    ctx: &Ctx,
    mix: &Webhooks,
    provider: Provider,
    idx: u32,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut sender = Sender {
        idx,
        provider,
        conn: None,
        rng: SplitMix64::new(ctx.seed ^ (u64::from(idx) << 20)),
        next_seq: 1,
    };
    {
        let _permit = ctx.connect.acquire().await?;
        sender.conn = Some(KeepAlive::connect(ctx.addr).await?);
        if provider == Provider::Cti {
            // The call is offered and queued before traffic: its IVR input is what is measured.
            for _ in 0..2 {
                let request = sender.request(ctx, 0, "");
                let status = sender.post(ctx, &request, tally).await?;
                anyhow::ensure!(status / 100 == 2, "call set-up answered {status}");
            }
        }
    }
    ctx.ready.fetch_add(1, Ordering::Relaxed);
    let mut phases_rx = ctx.phases.clone();
    let phases: Phases = loop {
        if let Some(p) = *phases_rx.borrow_and_update() {
            break p;
        }
        phases_rx.changed().await?;
    };
    let load = ctx.load.as_ref().context("webhooks need a load")?;
    let phase_us = sender.rng.next_f64() * ctx.interval_us;
    let padding = load.padding;
    let mut k = 0u64;
    loop {
        let scheduled = match load.kind {
            LoadKind::Open => phases.start_us + (phase_us + k as f64 * ctx.interval_us) as u64,
            LoadKind::Closed => now_us().max(phases.start_us),
        };
        if scheduled >= phases.stop_us {
            break;
        }
        sleep_until(instant_at(scheduled)).await;
        let sent_us = now_us();
        if load.kind == LoadKind::Open {
            tally.send_lag(sent_us.saturating_sub(scheduled));
        }
        let text = proto::customer_text(
            Stamp {
                conversation: idx,
                k,
                sent_us,
            },
            padding,
        );
        let request = sender.request(ctx, k, &text);
        let status = sender.post(ctx, &request, tally).await?;
        let answered = now_us();
        if status / 100 != 2 {
            tally.error(format!("http_{status}"));
            k += 1;
            continue;
        }
        tally.sent += 1;
        if phases.in_window(answered) {
            tally.answered_in_window += 1;
        }
        if phases.in_window(sent_us) {
            tally
                .answer_latency
                .saturating_record(answered.saturating_sub(sent_us).max(1));
        }
        if mix.retry_every > 0 && (k + 1).is_multiple_of(u64::from(mix.retry_every)) {
            let status = sender.post(ctx, &request, tally).await?;
            tally.resent += 1;
            if status / 100 != 2 {
                tally.error(format!("retry_http_{status}"));
            }
        }
        k += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_dealt_out_by_weight() {
        let mix = Webhooks {
            wechat: 2,
            twilio: 1,
            cti: 1,
            retry_every: 0,
            agents_after_window: false,
        };
        let dealt: Vec<Provider> = (0..8).map(|i| provider_of(&mix, i)).collect();
        assert_eq!(
            dealt,
            [
                Provider::Wechat,
                Provider::Wechat,
                Provider::Twilio,
                Provider::Cti,
                Provider::Wechat,
                Provider::Wechat,
                Provider::Twilio,
                Provider::Cti
            ]
        );
    }
}
