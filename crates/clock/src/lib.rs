//! Deadline clocks (期限) as data: DESIGN.md §2 "Clock" and §3.
//!
//! The shared clock arithmetic of the suite: the router's transfer clocks (acceptance,
//! feedback) and agency services' own deadlines (e.g. 司法确认 review, 15 + 10 days: 民事诉讼法
//! Art 187, 法释〔2011〕5号 Art 5) use the same rules. It depends on no store and no service;
//! timers that fire deadlines live with the stores (`fengqiao_store::deadline`).
//!
//! Pure domain code. Nothing here reads the system clock, the database or the network: every
//! function takes the time as an argument, in unix microseconds read from the database's clock,
//! so tests control time completely. Calendar dates are China Standard Time (UTC+8, no DST).
//!
//! # Conventions
//!
//! - **Day periods start the next day.** 民事诉讼法 Art 85 ¶2: 期间开始的时和日，不计算在期间内
//!   (民诉法解释 Art 125: 以日、月、年计算的期间从次日起算). A period of `n` days or working days
//!   therefore ends at 24:00 CST (the next day's 00:00) of the `n`-th (working) day after the
//!   start date. A 30-day period that starts on 2026-03-10 at 10:00 ends on 2026-04-09 at 24:00.
//! - **Holiday at the end.** 民事诉讼法 Art 85 ¶3: 期间届满的最后一日是法定休假日的，以法定休假日后的
//!   第一日为期间届满的日期. A calendar-day period whose last day is not a working day (a
//!   weekend or a public holiday; a 调休 working weekend *is* a working day) ends at 24:00 of the
//!   first working day after it.
//! - **Hours are exact.** [`ClockUnit::Hour`] adds `length` hours to the start instant. Hour
//!   clocks model local practice (e.g. 警调对接 feedback within 24 h), which is configuration,
//!   not a statutory period, so they are not rounded to the next full hour (民诉法解释 Art 125)
//!   and ignore holidays.
//! - **Pauses (中止计时) do not count**, and what a pause excludes depends on the unit
//!   (在线调解规则: 鉴定 time is not counted; 补充调查取证 likewise). The deadline is always
//!   recomputed from the start and the list of finished pauses ([`Clock::pauses`]):
//!   - *Day clocks exclude whole days.* A pause that begins on CST day `B` and ends on CST
//!     day `E` excludes the days after `B` up to and including `E`: `B` itself was a day of
//!     the period already under way, and counting starts again the day after `E`, as a
//!     period counts from the day after the event that starts it (民事诉讼法 Art 85 ¶2:
//!     期间开始的时和日，不计算在期间内; 民诉法解释 Art 125). So a pause that begins and ends on
//!     the same CST day excludes nothing (a 3-second pause changes nothing), and one from
//!     day D 10:00 to day D+3 09:00 excludes D+1, D+2 and D+3. A pause ending at 24:00
//!     exactly ended on that day (its instant is the next day's 00:00, nothing of which was
//!     paused). Each excluded day adds one day to the period: the deadline is the nominal
//!     end of `length + extended_by + excluded` units (so a pause that begins on the
//!     period's last day leaves the clock running until 24:00 of the day the pause ends).
//!     Several pauses each exclude their own days; a day excluded by two pauses counts once.
//!   - *Working-day clocks* count an excluded day only where it is a working day of the
//!     holiday calendar: the period is counted in working days, and a weekend or holiday
//!     inside a pause would not have counted anyway, so excluding it again would lengthen
//!     the period twice for the same day. Calendar-day clocks count every excluded day.
//!   - *Hour clocks exclude exactly the paused time* (to the microsecond): hours are local
//!     practice, counted on the clock, not in days.
//!   - *The holiday roll-over* (民事诉讼法 Art 85 ¶3) applies once, to the final result: a day
//!     clock's deadline whose last day is not a working day moves to 24:00 of the first
//!     working day after it. It is never applied to an intermediate figure, so a pause
//!     cannot move the deadline earlier or by more days than it excludes.
//!   - *The hard cap* moves by the same excluded days (or, for hours, the same time), is
//!     never earlier than it was, and the deadline never passes it.
//! - **Hard cap.** `hard_cap` units from the start (excluded days or paused hours not
//!   counted, as above), in the clock's unit; 0 means no cap other than
//!   `length + max_extension`.
//!
//! # Storage
//!
//! [`Clock`] is `serde` data: the transfers code stores it as JSON (`serde_json::to_string`)
//! and reads it back with `serde_json::from_str`. Mutate it only through its methods.
//! [`Clock::pauses`] was added after clocks were first stored: a clock stored without it
//! reads back with no finished pauses, so a later recomputation (resume, extension) counts
//! only the pauses recorded from then on; its stored `due_at` stands until then.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use fengqiao_kit::{ApiError, Reason};
use fengqiao_proto::common;
use serde::{Deserialize, Serialize};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;
/// China Standard Time is UTC+8 all year round.
const CST_OFFSET_MICROS: i64 = 8 * MICROS_PER_HOUR;
/// `NaiveDate::num_days_from_ce` of 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// Largest `length`, `max_extension` or `hard_cap` a clock rule may have, in its unit.
pub const MAX_UNITS: u32 = 100_000;
/// Latest instant a clock accepts as an event time: 9999-12-31T23:59:59.999999Z.
pub const MAX_TIME_MICROS: i64 = 253_402_300_799_999_999;

// ---------------------------------------------------------------------------
// Dates in China Standard Time
// ---------------------------------------------------------------------------

/// The CST calendar date of an instant.
fn cst_date(micros: i64) -> Option<NaiveDate> {
    let days = micros
        .checked_add(CST_OFFSET_MICROS)?
        .div_euclid(MICROS_PER_DAY);
    let from_ce = i32::try_from(days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?).ok()?;
    NaiveDate::from_num_days_from_ce_opt(from_ce)
}

/// 24:00 CST of `date`, i.e. 00:00 CST of the next day, in unix microseconds.
fn end_of_day(date: NaiveDate) -> Option<i64> {
    let days = i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE + 1;
    days.checked_mul(MICROS_PER_DAY)?
        .checked_sub(CST_OFFSET_MICROS)
}

// ---------------------------------------------------------------------------
// Holiday calendar
// ---------------------------------------------------------------------------

/// A holiday calendar (节假日安排): public holidays and 调休 working weekends, as data.
///
/// A date is a working day when it is Monday–Friday and not a holiday, or when it is a listed
/// working weekend. Dates outside the listed years fall back to plain Monday–Friday (see
/// [`HolidayCalendar::covers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolidayCalendar {
    name: String,
    holidays: BTreeSet<NaiveDate>,
    working_weekends: BTreeSet<NaiveDate>,
}

/// The TOML form of a [`HolidayCalendar`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    name: String,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    working_weekends: Vec<String>,
}

static BUILTIN: LazyLock<HolidayCalendar> = LazyLock::new(|| {
    // The file is part of the source tree and checked by `builtin_calendar_parses`.
    HolidayCalendar::from_toml(include_str!("../../../deploy/dev/holidays.toml"))
        .expect("deploy/dev/holidays.toml is a valid holiday calendar")
});

fn parse_date(list: &str, s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{list}: {s:?} is not a YYYY-MM-DD date: {e}"))
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

impl HolidayCalendar {
    /// Parses a calendar from TOML:
    ///
    /// ```toml
    /// name = "cn-mainland"
    /// holidays = ["2026-01-01", "2026-01-02", "2026-01-03"]   # 法定节假日 (days off)
    /// working_weekends = ["2026-01-04"]                       # 调休 (weekend days worked)
    /// ```
    ///
    /// Refuses unknown keys, malformed dates, an empty name, a working weekend that is not a
    /// Saturday or Sunday, and a date listed both as a holiday and as a working weekend.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: CalendarFile =
            toml::from_str(text).map_err(|e| format!("holiday calendar: {e}"))?;
        if file.name.trim().is_empty() {
            return Err("holiday calendar: name is empty".to_owned());
        }
        let holidays = file
            .holidays
            .iter()
            .map(|s| parse_date("holidays", s))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let working_weekends = file
            .working_weekends
            .iter()
            .map(|s| parse_date("working_weekends", s))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if let Some(d) = working_weekends.iter().find(|d| !is_weekend(**d)) {
            return Err(format!(
                "working_weekends: {d} is a {}, not a Saturday or Sunday",
                d.weekday()
            ));
        }
        if let Some(d) = holidays.intersection(&working_weekends).next() {
            return Err(format!(
                "{d} is listed both in holidays and in working_weekends"
            ));
        }
        Ok(Self {
            name: file.name,
            holidays,
            working_weekends,
        })
    }

    /// Reads and parses a calendar file (see [`HolidayCalendar::from_toml`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The built-in calendar: `deploy/dev/holidays.toml` (mainland China, 2025–2026, per the
    /// State Council's 部分节假日安排 notices).
    pub fn builtin() -> &'static HolidayCalendar {
        &BUILTIN
    }

    /// A calendar without holidays: Monday–Friday are working days.
    pub fn weekdays_only(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            holidays: BTreeSet::new(),
            working_weekends: BTreeSet::new(),
        }
    }

    /// The calendar's name, e.g. `cn-mainland` (matched against `ClockRule.holiday_calendar`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `date` is a working day (工作日).
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.working_weekends.contains(&date) {
            return true;
        }
        !is_weekend(date) && !self.holidays.contains(&date)
    }

    /// Whether `date` is a listed public holiday (法定节假日放假).
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        self.holidays.contains(&date)
    }

    /// Whether `date` falls in a year the calendar lists any date for. Outside those years
    /// [`HolidayCalendar::is_working_day`] knows weekends only.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.holidays
            .iter()
            .chain(self.working_weekends.iter())
            .any(|d| d.year() == date.year())
    }

    /// The last date the calendar lists, if any.
    fn last_listed(&self) -> Option<NaiveDate> {
        let h = self.holidays.last().copied();
        let w = self.working_weekends.last().copied();
        h.max(w)
    }

    /// The first working day on or after `date`.
    fn first_working_day_from(&self, date: NaiveDate) -> Option<NaiveDate> {
        let mut d = date;
        // Terminates: at most every listed holiday plus one weekend lie in the way.
        while !self.is_working_day(d) {
            d = d.succ_opt()?;
        }
        Some(d)
    }

    /// How many working days lie in `(after, through]`: after `after`, up to and including
    /// `through` (0 when `through <= after`).
    fn working_days_in(&self, after: NaiveDate, through: NaiveDate) -> u64 {
        let last_listed = self.last_listed();
        let mut d = after;
        let mut n = 0u64;
        while d < through {
            let left = (through - d).num_days();
            // Past the listed dates every 7 consecutive days hold exactly 5 working days.
            if left >= 7
                && last_listed.is_none_or(|l| d >= l)
                && let Some(next) = d.checked_add_days(Days::new(left as u64 / 7 * 7))
            {
                n += left as u64 / 7 * 5;
                d = next;
                continue;
            }
            let Some(next) = d.succ_opt() else {
                break;
            };
            d = next;
            if self.is_working_day(d) {
                n += 1;
            }
        }
        n
    }

    /// The `n`-th working day strictly after `date`; for `n == 0`, the first working day on or
    /// after `date`.
    fn nth_working_day_after(&self, date: NaiveDate, n: u32) -> Option<NaiveDate> {
        if n == 0 {
            return self.first_working_day_from(date);
        }
        let last_listed = self.last_listed();
        let mut d = date;
        let mut left = n;
        while left > 0 {
            // Past the listed dates every 7 consecutive days hold exactly 5 working days:
            // skip whole weeks instead of walking them.
            if left > 5 && last_listed.is_none_or(|l| d >= l) {
                let weeks = (left - 1) / 5;
                d = d.checked_add_days(Days::new(u64::from(weeks) * 7))?;
                left -= weeks * 5;
                continue;
            }
            d = d.succ_opt()?;
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        Some(d)
    }
}

// ---------------------------------------------------------------------------
// Units and durations
// ---------------------------------------------------------------------------

/// Unit in which a clock is counted (计算单位); `fengqiao.common.v1.ClockUnit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockUnit {
    /// Hours (小时), exact, holidays ignored.
    Hour,
    /// Calendar days (日); weekends and holidays count, but a period ending on one runs to
    /// the next working day (民事诉讼法 Art 85).
    CalendarDay,
    /// Working days (工作日) per the holiday calendar.
    WorkingDay,
}

impl ClockUnit {
    /// From the protobuf enum value; `None` for UNSPECIFIED or an unknown value.
    pub fn from_proto(value: i32) -> Option<Self> {
        match common::ClockUnit::try_from(value).ok()? {
            common::ClockUnit::Unspecified => None,
            common::ClockUnit::CalendarDay => Some(Self::CalendarDay),
            common::ClockUnit::WorkingDay => Some(Self::WorkingDay),
            common::ClockUnit::Hour => Some(Self::Hour),
        }
    }

    /// The protobuf enum.
    pub fn to_proto(self) -> common::ClockUnit {
        match self {
            Self::Hour => common::ClockUnit::Hour,
            Self::CalendarDay => common::ClockUnit::CalendarDay,
            Self::WorkingDay => common::ClockUnit::WorkingDay,
        }
    }

    fn is_day(self) -> bool {
        !matches!(self, Self::Hour)
    }
}

/// How a deadline may be extended (延长规则); `fengqiao.common.v1.ClockExtensionRule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionRule {
    /// Cannot be extended (不得延长). A rule that leaves the extension rule UNSPECIFIED gets
    /// this: nothing is extendable unless the route says so.
    NotExtendable,
    /// Extendable with all parties' consent (经各方当事人同意): 特邀调解规定 Art 27,
    /// 在线调解规则 (委派调解 30 days).
    PartyConsent,
    /// Extendable by an approver holding `extension_approver_role` (经批准), e.g. 司法确认
    /// 15 + 10 days (民事诉讼法 Art 206 with the court president's approval).
    Approver,
}

impl ExtensionRule {
    /// The protobuf enum.
    pub fn to_proto(self) -> common::ClockExtensionRule {
        match self {
            Self::NotExtendable => common::ClockExtensionRule::NotExtendable,
            Self::PartyConsent => common::ClockExtensionRule::PartyConsent,
            Self::Approver => common::ClockExtensionRule::Approver,
        }
    }
}

/// What happens when a clock expires (逾期处理); `fengqiao.common.v1.ClockExpiryAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryAction {
    /// Back to the sending agency (退回); the transfer becomes EXPIRED.
    ReturnToSender,
    /// Escalated to the sender and its parent (上报督办); the transfer becomes ESCALATED.
    Escalate,
    /// Notification only (逾期提醒); the clock is marked expired, the state does not change.
    NotifyOnly,
}

impl ExpiryAction {
    /// The protobuf enum.
    pub fn to_proto(self) -> common::ClockExpiryAction {
        match self {
            Self::ReturnToSender => common::ClockExpiryAction::ReturnToSender,
            Self::Escalate => common::ClockExpiryAction::Escalate,
            Self::NotifyOnly => common::ClockExpiryAction::NotifyOnly,
        }
    }
}

/// A reason for which a clock may be paused (e.g. `appraisal` / 鉴定).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseReason {
    /// Stable code, e.g. `appraisal`, `supplementary_investigation`.
    pub code: String,
    /// Description, e.g. 鉴定, 补充调查取证.
    pub description: String,
}

/// The due time of a period of `length` `unit`s starting at `start_micros` (unix µs).
///
/// - [`ClockUnit::Hour`]: `start + length` hours.
/// - [`ClockUnit::CalendarDay`]: 24:00 CST of the day `length` days after the start date; if
///   that day is not a working day, 24:00 of the first working day after it (民事诉讼法
///   Art 85: counted from the next day; a period ending on a holiday ends on the first working
///   day after it).
/// - [`ClockUnit::WorkingDay`]: 24:00 CST of the `length`-th working day after the start date
///   (e.g. 特邀调解规定 Art 27 / 在线调解规则: 3 working days).
///
/// `length == 0` gives the start instant for hours, and 24:00 of the first working day on or
/// after the start date for days. An instant too far from the epoch for the calendar gives
/// `i64::MAX` (never due).
pub fn add_duration(start_micros: i64, unit: ClockUnit, length: u32, cal: &HolidayCalendar) -> i64 {
    try_add_duration(start_micros, unit, length, cal).unwrap_or(i64::MAX)
}

fn try_add_duration(
    start: i64,
    unit: ClockUnit,
    length: u32,
    cal: &HolidayCalendar,
) -> Option<i64> {
    // 民事诉讼法 Art 85: a period whose last day is a holiday ends on the first working day
    // after it.
    end_on_working_day(nominal_end(start, unit, length, cal)?, unit, cal)
}

/// The end of a period before the holiday-at-end rule: `start + length` hours, 24:00 of the
/// `length`-th calendar day after the start date, or 24:00 of the `length`-th working day
/// after it (民事诉讼法 Art 85 ¶2, 民诉法解释 Art 125: counted from the next day).
fn nominal_end(start: i64, unit: ClockUnit, length: u32, cal: &HolidayCalendar) -> Option<i64> {
    match unit {
        ClockUnit::Hour => start.checked_add(i64::from(length).checked_mul(MICROS_PER_HOUR)?),
        ClockUnit::CalendarDay => {
            end_of_day(cst_date(start)?.checked_add_days(Days::new(u64::from(length)))?)
        }
        ClockUnit::WorkingDay => end_of_day(cal.nth_working_day_after(cst_date(start)?, length)?),
    }
}

/// The holiday-at-end rule (民事诉讼法 Art 85 ¶3) for day clocks: a deadline falling within a
/// non-working day (an instant at 00:00 belongs to the day before, as its 24:00) moves to
/// 24:00 of the first working day after it. Hour clocks are left alone.
fn end_on_working_day(end: i64, unit: ClockUnit, cal: &HolidayCalendar) -> Option<i64> {
    if !unit.is_day() {
        return Some(end);
    }
    let day = cst_date(end.checked_sub(1)?)?;
    if cal.is_working_day(day) {
        Some(end)
    } else {
        end_of_day(cal.first_working_day_from(day)?)
    }
}

/// A protobuf timestamp from unix microseconds (the kit's one conversion).
pub use fengqiao_kit::time::to_timestamp;

/// A protobuf duration from microseconds (seconds and nanos share the sign).
pub fn to_duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros / MICROS_PER_SECOND,
        // |micros % 1e6| < 1e6, so the nanos fit an i32.
        nanos: ((micros % MICROS_PER_SECOND) * 1000) as i32,
    }
}

// ---------------------------------------------------------------------------
// Pauses
// ---------------------------------------------------------------------------

/// One finished pause (中止) of a clock: from `from` (the pause) to `to` (the resume, or the
/// stop that ended it), unix µs, `from <= to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausePeriod {
    /// When the pause began.
    pub from: i64,
    /// When it ended.
    pub to: i64,
}

/// The CST days a pause excludes, as `(after, through)`: the days after the day it began up
/// to and including the day it ended (民事诉讼法 Art 85 ¶2, 民诉法解释 Art 125; see the module
/// docs). `None` when it excludes no day. An end at exactly 00:00 belongs to the day before
/// (its 24:00): nothing of the new day was paused.
fn excluded_span(p: PausePeriod) -> Option<(NaiveDate, NaiveDate)> {
    if p.to <= p.from {
        return None;
    }
    let began = cst_date(p.from)?;
    let ended = cst_date(p.to - 1)?;
    (ended > began).then_some((began, ended))
}

/// How many units the `pauses` exclude from a day clock of `unit`: every excluded day for
/// calendar days, the excluded working days for working days (see the module docs). A day
/// excluded by more than one pause counts once. `None` for hour clocks.
fn excluded_days(
    unit: ClockUnit,
    pauses: impl IntoIterator<Item = PausePeriod>,
    cal: &HolidayCalendar,
) -> Option<u64> {
    if !unit.is_day() {
        return None;
    }
    let mut spans: Vec<(NaiveDate, NaiveDate)> =
        pauses.into_iter().filter_map(excluded_span).collect();
    spans.sort_unstable();
    // Merge overlapping or touching spans: (a, b] ∪ (c, d] with c <= b is (a, max(b, d)].
    let mut merged: Vec<(NaiveDate, NaiveDate)> = Vec::with_capacity(spans.len());
    for (after, through) in spans {
        match merged.last_mut() {
            Some(last) if after <= last.1 => last.1 = last.1.max(through),
            _ => merged.push((after, through)),
        }
    }
    Some(
        merged
            .into_iter()
            .map(|(after, through)| match unit {
                ClockUnit::WorkingDay => cal.working_days_in(after, through),
                _ => (through - after).num_days().unsigned_abs(),
            })
            .sum(),
    )
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a clock operation was refused. Messages carry no personal information.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The rule's unit is UNSPECIFIED.
    #[error("clock rule: unit is unspecified")]
    UnitUnspecified,
    /// The rule's length is 0.
    #[error("clock rule: length must be positive")]
    ZeroLength,
    /// The rule's expiry action is UNSPECIFIED.
    #[error("clock rule: expiry action is unspecified")]
    ExpiryActionUnspecified,
    /// A protobuf enum field holds an unknown value.
    #[error("clock rule: {field} has unknown value {value}")]
    UnknownEnumValue {
        /// The field, e.g. `unit`.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// `length`, `max_extension` or `hard_cap` exceeds [`MAX_UNITS`].
    #[error("clock rule: {field} exceeds {max}")]
    TooManyUnits {
        /// The field.
        field: &'static str,
        /// [`MAX_UNITS`].
        max: u32,
    },
    /// The hard cap is shorter than the clock itself.
    #[error("clock rule: hard cap {hard_cap} is below length {length}")]
    HardCapBelowLength {
        /// The rule's hard cap.
        hard_cap: u32,
        /// The rule's length.
        length: u32,
    },
    /// An APPROVER extension rule without `extension_approver_role`.
    #[error("clock rule: approver extension rule without an approver role")]
    MissingApproverRole,
    /// An event time outside `0..=MAX_TIME_MICROS` or before an earlier event of the clock.
    #[error("time {at} is out of range or before the clock's last event")]
    InvalidTime {
        /// The refused time, unix µs.
        at: i64,
    },
    /// The clock is paused already.
    #[error("clock is already paused")]
    AlreadyPaused,
    /// The clock is not paused.
    #[error("clock is not paused")]
    NotPaused,
    /// The clock is paused, and the operation needs it running.
    #[error("clock is paused")]
    Paused,
    /// The reason code is not one of the rule's pausable reasons.
    #[error("pause reason is not one the clock rule allows")]
    ReasonNotPausable {
        /// The refused reason code (not shown in the message).
        reason: String,
    },
    /// The rule does not allow extensions.
    #[error("clock cannot be extended")]
    NotExtendable,
    /// An extension of 0 units.
    #[error("extension must be positive")]
    ZeroExtension,
    /// PARTY_CONSENT extension without every party's consent (特邀调解规定 Art 27).
    #[error("extension needs the consent of all parties")]
    PartyConsentRequired,
    /// APPROVER extension by someone without the approver role.
    #[error("extension needs the role {role}")]
    WrongRole {
        /// The role the rule requires.
        role: String,
    },
    /// Total extension would exceed the rule's `max_extension`.
    #[error("extension of {requested} beyond the maximum {max} (already extended by {already})")]
    ExtensionTooLong {
        /// Requested now.
        requested: u32,
        /// Granted before.
        already: u32,
        /// The rule's maximum total extension.
        max: u32,
    },
    /// The extended deadline would pass the hard cap.
    #[error("extension beyond the hard cap of {hard_cap}")]
    BeyondHardCap {
        /// The rule's hard cap, in units.
        hard_cap: u32,
    },
    /// The clock has stopped: its event happened.
    #[error("clock has stopped")]
    Stopped,
    /// The clock has expired or is overdue.
    #[error("clock has expired")]
    Expired,
    /// `mark_expired` before the deadline.
    #[error("clock is not due before {due_at}")]
    NotDue {
        /// The deadline, unix µs.
        due_at: i64,
    },
    /// A computed time falls outside what the calendar can represent.
    #[error("deadline out of range")]
    OutOfRange,
}

impl ClockError {
    /// Stable `ErrorInfo.reason`.
    pub fn reason(&self) -> Reason {
        match self {
            Self::UnitUnspecified
            | Self::ZeroLength
            | Self::ExpiryActionUnspecified
            | Self::UnknownEnumValue { .. }
            | Self::TooManyUnits { .. }
            | Self::HardCapBelowLength { .. }
            | Self::MissingApproverRole => Reason::ClockRuleInvalid,
            Self::InvalidTime { .. } => Reason::ClockTimeInvalid,
            Self::AlreadyPaused => Reason::ClockAlreadyPaused,
            Self::NotPaused => Reason::ClockNotPaused,
            Self::Paused => Reason::ClockPaused,
            Self::ReasonNotPausable { .. } => Reason::ClockReasonNotPausable,
            Self::NotExtendable => Reason::ClockNotExtendable,
            Self::ZeroExtension => Reason::ClockExtensionInvalid,
            Self::PartyConsentRequired => Reason::ClockPartyConsentRequired,
            Self::WrongRole { .. } => Reason::ClockApproverRoleRequired,
            Self::ExtensionTooLong { .. } => Reason::ClockExtensionTooLong,
            Self::BeyondHardCap { .. } => Reason::ClockBeyondHardCap,
            Self::Stopped => Reason::ClockStopped,
            Self::Expired => Reason::ClockExpired,
            Self::NotDue { .. } => Reason::ClockNotDue,
            Self::OutOfRange => Reason::ClockOutOfRange,
        }
    }

    /// The request field a bad-input error concerns (relative: prefix it with the rule's or
    /// request's path), if it is bad input.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::UnitUnspecified => Some("unit"),
            Self::ZeroLength => Some("length"),
            Self::ExpiryActionUnspecified => Some("expiry_action"),
            Self::UnknownEnumValue { field, .. } | Self::TooManyUnits { field, .. } => Some(field),
            Self::HardCapBelowLength { .. } => Some("hard_cap"),
            Self::MissingApproverRole => Some("extension_approver_role"),
            Self::ReasonNotPausable { .. } => Some("reason_code"),
            Self::ZeroExtension => Some("length"),
            _ => None,
        }
    }

    /// The client-facing error: INVALID_ARGUMENT (naming [`ClockError::field`]) for bad input,
    /// PERMISSION_DENIED for a missing approver role, INTERNAL for out-of-range times, and
    /// FAILED_PRECONDITION for everything the clock's state or rule refuses.
    pub fn api(&self) -> ApiError {
        if let Some(field) = self.field() {
            return ApiError::invalid_field(field, self.to_string());
        }
        // The reason fixes the code: CLOCK_APPROVER_ROLE_REQUIRED is PERMISSION_DENIED, the
        // time faults INTERNAL, the rest FAILED_PRECONDITION (see the kit's catalogue).
        ApiError::new(self.reason(), self.to_string())
    }
}

impl From<ClockError> for fengqiao_kit::Error {
    fn from(e: ClockError) -> Self {
        fengqiao_kit::Error::Api(e.api())
    }
}

/// The role-free, time-free parts of a rule, validated.
struct Rule {
    unit: ClockUnit,
    extension_rule: ExtensionRule,
    expiry_action: ExpiryAction,
}

/// Checks a clock rule (e.g. when a route is created): unit and expiry action specified,
/// `0 < length ≤ MAX_UNITS`, `max_extension, hard_cap ≤ MAX_UNITS`, `hard_cap` 0 or
/// ≥ `length`, an approver role for APPROVER rules.
pub fn validate_rule(rule: &common::ClockRule) -> Result<(), ClockError> {
    check_rule(rule).map(|_| ())
}

fn check_rule(rule: &common::ClockRule) -> Result<Rule, ClockError> {
    let unit = match common::ClockUnit::try_from(rule.unit) {
        Err(_) => {
            return Err(ClockError::UnknownEnumValue {
                field: "unit",
                value: rule.unit,
            });
        }
        Ok(_) => ClockUnit::from_proto(rule.unit).ok_or(ClockError::UnitUnspecified)?,
    };
    if rule.length == 0 {
        return Err(ClockError::ZeroLength);
    }
    for (field, v) in [
        ("length", rule.length),
        ("max_extension", rule.max_extension),
        ("hard_cap", rule.hard_cap),
    ] {
        if v > MAX_UNITS {
            return Err(ClockError::TooManyUnits {
                field,
                max: MAX_UNITS,
            });
        }
    }
    if rule.hard_cap != 0 && rule.hard_cap < rule.length {
        return Err(ClockError::HardCapBelowLength {
            hard_cap: rule.hard_cap,
            length: rule.length,
        });
    }
    let extension_rule = match common::ClockExtensionRule::try_from(rule.extension_rule) {
        Ok(common::ClockExtensionRule::Unspecified | common::ClockExtensionRule::NotExtendable) => {
            ExtensionRule::NotExtendable
        }
        Ok(common::ClockExtensionRule::PartyConsent) => ExtensionRule::PartyConsent,
        Ok(common::ClockExtensionRule::Approver) => ExtensionRule::Approver,
        Err(_) => {
            return Err(ClockError::UnknownEnumValue {
                field: "extension_rule",
                value: rule.extension_rule,
            });
        }
    };
    if extension_rule == ExtensionRule::Approver && rule.extension_approver_role.trim().is_empty() {
        return Err(ClockError::MissingApproverRole);
    }
    let expiry_action = match common::ClockExpiryAction::try_from(rule.expiry_action) {
        Ok(common::ClockExpiryAction::Unspecified) => {
            return Err(ClockError::ExpiryActionUnspecified);
        }
        Ok(common::ClockExpiryAction::ReturnToSender) => ExpiryAction::ReturnToSender,
        Ok(common::ClockExpiryAction::Escalate) => ExpiryAction::Escalate,
        Ok(common::ClockExpiryAction::NotifyOnly) => ExpiryAction::NotifyOnly,
        Err(_) => {
            return Err(ClockError::UnknownEnumValue {
                field: "expiry_action",
                value: rule.expiry_action,
            });
        }
    };
    Ok(Rule {
        unit,
        extension_rule,
        expiry_action,
    })
}

fn check_time(at: i64) -> Result<(), ClockError> {
    if (0..=MAX_TIME_MICROS).contains(&at) {
        Ok(())
    } else {
        Err(ClockError::InvalidTime { at })
    }
}

// ---------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------

/// One running deadline (期限), with its rule copied in so it stays what it was when it
/// started even if the route changes. Stored as JSON (serde); change it only through its
/// methods: the fields are public for reading. All times are unix microseconds from the
/// database's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// Name of the clock within its owner, e.g. `acceptance` (受理期限), `feedback` (反馈期限).
    pub name: String,
    /// Unit of `length`, `max_extension`, `hard_cap` and `extended_by`.
    pub unit: ClockUnit,
    /// Nominal length before extensions, in units.
    pub length: u32,
    /// The rule's pausable reasons; empty: the clock cannot be paused.
    pub pausable_reasons: Vec<PauseReason>,
    /// How the deadline may be extended.
    pub extension_rule: ExtensionRule,
    /// Maximum total extension, in units (0: no limit but the hard cap).
    pub max_extension: u32,
    /// Cap on `length + extended_by`, in units, paused time not counted (0: none).
    pub hard_cap: u32,
    /// What happens on expiry.
    pub expiry_action: ExpiryAction,
    /// The rule's holiday calendar name (empty: the deployment's default).
    pub holiday_calendar: String,
    /// Role that may grant extensions under [`ExtensionRule::Approver`].
    pub extension_approver_role: String,
    /// When the clock started.
    pub started_at: i64,
    /// Current deadline. While paused, the deadline as it stood when the pause began.
    pub due_at: i64,
    /// When the current pause began; `None` when running.
    pub paused_at: Option<i64>,
    /// The current pause's reason code; `None` when running.
    pub pause_reason: Option<String>,
    /// Total time of finished pauses, in microseconds (累计中止时间).
    pub total_paused_micros: i64,
    /// Finished pauses, in order (a stop that ends a pause finishes it too). What they
    /// exclude from the period follows the module docs.
    #[serde(default)]
    pub pauses: Vec<PausePeriod>,
    /// Total extension granted, in units (已延长).
    pub extended_by: u32,
    /// Number of extensions granted (延长次数).
    pub extension_count: u32,
    /// Latest possible deadline under the hard cap given the pauses so far; `None` without a cap.
    pub hard_cap_at: Option<i64>,
    /// When the clock stopped because its event happened; `None` while running.
    pub stopped_at: Option<i64>,
    /// Whether the deadline passed before the clock stopped (逾期).
    pub expired: bool,
}

impl Clock {
    /// Starts a clock named `name` (e.g. `acceptance`, `feedback`) at `at` under `rule`.
    /// Refuses an invalid rule (see [`validate_rule`]) and a time outside
    /// `0..=MAX_TIME_MICROS`.
    pub fn start(
        name: impl Into<String>,
        rule: &common::ClockRule,
        at: i64,
        cal: &HolidayCalendar,
    ) -> Result<Clock, ClockError> {
        let checked = check_rule(rule)?;
        check_time(at)?;
        let mut clock = Clock {
            name: name.into(),
            unit: checked.unit,
            length: rule.length,
            pausable_reasons: rule
                .pausable_reasons
                .iter()
                .map(|r| PauseReason {
                    code: r.code.clone(),
                    description: r.description.clone(),
                })
                .collect(),
            extension_rule: checked.extension_rule,
            max_extension: rule.max_extension,
            hard_cap: rule.hard_cap,
            expiry_action: checked.expiry_action,
            holiday_calendar: rule.holiday_calendar.clone(),
            extension_approver_role: rule.extension_approver_role.clone(),
            started_at: at,
            due_at: at,
            paused_at: None,
            pause_reason: None,
            total_paused_micros: 0,
            pauses: Vec::new(),
            extended_by: 0,
            extension_count: 0,
            hard_cap_at: None,
            stopped_at: None,
            expired: false,
        };
        clock.recompute(cal)?;
        Ok(clock)
    }

    /// The deadline and hard cap with `pauses` finished (see the module docs): day clocks
    /// add the days the pauses exclude to the period's units, hour clocks the exact paused
    /// time; then, once, the holiday-at-end rule. The hard cap is never earlier than it was
    /// and the deadline never passes it.
    fn deadlines(
        &self,
        pauses: &[PausePeriod],
        cal: &HolidayCalendar,
    ) -> Result<(i64, Option<i64>), ClockError> {
        let (extra_units, extra_micros) =
            match excluded_days(self.unit, pauses.iter().copied(), cal) {
                Some(days) => (u32::try_from(days).map_err(|_| ClockError::OutOfRange)?, 0),
                None => (
                    0,
                    pauses
                        .iter()
                        .try_fold(0i64, |sum, p| sum.checked_add(p.to.checked_sub(p.from)?))
                        .ok_or(ClockError::OutOfRange)?,
                ),
            };
        let end = |units: u32| {
            let units = units
                .checked_add(extra_units)
                .ok_or(ClockError::OutOfRange)?;
            nominal_end(self.started_at, self.unit, units, cal)
                .and_then(|e| e.checked_add(extra_micros))
                .and_then(|e| end_on_working_day(e, self.unit, cal))
                .ok_or(ClockError::OutOfRange)
        };
        let units = self
            .length
            .checked_add(self.extended_by)
            .ok_or(ClockError::OutOfRange)?;
        let due = end(units)?;
        if self.hard_cap == 0 {
            return Ok((due, None));
        }
        // Pauses only ever add excluded units, so this is a guard: the cap never moves
        // earlier than it was.
        let cap = end(self.hard_cap)?.max(self.hard_cap_at.unwrap_or(i64::MIN));
        Ok((due.min(cap), Some(cap)))
    }

    fn recompute(&mut self, cal: &HolidayCalendar) -> Result<(), ClockError> {
        let (due, cap) = self.deadlines(&self.pauses, cal)?;
        self.due_at = due;
        self.hard_cap_at = cap;
        Ok(())
    }

    /// Refuses a stopped clock, an expired one, and one overdue at `at` (not paused and
    /// `at ≥ due_at`); refuses `at` out of range or before the clock's last event.
    fn check_live(&self, at: i64) -> Result<(), ClockError> {
        check_time(at)?;
        if self.stopped_at.is_some() {
            return Err(ClockError::Stopped);
        }
        if self.expired {
            return Err(ClockError::Expired);
        }
        let last = self.paused_at.unwrap_or(self.started_at);
        if at < last {
            return Err(ClockError::InvalidTime { at });
        }
        if self.paused_at.is_none() && at >= self.due_at {
            return Err(ClockError::Expired);
        }
        Ok(())
    }

    /// Pauses the clock at `at` for `reason` (a code among the rule's pausable reasons, e.g.
    /// `appraisal` / 鉴定: 在线调解规则, appraisal time is not counted; or
    /// `supplementary_investigation` / 补充调查取证). Refused when stopped, expired or
    /// overdue, already paused, or for a reason the rule does not list.
    pub fn pause(&mut self, at: i64, reason: &str) -> Result<(), ClockError> {
        self.check_live(at)?;
        if self.paused_at.is_some() {
            return Err(ClockError::AlreadyPaused);
        }
        if !self.pausable_reasons.iter().any(|r| r.code == reason) {
            return Err(ClockError::ReasonNotPausable {
                reason: reason.to_owned(),
            });
        }
        self.paused_at = Some(at);
        self.pause_reason = Some(reason.to_owned());
        Ok(())
    }

    /// Resumes a paused clock at `at`: the pause is recorded in [`Clock::pauses`], its
    /// wall-clock length added to the total paused time, and the deadline recomputed (see
    /// the module docs: a day clock moves by the whole days the pause excludes, none for a
    /// pause within one CST day; an hour clock by the exact paused time; the holiday-at-end
    /// rule once on the result; never beyond the hard cap, which never moves earlier).
    /// Refused when not paused, stopped or expired, or with `at` before the pause.
    pub fn resume(&mut self, at: i64, cal: &HolidayCalendar) -> Result<(), ClockError> {
        self.check_live(at)?;
        let Some(paused_at) = self.paused_at else {
            return Err(ClockError::NotPaused);
        };
        let total = self
            .total_paused_micros
            .checked_add(at - paused_at)
            .ok_or(ClockError::OutOfRange)?;
        let mut pauses = self.pauses.clone();
        pauses.push(PausePeriod {
            from: paused_at,
            to: at,
        });
        let (due, cap) = self.deadlines(&pauses, cal)?;
        self.total_paused_micros = total;
        self.pauses = pauses;
        self.due_at = due;
        self.hard_cap_at = cap;
        self.paused_at = None;
        self.pause_reason = None;
        Ok(())
    }

    /// Extends the deadline by `by_units` of the clock's unit, under the rule:
    /// NOT_EXTENDABLE refuses; PARTY_CONSENT needs `party_consent` (all parties agreed:
    /// 特邀调解规定 Art 27, 在线调解规则); APPROVER needs the rule's approver role among
    /// `actor_roles`. The total extension may not exceed `max_extension` (when non-zero), nor
    /// `length + extensions` the `hard_cap` (when non-zero). A paused clock may be extended; a
    /// stopped or expired one may not. This takes no time, so it cannot see that a running
    /// clock is overdue but not yet marked: run the expiry sweep ([`Clock::is_due`],
    /// [`Clock::mark_expired`]) at the database's `now` first.
    pub fn extend(
        &mut self,
        by_units: u32,
        actor_roles: &[String],
        party_consent: bool,
        cal: &HolidayCalendar,
    ) -> Result<(), ClockError> {
        if self.stopped_at.is_some() {
            return Err(ClockError::Stopped);
        }
        if self.expired {
            return Err(ClockError::Expired);
        }
        if by_units == 0 {
            return Err(ClockError::ZeroExtension);
        }
        match self.extension_rule {
            ExtensionRule::NotExtendable => return Err(ClockError::NotExtendable),
            ExtensionRule::PartyConsent if !party_consent => {
                return Err(ClockError::PartyConsentRequired);
            }
            ExtensionRule::Approver if !actor_roles.contains(&self.extension_approver_role) => {
                return Err(ClockError::WrongRole {
                    role: self.extension_approver_role.clone(),
                });
            }
            _ => {}
        }
        let total = self.extended_by.checked_add(by_units);
        if self.max_extension != 0 && total.is_none_or(|t| t > self.max_extension) {
            return Err(ClockError::ExtensionTooLong {
                requested: by_units,
                already: self.extended_by,
                max: self.max_extension,
            });
        }
        let total = total.ok_or(ClockError::OutOfRange)?;
        let units = self.length.checked_add(total);
        if self.hard_cap != 0 && units.is_none_or(|u| u > self.hard_cap) {
            return Err(ClockError::BeyondHardCap {
                hard_cap: self.hard_cap,
            });
        }
        if units.is_none_or(|u| u > MAX_UNITS) {
            return Err(ClockError::TooManyUnits {
                field: "length",
                max: MAX_UNITS,
            });
        }
        let before = (self.extended_by, self.extension_count);
        self.extended_by = total;
        self.extension_count = self.extension_count.saturating_add(1);
        if let Err(e) = self.recompute(cal) {
            (self.extended_by, self.extension_count) = before;
            return Err(e);
        }
        Ok(())
    }

    /// Stops the clock at `at` because its event happened (e.g. acceptance 受理, feedback
    /// 反馈). Allowed on an expired clock (a late event still stops it); a clock stopped at or
    /// after its deadline while running is marked expired (逾期). Stopping a paused clock ends
    /// the pause (its time is added to the total paused time; the deadline is left as it
    /// stood). Refused when already stopped or with `at` before the clock's last event.
    pub fn stop(&mut self, at: i64) -> Result<(), ClockError> {
        check_time(at)?;
        if self.stopped_at.is_some() {
            return Err(ClockError::Stopped);
        }
        if at < self.paused_at.unwrap_or(self.started_at) {
            return Err(ClockError::InvalidTime { at });
        }
        match self.paused_at {
            Some(paused_at) => {
                self.total_paused_micros = self.total_paused_micros.saturating_add(at - paused_at);
                self.pauses.push(PausePeriod {
                    from: paused_at,
                    to: at,
                });
                self.paused_at = None;
                self.pause_reason = None;
            }
            None if at >= self.due_at => self.expired = true,
            None => {}
        }
        self.stopped_at = Some(at);
        Ok(())
    }

    /// Whether the clock should expire now: running (not stopped, not already expired), not
    /// paused, and `now ≥ due_at`. The expiry sweep calls [`Clock::mark_expired`] for these.
    pub fn is_due(&self, now: i64) -> bool {
        self.stopped_at.is_none() && !self.expired && self.paused_at.is_none() && now >= self.due_at
    }

    /// Marks the clock expired (逾期) at `at` and returns the rule's expiry action for the
    /// caller to carry out. Refused when stopped, already expired, paused, or before `due_at`.
    pub fn mark_expired(&mut self, at: i64) -> Result<ExpiryAction, ClockError> {
        check_time(at)?;
        if self.stopped_at.is_some() {
            return Err(ClockError::Stopped);
        }
        if self.expired {
            return Err(ClockError::Expired);
        }
        if self.paused_at.is_some() {
            return Err(ClockError::Paused);
        }
        if at < self.due_at {
            return Err(ClockError::NotDue {
                due_at: self.due_at,
            });
        }
        self.expired = true;
        Ok(self.expiry_action)
    }

    /// Time left at `now`, in microseconds (negative when overdue); frozen at its value when
    /// the pause began while paused; `None` once stopped.
    pub fn remaining(&self, now: i64) -> Option<i64> {
        if self.stopped_at.is_some() {
            return None;
        }
        let at = self.paused_at.unwrap_or(now);
        Some(self.due_at.saturating_sub(at))
    }

    /// The deadline that would apply if a paused clock resumed at `now` (`due_at` when
    /// running).
    pub fn projected_due_at(&self, now: i64, cal: &HolidayCalendar) -> Result<i64, ClockError> {
        self.projected(now, cal).map(|(due, _)| due)
    }

    fn projected(&self, now: i64, cal: &HolidayCalendar) -> Result<(i64, Option<i64>), ClockError> {
        match self.paused_at {
            Some(p) if self.stopped_at.is_none() && now > p => {
                let mut pauses = self.pauses.clone();
                pauses.push(PausePeriod { from: p, to: now });
                self.deadlines(&pauses, cal)
            }
            _ => Ok((self.due_at, self.hard_cap_at)),
        }
    }

    /// The clock as stored, in protobuf form. While paused, `due_at` is the deadline as it
    /// stood when the pause began; use [`Clock::to_proto_at`] for the deadline "if resumed
    /// now" that `ClockState.due_at` documents.
    pub fn to_proto(&self) -> common::ClockState {
        common::ClockState {
            name: self.name.clone(),
            unit: self.unit.to_proto() as i32,
            length: self.length,
            started_at: Some(to_timestamp(self.started_at)),
            due_at: Some(to_timestamp(self.due_at)),
            paused: self.paused_at.is_some(),
            pause_reason: self.pause_reason.clone().unwrap_or_default(),
            paused_at: self.paused_at.map(to_timestamp),
            total_paused: Some(to_duration(self.total_paused_micros)),
            extended_by: self.extended_by,
            extension_count: self.extension_count,
            hard_cap_at: self.hard_cap_at.map(to_timestamp),
            expiry_action: self.expiry_action.to_proto() as i32,
            stopped_at: self.stopped_at.map(to_timestamp),
            expired: self.expired,
        }
    }

    /// The clock in protobuf form as of `now`: while paused, `due_at` and `hard_cap_at` are
    /// what they would be if the clock resumed at `now`, and `total_paused` includes the
    /// current pause so far.
    pub fn to_proto_at(
        &self,
        now: i64,
        cal: &HolidayCalendar,
    ) -> Result<common::ClockState, ClockError> {
        let mut state = self.to_proto();
        if let Some(p) = self.paused_at
            && now > p
        {
            let (due, cap) = self.projected(now, cal)?;
            state.due_at = Some(to_timestamp(due));
            state.hard_cap_at = cap.map(to_timestamp);
            state.total_paused = Some(to_duration(
                self.total_paused_micros.saturating_add(now - p),
            ));
        }
        Ok(state)
    }

    /// Whether the clock is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }
    /// Whether the clock has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped_at.is_some()
    }

    /// Whether the clock, still running, is overdue at `now`: marked expired, or not paused
    /// and past its deadline (a paused clock's deadline moves on; a stopped clock is never
    /// overdue).
    pub fn is_overdue_at(&self, now: i64) -> bool {
        !self.is_stopped() && (self.expired || (!self.is_paused() && now >= self.due_at))
    }
}

/// The clocks of a record in protobuf form as of `now` ([`Clock::to_proto_at`]).
pub fn states_at(
    clocks: &[Clock],
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Vec<common::ClockState>, ClockError> {
    clocks.iter().map(|c| c.to_proto_at(now, cal)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60 * MICROS_PER_SECOND;
    const HOUR: i64 = MICROS_PER_HOUR;
    const DAY: i64 = MICROS_PER_DAY;

    /// `y-m-d h:mi` China Standard Time, as unix microseconds.
    fn t(y: i32, m: u32, d: u32, h: i64, mi: i64) -> i64 {
        let date = NaiveDate::from_ymd_opt(y, m, d).expect("valid test date");
        (i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE) * DAY
            + h * HOUR
            + mi * MINUTE
            - CST_OFFSET_MICROS
    }

    /// 24:00 CST of `y-m-d`.
    fn eod(y: i32, m: u32, d: u32) -> i64 {
        t(y, m, d, 0, 0) + DAY
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn cal() -> &'static HolidayCalendar {
        HolidayCalendar::builtin()
    }

    fn reason(code: &str, description: &str) -> common::ReasonCode {
        common::ReasonCode {
            code: code.to_owned(),
            description: description.to_owned(),
        }
    }

    /// 人民调解工作若干规定 Art 33 / 在线调解规则 (委派调解): 30 days, 鉴定 paused, extendable
    /// with all parties' consent, here at most 30 more days and a 60-day hard cap.
    fn mediation_rule() -> common::ClockRule {
        common::ClockRule {
            unit: common::ClockUnit::CalendarDay as i32,
            length: 30,
            pausable_reasons: vec![
                reason("appraisal", "鉴定"),
                reason("supplementary_investigation", "补充调查取证"),
            ],
            extension_rule: common::ClockExtensionRule::PartyConsent as i32,
            max_extension: 30,
            hard_cap: 60,
            expiry_action: common::ClockExpiryAction::ReturnToSender as i32,
            holiday_calendar: "cn-mainland".to_owned(),
            extension_approver_role: String::new(),
        }
    }

    /// 特邀调解规定 Art 27 / 在线调解规则 Art 10/12: 3 working days, not extendable.
    fn three_working_days() -> common::ClockRule {
        common::ClockRule {
            unit: common::ClockUnit::WorkingDay as i32,
            length: 3,
            pausable_reasons: vec![reason("appraisal", "鉴定")],
            extension_rule: common::ClockExtensionRule::NotExtendable as i32,
            max_extension: 0,
            hard_cap: 0,
            expiry_action: common::ClockExpiryAction::Escalate as i32,
            holiday_calendar: String::new(),
            extension_approver_role: String::new(),
        }
    }

    /// 民事诉讼法 Art 206 (司法确认): decide within 15 days, + 10 with the court president's
    /// approval.
    fn confirmation_rule() -> common::ClockRule {
        common::ClockRule {
            unit: common::ClockUnit::CalendarDay as i32,
            length: 15,
            pausable_reasons: vec![],
            extension_rule: common::ClockExtensionRule::Approver as i32,
            max_extension: 10,
            hard_cap: 25,
            expiry_action: common::ClockExpiryAction::NotifyOnly as i32,
            holiday_calendar: String::new(),
            extension_approver_role: "court_president".to_owned(),
        }
    }

    /// Local practice (警调对接): feedback within 24 hours. Configuration, not statute.
    fn hour_rule(length: u32) -> common::ClockRule {
        common::ClockRule {
            unit: common::ClockUnit::Hour as i32,
            length,
            pausable_reasons: vec![reason("supplementary_investigation", "补充调查取证")],
            extension_rule: common::ClockExtensionRule::NotExtendable as i32,
            max_extension: 0,
            hard_cap: 0,
            expiry_action: common::ClockExpiryAction::NotifyOnly as i32,
            holiday_calendar: String::new(),
            extension_approver_role: String::new(),
        }
    }

    fn start(rule: &common::ClockRule, at: i64) -> Clock {
        Clock::start("feedback", rule, at, cal()).expect("valid rule")
    }

    #[test]
    fn only_a_running_clock_past_its_deadline_or_expired_is_overdue() {
        let at = t(2026, 3, 2, 9, 0);
        let mut c = start(&hour_rule(2), at);
        assert!(!c.is_overdue_at(c.due_at - 1));
        assert!(c.is_overdue_at(c.due_at));
        let due = c.due_at;
        c.pause(at + HOUR, "supplementary_investigation")
            .expect("pause");
        assert!(!c.is_overdue_at(due + DAY), "a paused clock is not overdue");
        c.expired = true;
        assert!(c.is_overdue_at(at + HOUR), "an expired clock is overdue");
        c.stop(at + 2 * HOUR).expect("stop");
        assert!(
            !c.is_overdue_at(due + DAY),
            "a stopped clock is never overdue"
        );
        let states = states_at(&[c.clone(), start(&hour_rule(1), at)], at, cal()).expect("states");
        assert_eq!(states.len(), 2);
        assert_eq!(states[0], c.to_proto_at(at, cal()).expect("state"));
    }

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    // -- calendar -----------------------------------------------------------

    #[test]
    fn builtin_calendar_parses() {
        let c = HolidayCalendar::builtin();
        assert_eq!(c.name(), "cn-mainland");
        let cases = [
            // (date, working?, why)
            (date(2026, 1, 1), false, "元旦 2026"),
            (date(2026, 1, 2), false, "元旦 2026, Friday off"),
            (date(2026, 1, 4), true, "元旦 2026 调休: Sunday worked"),
            (date(2026, 2, 14), true, "春节 2026 调休: Saturday worked"),
            (date(2026, 2, 15), false, "春节 2026 first day (Sunday)"),
            (date(2026, 2, 23), false, "春节 2026 last day (Monday)"),
            (date(2026, 2, 24), true, "春节 2026 over (Tuesday)"),
            (date(2026, 2, 28), true, "春节 2026 调休: Saturday worked"),
            (date(2026, 3, 1), false, "ordinary Sunday"),
            (date(2026, 4, 6), false, "清明 2026 Monday"),
            (date(2026, 5, 5), false, "劳动节 2026 Tuesday"),
            (date(2026, 5, 9), true, "劳动节 2026 调休: Saturday worked"),
            (date(2026, 6, 19), false, "端午 2026 Friday"),
            (date(2026, 9, 20), true, "国庆 2026 调休: Sunday worked"),
            (date(2026, 9, 25), false, "中秋 2026 Friday"),
            (date(2026, 10, 7), false, "国庆 2026 Wednesday"),
            (date(2026, 10, 8), true, "国庆 2026 over (Thursday)"),
            (date(2026, 10, 10), true, "国庆 2026 调休: Saturday worked"),
            (date(2025, 1, 1), false, "元旦 2025"),
            (date(2025, 1, 26), true, "春节 2025 调休: Sunday worked"),
            (date(2025, 1, 28), false, "春节 2025 除夕"),
            (date(2025, 2, 4), false, "春节 2025 正月初七"),
            (date(2025, 2, 8), true, "春节 2025 调休: Saturday worked"),
            (date(2025, 4, 27), true, "劳动节 2025 调休"),
            (date(2025, 6, 2), false, "端午 2025 Monday"),
            (date(2025, 10, 8), false, "国庆中秋 2025 last day"),
            (date(2025, 10, 11), true, "国庆中秋 2025 调休"),
            (date(2026, 3, 10), true, "ordinary Tuesday"),
            (date(2027, 1, 2), false, "uncovered year: plain Saturday"),
            (date(2027, 1, 4), true, "uncovered year: plain Monday"),
        ];
        for (d, working, why) in cases {
            assert_eq!(c.is_working_day(d), working, "{d}: {why}");
        }
        assert!(c.is_holiday(date(2026, 10, 1)));
        assert!(!c.is_holiday(date(2026, 10, 10)));
        assert!(c.covers(date(2025, 7, 1)) && c.covers(date(2026, 7, 1)));
        assert!(!c.covers(date(2027, 7, 1)));
    }

    #[test]
    fn calendar_toml_refusals() {
        let cases = [
            ("holidays = []", "missing name"),
            ("name = \"\"", "empty name"),
            ("name = \"x\"\nholidays = [\"2026-13-01\"]", "bad month"),
            ("name = \"x\"\nholidays = [\"1/1/2026\"]", "not ISO"),
            (
                "name = \"x\"\nworking_weekends = [\"2026-01-05\"]",
                "a Monday",
            ),
            (
                "name = \"x\"\nholidays = [\"2026-01-04\"]\nworking_weekends = [\"2026-01-04\"]",
                "both lists",
            ),
            ("name = \"x\"\nextra = 1", "unknown key"),
            ("name = ", "not TOML"),
        ];
        for (text, why) in cases {
            assert!(HolidayCalendar::from_toml(text).is_err(), "{why}");
        }
        let ok = HolidayCalendar::from_toml(
            "name = \"cn-2026\"\nholidays = [\"2026-01-01\"]\nworking_weekends = [\"2026-01-04\"]",
        )
        .expect("valid");
        assert_eq!(ok.name(), "cn-2026");
        assert!(!ok.is_working_day(date(2026, 1, 1)));
        assert!(ok.is_working_day(date(2026, 1, 4)));
        assert!(
            ok.is_working_day(date(2026, 1, 2)),
            "not listed in this calendar"
        );
    }

    #[test]
    fn calendar_load() {
        let path =
            std::env::temp_dir().join(format!("fengqiao-holidays-{}.toml", std::process::id()));
        std::fs::write(&path, "name = \"file\"\nholidays = [\"2026-01-01\"]").expect("write");
        let c = HolidayCalendar::load(&path).expect("loads");
        assert_eq!(c.name(), "file");
        std::fs::remove_file(&path).expect("remove");
        assert!(HolidayCalendar::load(&path).is_err(), "missing file");
        let repo_file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/dev/holidays.toml"
        );
        assert_eq!(
            &HolidayCalendar::load(repo_file).expect("loads"),
            HolidayCalendar::builtin()
        );
    }

    // -- add_duration -------------------------------------------------------

    #[test]
    fn add_duration_table() {
        use ClockUnit::*;
        let cases: &[(&str, i64, ClockUnit, u32, i64)] = &[
            // 人民调解工作若干规定 Art 33 (30 days), counted per 民事诉讼法 Art 85 from the next day.
            (
                "30 days from 2026-03-10 10:00",
                t(2026, 3, 10, 10, 0),
                CalendarDay,
                30,
                eod(2026, 4, 9),
            ),
            (
                "start at 23:59 CST is still that day",
                t(2026, 3, 10, 23, 59),
                CalendarDay,
                30,
                eod(2026, 4, 9),
            ),
            (
                "00:00 CST is the next day",
                t(2026, 3, 11, 0, 0),
                CalendarDay,
                30,
                eod(2026, 4, 10),
            ),
            // 民事诉讼法 Art 85: last day a holiday → first working day after it.
            (
                "30 days ending 国庆 2026-10-01",
                t(2026, 9, 1, 9, 0),
                CalendarDay,
                30,
                eod(2026, 10, 8),
            ),
            (
                "30 days ending 春节 2026-02-15",
                t(2026, 1, 16, 9, 0),
                CalendarDay,
                30,
                eod(2026, 2, 24),
            ),
            (
                "2 days ending on a Saturday",
                t(2026, 3, 12, 9, 0),
                CalendarDay,
                2,
                eod(2026, 3, 16),
            ),
            (
                "1 day ending on a 调休 Saturday",
                t(2026, 2, 13, 9, 0),
                CalendarDay,
                1,
                eod(2026, 2, 14),
            ),
            (
                "15 days 司法确认 (民事诉讼法 Art 206)",
                t(2026, 5, 6, 9, 0),
                CalendarDay,
                15,
                eod(2026, 5, 21),
            ),
            // 特邀调解规定 Art 27 / 在线调解规则 Art 10/12/15: 3 working days.
            (
                "3 wd from a Friday",
                t(2026, 3, 13, 10, 0),
                WorkingDay,
                3,
                eod(2026, 3, 18),
            ),
            (
                "3 wd over 春节 2026 with 调休 Saturday",
                t(2026, 2, 13, 9, 0),
                WorkingDay,
                3,
                eod(2026, 2, 25),
            ),
            (
                "3 wd over the 2026-02-28 调休 Saturday",
                t(2026, 2, 26, 9, 0),
                WorkingDay,
                3,
                eod(2026, 3, 2),
            ),
            (
                "3 wd over 国庆 2026",
                t(2026, 9, 29, 15, 0),
                WorkingDay,
                3,
                eod(2026, 10, 9),
            ),
            (
                "5 wd over 国庆 2026 and the 10-10 调休",
                t(2026, 9, 29, 15, 0),
                WorkingDay,
                5,
                eod(2026, 10, 12),
            ),
            (
                "3 wd over 中秋 2026",
                t(2026, 9, 24, 15, 0),
                WorkingDay,
                3,
                eod(2026, 9, 30),
            ),
            (
                "1 wd from 元旦 2026 is the 01-04 调休 Sunday",
                t(2026, 1, 1, 10, 0),
                WorkingDay,
                1,
                eod(2026, 1, 4),
            ),
            (
                "3 wd over 春节 2025",
                t(2025, 1, 24, 10, 0),
                WorkingDay,
                3,
                eod(2025, 2, 5),
            ),
            (
                "1 wd from 23:30 CST Monday",
                t(2026, 3, 9, 23, 30),
                WorkingDay,
                1,
                eod(2026, 3, 10),
            ),
            (
                "1 wd from 00:00 CST Tuesday",
                t(2026, 3, 10, 0, 0),
                WorkingDay,
                1,
                eod(2026, 3, 11),
            ),
            (
                "20 wd past the calendar (2027, weekdays only)",
                t(2027, 1, 1, 9, 0),
                WorkingDay,
                20,
                eod(2027, 1, 29),
            ),
            // Hours: exact, holidays ignored (local practice, e.g. 警调对接 24 h).
            (
                "24 h inside 春节",
                t(2026, 2, 16, 10, 0),
                Hour,
                24,
                t(2026, 2, 17, 10, 0),
            ),
            (
                "5 h across midnight",
                t(2026, 3, 10, 22, 30),
                Hour,
                5,
                t(2026, 3, 11, 3, 30),
            ),
            // length 0: the start day (rolled to a working day) / the start instant.
            (
                "0 days on a Sunday",
                t(2026, 3, 1, 9, 0),
                CalendarDay,
                0,
                eod(2026, 3, 2),
            ),
            (
                "0 wd on a Tuesday",
                t(2026, 3, 10, 9, 0),
                WorkingDay,
                0,
                eod(2026, 3, 10),
            ),
            ("0 h", t(2026, 3, 10, 9, 0), Hour, 0, t(2026, 3, 10, 9, 0)),
        ];
        for (why, from, unit, length, want) in cases {
            assert_eq!(add_duration(*from, *unit, *length, cal()), *want, "{why}");
        }
        assert_eq!(
            add_duration(i64::MAX - 1, ClockUnit::Hour, 1, cal()),
            i64::MAX,
            "saturates"
        );
        assert_eq!(
            add_duration(i64::MAX - 1, ClockUnit::CalendarDay, 1, cal()),
            i64::MAX,
            "saturates"
        );
    }

    /// A deterministic sweep (no extra dependency): properties of working- and calendar-day
    /// deadlines over 2025–2027.
    #[test]
    fn add_duration_properties() {
        let mut seed: u64 = 0x5eed_f3a9_0000_0001;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let base = t(2025, 1, 1, 0, 0);
        for _ in 0..2_000 {
            let start = base + (next() as i64 % (3 * 365 * DAY));
            let length = (next() % 40) as u32 + 1;
            let start_date = cst_date(start).expect("in range");
            for unit in [ClockUnit::CalendarDay, ClockUnit::WorkingDay] {
                let due = add_duration(start, unit, length, cal());
                assert!(due > start);
                assert_eq!((due + CST_OFFSET_MICROS).rem_euclid(DAY), 0, "24:00 CST");
                let last = cst_date(due - 1).expect("in range");
                assert!(cal().is_working_day(last), "ends on a working day");
                assert!(
                    due <= add_duration(start, unit, length + 1, cal()),
                    "monotonic"
                );
                let working = start_date
                    .iter_days()
                    .skip(1)
                    .take_while(|d| *d <= last)
                    .filter(|d| cal().is_working_day(*d))
                    .count();
                match unit {
                    ClockUnit::WorkingDay => assert_eq!(working, length as usize),
                    _ => assert!(last - start_date >= chrono::TimeDelta::days(i64::from(length))),
                }
            }
        }
    }

    // -- start --------------------------------------------------------------

    #[test]
    fn start_validates_the_rule() {
        let ok = mediation_rule();
        let cases: Vec<(&str, common::ClockRule, ClockError)> = vec![
            (
                "unit unspecified",
                common::ClockRule {
                    unit: 0,
                    ..ok.clone()
                },
                ClockError::UnitUnspecified,
            ),
            (
                "unknown unit",
                common::ClockRule {
                    unit: 99,
                    ..ok.clone()
                },
                ClockError::UnknownEnumValue {
                    field: "unit",
                    value: 99,
                },
            ),
            (
                "length 0",
                common::ClockRule {
                    length: 0,
                    ..ok.clone()
                },
                ClockError::ZeroLength,
            ),
            (
                "length too large",
                common::ClockRule {
                    length: MAX_UNITS + 1,
                    hard_cap: 0,
                    ..ok.clone()
                },
                ClockError::TooManyUnits {
                    field: "length",
                    max: MAX_UNITS,
                },
            ),
            (
                "hard cap below length",
                common::ClockRule {
                    hard_cap: 29,
                    ..ok.clone()
                },
                ClockError::HardCapBelowLength {
                    hard_cap: 29,
                    length: 30,
                },
            ),
            (
                "approver without role",
                common::ClockRule {
                    extension_rule: common::ClockExtensionRule::Approver as i32,
                    ..ok.clone()
                },
                ClockError::MissingApproverRole,
            ),
            (
                "unknown extension rule",
                common::ClockRule {
                    extension_rule: 7,
                    ..ok.clone()
                },
                ClockError::UnknownEnumValue {
                    field: "extension_rule",
                    value: 7,
                },
            ),
            (
                "expiry unspecified",
                common::ClockRule {
                    expiry_action: 0,
                    ..ok.clone()
                },
                ClockError::ExpiryActionUnspecified,
            ),
            (
                "unknown expiry",
                common::ClockRule {
                    expiry_action: 9,
                    ..ok.clone()
                },
                ClockError::UnknownEnumValue {
                    field: "expiry_action",
                    value: 9,
                },
            ),
        ];
        for (why, rule, want) in cases {
            assert_eq!(validate_rule(&rule), Err(want.clone()), "{why}");
            assert_eq!(
                Clock::start("x", &rule, t(2026, 3, 10, 10, 0), cal()),
                Err(want),
                "{why}"
            );
            assert!(want_field_or_reason(&rule), "{why}");
        }
        assert_eq!(
            Clock::start("x", &ok, -1, cal()),
            Err(ClockError::InvalidTime { at: -1 })
        );
        assert_eq!(
            Clock::start("x", &ok, MAX_TIME_MICROS + 1, cal()),
            Err(ClockError::InvalidTime {
                at: MAX_TIME_MICROS + 1
            })
        );
        assert_eq!(validate_rule(&ok), Ok(()));
    }

    /// Bad rules are INVALID_ARGUMENT naming a field.
    fn want_field_or_reason(rule: &common::ClockRule) -> bool {
        validate_rule(rule).err().is_some_and(|e| {
            let api = e.api();
            api.code() == tonic::Code::InvalidArgument
                && api.violations.len() == 1
                && e.field().is_some()
        })
    }

    #[test]
    fn start_computes_due_and_hard_cap() {
        // 人民调解工作若干规定 Art 33: 30 days; hard cap 60 days.
        let c = start(&mediation_rule(), t(2026, 3, 10, 10, 0));
        assert_eq!(c.started_at, t(2026, 3, 10, 10, 0));
        assert_eq!(c.due_at, eod(2026, 4, 9));
        // 03-10 + 60 days = 05-09, a 调休 Saturday (working day): no roll.
        assert_eq!(c.hard_cap_at, Some(eod(2026, 5, 9)));
        assert_eq!(c.name, "feedback");
        assert!(!c.is_paused() && !c.is_stopped() && !c.expired);
        // Unspecified extension rule: not extendable.
        let unspecified = common::ClockRule {
            extension_rule: 0,
            ..three_working_days()
        };
        let c = start(&unspecified, t(2026, 3, 13, 10, 0));
        assert_eq!(c.extension_rule, ExtensionRule::NotExtendable);
        assert_eq!(c.due_at, eod(2026, 3, 18));
        assert_eq!(c.hard_cap_at, None);
    }

    // -- pauses -------------------------------------------------------------

    #[test]
    fn resume_moves_the_deadline_by_the_paused_time() {
        // (why, rule, start, pause, resume, reason, due after resume, hard cap after)
        type Case = (
            &'static str,
            common::ClockRule,
            i64,
            i64,
            i64,
            &'static str,
            i64,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                // 在线调解规则: 鉴定 time is not counted in the mediation period.
                "5 days of 鉴定 on a 30-day clock",
                mediation_rule(),
                t(2026, 3, 10, 10, 0),
                t(2026, 3, 20, 9, 0),
                t(2026, 3, 25, 9, 0),
                "appraisal",
                eod(2026, 4, 14),
                Some(eod(2026, 5, 14)),
            ),
            (
                // Whole days: 03-21, 03-22, 03-23 (民事诉讼法 Art 85 ¶2), not 3 days 4 hours.
                "3 days 4 hours exclude 3 days: lands on a Sunday, moves to Monday 24:00",
                mediation_rule(),
                t(2026, 3, 10, 10, 0),
                t(2026, 3, 20, 9, 0),
                t(2026, 3, 23, 13, 0),
                "supplementary_investigation",
                eod(2026, 4, 13),
                Some(eod(2026, 5, 12)),
            ),
            (
                // 民事诉讼法 Art 85 applied to the moved deadline.
                "2 days: lands on Saturday 24:00, moves to Monday 24:00",
                mediation_rule(),
                t(2026, 3, 10, 10, 0),
                t(2026, 3, 20, 9, 0),
                t(2026, 3, 22, 9, 0),
                "appraisal",
                eod(2026, 4, 13),
                Some(eod(2026, 5, 11)),
            ),
            (
                // 特邀调解规定 Art 27: 3 working days; 3 days paused lands on a Saturday.
                "working days: lands on a weekend, moves to the next working day's end",
                three_working_days(),
                t(2026, 3, 13, 10, 0),
                t(2026, 3, 16, 10, 0),
                t(2026, 3, 19, 10, 0),
                "appraisal",
                eod(2026, 3, 23),
                None,
            ),
            (
                "working days: lands inside 国庆 2026, moves past it",
                three_working_days(),
                t(2026, 9, 22, 10, 0),
                t(2026, 9, 23, 10, 0),
                t(2026, 9, 29, 10, 0),
                "appraisal",
                eod(2026, 10, 8),
                None,
            ),
            (
                "hours: exact, 6 h 30 min later",
                hour_rule(24),
                t(2026, 3, 10, 10, 0),
                t(2026, 3, 10, 12, 0),
                t(2026, 3, 10, 18, 30),
                "supplementary_investigation",
                t(2026, 3, 11, 16, 30),
                None,
            ),
        ];
        for (why, rule, from, pause_at, resume_at, code, due, cap) in cases {
            let mut c = start(&rule, from);
            let due_before = c.due_at;
            c.pause(pause_at, code).expect(why);
            assert!(c.is_paused(), "{why}");
            assert_eq!(c.pause_reason.as_deref(), Some(code), "{why}");
            assert_eq!(c.due_at, due_before, "{why}: unchanged while paused");
            c.resume(resume_at, cal()).expect(why);
            assert!(!c.is_paused() && c.pause_reason.is_none(), "{why}");
            assert_eq!(c.total_paused_micros, resume_at - pause_at, "{why}");
            assert_eq!(c.due_at, due, "{why}");
            assert_eq!(c.hard_cap_at, cap, "{why}");
        }
    }

    #[test]
    fn pauses_accumulate() {
        let mut c = start(&mediation_rule(), t(2026, 3, 10, 10, 0));
        c.pause(t(2026, 3, 11, 9, 0), "appraisal").expect("pause");
        c.resume(t(2026, 3, 12, 9, 0), cal()).expect("resume");
        c.pause(t(2026, 3, 16, 9, 0), "supplementary_investigation")
            .expect("pause");
        c.resume(t(2026, 3, 18, 9, 0), cal()).expect("resume");
        assert_eq!(c.total_paused_micros, 3 * DAY);
        // Recomputed from the start: 04-09 24:00 + 3 days = 04-12 24:00 (Sunday) → Monday.
        assert_eq!(c.due_at, eod(2026, 4, 13));
    }

    #[test]
    fn pause_refusals() {
        let from = t(2026, 3, 10, 10, 0);
        let mut c = start(&mediation_rule(), from);
        let pristine = c.clone();
        assert_eq!(
            c.pause(t(2026, 3, 11, 9, 0), "illness"),
            Err(ClockError::ReasonNotPausable {
                reason: "illness".to_owned()
            }),
            "not among the rule's pausable reasons"
        );
        assert_eq!(
            c.resume(t(2026, 3, 11, 9, 0), cal()),
            Err(ClockError::NotPaused)
        );
        assert_eq!(
            c.pause(from - 1, "appraisal"),
            Err(ClockError::InvalidTime { at: from - 1 }),
            "before the start"
        );
        assert_eq!(
            c.pause(eod(2026, 4, 9), "appraisal"),
            Err(ClockError::Expired),
            "overdue, not yet swept"
        );
        assert_eq!(c, pristine, "refusals change nothing");
        c.pause(t(2026, 3, 11, 9, 0), "appraisal").expect("pause");
        assert_eq!(
            c.pause(t(2026, 3, 12, 9, 0), "appraisal"),
            Err(ClockError::AlreadyPaused)
        );
        assert_eq!(
            c.resume(t(2026, 3, 11, 8, 0), cal()),
            Err(ClockError::InvalidTime {
                at: t(2026, 3, 11, 8, 0)
            }),
            "before the pause"
        );
        // 民事诉讼法 Art 206 review: the rule lists no pause reasons.
        let mut review = start(&confirmation_rule(), from);
        assert_eq!(
            review.pause(t(2026, 3, 11, 9, 0), "appraisal"),
            Err(ClockError::ReasonNotPausable {
                reason: "appraisal".to_owned()
            })
        );
    }

    #[test]
    fn resume_moves_the_hard_cap_by_the_same_days() {
        // 2 calendar days, hard cap 3: due Thu 03-12 24:00, cap Fri 03-13 24:00. A pause from
        // Wed 08:00 to Fri 18:00 excludes Thu and Fri: the deadline moves to Sat 03-14 and the
        // cap to Sun 03-15, both rolled to Monday 24:00 (民事诉讼法 Art 85 ¶3), never past it.
        let rule = common::ClockRule {
            length: 2,
            hard_cap: 3,
            max_extension: 0,
            ..mediation_rule()
        };
        let mut c = start(&rule, t(2026, 3, 10, 10, 0));
        assert_eq!(
            (c.due_at, c.hard_cap_at),
            (eod(2026, 3, 12), Some(eod(2026, 3, 13)))
        );
        c.pause(t(2026, 3, 11, 8, 0), "appraisal").expect("pause");
        c.resume(t(2026, 3, 13, 18, 0), cal()).expect("resume");
        assert_eq!(c.hard_cap_at, Some(eod(2026, 3, 16)));
        assert_eq!(c.due_at, eod(2026, 3, 16));
        assert_eq!(
            c.pauses,
            vec![PausePeriod {
                from: t(2026, 3, 11, 8, 0),
                to: t(2026, 3, 13, 18, 0)
            }]
        );
    }

    /// #9 §2: the figures an outside client saw, and the rule (module docs) case by case.
    #[test]
    fn pause_rule_table() {
        const SEC: i64 = MICROS_PER_SECOND;
        // (why, rule, start, pauses (from, to), due after, hard cap after)
        type Case = (
            &'static str,
            common::ClockRule,
            i64,
            Vec<(i64, i64)>,
            i64,
            Option<i64>,
        );
        // The issue's clock: 30 calendar days from 2026-12-02, due 2027-01-01T16:00Z (24:00
        // CST), hard cap 60 days: 2027-01-31 is a Sunday → 2027-02-01T16:00Z.
        let issue_start = t(2026, 12, 2, 9, 30);
        let noon = t(2026, 12, 2, 12, 0);
        let issue = |why, len: i64| -> Case {
            (
                why,
                mediation_rule(),
                issue_start,
                vec![(noon, noon + len)],
                eod(2027, 1, 1),
                Some(eod(2027, 2, 1)),
            )
        };
        let mut cases: Vec<Case> = vec![
            issue("3 s within one CST day: nothing excluded", 3 * SEC),
            issue("0.5 s", SEC / 2),
            issue("1.3 s", 13 * SEC / 10),
            issue("2 s", 2 * SEC),
            issue("5.3 s", 53 * SEC / 10),
            issue(
                "23 h 59 min, still the same CST day",
                11 * HOUR + 59 * MINUTE,
            ),
            (
                // The cap's nominal end moves from Sun 01-31 (rolled to Mon 02-01) to Mon
                // 02-01 itself: rolled once, it stays 02-01.
                "3 s across CST midnight exclude the new day: Sat 2027-01-02 → Mon 01-04",
                mediation_rule(),
                issue_start,
                vec![(eod(2026, 12, 10) - 2 * SEC, eod(2026, 12, 10) + SEC)],
                eod(2027, 1, 4),
                Some(eod(2027, 2, 1)),
            ),
            (
                "a pause ending at 24:00 exactly ended on that day: nothing excluded",
                mediation_rule(),
                issue_start,
                vec![(t(2026, 12, 10, 10, 0), eod(2026, 12, 10))],
                eod(2027, 1, 1),
                Some(eod(2027, 2, 1)),
            ),
            (
                // Days D+1, D+2, D+3 excluded. 30 days from 03-11: Fri 04-10 → Mon 04-13; the
                // cap 05-10 (Sunday, rolled to Mon 05-11) → 05-13 (Wednesday).
                "day D 10:00 to day D+3 09:00: +3 days",
                mediation_rule(),
                t(2026, 3, 11, 10, 0),
                vec![(t(2026, 3, 20, 10, 0), t(2026, 3, 23, 9, 0))],
                eod(2026, 4, 13),
                Some(eod(2026, 5, 13)),
            ),
            (
                // 30 days from 09-01 end on 国庆 10-01 → 10-08. Two excluded days make the
                // nominal end 10-03, still 国庆 → 10-08: the roll-over applies once, to the
                // result, not to the already rolled 10-08.
                "across a holiday roll-over: applied once to the result",
                mediation_rule(),
                t(2026, 9, 1, 9, 0),
                vec![(t(2026, 9, 10, 9, 0), t(2026, 9, 12, 9, 0))],
                eod(2026, 10, 8),
                Some(eod(2026, 11, 2)),
            ),
            (
                // 03-21 and 03-22 excluded; B (same day) nothing; C excludes 03-23 only once
                // more. 30 days from 03-09: Wed 04-08 + 3 = Sat 04-11 → Mon 04-13.
                "several pauses: each its own days, the same day counted once",
                mediation_rule(),
                t(2026, 3, 9, 10, 0),
                vec![
                    (t(2026, 3, 20, 10, 0), t(2026, 3, 22, 9, 0)),
                    (t(2026, 3, 22, 10, 0), t(2026, 3, 22, 11, 0)),
                    (t(2026, 3, 22, 12, 0), t(2026, 3, 23, 8, 0)),
                ],
                eod(2026, 4, 13),
                Some(eod(2026, 5, 11)),
            ),
            (
                // 特邀调解规定 Art 27: 3 working days from Fri 03-13: Mon 16, Tue 17, Wed 18.
                // Excluded 03-17..03-23 hold 5 working days (17, 18, 19, 20, 23), not 7:
                // 8 working days from 03-13 end on Wed 03-25.
                "working days: only excluded working days count",
                three_working_days(),
                t(2026, 3, 13, 10, 0),
                vec![(t(2026, 3, 16, 10, 0), t(2026, 3, 23, 9, 0))],
                eod(2026, 3, 25),
                None,
            ),
            (
                "working days: a pause over a weekend only excludes nothing",
                three_working_days(),
                t(2026, 3, 18, 10, 0),
                vec![(t(2026, 3, 20, 10, 0), t(2026, 3, 22, 20, 0))],
                eod(2026, 3, 23),
                None,
            ),
            (
                // 国庆 2026: 3 working days from Tue 09-22 are 23, 24, 28 (25 is 中秋). The
                // pause excludes 24..29, of which 24, 28, 29 are working days.
                "working days over 中秋: 3 working days excluded",
                three_working_days(),
                t(2026, 9, 22, 10, 0),
                vec![(t(2026, 9, 23, 10, 0), t(2026, 9, 29, 10, 0))],
                eod(2026, 10, 8),
                None,
            ),
            (
                "hours: exactly the paused time, 3.5 s",
                hour_rule(24),
                t(2026, 3, 10, 10, 0),
                vec![(t(2026, 3, 10, 12, 0), t(2026, 3, 10, 12, 0) + 7 * SEC / 2)],
                t(2026, 3, 11, 10, 0) + 7 * SEC / 2,
                None,
            ),
            (
                "hours: two pauses across midnight, exact",
                hour_rule(24),
                t(2026, 3, 10, 22, 0),
                vec![
                    (t(2026, 3, 10, 23, 0), t(2026, 3, 11, 1, 30)),
                    (t(2026, 3, 11, 2, 0), t(2026, 3, 11, 2, 0) + SEC),
                ],
                t(2026, 3, 11, 22, 0) + 150 * MINUTE + SEC,
                None,
            ),
        ];
        // An hour-unit hard cap moves by the exact time too.
        cases.push((
            "hours with a hard cap: both move by 90 min",
            common::ClockRule {
                hard_cap: 30,
                ..hour_rule(24)
            },
            t(2026, 3, 10, 10, 0),
            vec![(t(2026, 3, 10, 11, 0), t(2026, 3, 10, 12, 30))],
            t(2026, 3, 11, 11, 30),
            Some(t(2026, 3, 11, 17, 30)),
        ));
        for (why, rule, from, pauses, due, cap) in cases {
            let mut c = start(&rule, from);
            for (p, r) in &pauses {
                c.pause(*p, "supplementary_investigation")
                    .or_else(|_| c.pause(*p, "appraisal"))
                    .expect(why);
                c.resume(*r, cal()).expect(why);
            }
            assert_eq!(
                (c.due_at, c.hard_cap_at),
                (due, cap),
                "{why}: got due {}, cap {:?}",
                c.due_at,
                c.hard_cap_at
            );
            let total: i64 = pauses.iter().map(|(p, r)| r - p).sum();
            assert_eq!(c.total_paused_micros, total, "{why}");
            assert_eq!(c.pauses.len(), pauses.len(), "{why}");
        }
    }

    #[test]
    fn issue_figures_while_paused_and_after() {
        // The issue: a 3-second pause moved due_at by three days and hard_cap_at one day
        // earlier. While paused the projection must not move either.
        let mut c = start(&mediation_rule(), t(2026, 12, 2, 9, 30));
        let (due, cap) = (c.due_at, c.hard_cap_at);
        assert_eq!((due, cap), (eod(2027, 1, 1), Some(eod(2027, 2, 1))));
        let p = t(2026, 12, 2, 12, 0);
        c.pause(p, "supplementary_investigation").expect("pause");
        let s = c
            .to_proto_at(p + 3 * MICROS_PER_SECOND, cal())
            .expect("projects");
        assert_eq!(s.due_at, Some(to_timestamp(due)));
        assert_eq!(s.hard_cap_at, cap.map(to_timestamp));
        // Projected three days on: D+1..D+3 excluded.
        assert_eq!(
            c.projected_due_at(p + 3 * DAY, cal()),
            Ok(eod(2027, 1, 4)),
            "01-01 + 3 = Mon 01-04"
        );
        c.resume(p + 3 * MICROS_PER_SECOND, cal()).expect("resume");
        assert_eq!((c.due_at, c.hard_cap_at), (due, cap));
    }

    #[test]
    fn excluded_days_merges_overlaps() {
        let d = |day: u32, h: i64| t(2026, 3, day, h, 0);
        let p = |from, to| PausePeriod { from, to };
        let cases: &[(&str, ClockUnit, Vec<PausePeriod>, Option<u64>)] = &[
            ("no pause", ClockUnit::CalendarDay, vec![], Some(0)),
            (
                "hours: not a day clock",
                ClockUnit::Hour,
                vec![p(d(2, 10), d(5, 9))],
                None,
            ),
            (
                "D..D+3",
                ClockUnit::CalendarDay,
                vec![p(d(2, 10), d(5, 9))],
                Some(3),
            ),
            (
                "overlap counted once",
                ClockUnit::CalendarDay,
                vec![p(d(2, 10), d(5, 9)), p(d(3, 10), d(4, 10))],
                Some(3),
            ),
            (
                "touching spans",
                ClockUnit::CalendarDay,
                vec![p(d(5, 10), d(6, 9)), p(d(2, 10), d(5, 9))],
                Some(4),
            ),
            (
                "zero-length and reversed pauses exclude nothing",
                ClockUnit::CalendarDay,
                vec![p(d(2, 10), d(2, 10)), p(d(5, 10), d(2, 10))],
                Some(0),
            ),
            // Mon 03-02 … Sun 03-08: Tue–Fri working, the weekend not.
            (
                "working days in 03-03..03-08",
                ClockUnit::WorkingDay,
                vec![p(d(2, 10), d(8, 9))],
                Some(4),
            ),
        ];
        for (why, unit, pauses, want) in cases {
            assert_eq!(
                excluded_days(*unit, pauses.iter().copied(), cal()),
                *want,
                "{why}"
            );
        }
    }

    #[test]
    fn working_days_in_matches_a_day_by_day_count() {
        // Across the listed years and well past them (where whole weeks are skipped).
        let c = cal();
        let starts = [
            date(2025, 1, 20),
            date(2026, 9, 20),
            date(2026, 12, 28),
            date(2027, 3, 3),
        ];
        for after in starts {
            for len in [0u64, 1, 6, 7, 8, 13, 14, 30, 100, 400] {
                let through = after + Days::new(len);
                let slow = after
                    .iter_days()
                    .skip(1)
                    .take_while(|x| *x <= through)
                    .filter(|x| c.is_working_day(*x))
                    .count() as u64;
                assert_eq!(c.working_days_in(after, through), slow, "{after} + {len}");
            }
        }
        assert_eq!(c.working_days_in(date(2026, 3, 10), date(2026, 3, 1)), 0);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn rule_for(unit: ClockUnit, length: u32, cap_extra: Option<u32>) -> common::ClockRule {
            common::ClockRule {
                unit: unit.to_proto() as i32,
                length,
                hard_cap: cap_extra.map_or(0, |e| length + e),
                max_extension: 0,
                ..mediation_rule()
            }
        }

        fn unit() -> impl Strategy<Value = ClockUnit> {
            prop_oneof![
                Just(ClockUnit::CalendarDay),
                Just(ClockUnit::WorkingDay),
                Just(ClockUnit::Hour),
            ]
        }

        /// A pause length: seconds-scale or days-scale, to the microsecond.
        fn pause_len() -> impl Strategy<Value = i64> {
            prop_oneof![0..10 * MICROS_PER_SECOND, 0..20 * DAY]
        }

        /// Runs pauses `(gap before, length)` one after another while the clock allows;
        /// returns the clock and the (due, cap) after each resume.
        fn run(c: &mut Clock, pauses: &[(i64, i64)]) -> Vec<(i64, Option<i64>)> {
            let mut at = c.started_at;
            let mut seen = Vec::new();
            for (gap, len) in pauses {
                let p = at + gap;
                if p >= c.due_at || c.pause(p, "appraisal").is_err() {
                    break;
                }
                c.resume(p + len, cal()).expect("resume after a pause");
                seen.push((c.due_at, c.hard_cap_at));
                at = p + len;
            }
            seen
        }

        proptest! {
            #[test]
            fn no_pause_no_change(
                unit in unit(),
                length in 1u32..40,
                cap in proptest::option::of(0u32..40),
                start in t(2025, 1, 1, 0, 0)..t(2027, 12, 31, 0, 0),
                gap in 0..5 * DAY,
            ) {
                let rule = rule_for(unit, length, cap);
                let mut c = start_clock(&rule, start);
                prop_assert_eq!(c.due_at, add_duration(start, unit, length, cal()));
                let before = (c.due_at, c.hard_cap_at);
                // A zero-length pause is no pause.
                let p = start + gap;
                if p < c.due_at {
                    c.pause(p, "appraisal").expect("pause");
                    c.resume(p, cal()).expect("resume");
                    prop_assert_eq!((c.due_at, c.hard_cap_at), before);
                }
            }

            #[test]
            fn within_one_day_nothing_moves(
                unit in prop_oneof![Just(ClockUnit::CalendarDay), Just(ClockUnit::WorkingDay)],
                length in 1u32..40,
                start in t(2025, 1, 1, 0, 0)..t(2027, 12, 31, 0, 0),
                gap in 0..5 * DAY,
                len in 0..DAY,
            ) {
                let mut c = start_clock(&rule_for(unit, length, Some(10)), start);
                let before = (c.due_at, c.hard_cap_at);
                let p = start + gap;
                prop_assume!(p < c.due_at);
                // Ends on the day it began (an end at 24:00 exactly belongs to that day).
                prop_assume!(len == 0 || cst_date(p) == cst_date(p + len - 1));
                c.pause(p, "appraisal").expect("pause");
                c.resume(p + len, cal()).expect("resume");
                prop_assert_eq!((c.due_at, c.hard_cap_at), before);
            }

            #[test]
            fn monotonic_capped_and_never_earlier(
                unit in unit(),
                length in 1u32..40,
                cap in proptest::option::of(0u32..40),
                start in t(2025, 1, 1, 0, 0)..t(2027, 12, 31, 0, 0),
                pauses in proptest::collection::vec((0..3 * DAY, pause_len()), 1..4),
                more in pause_len(),
            ) {
                let rule = rule_for(unit, length, cap);
                let fresh = start_clock(&rule, start);
                let mut c = fresh.clone();
                let seen = run(&mut c, &pauses);
                let mut prev = (fresh.due_at, fresh.hard_cap_at);
                for (due, cap_at) in &seen {
                    // The deadline never exceeds the (moved) hard cap …
                    if let Some(cap_at) = cap_at {
                        prop_assert!(due <= cap_at, "due {} > cap {}", due, cap_at);
                    }
                    // … the hard cap never moves earlier, nor the deadline.
                    prop_assert!(*cap_at >= prev.1, "cap moved earlier");
                    prop_assert!(*due >= prev.0, "due moved earlier");
                    prev = (*due, *cap_at);
                }
                // Monotonic in the paused time: the same pauses with the last one longer
                // give a deadline and cap no earlier.
                if let Some(n) = seen.len().checked_sub(1) {
                    let mut longer: Vec<(i64, i64)> = pauses[..=n].to_vec();
                    longer[n].1 += more;
                    let mut d = fresh.clone();
                    let seen_longer = run(&mut d, &longer);
                    prop_assert_eq!(seen_longer.len(), seen.len());
                    prop_assert!(d.due_at >= c.due_at, "due {} < {}", d.due_at, c.due_at);
                    prop_assert!(d.hard_cap_at >= c.hard_cap_at);
                    // A day clock's deadline is still 24:00 CST of a working day.
                    if unit != ClockUnit::Hour {
                        prop_assert_eq!((d.due_at + CST_OFFSET_MICROS).rem_euclid(DAY), 0);
                        prop_assert!(cal().is_working_day(cst_date(d.due_at - 1).expect("date")));
                    }
                }
            }
        }

        fn start_clock(rule: &common::ClockRule, at: i64) -> Clock {
            Clock::start("feedback", rule, at, cal()).expect("valid rule")
        }
    }

    // -- extensions ---------------------------------------------------------

    #[test]
    fn extensions_follow_the_rule() {
        let from = t(2026, 3, 10, 10, 0);
        let none = roles(&[]);
        // 特邀调解规定 Art 27 / 在线调解规则 Art 10: not extendable.
        let mut c = start(&three_working_days(), from);
        assert_eq!(
            c.extend(1, &roles(&["court_president"]), true, cal()),
            Err(ClockError::NotExtendable)
        );

        // 特邀调解规定 Art 27 / 在线调解规则: extendable with all parties' consent.
        let mut c = start(&mediation_rule(), from);
        let pristine = c.clone();
        assert_eq!(
            c.extend(10, &none, false, cal()),
            Err(ClockError::PartyConsentRequired)
        );
        assert_eq!(
            c.extend(0, &none, true, cal()),
            Err(ClockError::ZeroExtension)
        );
        assert_eq!(
            c.extend(31, &none, true, cal()),
            Err(ClockError::ExtensionTooLong {
                requested: 31,
                already: 0,
                max: 30
            })
        );
        assert_eq!(c, pristine, "refusals change nothing");
        c.extend(10, &none, true, cal()).expect("consented");
        // 03-10 + 40 days = 04-19, a Sunday → Monday (民事诉讼法 Art 85).
        assert_eq!(
            (c.due_at, c.extended_by, c.extension_count),
            (eod(2026, 4, 20), 10, 1)
        );
        c.extend(20, &none, true, cal()).expect("up to the maximum");
        assert_eq!(
            (c.due_at, c.extended_by, c.extension_count),
            (eod(2026, 5, 9), 30, 2)
        );
        assert_eq!(
            c.extend(1, &none, true, cal()),
            Err(ClockError::ExtensionTooLong {
                requested: 1,
                already: 30,
                max: 30
            })
        );

        // 民事诉讼法 Art 206: 15 days, + 10 with the court president's approval.
        let mut c = start(&confirmation_rule(), t(2026, 5, 6, 9, 0));
        assert_eq!(c.due_at, eod(2026, 5, 21));
        assert_eq!(
            c.extend(10, &roles(&["judge"]), true, cal()),
            Err(ClockError::WrongRole {
                role: "court_president".to_owned()
            }),
            "consent does not replace approval"
        );
        c.extend(10, &roles(&["judge", "court_president"]), false, cal())
            .expect("approved");
        // 05-06 + 25 = 05-31, a Sunday → Monday 06-01.
        assert_eq!(c.due_at, eod(2026, 6, 1));
        assert_eq!(
            c.extend(1, &roles(&["court_president"]), false, cal()),
            Err(ClockError::ExtensionTooLong {
                requested: 1,
                already: 10,
                max: 10
            })
        );
    }

    #[test]
    fn extensions_stop_at_the_hard_cap() {
        // No maximum extension (0), only a hard cap of 40 days.
        let rule = common::ClockRule {
            max_extension: 0,
            hard_cap: 40,
            ..mediation_rule()
        };
        let mut c = start(&rule, t(2026, 3, 10, 10, 0));
        assert_eq!(
            c.extend(11, &[], true, cal()),
            Err(ClockError::BeyondHardCap { hard_cap: 40 })
        );
        c.extend(4, &[], true, cal()).expect("within the cap");
        c.extend(6, &[], true, cal()).expect("up to the cap");
        assert_eq!(c.due_at, eod(2026, 4, 20));
        assert_eq!(c.hard_cap_at, Some(eod(2026, 4, 20)));
        assert_eq!(
            c.extend(1, &[], true, cal()),
            Err(ClockError::BeyondHardCap { hard_cap: 40 })
        );
        assert_eq!(c.extension_count, 2);
        // Neither a maximum nor a cap: anything up to MAX_UNITS.
        let open = common::ClockRule {
            max_extension: 0,
            hard_cap: 0,
            ..mediation_rule()
        };
        let mut c = start(&open, t(2026, 3, 10, 10, 0));
        c.extend(335, &[], true, cal()).expect("no limit");
        assert_eq!(
            c.due_at,
            eod(2027, 3, 10),
            "365 days: 2027-03-10 is a Wednesday"
        );
        assert_eq!(
            c.extend(MAX_UNITS, &[], true, cal()),
            Err(ClockError::TooManyUnits {
                field: "length",
                max: MAX_UNITS
            })
        );
    }

    #[test]
    fn a_paused_clock_can_be_extended() {
        let mut c = start(&mediation_rule(), t(2026, 3, 10, 10, 0));
        c.pause(t(2026, 3, 20, 9, 0), "appraisal").expect("pause");
        c.extend(10, &[], true, cal()).expect("extend while paused");
        assert!(c.is_paused());
        assert_eq!(c.due_at, eod(2026, 4, 20));
        c.resume(t(2026, 3, 25, 9, 0), cal()).expect("resume");
        // 04-19 24:00 + 5 days = 04-24 24:00 (Friday).
        assert_eq!(c.due_at, eod(2026, 4, 24));
    }

    // -- expiry and stop ----------------------------------------------------

    #[test]
    fn is_due_table() {
        let from = t(2026, 3, 13, 10, 0);
        let due = eod(2026, 3, 18);
        let running = start(&three_working_days(), from);
        let mut paused = running.clone();
        paused
            .pause(t(2026, 3, 16, 9, 0), "appraisal")
            .expect("pause");
        let mut stopped = running.clone();
        stopped.stop(t(2026, 3, 16, 9, 0)).expect("stop");
        let mut expired = running.clone();
        expired.mark_expired(due).expect("expire");
        let cases = [
            ("running, before due", &running, due - 1, false),
            ("running, at due", &running, due, true),
            ("running, after due", &running, due + DAY, true),
            ("paused after due", &paused, due + DAY, false),
            ("stopped after due", &stopped, due + DAY, false),
            ("already expired", &expired, due + DAY, false),
        ];
        for (why, c, now, want) in cases {
            assert_eq!(c.is_due(now), want, "{why}");
        }
    }

    #[test]
    fn mark_expired_transitions() {
        let from = t(2026, 3, 13, 10, 0);
        let due = eod(2026, 3, 18);
        let mut c = start(&three_working_days(), from);
        assert_eq!(
            c.mark_expired(due - 1),
            Err(ClockError::NotDue { due_at: due })
        );
        let mut paused = c.clone();
        paused
            .pause(t(2026, 3, 16, 9, 0), "appraisal")
            .expect("pause");
        assert_eq!(paused.mark_expired(due + DAY), Err(ClockError::Paused));
        assert_eq!(c.mark_expired(due), Ok(ExpiryAction::Escalate));
        assert!(c.expired);
        assert_eq!(c.mark_expired(due + 1), Err(ClockError::Expired));
        assert_eq!(c.pause(due + 1, "appraisal"), Err(ClockError::Expired));
        assert_eq!(c.resume(due + 1, cal()), Err(ClockError::Expired));
        assert_eq!(c.remaining(due + HOUR), Some(-HOUR));
        // A late event still stops the clock; it stays expired.
        c.stop(due + DAY).expect("late stop");
        assert!(c.expired && c.is_stopped());

        // 民事诉讼法 Art 206 review, notify only.
        let mut review = start(&confirmation_rule(), t(2026, 5, 6, 9, 0));
        assert_eq!(
            review.mark_expired(eod(2026, 5, 21)),
            Ok(ExpiryAction::NotifyOnly)
        );
        assert_eq!(
            review.extend(10, &roles(&["court_president"]), false, cal()),
            Err(ClockError::Expired)
        );
    }

    #[test]
    fn stop_then_everything_is_refused() {
        let from = t(2026, 3, 10, 10, 0);
        let mut c = start(&mediation_rule(), from);
        assert_eq!(
            c.stop(from - 1),
            Err(ClockError::InvalidTime { at: from - 1 })
        );
        c.stop(t(2026, 3, 20, 9, 0)).expect("accepted in time");
        assert!(!c.expired);
        assert_eq!(c.stopped_at, Some(t(2026, 3, 20, 9, 0)));
        let now = t(2026, 3, 21, 9, 0);
        assert_eq!(c.pause(now, "appraisal"), Err(ClockError::Stopped));
        assert_eq!(c.resume(now, cal()), Err(ClockError::Stopped));
        assert_eq!(c.extend(1, &[], true, cal()), Err(ClockError::Stopped));
        assert_eq!(c.stop(now), Err(ClockError::Stopped));
        assert_eq!(c.mark_expired(eod(2026, 4, 9)), Err(ClockError::Stopped));
        assert!(!c.is_due(eod(2026, 5, 1)));
        assert_eq!(c.remaining(now), None);
    }

    #[test]
    fn stop_late_or_while_paused() {
        let from = t(2026, 3, 13, 10, 0);
        let due = eod(2026, 3, 18);
        // Stopped at the deadline before the sweep ran: expired (逾期).
        let mut late = start(&three_working_days(), from);
        late.stop(due).expect("stop");
        assert!(late.expired);
        // Stopped while paused: the pause ends, its time counts as paused.
        let mut paused = start(&three_working_days(), from);
        paused
            .pause(t(2026, 3, 16, 9, 0), "appraisal")
            .expect("pause");
        assert_eq!(
            paused.stop(t(2026, 3, 16, 8, 0)),
            Err(ClockError::InvalidTime {
                at: t(2026, 3, 16, 8, 0)
            })
        );
        paused.stop(due + DAY).expect("stop");
        assert!(!paused.expired && !paused.is_paused() && paused.pause_reason.is_none());
        assert_eq!(paused.total_paused_micros, due + DAY - t(2026, 3, 16, 9, 0));
    }

    #[test]
    fn remaining_runs_and_freezes() {
        let from = t(2026, 3, 10, 10, 0);
        let mut c = start(&hour_rule(24), from);
        assert_eq!(c.remaining(from), Some(24 * HOUR));
        assert_eq!(c.remaining(from + 20 * HOUR), Some(4 * HOUR));
        c.pause(from + 2 * HOUR, "supplementary_investigation")
            .expect("pause");
        assert_eq!(
            c.remaining(from + 100 * HOUR),
            Some(22 * HOUR),
            "frozen while paused"
        );
        assert_eq!(
            c.projected_due_at(from + 5 * HOUR, cal()),
            Ok(from + 27 * HOUR)
        );
        c.resume(from + 5 * HOUR, cal()).expect("resume");
        assert_eq!(c.remaining(from + 5 * HOUR), Some(22 * HOUR));
        assert_eq!(c.projected_due_at(from + 50 * HOUR, cal()), Ok(c.due_at));
    }

    // -- conversions --------------------------------------------------------

    #[test]
    fn proto_conversion() {
        let from = t(2026, 3, 10, 10, 0);
        let mut c = start(&mediation_rule(), from);
        c.extend(5, &[], true, cal()).expect("extend");
        let s = c.to_proto();
        assert_eq!(s.name, "feedback");
        assert_eq!(s.unit, common::ClockUnit::CalendarDay as i32);
        assert_eq!(s.length, 30);
        assert_eq!(s.started_at, Some(to_timestamp(from)));
        assert_eq!(s.due_at, Some(to_timestamp(eod(2026, 4, 14))));
        assert!(!s.paused && s.pause_reason.is_empty() && s.paused_at.is_none());
        assert_eq!(
            s.total_paused,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 0
            })
        );
        assert_eq!((s.extended_by, s.extension_count), (5, 1));
        assert_eq!(s.hard_cap_at, Some(to_timestamp(eod(2026, 5, 9))));
        assert_eq!(
            s.expiry_action,
            common::ClockExpiryAction::ReturnToSender as i32
        );
        assert!(s.stopped_at.is_none() && !s.expired);

        let pause_at = t(2026, 3, 20, 9, 0);
        c.pause(pause_at, "appraisal").expect("pause");
        let s = c.to_proto();
        assert!(s.paused);
        assert_eq!(s.pause_reason, "appraisal");
        assert_eq!(s.paused_at, Some(to_timestamp(pause_at)));
        // "While paused it is the deadline that would apply if the clock resumed now."
        let s = c.to_proto_at(pause_at + 2 * DAY, cal()).expect("projects");
        assert_eq!(s.due_at, Some(to_timestamp(eod(2026, 4, 16))));
        assert_eq!(s.hard_cap_at, Some(to_timestamp(eod(2026, 5, 11))));
        assert_eq!(s.total_paused, Some(to_duration(2 * DAY)));
        assert_eq!(c.to_proto_at(pause_at, cal()), Ok(c.to_proto()));

        c.stop(pause_at + DAY).expect("stop");
        let s = c.to_proto();
        assert_eq!(s.stopped_at, Some(to_timestamp(pause_at + DAY)));
        assert!(!s.paused);
        assert_eq!(
            s.total_paused,
            Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0
            })
        );

        let three = start(&three_working_days(), from).to_proto();
        assert_eq!(three.unit, common::ClockUnit::WorkingDay as i32);
        assert_eq!(
            three.expiry_action,
            common::ClockExpiryAction::Escalate as i32
        );
        assert_eq!(three.hard_cap_at, None);
        assert_eq!(
            start(&hour_rule(1), from).to_proto().unit,
            common::ClockUnit::Hour as i32
        );
    }

    #[test]
    fn duration_conversion() {
        let cases = [
            (0, 0, 0),
            (1, 0, 1_000),
            (1_500_000, 1, 500_000_000),
            (-1_500_000, -1, -500_000_000),
            (-1, 0, -1_000),
        ];
        for (micros, seconds, nanos) in cases {
            assert_eq!(
                to_duration(micros),
                prost_types::Duration { seconds, nanos },
                "{micros}"
            );
        }
    }

    #[test]
    fn stored_as_json() {
        let mut c = start(&mediation_rule(), t(2026, 3, 10, 10, 0));
        c.pause(t(2026, 3, 20, 9, 0), "appraisal").expect("pause");
        let json = serde_json::to_string(&c).expect("serialises");
        assert!(json.contains("\"unit\":\"calendar_day\""), "{json}");
        let back: Clock = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, c);
    }

    #[test]
    fn errors_map_to_status_codes() {
        use tonic::Code;
        let cases = [
            (
                ClockError::ReasonNotPausable {
                    reason: "x".to_owned(),
                },
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                ClockError::ZeroExtension,
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                ClockError::WrongRole {
                    role: "court_president".to_owned(),
                },
                Code::PermissionDenied,
                "CLOCK_APPROVER_ROLE_REQUIRED",
            ),
            (
                ClockError::Stopped,
                Code::FailedPrecondition,
                "CLOCK_STOPPED",
            ),
            (
                ClockError::Expired,
                Code::FailedPrecondition,
                "CLOCK_EXPIRED",
            ),
            (
                ClockError::AlreadyPaused,
                Code::FailedPrecondition,
                "CLOCK_ALREADY_PAUSED",
            ),
            (
                ClockError::NotPaused,
                Code::FailedPrecondition,
                "CLOCK_NOT_PAUSED",
            ),
            (
                ClockError::NotExtendable,
                Code::FailedPrecondition,
                "CLOCK_NOT_EXTENDABLE",
            ),
            (
                ClockError::PartyConsentRequired,
                Code::FailedPrecondition,
                "CLOCK_PARTY_CONSENT_REQUIRED",
            ),
            (
                ClockError::ExtensionTooLong {
                    requested: 1,
                    already: 1,
                    max: 1,
                },
                Code::FailedPrecondition,
                "CLOCK_EXTENSION_TOO_LONG",
            ),
            (
                ClockError::BeyondHardCap { hard_cap: 1 },
                Code::FailedPrecondition,
                "CLOCK_BEYOND_HARD_CAP",
            ),
            (ClockError::OutOfRange, Code::Internal, "CLOCK_OUT_OF_RANGE"),
        ];
        for (e, code, reason) in cases {
            let api = e.api();
            assert_eq!((api.code(), api.reason.as_str()), (code, reason), "{e:?}");
        }
        // The pause reason code is input: it is not echoed.
        let e = ClockError::ReasonNotPausable {
            reason: "张三 13800000000".to_owned(),
        };
        assert!(!e.to_string().contains("13800000000"));
        assert!(!e.api().message.contains("13800000000"));
    }
}
