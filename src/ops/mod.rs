//! Operations: the `[http] listen` endpoint of `serve` with liveness (`/healthz`), readiness
//! (`/readyz`) and Prometheus metrics (`/metrics`). [`metrics`] owns the counters and the
//! exposition format, [`http`] the tiny GET-only responder; [`Ops`] answers the endpoint from
//! the running agent's spool, trust store and credentials.

pub mod http;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use metrics::METRICS;

use crate::agent::Context;
use crate::clock::{Clock, SystemClock, asn1_unix};
use crate::spool::{Spool, SqliteSpool};
use crate::store::TrustStore;

/// Seconds in a day, for the expiry gauges.
const DAY: f64 = 86_400.0;

/// The running agent as the operations endpoint sees it.
pub struct Ops {
    ctx: Arc<Context>,
    spool: Arc<SqliteSpool>,
    listeners_bound: AtomicBool,
}

impl Ops {
    pub fn new(ctx: Arc<Context>, spool: Arc<SqliteSpool>) -> Ops {
        Ops {
            ctx,
            spool,
            listeners_bound: AtomicBool::new(false),
        }
    }

    /// Record that the SMTP listeners are bound and serving (or, with false, no longer are).
    pub fn set_listeners_bound(&self, bound: bool) {
        self.listeners_bound.store(bound, Ordering::Relaxed);
    }

    /// The anchors of the configured domains (a store may keep those of a domain no longer
    /// served; they decide nothing).
    fn served_anchors(&self) -> Result<Vec<crate::store::AnchorRecord>, crate::store::StoreError> {
        let mut anchors = self.ctx.store.anchors(None)?;
        anchors.retain(|a| self.ctx.domains.iter().any(|d| d.name == a.domain));
        Ok(anchors)
    }

    /// Every reason the agent is not ready, one line each (empty: ready).
    pub fn problems(&self, now: i64) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.spool.ping() {
            problems.push(format!("spool: {e}"));
        }
        if !self.listeners_bound.load(Ordering::Relaxed) {
            problems.push("smtp_in: listeners not serving (starting or shutting down)".into());
        }
        match self.spool.disabled_credentials() {
            Ok(list) => problems.extend(list.into_iter().map(|d| {
                format!(
                    "credential {} disabled: {} (fix it, then `direct-agent credentials reset {}`)",
                    d.name, d.reason, d.name
                )
            })),
            Err(e) => problems.push(format!("spool: cannot read disabled credentials: {e}")),
        }
        match self.served_anchors() {
            Ok(anchors) => {
                for a in anchors {
                    let Ok(cert) = openssl::x509::X509::from_der(&a.der) else {
                        problems.push(format!(
                            "anchor {} of {} is not a readable certificate",
                            a.fingerprint, a.domain
                        ));
                        continue;
                    };
                    if let Some(t) = asn1_unix(cert.not_after()).filter(|t| *t <= now) {
                        let when = chrono::DateTime::from_timestamp(t, 0)
                            .map(|d| d.format("%Y-%m-%d").to_string())
                            .unwrap_or_else(|| t.to_string());
                        problems.push(format!(
                            "anchor {} ({}) of {} expired on {when}: replace it (`direct-agent anchors`)",
                            crate::trust::describe(&cert),
                            a.fingerprint,
                            a.domain
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("trust store: {e}")),
        }
        problems
    }

    /// The gauges read at scrape time.
    pub fn gauges(&self, now: i64) -> metrics::Gauges {
        let mut g = metrics::Gauges::default();
        if let Ok((depth, oldest)) = self.spool.queue_depth() {
            g.queue_depth = Some(depth as u64);
            g.queue_oldest_age_seconds = Some(oldest.map_or(0.0, |t| (now - t).max(0) as f64));
        }
        g.quarantine_size = self.spool.quarantine_size().ok();
        g.disabled_credentials = self
            .spool
            .disabled_credentials()
            .ok()
            .map(|l| l.len() as u64);
        g.replies_pending = self.spool.pending_replies().ok().map(|l| l.len() as u64);
        let days = |t: i64| (t - now) as f64 / DAY;
        if let Ok(anchors) = self.served_anchors() {
            let mut nearest: Vec<(String, i64)> = Vec::new();
            for a in anchors {
                let Some(t) = openssl::x509::X509::from_der(&a.der)
                    .ok()
                    .and_then(|c| asn1_unix(c.not_after()))
                else {
                    continue;
                };
                nearest_per(&mut nearest, &a.domain, t);
            }
            g.anchor_expiry_days = nearest.into_iter().map(|(d, t)| (d, days(t))).collect();
        }
        let mut nearest: Vec<(String, i64)> = Vec::new();
        for d in &self.ctx.domains {
            for c in &d.credentials {
                if let Some(t) = asn1_unix(c.credential.cert.not_after()) {
                    nearest_per(&mut nearest, &d.name, t);
                }
            }
        }
        g.certificate_expiry_days = nearest.into_iter().map(|(d, t)| (d, days(t))).collect();
        g
    }
}

/// Keep the earliest time per domain, in first-seen order.
fn nearest_per(list: &mut Vec<(String, i64)>, domain: &str, t: i64) {
    match list.iter_mut().find(|(d, _)| d == domain) {
        Some((_, earliest)) => *earliest = (*earliest).min(t),
        None => list.push((domain.to_string(), t)),
    }
}

impl http::Endpoints for Ops {
    fn ready(&self) -> Result<(), Vec<String>> {
        let problems = self.problems(SystemClock.unix_seconds());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn metrics(&self) -> String {
        let now = SystemClock.unix_seconds();
        let mut gauges = self.gauges(now);
        gauges.ready = Some(self.problems(now).is_empty());
        METRICS.render(&gauges)
    }
}

/// Bind `[http] listen`; a failure names the key. Warns when the address is not loopback: the
/// endpoint is not authenticated.
pub async fn bind(listen: &str) -> Result<(SocketAddr, tokio::net::TcpListener), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("http.listen {listen}: cannot listen: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("http.listen {listen}: {e}"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(address = %addr, "http.listen is not a loopback address: /metrics and /readyz are not authenticated; restrict access to it (firewall, management network)");
    }
    tracing::info!(address = %addr, "operations endpoint: /healthz /readyz /metrics");
    Ok((addr, listener))
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_expiry_per_domain_keeps_the_earliest() {
        let mut l = Vec::new();
        super::nearest_per(&mut l, "a.example", 50);
        super::nearest_per(&mut l, "b.example", 10);
        super::nearest_per(&mut l, "a.example", 20);
        super::nearest_per(&mut l, "a.example", 90);
        assert_eq!(
            l,
            vec![("a.example".to_string(), 20), ("b.example".to_string(), 10)]
        );
    }
}
