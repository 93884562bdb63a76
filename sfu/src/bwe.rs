//! How much a subscriber's downlink can take, from the transport-wide feedback it sends back
//! about what the SFU forwarded to it (sans-IO: reports and instants in, a budget out).
//!
//! The SFU forwards what publishers send; it cannot make a frame smaller, only pick a smaller
//! simulcast layer. So the budget here is a cap the room fits layers under (see
//! [`crate::Room::set_bandwidth`]), and it starts with none: a subscriber gets the layers it
//! asks for until its link says otherwise.
//!
//! - **Congestion** is loss above [`LOSS_CONGESTED`] over a window of feedback, or the
//!   delay-based half of Google Congestion Control (webrtc-rs's `Gcc`, fed the same reports)
//!   backing off, which it does only when it sees queues grow. The budget becomes what arrived
//!   over that window, less half the loss (GCC's loss rule): what the link demonstrably
//!   carried.
//! - **Probing by media.** A budget below what is offered is tried upward after a quiet spell
//!   ([`Downlink::probe_after`]): the budget is multiplied by [`PROBE_FACTOR`] (a layer up, as
//!   layers are about three times apart), and if congestion follows within [`PROBE_HOLD`] the
//!   budget falls back and the next try waits twice as long (up to [`PROBE_BACKOFF_MAX`]). A
//!   budget that grows past [`UNLIMITED_BPS`] is lifted. Padding probes would find headroom
//!   without risking a layer's frames; forwarding only media keeps the SFU's path simple and
//!   the cost of a failed probe is a brief drop back to the layer below.

use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// The wait after congestion before the first probe.
pub const PROBE_AFTER: Duration = Duration::from_secs(8);
/// Loss over a window above this is congestion (GCC's own threshold for decreasing).
pub const LOSS_CONGESTED: f64 = 0.10;
/// Feedback is judged over windows this long.
pub const WINDOW: Duration = Duration::from_millis(500);
/// A window needs this many reported packets to say anything about loss.
const WINDOW_MIN_PACKETS: u32 = 10;
/// A probe multiplies the budget by this.
pub const PROBE_FACTOR: u64 = 3;
/// A probe that sees no congestion this long holds.
pub const PROBE_HOLD: Duration = Duration::from_secs(3);
/// A failed probe doubles the wait before the next, up to this.
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(64);
/// A budget above this is no budget.
pub const UNLIMITED_BPS: u64 = 20_000_000;
/// The budget never goes below this (the lowest layers and audio fit).
pub const BUDGET_MIN_BPS: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
struct Probe {
    /// The budget before it.
    from: u64,
    /// When it holds.
    until: Instant,
}

/// One subscriber's downlink.
#[derive(Debug)]
pub struct Downlink {
    probe_after: Duration,
    budget: Option<u64>,
    backoff: Duration,
    next_probe: Option<Instant>,
    probe: Option<Probe>,
    window_start: Option<Instant>,
    sent: u32,
    lost: u32,
    arrived_bytes: u64,
    delay_based: Option<f64>,
    congestions: u64,
}

impl Downlink {
    /// A downlink with no budget, whose first probe after congestion waits `probe_after`.
    pub fn new(probe_after: Duration) -> Self {
        Self {
            probe_after,
            budget: None,
            backoff: probe_after,
            next_probe: None,
            probe: None,
            window_start: None,
            sent: 0,
            lost: 0,
            arrived_bytes: 0,
            delay_based: None,
            congestions: 0,
        }
    }

    /// Sets the wait after congestion before the first probe.
    pub fn set_probe_after(&mut self, probe_after: Duration) {
        self.probe_after = probe_after;
        if self.probe.is_none() {
            self.backoff = probe_after;
        }
    }

    /// The cap on what this subscriber is forwarded, in bits per second (`None`: none).
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// How many times congestion lowered the budget.
    pub fn congestions(&self) -> u64 {
        self.congestions
    }

    /// Feedback: the fate of packets forwarded to the subscriber, and what the delay-based
    /// estimate says after reading them. A window is judged when the first report after its end
    /// comes; a back-off of the delay-based estimate is judged at once.
    pub fn on_reports(&mut self, now: Instant, reports: &[PacketReport], delay_based_bps: Option<f64>) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW * 2 {
            // Feedback stopped for a while (no video forwarded): what is left of the window
            // says nothing about the link now.
            self.window_start = Some(now);
            self.sent = 0;
            self.lost = 0;
            self.arrived_bytes = 0;
        } else if elapsed >= WINDOW {
            let received_bps = self.arrived_bytes.saturating_mul(8).saturating_mul(1000) / (elapsed.as_millis().max(1) as u64);
            let loss = if self.sent >= WINDOW_MIN_PACKETS { f64::from(self.lost) / f64::from(self.sent) } else { 0.0 };
            self.window_start = Some(now);
            self.sent = 0;
            self.lost = 0;
            self.arrived_bytes = 0;
            if loss > LOSS_CONGESTED {
                self.on_congestion(now, (received_bps as f64 * (1.0 - 0.5 * loss)) as u64);
            }
        }
        for r in reports {
            self.sent += 1;
            if r.arrived {
                self.arrived_bytes += r.size as u64;
            } else {
                self.lost += 1;
            }
        }
        if let (Some(before), Some(after)) = (self.delay_based, delay_based_bps) {
            // The delay-based rate only goes down when GCC sees queues grow; it is then what
            // GCC measured arriving, less its back-off.
            if after < before * 0.95 {
                self.on_congestion(now, after as u64);
            }
        }
        if delay_based_bps.is_some() {
            self.delay_based = delay_based_bps;
        }
    }

    fn on_congestion(&mut self, now: Instant, carried_bps: u64) {
        self.congestions += 1;
        let carried = carried_bps.max(BUDGET_MIN_BPS);
        let ceiling = match self.probe.take() {
            // A probe failed: back under where it started, and wait twice as long.
            Some(probe) => {
                self.backoff = (self.backoff * 2).min(PROBE_BACKOFF_MAX);
                Some(probe.from)
            }
            None => self.budget,
        };
        // Congestion never raises a budget.
        self.budget = Some(ceiling.map_or(carried, |c| c.min(carried)));
        self.next_probe = Some(now + self.backoff);
    }

    /// The time passes: a quiet spell starts a probe, a probe that held is kept.
    pub fn tick(&mut self, now: Instant) {
        if let Some(probe) = self.probe {
            if now >= probe.until {
                self.probe = None;
                self.backoff = self.probe_after;
                self.next_probe = self.budget.map(|_| now + self.probe_after);
            }
            return;
        }
        let Some(budget) = self.budget else { return };
        if self.next_probe.is_some_and(|at| now >= at) {
            let raised = budget.saturating_mul(PROBE_FACTOR);
            self.budget = (raised <= UNLIMITED_BPS).then_some(raised);
            self.probe = Some(Probe { from: budget, until: now + PROBE_HOLD });
            self.next_probe = None;
        }
    }

    /// Whether a probe is under way (and the budget it started from).
    pub fn probing_from(&self) -> Option<u64> {
        self.probe.map(|p| p.from)
    }
}

/// The estimator the SFU's PeerConnections run on the feedback of what they send: GCC, whose
/// target only feeds webrtc-rs's statistics (nothing paces the SFU), with every batch of
/// reports also handed to the subscriber's [`Downlink`].
pub struct DownlinkEstimator {
    gcc: Gcc,
    downlink: std::sync::Arc<parking_lot::Mutex<Downlink>>,
}

impl DownlinkEstimator {
    /// An estimator that feeds `downlink`.
    pub fn new(downlink: std::sync::Arc<parking_lot::Mutex<Downlink>>) -> Self {
        Self { gcc: Gcc::default(), downlink }
    }
}

impl BandwidthEstimator for DownlinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.gcc.on_reports(now, reports);
        let delay_based = self.gcc.stats().delay_based_bitrate;
        self.downlink.lock().on_reports(now, reports, delay_based);
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    /// `n` reports of 1,000-byte packets sent around `at`, every `lose_every`-th lost.
    fn reports(first: u64, n: u64, at: Instant, lose_every: Option<u64>) -> Vec<PacketReport> {
        (first..first + n)
            .map(|id| PacketReport {
                ssrc: 1,
                id,
                rtp_sequence_number: id as u16,
                is_twcc: true,
                twcc_sequence_number: id as u16,
                size: 1000,
                arrived: lose_every.is_none_or(|k| id % k != 0),
                departure: at,
                arrival: Some(Duration::ZERO),
                ecn: Ecn::default(),
            })
            .collect()
    }

    /// Feeds 100 ms batches of 25 packets (2 Mb/s offered) from `from` for `ms`, then ticks.
    fn feed(d: &mut Downlink, t0: Instant, from_ms: u64, ms: u64, lose_every: Option<u64>) {
        for step in (from_ms..from_ms + ms).step_by(100) {
            let at = t0 + Duration::from_millis(step);
            d.on_reports(at, &reports(step * 10, 25, at, lose_every), None);
            d.tick(at);
        }
    }

    #[test]
    fn a_clean_link_has_no_budget() {
        let t0 = Instant::now();
        let mut d = Downlink::new(Duration::from_secs(8));
        feed(&mut d, t0, 0, 5000, None);
        assert_eq!(d.budget(), None);
        assert_eq!(d.congestions(), 0);
    }

    #[test]
    fn loss_sets_a_budget_from_what_arrived_then_probes_raise_it_until_lifted() {
        let t0 = Instant::now();
        let mut d = Downlink::new(Duration::from_secs(8));
        // Half the packets lost for a window: about 1 Mb/s arrives of 2 offered.
        feed(&mut d, t0, 0, 500, Some(2));
        assert_eq!(d.budget(), None, "a window is judged when it is over");
        feed(&mut d, t0, 500, 100, None);
        let budget = d.budget().expect("congestion sets a budget");
        assert!((700_000..=800_000).contains(&budget), "what arrived, less half the loss: {budget}");
        // The link clears; nothing moves before the quiet spell is over.
        feed(&mut d, t0, 600, 7900, None);
        assert_eq!((d.budget(), d.probing_from()), (Some(budget), None), "no probe before 8 s");
        feed(&mut d, t0, 8500, 100, None);
        assert_eq!(d.probing_from(), Some(budget), "a probe after 8 s");
        assert_eq!(d.budget(), Some(budget * PROBE_FACTOR));
        // It holds after 3 s; each next probe comes 8 s later, until the budget is lifted.
        feed(&mut d, t0, 8600, 3000, None);
        assert_eq!((d.budget(), d.probing_from()), (Some(budget * 3), None));
        feed(&mut d, t0, 11600, 8000, None);
        assert_eq!(d.budget(), Some(budget * 9));
        feed(&mut d, t0, 19600, 30000, None);
        assert_eq!(d.budget(), None, "past 20 Mb/s the budget is lifted");
        assert_eq!(d.congestions(), 1);
    }

    #[test]
    fn a_probe_that_meets_congestion_falls_back_and_the_next_waits_twice_as_long() {
        let t0 = Instant::now();
        let mut d = Downlink::new(Duration::from_secs(8));
        feed(&mut d, t0, 0, 500, Some(2));
        feed(&mut d, t0, 500, 8100, None);
        let budget = d.probing_from().expect("a probe at 8.5 s");
        // The link still cannot take it.
        feed(&mut d, t0, 8600, 400, Some(2));
        feed(&mut d, t0, 9000, 100, None);
        assert_eq!(d.probing_from(), None, "the probe failed");
        assert!(d.budget().expect("budget") <= budget, "back at or under the budget before the probe");
        // The next probe waits 16 s, not 8.
        feed(&mut d, t0, 9100, 15900, None);
        assert_eq!(d.probing_from(), None, "no probe before 16 s");
        feed(&mut d, t0, 25000, 100, None);
        assert!(d.probing_from().is_some(), "a probe after 16 s");
    }

    #[test]
    fn a_window_left_open_by_a_pause_is_not_judged() {
        let t0 = Instant::now();
        let mut d = Downlink::new(Duration::from_secs(8));
        // Loss, then no video (no feedback) for a minute: that window is dropped, not read as
        // a link that carried a few bytes a minute.
        feed(&mut d, t0, 0, 300, Some(2));
        feed(&mut d, t0, 60_000, 1000, None);
        assert_eq!(d.budget(), None);
        assert_eq!(d.congestions(), 0);
    }

    #[test]
    fn sparse_feedback_says_nothing_about_loss_and_delay_backoff_is_congestion() {
        let t0 = Instant::now();
        let mut d = Downlink::new(Duration::from_secs(8));
        // One packet in three lost, but five packets a window: too few to judge.
        for step in 0..20u64 {
            let at = t0 + Duration::from_millis(step * 100);
            d.on_reports(at, &reports(step, 1, at, Some(3)), None);
        }
        assert_eq!(d.budget(), None);
        // Queues grow: GCC's delay-based rate backs off from 2 Mb/s to 1.7.
        d.on_reports(t0 + Duration::from_millis(2100), &reports(100, 20, t0, None), Some(2_000_000.0));
        d.on_reports(t0 + Duration::from_millis(2700), &reports(200, 20, t0, None), Some(1_700_000.0));
        assert!(d.budget().is_some(), "a delay back-off is congestion");
        assert_eq!(d.congestions(), 1);
    }
}
