//! The router's work as Prometheus metrics (issue #15): what waits to be delivered, how
//! deliveries go, open incidents, clock expiries and overdue transfers by route, transfers by
//! state.
//!
//! Two kinds:
//! * **Counted in this process** (`fengqiao_delivery_attempts_total`,
//!   `fengqiao_delivery_duration_seconds`, `fengqiao_clock_expiries_total`): what this
//!   replica did since it started; sum over replicas.
//! * **Read from the database at scrape time** (`fengqiao_outbox_backlog`,
//!   `fengqiao_outbox_oldest_age_seconds`, `fengqiao_delivery_incidents`,
//!   `fengqiao_transfers`, `fengqiao_transfers_overdue`): the state of the whole router (every
//!   replica reports the same; take `max`). They are read at most every
//!   [`SNAPSHOT_EVERY`], a scrape in between answers the last reading.
//!
//! Labels are bounded: recipients are registered agencies, routes come from the route
//! catalog, states and outcomes are fixed lists. No case data is in any label.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use fengqiao_kit::metrics::Metrics;
use fengqiao_proto::router::TransferState;
use fengqiao_store::Store;
use fengqiao_store::sqlx::{self, Row as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// How long a database reading of the state gauges is reused.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

type Labels = Vec<(&'static str, String)>;

fn push_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The counters of this process (shared by every router it runs).
pub struct WorkCounters {
    /// Push attempts by recipient and outcome (`delivered`, `failed`, `dead`).
    pub delivery_attempts: Family<Labels, Counter>,
    /// Push call latency by recipient, whatever the outcome.
    pub delivery_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Clock expiries the timer carried out, by route and clock.
    pub clock_expiries: Family<Labels, Counter>,
}

/// The process's counters.
pub static COUNTERS: LazyLock<WorkCounters> = LazyLock::new(|| WorkCounters {
    delivery_attempts: Family::default(),
    delivery_seconds: Family::new_with_constructor(push_histogram),
    clock_expiries: Family::default(),
});

/// Outcome label of a push attempt.
pub fn push_outcome(delivered: bool, dead: bool) -> &'static str {
    match (delivered, dead) {
        (true, _) => "delivered",
        (false, true) => "dead",
        (false, false) => "failed",
    }
}

/// Counts one push attempt to `recipient` (an `agencies/…` name) that took `seconds`.
pub fn record_push(recipient: &str, outcome: &'static str, seconds: f64) {
    COUNTERS
        .delivery_attempts
        .get_or_create(&vec![
            ("recipient", recipient.to_string()),
            ("outcome", outcome.to_string()),
        ])
        .inc();
    COUNTERS
        .delivery_seconds
        .get_or_create(&vec![("recipient", recipient.to_string())])
        .observe(seconds);
}

/// Counts one clock expiry carried out on `route` (a `routes/…` name).
pub fn record_expiry(route: &str, clock: &str) {
    COUNTERS
        .clock_expiries
        .get_or_create(&vec![
            ("route", route.to_string()),
            ("clock", clock.to_string()),
        ])
        .inc();
}

/// The state gauges of one router store.
#[derive(Clone)]
struct StateGauges {
    backlog: Family<Labels, Gauge>,
    oldest_age: Family<Labels, Gauge<f64, AtomicU64>>,
    incidents: Family<Labels, Gauge>,
    transfers: Family<Labels, Gauge>,
    overdue: Family<Labels, Gauge>,
    last: Arc<Mutex<Option<Instant>>>,
}

/// Registers the router's metrics on `metrics`, the state gauges read from `store`.
pub fn register(metrics: &Metrics, store: Store) {
    let c = &*COUNTERS;
    metrics.register(
        "delivery_attempts",
        "Push delivery attempts by recipient and outcome (delivered, failed, dead)",
        c.delivery_attempts.clone(),
    );
    metrics.register(
        "delivery_duration_seconds",
        "Push delivery call latency by recipient",
        c.delivery_seconds.clone(),
    );
    metrics.register(
        "clock_expiries",
        "Clock expiries carried out by the timer, by route and clock",
        c.clock_expiries.clone(),
    );
    let g = StateGauges {
        backlog: Family::default(),
        oldest_age: Family::default(),
        incidents: Family::default(),
        transfers: Family::default(),
        overdue: Family::default(),
        last: Arc::default(),
    };
    metrics.register(
        "outbox_backlog",
        "Messages waiting to be delivered, by recipient",
        g.backlog.clone(),
    );
    metrics.register(
        "outbox_oldest_age_seconds",
        "Age of the oldest message waiting to be delivered, by recipient",
        g.oldest_age.clone(),
    );
    metrics.register(
        "delivery_incidents",
        "Delivery incidents not resolved, by recipient and state (failing, open, retry_scheduled)",
        g.incidents.clone(),
    );
    metrics.register("transfers", "Transfers by state", g.transfers.clone());
    metrics.register(
        "transfers_overdue",
        "Transfers not closed whose deadline has passed, by route",
        g.overdue.clone(),
    );
    metrics.on_scrape(move || {
        let (g, store) = (g.clone(), store.clone());
        Box::pin(async move {
            let due = g
                .last
                .lock()
                .map(|l| l.is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY))
                .unwrap_or(true);
            if !due {
                return;
            }
            match read_state(&store).await {
                Ok(s) => {
                    s.apply(&g);
                    if let Ok(mut l) = g.last.lock() {
                        *l = Some(Instant::now());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the router's state metrics failed"),
            }
        })
    });
}

/// One reading of the state gauges.
#[derive(Debug, Default, PartialEq)]
struct StateReading {
    backlog: Vec<(String, i64, f64)>,
    incidents: Vec<(String, String, i64)>,
    transfers: Vec<(String, i64)>,
    overdue: Vec<(String, i64)>,
}

impl StateReading {
    fn apply(self, g: &StateGauges) {
        g.backlog.clear();
        g.oldest_age.clear();
        for (recipient, n, age) in self.backlog {
            let l = vec![("recipient", recipient)];
            g.backlog.get_or_create(&l).set(n);
            g.oldest_age.get_or_create(&l).set(age);
        }
        g.incidents.clear();
        for (recipient, state, n) in self.incidents {
            g.incidents
                .get_or_create(&vec![("recipient", recipient), ("state", state)])
                .set(n);
        }
        // Every state is reported, zero included, so that a rate or an alert has a series.
        g.transfers.clear();
        for s in ALL_STATES {
            let n = self
                .transfers
                .iter()
                .find(|(name, _)| name == transfer_state_label(*s))
                .map_or(0, |(_, n)| *n);
            g.transfers
                .get_or_create(&vec![("state", transfer_state_label(*s).to_string())])
                .set(n);
        }
        g.overdue.clear();
        for (route, n) in self.overdue {
            g.overdue.get_or_create(&vec![("route", route)]).set(n);
        }
    }
}

/// Every transfer state a transfer can be in (the kit's list without `UNSPECIFIED`).
const ALL_STATES: &[TransferState] = fengqiao_kit::transfers::TRANSFER_STATES.split_at(1).1;

/// The `state` label of a transfer state: `TRANSFER_STATE_IN_PROGRESS` → `in_progress`.
fn transfer_state_label(s: TransferState) -> &'static str {
    match s {
        TransferState::Unspecified => "unspecified",
        TransferState::Draft => "draft",
        TransferState::AwaitingApproval => "awaiting_approval",
        TransferState::Approved => "approved",
        TransferState::Delivered => "delivered",
        TransferState::Declined => "declined",
        TransferState::InProgress => "in_progress",
        TransferState::FeedbackSubmitted => "feedback_submitted",
        TransferState::Closed => "closed",
        TransferState::Withdrawn => "withdrawn",
        TransferState::Expired => "expired",
        TransferState::Returned => "returned",
        TransferState::Escalated => "escalated",
    }
}

async fn read_state(store: &Store) -> Result<StateReading, fengqiao_store::Error> {
    let pool = store.pool();
    let now = store.now_micros_pool().await?;
    let mut r = StateReading::default();
    for row in sqlx::query(
        "SELECT destination, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
         WHERE status = 'pending' GROUP BY destination",
    )
    .fetch_all(pool)
    .await?
    {
        let oldest: i64 = row.try_get("oldest")?;
        #[allow(clippy::cast_precision_loss)]
        let age = (now.saturating_sub(oldest)).max(0) as f64 / 1e6;
        r.backlog
            .push((row.try_get("destination")?, row.try_get("n")?, age));
    }
    for row in sqlx::query(
        "SELECT to_agency, state, COUNT(*) AS n FROM delivery_incidents \
         WHERE state <> 'resolved' GROUP BY to_agency, state",
    )
    .fetch_all(pool)
    .await?
    {
        r.incidents.push((
            row.try_get("to_agency")?,
            row.try_get("state")?,
            row.try_get("n")?,
        ));
    }
    for row in sqlx::query("SELECT state, COUNT(*) AS n FROM transfers GROUP BY state")
        .fetch_all(pool)
        .await?
    {
        let state: i64 = row.try_get("state")?;
        let s = i32::try_from(state)
            .ok()
            .and_then(|s| TransferState::try_from(s).ok())
            .unwrap_or(TransferState::Unspecified);
        r.transfers
            .push((transfer_state_label(s).to_string(), row.try_get("n")?));
    }
    let terminal: Vec<String> = ALL_STATES
        .iter()
        .filter(|s| crate::lifecycle::is_terminal(**s))
        .map(|s| (*s as i32).to_string())
        .collect();
    for row in sqlx::query(&format!(
        "SELECT route_id, COUNT(*) AS n FROM transfers \
         WHERE (overdue <> 0 OR (next_due IS NOT NULL AND next_due <= $1)) \
           AND state NOT IN ({}) GROUP BY route_id",
        terminal.join(", ")
    ))
    .bind(now)
    .fetch_all(pool)
    .await?
    {
        r.overdue.push((
            format!("routes/{}", row.try_get::<String, _>("route_id")?),
            row.try_get("n")?,
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_labels_match_the_proto_names() {
        for s in ALL_STATES {
            assert_eq!(
                format!("TRANSFER_STATE_{}", transfer_state_label(*s).to_uppercase()),
                s.as_str_name()
            );
        }
    }

    #[test]
    fn state_labels_are_short_and_lower_case() {
        assert_eq!(
            transfer_state_label(TransferState::InProgress),
            "in_progress"
        );
        assert_eq!(
            transfer_state_label(TransferState::AwaitingApproval),
            "awaiting_approval"
        );
    }

    #[test]
    fn push_outcomes() {
        assert_eq!(push_outcome(true, false), "delivered");
        assert_eq!(push_outcome(false, false), "failed");
        assert_eq!(push_outcome(false, true), "dead");
    }

    #[test]
    fn a_reading_reports_every_transfer_state() {
        let m = Metrics::new();
        let g = StateGauges {
            backlog: Family::default(),
            oldest_age: Family::default(),
            incidents: Family::default(),
            transfers: Family::default(),
            overdue: Family::default(),
            last: Arc::default(),
        };
        m.register("transfers", "t", g.transfers.clone());
        m.register("outbox_backlog", "b", g.backlog.clone());
        StateReading {
            backlog: vec![("agencies/a".into(), 3, 1.5)],
            transfers: vec![("closed".into(), 2)],
            ..Default::default()
        }
        .apply(&g);
        let text = m.encode();
        assert!(
            text.contains("fengqiao_transfers{state=\"closed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("fengqiao_transfers{state=\"draft\"} 0"),
            "{text}"
        );
        assert!(text.contains("fengqiao_outbox_backlog{recipient=\"agencies/a\"} 3"));
        // A recipient whose backlog drained disappears at the next reading.
        StateReading::default().apply(&g);
        assert!(!m.encode().contains("agencies/a"));
    }
}
