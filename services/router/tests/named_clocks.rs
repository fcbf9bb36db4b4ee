//! Named clocks on routes (issue #9 §1 "Named clocks"), on SQLite and PostgreSQL: 委派调解's
//! `contact_parties` (《人民法院在线调解规则》 Art 15: contact the parties within 3 working days
//! of accepting) starts on acceptance, stops when the receiver completes it or when the
//! transfer stops, and on expiry the timer returns the case to the court once.

use std::sync::Arc;

use fengqiao_kit::Identity;
use fengqiao_kit::auth::AuthMethod;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{AgencyRef, ClockUnit, DisputeCategory, Party, PartyRole};
use fengqiao_proto::inbox::{Envelope, MessageKind};
use fengqiao_proto::router::transfer_service_server::TransferService;
use fengqiao_proto::router::*;
use fengqiao_router::Agencies;
use fengqiao_router::agencies::SeedFile;
use fengqiao_router::clock::HolidayCalendar;
use fengqiao_router::routes::RouteCatalog;
use fengqiao_router::transfers::Transfers;
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::{Answer as _, Named};
use prost::Message as _;
use tonic::{Code, Request};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const STATION: &str = "agencies/xigang-bayilu-station";
const COMMAND: &str = "agencies/xigang-110";
const ROOM: &str = "agencies/xigang-bayilu-mediation-room";
const COURT: &str = "agencies/xigang-court";
const COMMITTEE: &str = "agencies/xigang-mediation-committee";
const CONTACT: &str = "contact_parties";

fn who(agency: &str, actor: &str, roles: &[&str]) -> Identity {
    Identity {
        agency: agency.into(),
        actor: actor.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        method: AuthMethod::Token,
        person: None,
    }
}

fn req<T>(as_: &Identity, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(as_.clone());
    r
}

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn setup(store: &Store) -> TestResult {
    fengqiao_router::migrate(store).await?;
    let seed: SeedFile = toml::from_str(include_str!("../../../deploy/dev/agencies.toml"))?;
    Agencies::new(store.clone())
        .seed(&seed, "http://127.0.0.1:9")
        .await?;
    Ok(())
}

fn transfers(store: &Store, routes: Arc<RouteCatalog>) -> Transfers {
    Transfers::new(
        store.clone(),
        routes,
        Arc::new(HolidayCalendar::builtin().clone()),
    )
}

fn snapshot() -> CaseSnapshot {
    CaseSnapshot {
        category: DisputeCategory::Neighbourhood as i32,
        summary: "邻里之间因漏水损失赔偿发生纠纷".into(),
        region_code: "210203".into(),
        parties: vec![
            Party {
                party_id: "p1".into(),
                role: PartyRole::Applicant as i32,
                ..Default::default()
            },
            Party {
                party_id: "p2".into(),
                role: PartyRole::Respondent as i32,
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn state(t: &Transfer) -> TransferState {
    TransferState::try_from(t.state).unwrap_or(TransferState::Unspecified)
}

struct Cast {
    officer: Identity,
    reviewer: Identity,
    chief: Identity,
    room: Identity,
    court: Identity,
    committee: Identity,
}

fn cast() -> Cast {
    Cast {
        officer: who(STATION, "officer-01", &["officer"]),
        reviewer: who(COMMAND, "reviewer-01", &["command_room_reviewer"]),
        chief: who(STATION, "duty-chief-01", &["duty_chief"]),
        room: who(ROOM, "mediator-01", &["mediator"]),
        court: who(COURT, "judge-01", &["judge"]),
        committee: who(COMMITTEE, "director", &["mediation_admin", "mediator"]),
    }
}

async fn create(t: &Transfers, sender: &Identity, route: &str, to: &str) -> Transfer {
    t.create_transfer(req(
        sender,
        CreateTransferRequest {
            transfer: Some(Transfer {
                route: format!("routes/{route}"),
                to_agency: Some(AgencyRef {
                    name: to.into(),
                    ..Default::default()
                }),
                case_snapshot: Some(snapshot()),
                ..Default::default()
            }),
            request_id: rid(),
            submit: false,
        },
    ))
    .await
    .answer_of("create", |r| r.transfer)
}

async fn accept(t: &Transfers, receiver: &Identity, name: &str) -> Transfer {
    t.accept_transfer(req(receiver, AcceptTransferRequest::named(name)))
        .await
        .answer_of("accept", |r| r.transfer)
}

/// A 警调对接 transfer driven to IN_PROGRESS on whatever route version is current in `t`.
async fn police_in_progress(t: &Transfers, c: &Cast) -> Transfer {
    let d = create(t, &c.officer, "police-to-station-mediation", ROOM).await;
    t.submit_transfer(req(&c.officer, SubmitTransferRequest::named(&d.name)))
        .await
        .expect("submit");
    for (step, approver) in [(0, &c.reviewer), (1, &c.chief)] {
        t.approve_transfer(req(
            approver,
            ApproveTransferRequest {
                step_index: step,
                ..Named::named(&d.name)
            },
        ))
        .await
        .expect("approve");
    }
    accept(t, &c.room, &d.name).await
}

/// A 委派调解 transfer (no approval steps: approved on submission) driven to IN_PROGRESS.
async fn court_in_progress(t: &Transfers, c: &Cast, route: &str) -> Transfer {
    let d = create(t, &c.court, route, COMMITTEE).await;
    let s = t
        .submit_transfer(req(&c.court, SubmitTransferRequest::named(&d.name)))
        .await
        .answer_of("submit", |r| r.transfer);
    assert_eq!(state(&s), TransferState::Approved);
    accept(t, &c.committee, &d.name).await
}

async fn get(t: &Transfers, as_: &Identity, name: &str) -> Transfer {
    t.get_transfer(req(as_, GetTransferRequest { name: name.into() }))
        .await
        .answer_of("get", |r| r.transfer)
}

fn id_of(name: &str) -> String {
    name.trim_start_matches("transfers/").to_string()
}

async fn event_types(store: &Store, name: &str) -> Vec<i64> {
    sqlx::query("SELECT event_type FROM transfer_events WHERE transfer_id = $1 ORDER BY seq")
        .bind(id_of(name))
        .fetch_all(store.pool())
        .await
        .expect("events")
        .iter()
        .map(|r| r.try_get::<i64, _>("event_type").expect("type"))
        .collect()
}

/// The envelopes queued for one transfer, decoded.
async fn envelopes(store: &Store, name: &str) -> Vec<(Envelope, TransferMessage)> {
    let rows = sqlx::query("SELECT payload FROM outbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .expect("outbox");
    rows.iter()
        .filter_map(|r| {
            let b: Vec<u8> = r.try_get("payload").ok()?;
            let b = fengqiao_store::seal::open("outbox.payload", &b).expect("sealed payload");
            let e = Envelope::decode(b.as_slice()).ok()?;
            let m = TransferMessage::decode(e.payload.as_slice()).ok()?;
            (e.transfer == name).then_some((e, m))
        })
        .collect()
}

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

fn named<'a>(t: &'a Transfer, name: &str) -> Option<&'a fengqiao_proto::common::ClockState> {
    t.clocks
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.state.as_ref())
}

fn complete_req(name: &str, clock: &str) -> CompleteClockRequest {
    CompleteClockRequest {
        clock: clock.into(),
        comment: "已电话联系双方当事人".into(),
        ..Named::named(name)
    }
}

/// Moves the deadline of the named clock `clock` into the past, as time passing would.
async fn make_named_due(store: &Store, name: &str, clock: &str) -> TestResult {
    let row = sqlx::query("SELECT named_clocks FROM transfers WHERE id = $1")
        .bind(id_of(name))
        .fetch_one(store.pool())
        .await?;
    let text: String = row.try_get("named_clocks")?;
    let mut clocks: serde_json::Value = serde_json::from_str(&text)?;
    let mut moved = false;
    for c in clocks
        .as_array_mut()
        .ok_or("named_clocks is not an array")?
    {
        if c["name"] == clock {
            c["due_at"] = serde_json::json!(1_000_000);
            moved = true;
        }
    }
    assert!(moved, "{clock} is stored");
    sqlx::query("UPDATE transfers SET named_clocks = $1, next_due = $2 WHERE id = $3")
        .bind(clocks.to_string())
        .bind(1_000_000_i64)
        .bind(id_of(name))
        .execute(store.pool())
        .await?;
    Ok(())
}

both_backends!(
    contact_parties_starts_on_acceptance_and_completes_once,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        let tr = court_in_progress(&t, &c, "court-to-invited-mediation").await;
        assert_eq!(tr.route_version, 3);

        // 在线调解规则 Art 15: running from acceptance, due 3 working days later.
        let k = named(&tr, CONTACT).expect("contact_parties started on acceptance");
        assert_eq!(tr.clocks.len(), 1);
        assert_eq!(k.unit, ClockUnit::WorkingDay as i32);
        assert_eq!(k.length, 3);
        assert!(k.stopped_at.is_none() && !k.expired);
        let started = micros(&k.started_at);
        let fb = tr.feedback_clock.as_ref().expect("feedback clock");
        assert_eq!(
            started,
            micros(&fb.started_at),
            "started with the acceptance"
        );
        let cal = HolidayCalendar::builtin();
        let expected = fengqiao_router::clock::add_duration(
            started,
            fengqiao_router::clock::ClockUnit::WorkingDay,
            3,
            cal,
        );
        assert_eq!(micros(&k.due_at), expected);
        assert!(micros(&k.due_at) - started >= 3 * 86_400_000_000);
        // It is part of the timer's index.
        let row = sqlx::query("SELECT next_due FROM transfers WHERE id = $1")
            .bind(id_of(&tr.name))
            .fetch_one(store.pool())
            .await?;
        let next_due: i64 = row.try_get("next_due")?;
        assert_eq!(next_due, expected.min(micros(&fb.due_at)));

        // Not the receiver's: the court may not complete it.
        let err = t
            .complete_clock(req(&c.court, complete_req(&tr.name, CONTACT)))
            .await
            .expect_err("sender");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        // A clock the route does not have, or a malformed name: INVALID_ARGUMENT naming it.
        for bad in ["no_such_clock", "Contact-Parties", "", "feedback"] {
            let err = t
                .complete_clock(req(&c.committee, complete_req(&tr.name, bad)))
                .await
                .expect_err(bad);
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
            assert_eq!(bad_fields_of(&err), ["clock"], "{bad}");
        }
        let before = event_types(&store, &tr.name).await;

        // The mediator contacted the parties: the clock stops, the state does not change.
        let done = t
            .complete_clock(req(&c.committee, complete_req(&tr.name, CONTACT)))
            .await
            .answer_of("transfer", |r| r.transfer);
        assert_eq!(state(&done), TransferState::InProgress);
        let k = named(&done, CONTACT).expect("clock");
        assert!(k.stopped_at.is_some() && !k.expired, "{k:?}");
        assert!(!done.overdue);
        let fb = done.feedback_clock.as_ref().expect("feedback");
        assert!(fb.stopped_at.is_none(), "the feedback clock runs on");
        let after = event_types(&store, &tr.name).await;
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(
            after.last().copied(),
            Some(TransferEventType::ClockCompleted as i64)
        );
        // The court's system learns of it.
        let told = envelopes(&store, &tr.name).await;
        assert!(told.iter().any(|(e, m)| e.to_agency == COURT
            && e.kind == MessageKind::TransferUpdated as i32
            && m.event.as_ref().map(|e| e.event_type)
                == Some(TransferEventType::ClockCompleted as i32)));
        // Stored: a fresh read shows it stopped, and the timer has nothing to fire for it.
        let read = get(&t, &c.court, &tr.name).await;
        assert!(named(&read, CONTACT).is_some_and(|k| k.stopped_at.is_some()));
        assert_eq!(t.fire_due(100).await?, 0);

        // Completing it again: FAILED_PRECONDITION, nothing stored.
        let err = t
            .complete_clock(req(&c.committee, complete_req(&tr.name, CONTACT)))
            .await
            .expect_err("twice");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(event_types(&store, &tr.name).await.len(), after.len());
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    missed_contact_returns_the_case_to_the_court_once,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        let tr = court_in_progress(&t, &c, "court-to-invited-mediation").await;
        make_named_due(&store, &tr.name, CONTACT).await?;

        // Once due, completing it is refused: the deadline is the rule.
        let err = t
            .complete_clock(req(&c.committee, complete_req(&tr.name, CONTACT)))
            .await
            .expect_err("late");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(reason_of(&err).as_deref(), Some("CLOCK_DEADLINE_PASSED"));

        // The timer carries out its expiry action exactly once: back to the court.
        assert_eq!(t.fire_due(100).await?, 1);
        assert_eq!(t.fire_due(100).await?, 0);
        let back = get(&t, &c.court, &tr.name).await;
        assert_eq!(state(&back), TransferState::Expired);
        assert!(back.overdue);
        let h = back.handback.as_ref().expect("handback");
        assert!(!h.escalation);
        assert_eq!(h.reason_code, "CLOCK_CONTACT_PARTIES_MISSED");
        assert!(
            h.reason_description.contains(CONTACT) && h.reason_description.contains("第十五条"),
            "{}",
            h.reason_description
        );
        let k = named(&back, CONTACT).expect("clock");
        assert!(k.expired, "{k:?}");
        // The feedback clock stopped with the transfer.
        let fb = back.feedback_clock.as_ref().expect("feedback");
        assert!(fb.stopped_at.is_some() && !fb.expired, "{fb:?}");
        let expired: Vec<_> = event_types(&store, &tr.name)
            .await
            .into_iter()
            .filter(|e| *e == TransferEventType::Expired as i64)
            .collect();
        assert_eq!(expired.len(), 1);
        // Both sides are told.
        let told = envelopes(&store, &tr.name).await;
        for to in [COURT, COMMITTEE] {
            assert!(
                told.iter().any(
                    |(e, _)| e.to_agency == to && e.kind == MessageKind::TransferExpired as i32
                ),
                "{to}"
            );
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    named_clocks_stop_with_the_transfer,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        let tr = court_in_progress(&t, &c, "court-to-invited-mediation").await;
        let fb = t
            .submit_feedback(req(
                &c.committee,
                SubmitFeedbackRequest {
                    outcome_code: "agreement_reached".into(),
                    summary: "双方达成调解协议".into(),
                    ..Named::named(&tr.name)
                },
            ))
            .await
            .answer_of("transfer", |r| r.transfer);
        assert_eq!(state(&fb), TransferState::FeedbackSubmitted);
        let k = named(&fb, CONTACT).expect("clock");
        assert!(k.stopped_at.is_some() && !k.expired, "{k:?}");
        // Nothing is left for the timer, and the clock cannot be completed any more.
        assert_eq!(t.fire_due(100).await?, 0);
        let err = t
            .complete_clock(req(&c.committee, complete_req(&tr.name, CONTACT)))
            .await
            .expect_err("after feedback");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

        // Returned: stopped as well.
        let tr2 = court_in_progress(&t, &c, "court-to-invited-mediation").await;
        let back = t
            .return_transfer(req(
                &c.committee,
                ReturnTransferRequest {
                    reason_code: "not_suitable_for_mediation".into(),
                    reason: "纠纷不宜调解".into(),
                    ..Named::named(&tr2.name)
                },
            ))
            .await
            .answer_of("transfer", |r| r.transfer);
        assert_eq!(state(&back), TransferState::Returned);
        assert!(named(&back, CONTACT).is_some_and(|k| k.stopped_at.is_some()));
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    the_police_route_has_no_named_clocks,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        let tr = police_in_progress(&t, &c).await;
        assert!(tr.clocks.is_empty(), "{:?}", tr.clocks);
        assert!(tr.feedback_clock.is_some());
        let row = sqlx::query("SELECT named_clocks FROM transfers WHERE id = $1")
            .bind(id_of(&tr.name))
            .fetch_one(store.pool())
            .await?;
        let stored: Option<String> = row.try_get("named_clocks")?;
        assert_eq!(stored, None);
        let err = t
            .complete_clock(req(&c.room, complete_req(&tr.name, CONTACT)))
            .await
            .expect_err("no such clock");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(bad_fields_of(&err), ["clock"]);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

/// The first sample of `name{labels}` in a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

// The router's work metrics (issue #15): transfers by state, overdue transfers by route (read
// from the database at scrape time), clock expiries by route and clock (counted by the timer).
both_backends!(
    work_metrics_count_states_overdue_transfers_and_expiries,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        let tr = court_in_progress(&t, &c, "court-to-invited-mediation").await;
        // A fresh registration reads the database at its first scrape.
        let scrape = || async {
            let m = fengqiao_kit::metrics::Metrics::new();
            fengqiao_router::metrics::register(&m, store.clone());
            m.refresh().await;
            m.encode()
        };
        let route = "routes/court-to-invited-mediation";
        let overdue = format!("fengqiao_transfers_overdue{{route=\"{route}\"}}");
        let expiries =
            format!("fengqiao_clock_expiries_total{{route=\"{route}\",clock=\"{CONTACT}\"}}");
        let text = scrape().await;
        assert_eq!(
            sample(&text, "fengqiao_transfers{state=\"in_progress\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "fengqiao_transfers{state=\"expired\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&text, &overdue), None, "{text}");
        let expired_before = sample(&text, &expiries).unwrap_or(0.0);

        // Its deadline passes: overdue while the timer has not yet carried out the expiry.
        make_named_due(&store, &tr.name, CONTACT).await?;
        let text = scrape().await;
        assert_eq!(sample(&text, &overdue), Some(1.0), "{text}");

        // The timer fires it: counted once; the transfer is EXPIRED (terminal), not overdue.
        assert_eq!(t.fire_due(100).await?, 1);
        let text = scrape().await;
        let expired_after = sample(&text, &expiries).unwrap_or(0.0);
        // Other tests of this binary may fire expiries on this route concurrently.
        assert!(expired_after >= expired_before + 1.0, "{text}");
        assert_eq!(sample(&text, &overdue), None, "{text}");
        assert_eq!(
            sample(&text, "fengqiao_transfers{state=\"expired\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "fengqiao_transfers{state=\"in_progress\"}"),
            Some(0.0)
        );
        TestResult::Ok(())
    }
);
