//! Transfer statistics (统计分析) for supervision (督办) and reporting.
//!
//! One read: the transfers created in the requested window that the caller may see (its own
//! agency's, sent or received, and its child agencies'; everything for `platform_admin` and
//! `statistician`), plus their approval, acceptance and feedback events. Aggregation is done
//! in Rust over those rows, bounded by [`MAX_WINDOW_DAYS`] and [`MAX_ROWS`].

use fengqiao_store::bind::{Bind, bind_all};
use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike as _, NaiveDate};
use fengqiao_kit::{FieldViolation, Identity, validate};
use fengqiao_proto::router::statistics_service_server::StatisticsService;
use fengqiao_proto::router::{
    GetTransferStatisticsRequest, GetTransferStatisticsResponse, OutcomeCount, RegionLevel,
    StatisticsDimension, StatisticsPeriod, Transfer, TransferEventType, TransferState,
    TransferStatisticsRow,
};
use fengqiao_store::Store;
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::time::to_timestamp;

/// Role that sees statistics over all transfers (统计人员).
pub const ROLE_STATISTICIAN: &str = "statistician";

/// Longest window one request may cover, in days.
pub const MAX_WINDOW_DAYS: i64 = 366;

/// Most transfers one request may aggregate.
pub const MAX_ROWS: usize = 200_000;

const DAY_MICROS: i64 = 86_400_000_000;

/// Time zones accepted for period boundaries, with their fixed UTC offsets in seconds.
/// Mainland China has had no daylight saving since 1991, so a fixed offset is exact for
/// every window the router holds.
const TIME_ZONES: &[(&str, i32)] = &[
    ("Asia/Shanghai", 8 * 3600),
    ("Asia/Chongqing", 8 * 3600),
    ("Asia/Harbin", 8 * 3600),
    ("Asia/Hong_Kong", 8 * 3600),
    ("Asia/Macau", 8 * 3600),
    ("PRC", 8 * 3600),
    ("UTC", 0),
    ("Etc/UTC", 0),
];

/// The `StatisticsService`: aggregates over the `transfers` and `transfer_events` tables.
#[derive(Clone, Debug)]
pub struct Statistics {
    store: Store,
}

/// A validated request.
#[derive(Debug)]
struct Query {
    start: i64,
    end: i64,
    group_by: Vec<StatisticsDimension>,
    period: StatisticsPeriod,
    offset_secs: i32,
    region_level: RegionLevel,
    route_id: Option<String>,
    region_prefix: String,
    from_agency: Option<String>,
    to_agency: Option<String>,
}

fn enum_field<T: TryFrom<i32>>(field: &str, value: i32, v: &mut Vec<FieldViolation>) -> Option<T> {
    match T::try_from(value) {
        Ok(t) => Some(t),
        Err(_) => {
            v.push(FieldViolation::new(field, "is not a known value"));
            None
        }
    }
}

/// Dimensions a statistics request can group by (`StatisticsDimension` without UNSPECIFIED).
const MAX_GROUP_BY: usize = 7;

fn validate_request(req: &GetTransferStatisticsRequest) -> Result<Query> {
    let mut v = Vec::new();
    let mut time = |field: &str, t: Option<&prost_types::Timestamp>| match t {
        None => {
            v.push(FieldViolation::new(field, "is required"));
            None
        }
        Some(t) => match fengqiao_kit::time::parse_timestamp(field, t) {
            Ok(t) => Some(t),
            Err(e) => {
                v.push(e);
                None
            }
        },
    };
    let start = time("start_time", req.start_time.as_ref());
    let end = time("end_time", req.end_time.as_ref());
    if let (Some(s), Some(e)) = (start, end) {
        if e <= s {
            v.push(FieldViolation::new("end_time", "must be after start_time"));
        } else if e - s > MAX_WINDOW_DAYS * DAY_MICROS {
            v.push(FieldViolation::new(
                "end_time",
                format!("window must be at most {MAX_WINDOW_DAYS} days"),
            ));
        }
    }
    let mut group_by = Vec::new();
    // Each dimension at most once: more values than dimensions is refused as a whole, before
    // any value is looked at (a request with 250 000 values answers one violation).
    if let Err(e) = validate::max_items("group_by", req.group_by.len(), MAX_GROUP_BY) {
        return Err(Error::Invalid(vec![e]));
    }
    for (i, d) in req.group_by.iter().enumerate() {
        let field = format!("group_by[{i}]");
        match enum_field::<StatisticsDimension>(&field, *d, &mut v) {
            Some(StatisticsDimension::Unspecified) => {
                v.push(FieldViolation::new(field, "must not be UNSPECIFIED"));
            }
            Some(d) if group_by.contains(&d) => {
                v.push(FieldViolation::new(field, "is repeated"));
            }
            Some(d) => group_by.push(d),
            None => {}
        }
    }
    let period = enum_field::<StatisticsPeriod>("period", req.period, &mut v)
        .map(|p| match p {
            StatisticsPeriod::Unspecified => StatisticsPeriod::Month,
            p => p,
        })
        .unwrap_or(StatisticsPeriod::Month);
    let tz = if req.time_zone.is_empty() {
        "Asia/Shanghai"
    } else {
        req.time_zone.as_str()
    };
    let offset_secs = match TIME_ZONES.iter().find(|(n, _)| *n == tz) {
        Some((_, o)) => *o,
        None => {
            v.push(FieldViolation::new(
                "time_zone",
                "must be one of Asia/Shanghai, Asia/Chongqing, Asia/Harbin, Asia/Hong_Kong, \
                 Asia/Macau, PRC, UTC, Etc/UTC",
            ));
            0
        }
    };
    let region_level = enum_field::<RegionLevel>("region_level", req.region_level, &mut v)
        .map(|l| match l {
            RegionLevel::Unspecified => RegionLevel::County,
            l => l,
        })
        .unwrap_or(RegionLevel::County);
    let route_id = if req.route.is_empty() {
        None
    } else {
        match validate::parse_name("route", "routes", &req.route) {
            Ok(id) => Some(id.to_string()),
            Err(e) => {
                v.push(e);
                None
            }
        }
    };
    let prefix = &req.region_code_prefix;
    if prefix.len() > 6 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        v.push(FieldViolation::new(
            "region_code_prefix",
            "must be at most six digits",
        ));
    }
    let mut agency = |field: &str, name: &str| -> Option<String> {
        if name.is_empty() {
            return None;
        }
        match validate::parse_name(field, "agencies", name) {
            Ok(_) => Some(name.to_string()),
            Err(e) => {
                v.push(e);
                None
            }
        }
    };
    let from_agency = agency("from_agency", &req.from_agency);
    let to_agency = agency("to_agency", &req.to_agency);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    Ok(Query {
        start: start.unwrap_or_default(),
        end: end.unwrap_or_default(),
        group_by,
        period,
        offset_secs,
        region_level,
        route_id,
        region_prefix: prefix.clone(),
        from_agency,
        to_agency,
    })
}

/// Whether `who` sees statistics over every agency's transfers.
fn sees_all(who: &Identity) -> bool {
    who.has_role(crate::agencies::ROLE_PLATFORM_ADMIN) || who.has_role(ROLE_STATISTICIAN)
}

fn store_err(e: sqlx::Error) -> Error {
    Error::Store(fengqiao_store::Error::from(e))
}

/// The grouping key of one row; dimensions not requested keep their default.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    route: String,
    state: i32,
    region_code: String,
    period_start: Option<i64>,
    from_agency: String,
    to_agency: String,
    category: i32,
}

/// Running aggregates of one group.
#[derive(Debug, Default)]
struct Acc {
    transfers: u64,
    accepted: u64,
    declined: u64,
    feedback: u64,
    closed: u64,
    overdue_acceptance: u64,
    overdue_feedback: u64,
    to_acceptance: Vec<i64>,
    to_feedback: Vec<i64>,
    outcomes: BTreeMap<String, u64>,
}

/// Event times of one transfer that the timings need.
#[derive(Debug, Default, Clone, Copy)]
struct Times {
    approved: Option<i64>,
    accepted: Option<i64>,
    feedback: Option<i64>,
}

/// Whether a clock counts as overdue at `now`: it expired, or it runs past its deadline.
fn clock_overdue(c: &Option<Clock>, now: i64) -> bool {
    c.as_ref().is_some_and(|c| {
        c.expired || (c.stopped_at.is_none() && c.paused_at.is_none() && c.due_at <= now)
    })
}

fn clock_of(row: &AnyRow, col: &str) -> Result<Option<Clock>> {
    let text: Option<String> = row.try_get(col).map_err(store_err)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

/// Start (unix micros) of the period holding `micros`, in a zone `offset_secs` east of UTC.
fn period_start(micros: i64, offset_secs: i32, period: StatisticsPeriod) -> i64 {
    let offset = i64::from(offset_secs) * 1_000_000;
    let local_days = (micros + offset).div_euclid(DAY_MICROS);
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let day = epoch + chrono::Duration::days(local_days);
    let first = match period {
        StatisticsPeriod::Day => Some(day),
        StatisticsPeriod::Week => {
            Some(day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday())))
        }
        StatisticsPeriod::Quarter => {
            NaiveDate::from_ymd_opt(day.year(), (day.month0() / 3) * 3 + 1, 1)
        }
        StatisticsPeriod::Year => NaiveDate::from_ymd_opt(day.year(), 1, 1),
        StatisticsPeriod::Month | StatisticsPeriod::Unspecified => {
            NaiveDate::from_ymd_opt(day.year(), day.month(), 1)
        }
    }
    .unwrap_or(day);
    (first - epoch).num_days() * DAY_MICROS - offset
}

/// Truncates a region code to `level` (province 2, prefecture 4, county 6 digits).
fn region_at(code: &str, level: RegionLevel) -> String {
    let n = match level {
        RegionLevel::Province => 2,
        RegionLevel::Prefecture => 4,
        RegionLevel::County | RegionLevel::Unspecified => 6,
    };
    code.chars().take(n).collect()
}

fn duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Mean, median and 90th percentile (nearest rank) of `values`; `None` when empty.
fn summary(values: &mut [i64]) -> Option<(i64, i64, i64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
    let mean = i64::try_from(sum / n as i128).unwrap_or(i64::MAX);
    let rank = |p: usize| values[(p * n).div_ceil(100).clamp(1, n) - 1];
    Some((mean, rank(50), rank(90)))
}

impl Statistics {
    /// Statistics over a migrated `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Computes the statistics `req` asks for, scoped to what `who` may see.
    pub async fn compute(
        &self,
        who: &Identity,
        req: &GetTransferStatisticsRequest,
    ) -> Result<GetTransferStatisticsResponse> {
        let q = validate_request(req)?;
        let now = self.store.now_micros_pool().await?;

        // The filter, shared by the transfers and the events query (alias `t`).
        let mut binds: Vec<Bind> = vec![Bind::Int(q.start), Bind::Int(q.end)];
        let mut filter = String::from("t.create_time >= $1 AND t.create_time < $2");
        let push = |binds: &mut Vec<Bind>, b: Bind| -> String {
            binds.push(b);
            format!("${}", binds.len())
        };
        if !sees_all(who) {
            // The caller's agency and its child agencies (proto: "for a parent agency, its
            // children"); `agencies.parent` holds the bare id.
            let me = push(&mut binds, Bind::Text(who.agency.clone()));
            let me_id = push(
                &mut binds,
                Bind::Text(who.agency.trim_start_matches("agencies/").to_string()),
            );
            filter.push_str(&format!(
                " AND (t.from_agency = {me} OR t.to_agency = {me} \
                 OR t.from_agency IN (SELECT 'agencies/' || a.id FROM agencies a WHERE a.parent = {me_id}) \
                 OR t.to_agency IN (SELECT 'agencies/' || a.id FROM agencies a WHERE a.parent = {me_id}))"
            ));
        }
        if let Some(r) = &q.route_id {
            let p = push(&mut binds, Bind::Text(r.clone()));
            filter.push_str(&format!(" AND t.route_id = {p}"));
        }
        if let Some(a) = &q.from_agency {
            let p = push(&mut binds, Bind::Text(a.clone()));
            filter.push_str(&format!(" AND t.from_agency = {p}"));
        }
        if let Some(a) = &q.to_agency {
            let p = push(&mut binds, Bind::Text(a.clone()));
            filter.push_str(&format!(" AND t.to_agency = {p}"));
        }

        let sql = format!(
            "SELECT t.id, t.route_id, t.state, t.body, t.acceptance_clock, t.feedback_clock, \
             t.next_due, t.overdue, t.create_time FROM transfers t WHERE {filter} \
             ORDER BY t.create_time, t.id LIMIT {}",
            MAX_ROWS + 1
        );
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(self.store.pool())
            .await
            .map_err(store_err)?;
        if rows.len() > MAX_ROWS {
            return Err(Error::Invalid(vec![FieldViolation::new(
                "end_time",
                format!("the window holds more than {MAX_ROWS} transfers; narrow it"),
            )]));
        }

        let events_sql = format!(
            "SELECT e.transfer_id, e.event_type, e.occurred_at FROM transfer_events e \
             JOIN transfers t ON t.id = e.transfer_id WHERE {filter} \
             AND e.event_type IN ({}, {}, {}) ORDER BY e.seq",
            TransferEventType::Approved as i32,
            TransferEventType::Accepted as i32,
            TransferEventType::FeedbackSubmitted as i32,
        );
        let events = bind_all(sqlx::query(&events_sql), &binds)
            .fetch_all(self.store.pool())
            .await
            .map_err(store_err)?;
        let mut times: HashMap<String, Times> = HashMap::new();
        for e in &events {
            let id: String = e.try_get("transfer_id").map_err(store_err)?;
            let kind: i64 = e.try_get("event_type").map_err(store_err)?;
            let at: i64 = e.try_get("occurred_at").map_err(store_err)?;
            let t = times.entry(id).or_default();
            match i32::try_from(kind)
                .ok()
                .and_then(|k| TransferEventType::try_from(k).ok())
            {
                // The approval that released the offer: the last one before acceptance.
                Some(TransferEventType::Approved) if t.accepted.is_none() => t.approved = Some(at),
                Some(TransferEventType::Accepted) if t.accepted.is_none() => t.accepted = Some(at),
                Some(TransferEventType::FeedbackSubmitted) if t.feedback.is_none() => {
                    t.feedback = Some(at)
                }
                _ => {}
            }
        }

        let mut groups: BTreeMap<Key, Acc> = BTreeMap::new();
        for row in &rows {
            let id: String = row.try_get("id").map_err(store_err)?;
            let route_id: String = row.try_get("route_id").map_err(store_err)?;
            let state: i64 = row.try_get("state").map_err(store_err)?;
            let state = i32::try_from(state).unwrap_or_default();
            let body: Vec<u8> = row.try_get("body").map_err(store_err)?;
            let body = fengqiao_store::seal::open(crate::transfers::BODY_CONTEXT, &body)?;
            let transfer = Transfer::decode(body.as_slice())
                .map_err(|e| Error::Corrupt(format!("transfer: {e}")))?;
            let create_time: i64 = row.try_get("create_time").map_err(store_err)?;
            let case = transfer.case_snapshot.clone().unwrap_or_default();
            if !case.region_code.starts_with(&q.region_prefix) {
                continue;
            }
            let acceptance = clock_of(row, "acceptance_clock")?;
            let feedback_clock = clock_of(row, "feedback_clock")?;

            let mut key = Key::default();
            for d in &q.group_by {
                match d {
                    StatisticsDimension::Route => key.route = format!("routes/{route_id}"),
                    StatisticsDimension::State => key.state = state,
                    StatisticsDimension::Region => {
                        key.region_code = region_at(&case.region_code, q.region_level)
                    }
                    StatisticsDimension::Period => {
                        key.period_start = Some(period_start(create_time, q.offset_secs, q.period))
                    }
                    StatisticsDimension::FromAgency => {
                        key.from_agency = transfer
                            .from_agency
                            .as_ref()
                            .map(|a| a.name.clone())
                            .unwrap_or_default()
                    }
                    StatisticsDimension::ToAgency => {
                        key.to_agency = transfer
                            .to_agency
                            .as_ref()
                            .map(|a| a.name.clone())
                            .unwrap_or_default()
                    }
                    StatisticsDimension::Category => key.category = case.category,
                    StatisticsDimension::Unspecified => {}
                }
            }
            let acc = groups.entry(key).or_default();
            let t = times.get(&id).copied().unwrap_or_default();
            acc.transfers += 1;
            if t.accepted.is_some() {
                acc.accepted += 1;
            }
            if state == TransferState::Declined as i32 {
                acc.declined += 1;
            }
            if state == TransferState::Closed as i32 {
                acc.closed += 1;
            }
            if clock_overdue(&acceptance, now) {
                acc.overdue_acceptance += 1;
            }
            if clock_overdue(&feedback_clock, now) {
                acc.overdue_feedback += 1;
            }
            if let Some(f) = &transfer.feedback {
                acc.feedback += 1;
                *acc.outcomes.entry(f.outcome_code.clone()).or_default() += 1;
            }
            if let (Some(a), Some(b)) = (t.approved, t.accepted) {
                acc.to_acceptance.push((b - a).max(0));
            }
            if let (Some(a), Some(f)) = (t.accepted, t.feedback) {
                acc.to_feedback.push((f - a).max(0));
            }
        }
        if q.group_by.is_empty() && groups.is_empty() {
            // "Empty gives one total row", even over no transfers.
            groups.insert(Key::default(), Acc::default());
        }

        let rows = groups
            .into_iter()
            .map(|(k, mut a)| {
                let acc_t = summary(&mut a.to_acceptance);
                let fb_t = summary(&mut a.to_feedback);
                TransferStatisticsRow {
                    route: k.route,
                    state: k.state,
                    region_code: k.region_code,
                    period_start: k.period_start.map(to_timestamp),
                    from_agency: k.from_agency,
                    to_agency: k.to_agency,
                    category: k.category,
                    transfer_count: a.transfers,
                    accepted_count: a.accepted,
                    declined_count: a.declined,
                    feedback_count: a.feedback,
                    closed_count: a.closed,
                    overdue_acceptance_count: a.overdue_acceptance,
                    overdue_feedback_count: a.overdue_feedback,
                    mean_time_to_acceptance: acc_t.map(|s| duration(s.0)),
                    p50_time_to_acceptance: acc_t.map(|s| duration(s.1)),
                    p90_time_to_acceptance: acc_t.map(|s| duration(s.2)),
                    mean_time_to_feedback: fb_t.map(|s| duration(s.0)),
                    p50_time_to_feedback: fb_t.map(|s| duration(s.1)),
                    p90_time_to_feedback: fb_t.map(|s| duration(s.2)),
                    outcome_counts: a
                        .outcomes
                        .into_iter()
                        .map(|(outcome_code, count)| OutcomeCount {
                            outcome_code,
                            count,
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(GetTransferStatisticsResponse {
            rows,
            compute_time: Some(to_timestamp(now)),
        })
    }
}

#[tonic::async_trait]
impl StatisticsService for Statistics {
    async fn get_transfer_statistics(
        &self,
        request: Request<GetTransferStatisticsRequest>,
    ) -> std::result::Result<Response<GetTransferStatisticsResponse>, Status> {
        let who = Identity::of(&request)?.clone();
        Ok(Response::new(self.compute(&who, request.get_ref()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_on_local_boundaries() {
        // 2026-05-20T01:00:00+08:00 = 2026-05-19T17:00:00Z.
        let t = 1_779_210_000_000_000;
        let cst = 8 * 3600;
        // Local midnight 2026-05-20 in Shanghai is 2026-05-19T16:00:00Z.
        assert_eq!(
            period_start(t, cst, StatisticsPeriod::Day),
            1_779_206_400_000_000
        );
        // 2026-05-18 is a Monday.
        assert_eq!(
            period_start(t, cst, StatisticsPeriod::Week),
            1_779_206_400_000_000 - 2 * DAY_MICROS
        );
        // 2026-05-01T00:00+08:00.
        assert_eq!(
            period_start(t, cst, StatisticsPeriod::Month),
            1_777_564_800_000_000
        );
        // 2026-04-01T00:00+08:00.
        assert_eq!(
            period_start(t, cst, StatisticsPeriod::Quarter),
            1_777_564_800_000_000 - 30 * DAY_MICROS
        );
        // 2026-01-01T00:00+08:00.
        assert_eq!(
            period_start(t, cst, StatisticsPeriod::Year),
            1_767_196_800_000_000
        );
        // In UTC the same instant is still 2026-05-19.
        assert_eq!(
            period_start(t, 0, StatisticsPeriod::Day),
            1_779_148_800_000_000
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v = vec![10, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(summary(&mut v), Some((5, 5, 9)));
        assert_eq!(summary(&mut [7]), Some((7, 7, 7)));
        assert_eq!(summary(&mut []), None);
    }

    #[test]
    fn regions_truncate_to_level() {
        assert_eq!(region_at("210203", RegionLevel::Province), "21");
        assert_eq!(region_at("210203", RegionLevel::Prefecture), "2102");
        assert_eq!(region_at("210203", RegionLevel::County), "210203");
    }

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn fields(r: Result<Query>) -> Vec<String> {
        match r {
            Err(Error::Invalid(v)) => v.into_iter().map(|f| f.field).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        let ok = GetTransferStatisticsRequest {
            start_time: ts(0),
            end_time: ts(86_400),
            ..Default::default()
        };
        assert!(validate_request(&ok).is_ok());
        assert_eq!(
            fields(validate_request(&GetTransferStatisticsRequest::default())),
            vec!["start_time", "end_time"]
        );
        let r = GetTransferStatisticsRequest {
            end_time: ts(0),
            ..ok.clone()
        };
        assert_eq!(fields(validate_request(&r)), vec!["end_time"]);
        let r = GetTransferStatisticsRequest {
            end_time: ts(367 * 86_400),
            ..ok.clone()
        };
        assert_eq!(fields(validate_request(&r)), vec!["end_time"]);
        let r = GetTransferStatisticsRequest {
            group_by: vec![0, 1, 1, 99],
            period: 42,
            time_zone: "Europe/Paris".into(),
            region_level: 9,
            route: "route/x".into(),
            region_code_prefix: "21a".into(),
            from_agency: "agency/x".into(),
            to_agency: "agencies/".into(),
            ..ok.clone()
        };
        assert_eq!(
            fields(validate_request(&r)),
            vec![
                "group_by[0]",
                "group_by[2]",
                "group_by[3]",
                "period",
                "time_zone",
                "region_level",
                "route",
                "region_code_prefix",
                "from_agency",
                "to_agency"
            ]
        );
    }
}
