//! The agent's metrics: counters with fixed label values, one histogram with fixed buckets, and
//! their Prometheus text exposition (format 0.0.4) together with gauges read at scrape time.
//!
//! The registry is a process-global [`METRICS`]: counters are bumped deep inside the pipelines
//! (`agent::inbound` in a blocking task, `agent::outbound::attempt`, `agent::notify::classify`,
//! `Context::discover`), and threading a handle through all of them would change many
//! signatures for a one-line increment. One `serve` process is one agent, so a global is exact
//! (`direct-agent demo` runs two agents in one process, without the endpoint); tests of the
//! format build their own [`Metrics`] value, and the end-to-end tests read the counters of
//! separate `serve` processes.
//!
//! Every label value comes from a fixed list declared here (unknown values count as `other`), so
//! a series set is bounded and every series is exported from start-up at 0 (alerts on `rate()`
//! and `increase()` need the zero). Labels never carry addresses, subjects or payload data; the
//! only free-form label is the local domain name of the expiry gauges.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::discovery::{Discovery, Source};
use crate::spool::{AttemptResult, InboundOutcome, OutboundKind, OutboundState};

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Buckets of `direct_agent_mdn_round_trip_seconds` (upper bounds, seconds).
pub const MDN_ROUND_TRIP_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Quarantine kinds (`InboundOutcome::Quarantined { kind }`), plus `other`.
const QUARANTINE_REASONS: &[&str] = &[
    "decrypt",
    "signature",
    "trust",
    "malformed",
    "address",
    "hl7",
    "route",
    "sink",
    "notification",
    "other",
];
/// The quarantine kinds that are trust refusals.
const TRUST_REASONS: &[&str] = &["decrypt", "signature", "trust"];

/// A counter with labels whose values come from fixed lists; one series per combination.
pub struct CounterFamily {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: &'static [&'static [&'static str]],
    counts: Box<[AtomicU64]>,
}

impl CounterFamily {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        values: &'static [&'static [&'static str]],
    ) -> CounterFamily {
        debug_assert_eq!(labels.len(), values.len());
        let n = values.iter().map(|v| v.len()).product();
        CounterFamily {
            name,
            help,
            labels,
            values,
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The series of these label values (one per label, in order). A value outside its list
    /// becomes `other` where the list has it; otherwise the increment is dropped.
    fn index(&self, label_values: &[&str]) -> Option<usize> {
        if label_values.len() != self.values.len() {
            return None;
        }
        let mut i = 0;
        for (v, allowed) in label_values.iter().zip(self.values) {
            let pos = allowed
                .iter()
                .position(|a| a == v)
                .or_else(|| allowed.iter().position(|a| *a == "other"))?;
            i = i * allowed.len() + pos;
        }
        Some(i)
    }

    /// Add one to the series of `label_values`.
    pub fn inc(&self, label_values: &[&str]) {
        if let Some(i) = self.index(label_values) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current value of a series (0 for values outside the lists).
    pub fn get(&self, label_values: &[&str]) -> u64 {
        self.index(label_values)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        for (i, count) in self.counts.iter().enumerate() {
            // Decode the row-major index into one value per label.
            let mut rest = i;
            let mut pairs = Vec::with_capacity(self.labels.len());
            for (label, allowed) in self.labels.iter().zip(self.values).rev() {
                pairs.push((*label, allowed[rest % allowed.len()]));
                rest /= allowed.len();
            }
            pairs.reverse();
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                label_set(&pairs),
                count.load(Ordering::Relaxed)
            );
        }
    }
}

/// A histogram with fixed buckets.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last one is above every bound.
    buckets: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Histogram {
        Histogram {
            name,
            help,
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Record one observation; negative or non-finite values (clock steps) count as 0.
    pub fn observe(&self, value: f64) {
        let v = if value.is_finite() && value > 0.0 {
            value
        } else {
            0.0
        };
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| number(*b));
            let _ = writeln!(out, "{}_bucket{{le=\"{le}\"}} {cumulative}", self.name);
        }
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{}_sum {}", self.name, number(sum));
        // The count is the +Inf bucket, so the two always agree.
        let _ = writeln!(out, "{}_count {cumulative}", self.name);
    }
}

/// Values read at scrape time from the spool, the trust store and our credentials. `None`: it
/// could not be read (the series is left out; `/readyz` names the problem).
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub queue_depth: Option<u64>,
    pub queue_oldest_age_seconds: Option<f64>,
    pub quarantine_size: Option<u64>,
    pub disabled_credentials: Option<u64>,
    /// MDNs, pongs and HL7 ACK replies kept because they could not be sealed yet.
    pub replies_pending: Option<u64>,
    /// Whether `/readyz` would answer 200.
    pub ready: Option<bool>,
    /// (local domain, days until its nearest anchor expiry; negative once expired).
    pub anchor_expiry_days: Vec<(String, f64)>,
    /// (local domain, days until its nearest own-certificate expiry).
    pub certificate_expiry_days: Vec<(String, f64)>,
}

/// The agent's counters and histogram.
pub struct Metrics {
    /// `direct_agent_messages_received_total{outcome}`
    pub received: CounterFamily,
    /// `direct_agent_quarantined_total{reason}`
    pub quarantined: CounterFamily,
    /// `direct_agent_trust_failures_total{reason}`
    pub trust_failures: CounterFamily,
    /// `direct_agent_messages_sent_total{kind,outcome}`
    pub sent: CounterFamily,
    /// `direct_agent_mdn_round_trip_seconds`
    pub mdn_round_trip: Histogram,
    /// `direct_agent_discovery_lookups_total{source,result}`
    pub discovery: CounterFamily,
    /// `direct_agent_failure_notifications_total{state}`
    pub failure_notifications: CounterFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every series at 0.
    pub fn new() -> Metrics {
        Metrics {
            received: CounterFamily::new(
                "direct_agent_messages_received_total",
                "Inbound processing results: each message counts once as delivered (MDNs/DSNs recorded and pings answered included) or quarantined, plus once per attempt that will be retried (transient sink or store failure).",
                &["outcome"],
                &[&["delivered", "quarantined", "retry"]],
            ),
            quarantined: CounterFamily::new(
                "direct_agent_quarantined_total",
                "Inbound messages quarantined, by refusal kind.",
                &["reason"],
                &[QUARANTINE_REASONS],
            ),
            trust_failures: CounterFamily::new(
                "direct_agent_trust_failures_total",
                "Inbound messages refused for decryption, signature or trust (path, validity, revocation, binding) reasons.",
                &["reason"],
                &[TRUST_REASONS],
            ),
            sent: CounterFamily::new(
                "direct_agent_messages_sent_total",
                "Outbound delivery attempts, by queue entry kind and outcome (failed: refused with 5xx or expired; blocked: not attempted, credential disabled).",
                &["kind", "outcome"],
                &[
                    &["message", "mdn", "dsn"],
                    &["sent", "transient", "failed", "blocked"],
                ],
            ),
            mdn_round_trip: Histogram::new(
                "direct_agent_mdn_round_trip_seconds",
                "Time from handing a message to the partner's server to receiving its processed MDN.",
                &MDN_ROUND_TRIP_BUCKETS,
            ),
            discovery: CounterFamily::new(
                "direct_agent_discovery_lookups_total",
                "Recipient certificate discoveries, by the source that decided and the result (error: a lookup failed, retry later).",
                &["source", "result"],
                &[&["static", "dns", "ldap"], &["found", "none", "error"]],
            ),
            failure_notifications: CounterFamily::new(
                "direct_agent_failure_notifications_total",
                "Failure DSNs handed to local senders, by how the message ended for the recipient (failed: refused, retries exhausted or a failed MDN; timed-out: no MDN in time).",
                &["state"],
                &[&["failed", "timed-out", "other"]],
            ),
        }
    }

    /// Count how processing one inbound entry ended.
    pub fn inbound(&self, outcome: &InboundOutcome) {
        match outcome {
            InboundOutcome::Delivered { .. } => self.received.inc(&["delivered"]),
            InboundOutcome::Quarantined { kind, .. } => {
                self.received.inc(&["quarantined"]);
                self.quarantined.inc(&[kind]);
                if TRUST_REASONS.contains(&kind.as_str()) {
                    self.trust_failures.inc(&[kind]);
                }
            }
            InboundOutcome::Retry { .. } => self.received.inc(&["retry"]),
        }
    }

    /// Count one outbound attempt of an entry of `kind` that left it in `state`.
    pub fn outbound(&self, kind: OutboundKind, result: &AttemptResult, state: OutboundState) {
        let outcome = match result {
            AttemptResult::Sent { .. } => "sent",
            AttemptResult::Transient { .. } if state == OutboundState::Failed => "failed",
            AttemptResult::Transient { .. } => "transient",
            AttemptResult::Permanent { .. } => "failed",
            AttemptResult::Blocked { .. } => "blocked",
        };
        self.sent.inc(&[kind.as_str(), outcome]);
    }

    /// A processed MDN arrived `seconds` after the message was sent.
    pub fn mdn_processed(&self, seconds: f64) {
        self.mdn_round_trip.observe(seconds);
    }

    /// Count one discovery (`ldap`: whether LDAP was consulted after DNS).
    pub fn discovery_lookup(&self, found: &Discovery, ldap: bool) {
        let (source, result) = discovery_labels(found, ldap);
        self.discovery.inc(&[source, result]);
    }

    /// A local sender was told that its message `state` (failed, timed-out) for a recipient.
    pub fn failure_notified(&self, state: &str) {
        self.failure_notifications.inc(&[state]);
    }

    /// The Prometheus text exposition of the counters, the histogram and `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        self.received.render(&mut out);
        self.quarantined.render(&mut out);
        self.trust_failures.render(&mut out);
        self.sent.render(&mut out);
        self.mdn_round_trip.render(&mut out);
        self.discovery.render(&mut out);
        self.failure_notifications.render(&mut out);
        let scalar = |out: &mut String, name: &str, help: &str, v: Option<f64>| {
            if let Some(v) = v {
                header(out, name, help, "gauge");
                let _ = writeln!(out, "{name} {}", number(v));
            }
        };
        scalar(
            &mut out,
            "direct_agent_ready",
            "1 when /readyz answers 200, 0 when it answers 503 (see /readyz for the problems).",
            gauges.ready.map(|r| if r { 1.0 } else { 0.0 }),
        );
        scalar(
            &mut out,
            "direct_agent_queue_depth",
            "Outbound entries queued or being sent.",
            gauges.queue_depth.map(|v| v as f64),
        );
        scalar(
            &mut out,
            "direct_agent_queue_oldest_age_seconds",
            "Age of the oldest outbound entry queued or being sent (0 when the queue is empty).",
            gauges.queue_oldest_age_seconds,
        );
        scalar(
            &mut out,
            "direct_agent_quarantine_size",
            "Inbound messages in quarantine (until released or deleted).",
            gauges.quarantine_size.map(|v| v as f64),
        );
        scalar(
            &mut out,
            "direct_agent_disabled_credentials",
            "Credentials disabled after a server refused them (see `direct-agent credentials`).",
            gauges.disabled_credentials.map(|v| v as f64),
        );
        scalar(
            &mut out,
            "direct_agent_replies_pending",
            "MDNs, pongs and HL7 ACK replies kept because they could not be sealed yet (see `direct-agent queue replies`).",
            gauges.replies_pending.map(|v| v as f64),
        );
        let per_domain = |out: &mut String, name: &str, help: &str, v: &[(String, f64)]| {
            header(out, name, help, "gauge");
            for (domain, days) in v {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    label_set(&[("domain", domain)]),
                    number(*days)
                );
            }
        };
        per_domain(
            &mut out,
            "direct_agent_anchor_expiry_days",
            "Days until the nearest trust anchor expiry of a local domain (negative once expired).",
            &gauges.anchor_expiry_days,
        );
        per_domain(
            &mut out,
            "direct_agent_certificate_expiry_days",
            "Days until the nearest expiry among a local domain's own certificates (negative once expired).",
            &gauges.certificate_expiry_days,
        );
        out
    }
}

/// The `source` and `result` labels of one discovery. `found`: where the chosen certificate
/// came from; `error`: the lookup that failed (LDAP runs only after DNS completed); `none`: the
/// last source consulted (configured certificates stop the search).
pub fn discovery_labels(found: &Discovery, ldap: bool) -> (&'static str, &'static str) {
    let source_of = |s: Source| match s {
        Source::Static => "static",
        Source::LdapAddress | Source::LdapDomain => "ldap",
        _ => "dns",
    };
    if let Some(c) = found
        .candidates
        .iter()
        .find(|c| found.chosen.contains(&c.fingerprint_sha256))
    {
        return (source_of(c.source), "found");
    }
    let stepped = |prefix: &str| found.steps.iter().any(|s| s.step.starts_with(prefix));
    if found.transient {
        let in_ldap = found
            .steps
            .iter()
            .any(|s| s.step.starts_with("ldap ") || s.step.contains("_ldap"));
        return (if in_ldap { "ldap" } else { "dns" }, "error");
    }
    let source = if stepped("static") {
        "static"
    } else if ldap {
        "ldap"
    } else {
        "dns"
    };
    (source, "none")
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` with values escaped (backslash, double quote, newline).
fn label_set(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the exposition format writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_counter_series_is_exported_at_zero_with_help_and_type() {
        let m = Metrics::new();
        let text = m.render(&Gauges::default());
        assert!(text.contains("# HELP direct_agent_messages_received_total "));
        assert!(text.contains("# TYPE direct_agent_messages_received_total counter\n"));
        assert!(text.contains("direct_agent_messages_received_total{outcome=\"delivered\"} 0\n"));
        assert_eq!(
            lines(&text, "direct_agent_quarantined_total{").len(),
            QUARANTINE_REASONS.len()
        );
        assert_eq!(lines(&text, "direct_agent_messages_sent_total{").len(), 12);
        assert!(
            text.contains("direct_agent_messages_sent_total{kind=\"mdn\",outcome=\"blocked\"} 0\n")
        );
        assert!(text.contains(
            "direct_agent_discovery_lookups_total{source=\"ldap\",result=\"error\"} 0\n"
        ));
        m.failure_notified("timed-out");
        let text = m.render(&Gauges::default());
        assert!(text.contains("direct_agent_failure_notifications_total{state=\"timed-out\"} 1\n"));
        // Gauges that could not be read are left out.
        assert!(!text.contains("direct_agent_queue_depth "));
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = l.rsplit_once(' ').unwrap();
            assert!(series.starts_with("direct_agent_"), "{l}");
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{l}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn inbound_outcomes_count_received_quarantine_kind_and_trust_failures() {
        let m = Metrics::new();
        m.inbound(&InboundOutcome::Delivered {
            detail: serde_json::json!({}),
        });
        for kind in ["trust", "hl7", "signature", "something-new"] {
            m.inbound(&InboundOutcome::Quarantined {
                kind: kind.into(),
                reason: "CN=someone, secret detail".into(),
            });
        }
        m.inbound(&InboundOutcome::Retry {
            reason: "sink down".into(),
            next_attempt_at: 0,
        });
        assert_eq!(m.received.get(&["delivered"]), 1);
        assert_eq!(m.received.get(&["quarantined"]), 4);
        assert_eq!(m.received.get(&["retry"]), 1);
        assert_eq!(m.quarantined.get(&["trust"]), 1);
        assert_eq!(m.quarantined.get(&["other"]), 1);
        assert_eq!(m.trust_failures.get(&["trust"]), 1);
        assert_eq!(m.trust_failures.get(&["signature"]), 1);
        assert_eq!(m.trust_failures.get(&["decrypt"]), 0);
        let text = m.render(&Gauges::default());
        assert!(!text.contains("CN=someone") && !text.contains("something-new"));
        assert!(text.contains("direct_agent_quarantined_total{reason=\"other\"} 1\n"));
    }

    #[test]
    fn outbound_attempts_count_by_kind_and_outcome() {
        let m = Metrics::new();
        let sent = AttemptResult::Sent {
            detail: "250".into(),
        };
        let transient = AttemptResult::Transient {
            detail: "451".into(),
            next_attempt_at: 0,
        };
        m.outbound(OutboundKind::Message, &sent, OutboundState::Sent);
        m.outbound(OutboundKind::Message, &transient, OutboundState::Queued);
        m.outbound(OutboundKind::Message, &transient, OutboundState::Failed);
        m.outbound(
            OutboundKind::Mdn,
            &AttemptResult::Permanent {
                detail: "550".into(),
            },
            OutboundState::Failed,
        );
        assert_eq!(m.sent.get(&["message", "sent"]), 1);
        assert_eq!(m.sent.get(&["message", "transient"]), 1);
        assert_eq!(m.sent.get(&["message", "failed"]), 1);
        assert_eq!(m.sent.get(&["mdn", "failed"]), 1);
        assert_eq!(m.sent.get(&["mdn", "sent"]), 0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches_inf() {
        let m = Metrics::new();
        for v in [0.05, 0.1, 0.7, 42.0, 5000.0, -3.0, f64::NAN] {
            m.mdn_processed(v);
        }
        let text = m.render(&Gauges::default());
        let h = "direct_agent_mdn_round_trip_seconds";
        assert!(text.contains(&format!("# TYPE {h} histogram\n")));
        // 0.05, 0.1, -3 (as 0) and NaN (as 0) are <= 0.1.
        assert!(
            text.contains(&format!("{h}_bucket{{le=\"0.1\"}} 4\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{h}_bucket{{le=\"0.5\"}} 4\n")));
        assert!(text.contains(&format!("{h}_bucket{{le=\"1\"}} 5\n")));
        assert!(text.contains(&format!("{h}_bucket{{le=\"60\"}} 6\n")));
        assert!(text.contains(&format!("{h}_bucket{{le=\"3600\"}} 6\n")));
        assert!(text.contains(&format!("{h}_bucket{{le=\"+Inf\"}} 7\n")));
        assert!(text.contains(&format!("{h}_count 7\n")));
        assert!(text.contains(&format!("{h}_sum 5042.85\n")), "{text}");
        assert_eq!(lines(&text, &format!("{h}_bucket")).len(), 12);
        assert_eq!(m.mdn_round_trip.count(), 7);
    }

    #[test]
    fn discovery_labels_name_the_deciding_source() {
        let step = |s: &str| crate::discovery::Step {
            step: s.into(),
            verdict: "fail",
            detail: String::new(),
        };
        let run = |steps: Vec<crate::discovery::Step>, transient: bool| Discovery {
            address: "x@b.example".into(),
            steps,
            candidates: Vec::new(),
            chosen: Vec::new(),
            reason: Some("nothing".into()),
            transient,
            ttl: std::time::Duration::from_secs(1),
        };
        let dns_timeout = run(vec![step("dns CERT x.b.example")], true);
        assert_eq!(discovery_labels(&dns_timeout, true), ("dns", "error"));
        let ldap_down = run(
            vec![step("dns CERT b.example"), step("ldap ldap.b.example")],
            true,
        );
        assert_eq!(discovery_labels(&ldap_down, true), ("ldap", "error"));
        let nothing = run(vec![step("dns CERT b.example")], false);
        assert_eq!(discovery_labels(&nothing, true), ("ldap", "none"));
        assert_eq!(discovery_labels(&nothing, false), ("dns", "none"));
        let stat = run(vec![step("static")], false);
        assert_eq!(discovery_labels(&stat, true), ("static", "none"));
        let m = Metrics::new();
        m.discovery_lookup(&ldap_down, true);
        assert_eq!(m.discovery.get(&["ldap", "error"]), 1);
    }

    #[test]
    fn gauges_render_with_escaped_domain_labels() {
        let m = Metrics::new();
        let text = m.render(&Gauges {
            queue_depth: Some(3),
            queue_oldest_age_seconds: Some(12.5),
            quarantine_size: Some(0),
            disabled_credentials: Some(1),
            replies_pending: Some(2),
            ready: Some(false),
            anchor_expiry_days: vec![("hisp-a.example".into(), -2.25)],
            certificate_expiry_days: vec![("we\"ird\\dom\nain".into(), 300.0)],
        });
        assert!(
            text.contains("# TYPE direct_agent_queue_depth gauge\ndirect_agent_queue_depth 3\n")
        );
        assert!(text.contains("direct_agent_queue_oldest_age_seconds 12.5\n"));
        assert!(text.contains("direct_agent_quarantine_size 0\n"));
        assert!(text.contains("direct_agent_disabled_credentials 1\n"));
        assert!(text.contains("direct_agent_replies_pending 2\n"));
        assert!(text.contains("# TYPE direct_agent_ready gauge\ndirect_agent_ready 0\n"));
        assert!(
            text.contains("direct_agent_anchor_expiry_days{domain=\"hisp-a.example\"} -2.25\n")
        );
        assert!(text.contains(
            "direct_agent_certificate_expiry_days{domain=\"we\\\"ird\\\\dom\\nain\"} 300\n"
        ));
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
