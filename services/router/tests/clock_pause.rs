//! The pause rule (#9 §2, `fengqiao_clock` module docs) through `PauseClock` / `ResumeClock`,
//! on SQLite and PostgreSQL: a pause within one CST day moves neither the deadline nor the hard
//! cap; a pause over several days moves both by the whole days it excludes.
//!
//! Time is the database's, so a multi-day pause is made the way `crates/cli/tests/sigkill.rs`
//! makes clocks due: the stored clock JSON is shifted into the past (start, deadline, cap and
//! the pause's beginning three days earlier) between the two calls.

use fengqiao_proto::common::ClockState;
use fengqiao_proto::router::*;
use fengqiao_router::clock::{ClockUnit, HolidayCalendar, add_duration};
use fengqiao_router::time::from_timestamp;
use fengqiao_store::sqlx;
use fengqiao_testkit::answers::{Answer as _, Change};
use fengqiao_testkit::services::{
    ROOM, TransferClient as Client, approved, neighbours, police_transfer, store_of, transfers,
};
use fengqiao_testkit::{ServiceName, TestSuite, suite_test};

const DAY: i64 = 86_400_000_000;
const CST: i64 = 8 * 3_600_000_000;
/// The route's feedback clock: 30 calendar days, hard cap 60 (deploy/routes).
const LENGTH: u32 = 30;
const HARD_CAP: u32 = 60;

fn transfer() -> Transfer {
    police_transfer(
        "楼上住户夜间噪音扰民，移送调解",
        neighbours(),
        vec![],
        "民间纠纷，建议调解",
    )
}

fn one(t: Option<Transfer>) -> Transfer {
    t.unwrap_or_else(|| panic!("reply without a transfer"))
}

/// A transfer on the 警调对接 route, accepted by the mediation room: its feedback clock runs.
async fn in_progress(suite: &TestSuite) -> (Transfer, Client) {
    let t = approved(suite, transfer()).await;
    let mut room = transfers(suite, ROOM, "mediator-01", &["mediator"]);
    let t = one(room
        .accept_transfer(AcceptTransferRequest {
            receiver_reference: "西岗调字〔2026〕009号".into(),
            ..Change::change(&t.name, "")
        })
        .await
        .answer("accept")
        .transfer);
    assert_eq!(t.state, TransferState::InProgress as i32);
    (t, room)
}

fn feedback(t: &Transfer) -> ClockState {
    t.feedback_clock
        .clone()
        .unwrap_or_else(|| panic!("no feedback clock"))
}

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    from_timestamp(ts.as_ref().unwrap_or_else(|| panic!("timestamp missing")))
}

fn paused_micros(c: &ClockState) -> i64 {
    let d = c
        .total_paused
        .as_ref()
        .unwrap_or_else(|| panic!("total_paused missing"));
    d.seconds * 1_000_000 + i64::from(d.nanos) / 1000
}

/// CST day number of an instant.
fn cst_day(micros: i64) -> i64 {
    (micros + CST).div_euclid(DAY)
}

async fn pause(room: &mut Client, t: &Transfer) -> Transfer {
    one(room
        .pause_clock(PauseClockRequest {
            clock: TransferClock::Feedback as i32,
            reason_code: "supplementary_investigation".into(),
            reason: "补充调取监控".into(),
            ..Change::change(&t.name, "")
        })
        .await
        .answer("pause")
        .transfer)
}

async fn resume(room: &mut Client, t: &Transfer) -> Transfer {
    one(room
        .resume_clock(ResumeClockRequest {
            clock: TransferClock::Feedback as i32,
            ..Change::change(&t.name, "")
        })
        .await
        .answer("resume")
        .transfer)
}

/// The deadline and hard cap the rule gives for `excluded` whole days: the period counted from
/// the start with that many more days, the holiday roll-over once on the result.
fn expected(started: i64, excluded: u32) -> (i64, i64) {
    let cal = HolidayCalendar::builtin();
    (
        add_duration(started, ClockUnit::CalendarDay, LENGTH + excluded, cal),
        add_duration(started, ClockUnit::CalendarDay, HARD_CAP + excluded, cal),
    )
}

suite_test!(a_short_pause_moves_nothing, |suite| async move {
    let (t, mut room) = in_progress(&suite).await;
    let before = feedback(&t);
    let started = micros(&before.started_at);
    assert_eq!(
        (micros(&before.due_at), micros(&before.hard_cap_at)),
        expected(started, 0)
    );
    let t = pause(&mut room, &t).await;
    let paused = feedback(&t);
    assert!(paused.paused);
    let paused_at = micros(&paused.paused_at);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let t = resume(&mut room, &t).await;
    let after = feedback(&t);
    assert!(!after.paused);
    let total = paused_micros(&after);
    assert!(total > 0, "the pause took time");
    // Within one CST day (as good as always): nothing excluded. Across CST midnight the new
    // day is excluded: one day.
    let excluded = u32::try_from(cst_day(paused_at + total - 1) - cst_day(paused_at))
        .unwrap_or_else(|_| panic!("resume before the pause"));
    let (due, cap) = expected(started, excluded);
    assert_eq!(micros(&after.due_at), due, "deadline");
    assert_eq!(micros(&after.hard_cap_at), cap, "hard cap");
    if excluded == 0 {
        assert_eq!(after.due_at, before.due_at);
        assert_eq!(after.hard_cap_at, before.hard_cap_at);
    }
});

suite_test!(
    a_pause_over_three_days_moves_both_by_three,
    |suite| async move {
        let (t, mut room) = in_progress(&suite).await;
        let t = pause(&mut room, &t).await;
        let paused = feedback(&t);
        let started = micros(&paused.started_at);
        let paused_at = micros(&paused.paused_at);

        // Everything three days earlier: the clock started, and the pause began, on day D - 3.
        let store = store_of(&suite, ServiceName::Router).await;
        let id = t.name.trim_start_matches("transfers/").to_string();
        let json: String = sqlx::query_scalar("SELECT feedback_clock FROM transfers WHERE id = $1")
            .bind(&id)
            .fetch_one(store.pool())
            .await
            .unwrap_or_else(|e| panic!("read clock: {e}"));
        let mut clock: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("clock JSON: {e}"));
        for field in ["started_at", "due_at", "hard_cap_at", "paused_at"] {
            let v = clock[field]
                .as_i64()
                .unwrap_or_else(|| panic!("{field} is not a number"));
            clock[field] = serde_json::Value::from(v - 3 * DAY);
        }
        sqlx::query("UPDATE transfers SET feedback_clock = $1 WHERE id = $2")
            .bind(clock.to_string())
            .bind(&id)
            .execute(store.pool())
            .await
            .unwrap_or_else(|e| panic!("shift clock: {e}"));
        store.close().await;
        let (started, paused_at) = (started - 3 * DAY, paused_at - 3 * DAY);

        let t = resume(&mut room, &t).await;
        let after = feedback(&t);
        let resumed_at = paused_at + paused_micros(&after);
        // Days after D - 3 through the day of the resume: 3 (4 if the calls straddled midnight).
        let excluded = cst_day(resumed_at - 1) - cst_day(paused_at);
        assert!((3..=4).contains(&excluded), "{excluded}");
        let (due, cap) = expected(started, u32::try_from(excluded).unwrap_or(0));
        assert_eq!(micros(&after.started_at), started);
        assert_eq!(micros(&after.due_at), due, "deadline +{excluded} days");
        assert_eq!(micros(&after.hard_cap_at), cap, "hard cap +{excluded} days");
        assert!(micros(&after.due_at) <= micros(&after.hard_cap_at));
    }
);
