//! Everything a route says is what happens (issue #9 §1), on SQLite and PostgreSQL: codes are
//! checked against the transfer's pinned route version, escalation needs the route's
//! escalation reasons, every clock's expiry action is carried out, hand-backs say why from the
//! route, and offers carry the pinned route.

use std::sync::Arc;

use fengqiao_kit::Identity;
use fengqiao_kit::auth::AuthMethod;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{AgencyRef, DisputeCategory, Party, PartyRole};
use fengqiao_proto::inbox::{Envelope, MessageKind};
use fengqiao_proto::router::transfer_service_server::TransferService;
use fengqiao_proto::router::*;
use fengqiao_router::Agencies;
use fengqiao_router::agencies::SeedFile;
use fengqiao_router::clock::HolidayCalendar;
use fengqiao_router::routes::{BUILTIN_FILES, RouteCatalog};
use fengqiao_router::transfers::Transfers;
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::{Answer as _, Named, Refusal as _};
use prost::Message as _;
use tonic::{Code, Request};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const STATION: &str = "agencies/xigang-bayilu-station";
const COMMAND: &str = "agencies/xigang-110";
const ROOM: &str = "agencies/xigang-bayilu-mediation-room";
const COURT: &str = "agencies/xigang-court";
const COMMITTEE: &str = "agencies/xigang-mediation-committee";

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

/// The built-in routes without the given files (e.g. only the v1 versions).
fn catalog_without(skip: &[&str]) -> Arc<RouteCatalog> {
    let files = BUILTIN_FILES
        .iter()
        .copied()
        .filter(|(n, _)| !skip.contains(n));
    Arc::new(RouteCatalog::from_files(files).expect("routes"))
}

/// The built-in routes plus a court route whose feedback clock escalates on expiry.
fn catalog_with_escalating_court_route() -> Arc<RouteCatalog> {
    let (_, court) = BUILTIN_FILES
        .iter()
        .copied()
        .find(|(n, _)| *n == "court-to-invited-mediation.v1.toml")
        .expect("court route");
    let text = court
        .replace(
            "id = \"court-to-invited-mediation\"",
            "id = \"test-court-escalating\"",
        )
        .replace(
            "hard_cap = 60\nexpiry_action = \"return_to_sender\"",
            "hard_cap = 60\nexpiry_action = \"escalate\"",
        );
    assert!(text.contains("expiry_action = \"escalate\""));
    let extra =
        RouteCatalog::from_files([("test-court-escalating.v1.toml", text)]).expect("test route");
    Arc::new(
        RouteCatalog::builtin()
            .expect("builtin")
            .merge(extra)
            .expect("merged"),
    )
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

/// Audit actions recorded as allowed on one transfer.
async fn allowed_actions(store: &Store, name: &str) -> Vec<String> {
    sqlx::query("SELECT action FROM audit_records WHERE resource = $1 AND outcome = 'allowed'")
        .bind(name)
        .fetch_all(store.pool())
        .await
        .expect("audit")
        .iter()
        .map(|r| r.try_get::<String, _>("action").expect("action"))
        .collect()
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

/// Moves the feedback clock's deadline into the past, as time passing would.
async fn make_feedback_due(store: &Store, name: &str) -> TestResult {
    make_due(store, name, "feedback_clock").await
}

/// Moves the deadline of the clock in `column` into the past.
async fn make_due(store: &Store, name: &str, column: &str) -> TestResult {
    let row = sqlx::query(&format!("SELECT {column} FROM transfers WHERE id = $1"))
        .bind(id_of(name))
        .fetch_one(store.pool())
        .await?;
    let text: String = row.try_get(column)?;
    let mut clock: serde_json::Value = serde_json::from_str(&text)?;
    clock["due_at"] = serde_json::json!(1_000_000);
    sqlx::query(&format!(
        "UPDATE transfers SET {column} = $1, next_due = $2 WHERE id = $3"
    ))
    .bind(clock.to_string())
    .bind(1_000_000_i64)
    .bind(id_of(name))
    .execute(store.pool())
    .await?;
    Ok(())
}

both_backends!(
    escalation_codes_come_from_the_pinned_route,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        let tr = police_in_progress(&t, &c).await;
        assert_eq!(tr.route_version, 2);

        // A code the route does not list: INVALID_ARGUMENT naming the field, nothing stored.
        let before_events = event_types(&store, &tr.name).await;
        let err = t
            .escalate_transfer(req(
                &c.room,
                EscalateTransferRequest {
                    reason_code: "bogus_code".into(),
                    reason: "双方情绪激动".into(),
                    ..Named::named(&tr.name)
                },
            ))
            .await
            .refusal(Code::InvalidArgument, "bogus code");
        assert_eq!(bad_fields_of(&err), ["reason_code"]);
        assert_eq!(
            state(&get(&t, &c.room, &tr.name).await),
            TransferState::InProgress
        );
        assert_eq!(event_types(&store, &tr.name).await, before_events);
        assert!(
            !allowed_actions(&store, &tr.name)
                .await
                .iter()
                .any(|a| a == "transfer.escalated"),
            "nothing audited as allowed"
        );
        // A return reason is not an escalation reason.
        t.escalate_transfer(req(
            &c.room,
            EscalateTransferRequest {
                reason_code: "not_civil_dispute".into(),
                reason: "不属于民间纠纷".into(),
                ..Named::named(&tr.name)
            },
        ))
        .await
        .refusal(Code::InvalidArgument, "return reason");

        // The route's code: ESCALATED, the hand-back described from the route.
        let done = t
            .escalate_transfer(req(
                &c.room,
                EscalateTransferRequest {
                    reason_code: "risk_of_escalation".into(),
                    reason: "一方扬言报复".into(),
                    ..Named::named(&tr.name)
                },
            ))
            .await
            .answer_of("t", |r| r.transfer);
        assert_eq!(state(&done), TransferState::Escalated);
        let h = done.handback.expect("handback");
        assert!(h.escalation);
        assert_eq!(h.reason_code, "risk_of_escalation");
        assert!(
            h.reason_description.contains("人民调解法第二十五条"),
            "{h:?}"
        );
        assert!(
            allowed_actions(&store, &tr.name)
                .await
                .iter()
                .any(|a| a == "transfer.escalated")
        );
        // Reported to the sending agency.
        assert!(envelopes(&store, &tr.name).await.iter().any(|(e, _)| {
            e.kind == MessageKind::TransferEscalated as i32 && e.to_agency == STATION
        }));
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    a_route_without_escalation_reasons_refuses_escalation,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        // Created while v1 was current: pinned to v1, which lists no escalation reasons.
        let old = transfers(
            &store,
            catalog_without(&[
                "police-to-station-mediation.v2.toml",
                "court-to-invited-mediation.v2.toml",
            ]),
        );
        let tr = police_in_progress(&old, &c).await;
        assert_eq!(tr.route_version, 1);
        // v2 is published since; the transfer still reads v1.
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        let err = t
            .escalate_transfer(req(
                &c.room,
                EscalateTransferRequest {
                    reason_code: "risk_of_escalation".into(),
                    reason: "一方扬言报复".into(),
                    ..Named::named(&tr.name)
                },
            ))
            .await
            .refusal(Code::FailedPrecondition, "v1 has no escalation reasons");
        assert_eq!(reason_of(&err).as_deref(), Some("ESCALATION_NOT_ALLOWED"));
        assert_eq!(
            state(&get(&t, &c.room, &tr.name).await),
            TransferState::InProgress
        );

        // Feedback outcomes are v1's too: "escalated" is a v1 outcome that v2 dropped.
        let fed = t
            .submit_feedback(req(
                &c.room,
                SubmitFeedbackRequest {
                    outcome_code: "escalated".into(),
                    summary: "已报告派出所".into(),
                    ..Named::named(&tr.name)
                },
            ))
            .await
            .answer_of("t", |r| r.transfer);
        assert_eq!(state(&fed), TransferState::FeedbackSubmitted);
        // …while a transfer pinned to v2 may not use it.
        let tr2 = police_in_progress(&t, &c).await;
        assert_eq!(tr2.route_version, 2);
        let err = t
            .submit_feedback(req(
                &c.room,
                SubmitFeedbackRequest {
                    outcome_code: "escalated".into(),
                    summary: "已报告派出所".into(),
                    ..Named::named(&tr2.name)
                },
            ))
            .await
            .refusal(Code::InvalidArgument, "not a v2 outcome");
        assert_eq!(bad_fields_of(&err), ["outcome_code"]);
        // Return reasons likewise: v1 lists risk_of_escalation, v2 does not.
        t.return_transfer(req(
            &c.room,
            ReturnTransferRequest {
                reason_code: "risk_of_escalation".into(),
                reason: "可能激化".into(),
                ..Named::named(&tr2.name)
            },
        ))
        .await
        .refusal(Code::InvalidArgument, "not a v2 return reason");
        let tr3 = police_in_progress(&old, &c).await;
        let back = t
            .return_transfer(req(
                &c.room,
                ReturnTransferRequest {
                    reason_code: "risk_of_escalation".into(),
                    reason: "可能激化".into(),
                    ..Named::named(&tr3.name)
                },
            ))
            .await
            .answer_of("t", |r| r.transfer);
        assert_eq!(state(&back), TransferState::Returned);
        assert!(
            !back
                .handback
                .expect("handback")
                .reason_description
                .is_empty()
        );
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(offers_carry_the_pinned_route, |store: Store| async move {
    setup(&store).await?;
    let c = cast();
    let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
    let tr = court_in_progress(&t, &c, "court-to-invited-mediation").await;
    let all = envelopes(&store, &tr.name).await;
    let offers: Vec<_> = all
        .iter()
        .filter(|(e, _)| e.kind == MessageKind::TransferOffered as i32)
        .collect();
    assert!(offers.iter().any(|(e, _)| e.to_agency == COMMITTEE));
    for (_, m) in &offers {
        let r = m.route.as_ref().expect("the offer carries the route");
        assert_eq!(
            (r.name.as_str(), r.version),
            ("routes/court-to-invited-mediation", 3)
        );
        assert!(
            r.feedback_outcomes
                .iter()
                .any(|o| o.code == "party_unreachable")
        );
    }
    // Only offers carry it.
    assert!(
        all.iter()
            .filter(|(e, _)| e.kind != MessageKind::TransferOffered as i32)
            .all(|(_, m)| m.route.is_none())
    );
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(
    the_feedback_clock_expiry_action_is_carried_out,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, catalog_with_escalating_court_route());

        // 特邀调解规定 Art 21: return_to_sender — the materials go back to the court.
        let court = court_in_progress(&t, &c, "court-to-invited-mediation").await;
        // notify_only on the police route: marked overdue, nothing else.
        let police = police_in_progress(&t, &c).await;
        // escalate (test route).
        let esc = court_in_progress(&t, &c, "test-court-escalating").await;
        for name in [&court.name, &police.name, &esc.name] {
            make_feedback_due(&store, name).await?;
        }
        assert_eq!(t.fire_due(100).await?, 3);
        // Each fires once.
        assert_eq!(t.fire_due(100).await?, 0);

        let got = get(&t, &c.court, &court.name).await;
        assert_eq!(state(&got), TransferState::Expired);
        assert!(got.overdue);
        let h = got.handback.expect("expiry hand-back");
        assert!(!h.escalation);
        assert_eq!(h.reason_code, "FEEDBACK_DEADLINE_MISSED");
        assert!(
            h.reason_description.starts_with("诉调对接") && h.reason_description.contains("退回"),
            "{}",
            h.reason_description
        );
        let kinds: Vec<(i32, String)> = envelopes(&store, &court.name)
            .await
            .into_iter()
            .map(|(e, _)| (e.kind, e.to_agency))
            .collect();
        for to in [COURT, COMMITTEE] {
            assert!(
                kinds.contains(&(MessageKind::TransferExpired as i32, to.to_string())),
                "{to} is told: {kinds:?}"
            );
        }
        // Nothing can be done on it any more.
        t.submit_feedback(req(
            &c.committee,
            SubmitFeedbackRequest {
                outcome_code: "agreement_reached".into(),
                summary: "迟到的反馈".into(),
                ..Named::named(&court.name)
            },
        ))
        .await
        .refusal(Code::FailedPrecondition, "expired");

        let got = get(&t, &c.officer, &police.name).await;
        assert_eq!(state(&got), TransferState::InProgress);
        assert!(got.overdue && got.handback.is_none());
        assert!(
            event_types(&store, &police.name)
                .await
                .contains(&(TransferEventType::DeadlineMissed as i32 as i64))
        );

        let got = get(&t, &c.court, &esc.name).await;
        assert_eq!(state(&got), TransferState::Escalated);
        let h = got.handback.expect("expiry hand-back");
        assert!(
            h.escalation && h.reason_description.contains("上报"),
            "{h:?}"
        );
        assert!(envelopes(&store, &esc.name).await.iter().any(|(e, _)| {
            e.kind == MessageKind::TransferEscalated as i32 && e.to_agency == COURT
        }));
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    an_acceptance_expiry_hands_the_case_back_with_a_reason,
    |store: Store| async move {
        setup(&store).await?;
        let c = cast();
        let t = transfers(&store, Arc::new(RouteCatalog::builtin()?));
        // 在线调解规则: an offer nobody answers within 3 working days goes back to the court.
        let d = create(&t, &c.court, "court-to-invited-mediation", COMMITTEE).await;
        t.submit_transfer(req(&c.court, SubmitTransferRequest::named(&d.name)))
            .await?;
        // The acceptance clock starts on delivery (送达).
        let mut tx = store.write().await?;
        t.note_delivered_in(&mut tx, &d.name, COMMITTEE).await?;
        tx.commit().await?;
        make_due(&store, &d.name, "acceptance_clock").await?;
        assert_eq!(t.fire_due(100).await?, 1);
        let got = get(&t, &c.court, &d.name).await;
        assert_eq!(state(&got), TransferState::Expired);
        let h = got.handback.expect("expiry hand-back");
        assert!(!h.escalation);
        assert_eq!(h.reason_code, "ACCEPTANCE_DEADLINE_MISSED");
        assert!(h.reason_description.contains("受理期限"), "{h:?}");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);
