//! Every state change of a transfer reaches every party of it, on SQLite and PostgreSQL
//! (the router is the source of truth; agency records are reconciled from its messages):
//! the sender always, the approving agency once the transfer is or was awaiting its approval,
//! the receiver once the transfer has been offered and never before. Each party gets one
//! envelope per event, naming the route, its version and the party's side.
//!
//! Also the router's other rules of one truth: DELIVERED (送达) is recorded before an
//! acceptance that overtakes the receipt; the acceptance clock starts on delivery and its
//! deadline is enforced on the accepting path; every concurrent replay gets the first answer;
//! at most one open transfer per (case, route, sender); draft and submission in one change.
//!
//! The router runs without network or workers: calls go to the `TransferService`
//! implementation with a verified `Identity` in the request extensions, and the envelopes are
//! read back from the outbox.

use std::collections::BTreeMap;

use fengqiao_kit::Identity;
use fengqiao_kit::auth::AuthMethod;
use fengqiao_proto::common::{AgencyRef, DisputeCategory, Party, PartyRole};
use fengqiao_proto::inbox::{Envelope, MessageKind, RecipientSide};
use fengqiao_proto::router::transfer_service_server::TransferService;
use fengqiao_proto::router::*;
use fengqiao_router::agencies::SeedFile;
use fengqiao_router::transfers::Transfers;
use fengqiao_router::{Router, RouterOptions};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::Named;
use prost::Message as _;
use tonic::{Code, Request, Status};

type TestResult = std::result::Result<(), String>;

const ROUTE: &str = "routes/police-to-station-mediation";
const STATION: &str = "agencies/xigang-bayilu-station";
const COMMAND: &str = "agencies/xigang-110";
const ROOM: &str = "agencies/xigang-bayilu-mediation-room";

const SENDER: (&str, RecipientSide) = (STATION, RecipientSide::Sender);
const APPROVER: (&str, RecipientSide) = (COMMAND, RecipientSide::Approver);
const RECEIVER: (&str, RecipientSide) = (ROOM, RecipientSide::Receiver);

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

async fn router(store: &Store) -> Result<Router, String> {
    fengqiao_router::migrate(store).await.map_err(err)?;
    let seed: SeedFile =
        toml::from_str(include_str!("../../../deploy/dev/agencies.toml")).map_err(err)?;
    fengqiao_router::Agencies::new(store.clone())
        .seed(&seed, "http://127.0.0.1:1")
        .await
        .map_err(err)?;
    Router::new(store.clone(), RouterOptions::default()).map_err(err)
}

fn req<T>(agency: &str, actor: &str, role: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(Identity {
        agency: agency.into(),
        actor: actor.into(),
        roles: vec![role.into()],
        method: AuthMethod::Token,
        person: None,
    });
    r
}

fn officer<T>(msg: T) -> Request<T> {
    req(STATION, "officer-01", "officer", msg)
}

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn draft() -> Transfer {
    Transfer {
        route: ROUTE.into(),
        to_agency: Some(AgencyRef {
            name: ROOM.into(),
            ..Default::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            category: DisputeCategory::Neighbourhood as i32,
            summary: "楼上住户夜间噪音扰民，双方发生口角，移送调解".into(),
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
        }),
        ..Default::default()
    }
}

async fn create(r: &Router) -> Result<String, String> {
    let t = r
        .transfers
        .create_transfer(officer(CreateTransferRequest {
            transfer: Some(draft()),
            request_id: rid(),
            submit: false,
        }))
        .await
        .map_err(err)?
        .into_inner()
        .transfer
        .ok_or("no transfer")?;
    Ok(t.name)
}

async fn submit(r: &Router, name: &str) -> TestResult {
    r.transfers
        .submit_transfer(officer(SubmitTransferRequest::named(name)))
        .await
        .map_err(err)?;
    Ok(())
}

async fn approve_both(r: &Router, name: &str) -> TestResult {
    r.transfers
        .approve_transfer(req(
            COMMAND,
            "reviewer-01",
            "command_room_reviewer",
            ApproveTransferRequest {
                step_index: 0,
                ..Named::named(name)
            },
        ))
        .await
        .map_err(err)?;
    r.transfers
        .approve_transfer(req(
            STATION,
            "duty-chief-01",
            "duty_chief",
            ApproveTransferRequest {
                step_index: 1,
                ..Named::named(name)
            },
        ))
        .await
        .map_err(err)?;
    Ok(())
}

/// The receiver's push receipt of the offer, as the delivery hook records it.
async fn delivered(r: &Router, store: &Store, name: &str) -> TestResult {
    let mut tx = store.write().await.map_err(err)?;
    r.transfers
        .note_delivered_in(&mut tx, name, ROOM)
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    r.transfers.notify_watchers();
    Ok(())
}

fn room<T>(msg: T) -> Request<T> {
    req(ROOM, "mediator-01", "mediator", msg)
}

/// The envelopes of `transfer` in the outbox, in order.
async fn envelopes(store: &Store, transfer: &str) -> Result<Vec<Envelope>, String> {
    let rows = sqlx::query("SELECT payload FROM outbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let payload: Vec<u8> = row.try_get("payload").map_err(err)?;
        let payload = fengqiao_store::seal::open("outbox.payload", &payload).map_err(err)?;
        let e = Envelope::decode(payload.as_slice()).map_err(err)?;
        if e.transfer == transfer {
            out.push(e);
        }
    }
    Ok(out)
}

/// Event type and recipients (agency, side) of each event of `transfer`, by event sequence.
type Told = BTreeMap<u64, (TransferEventType, Vec<(String, RecipientSide)>)>;

async fn told(r: &Router, store: &Store, transfer: &str) -> Result<Told, String> {
    let mut out = Told::new();
    let events = r
        .transfers
        .events_after(COMMAND, 0, 1000)
        .await
        .map_err(err)?
        .1;
    for (_, e) in events.iter().filter(|(_, e)| e.transfer == transfer) {
        let t = TransferEventType::try_from(e.event_type).map_err(err)?;
        out.insert(e.sequence, (t, Vec::new()));
    }
    let station_events = r
        .transfers
        .events_after(STATION, 0, 1000)
        .await
        .map_err(err)?
        .1;
    for (_, e) in station_events
        .iter()
        .filter(|(_, e)| e.transfer == transfer)
    {
        let t = TransferEventType::try_from(e.event_type).map_err(err)?;
        out.entry(e.sequence).or_insert((t, Vec::new()));
    }
    for env in envelopes(store, transfer).await? {
        if env.route != ROUTE || env.route_version != 2 {
            return Err(format!(
                "envelope {} names route {:?} v{}",
                env.message_id, env.route, env.route_version
            ));
        }
        if env.kind == MessageKind::Unspecified as i32 {
            return Err(format!("envelope {} has no kind", env.message_id));
        }
        let msg = TransferMessage::decode(env.payload.as_slice()).map_err(err)?;
        let seq = msg
            .event
            .map(|e| e.sequence)
            .ok_or("envelope without event")?;
        let side = RecipientSide::try_from(env.recipient_side).map_err(err)?;
        out.get_mut(&seq)
            .ok_or_else(|| format!("envelope for unknown event {seq}"))?
            .1
            .push((env.to_agency, side));
    }
    Ok(out)
}

/// Checks that the events of `transfer`, in order, have exactly the expected types and that
/// each reached exactly the expected parties, once each.
fn check(told: &Told, expected: &[(TransferEventType, &[(&str, RecipientSide)])]) -> TestResult {
    let got: Vec<_> = told.values().collect();
    if got.len() != expected.len() {
        return Err(format!(
            "{} events, expected {}: {got:?}",
            got.len(),
            expected.len()
        ));
    }
    for ((t, to), (et, eto)) in got.iter().zip(expected) {
        if t != et {
            return Err(format!("event {t:?}, expected {et:?}"));
        }
        let mut to: Vec<(String, RecipientSide)> = to.clone();
        to.sort();
        let mut want: Vec<(String, RecipientSide)> =
            eto.iter().map(|(a, s)| (a.to_string(), *s)).collect();
        want.sort();
        if to != want {
            return Err(format!("{t:?} reached {to:?}, expected {want:?}"));
        }
    }
    Ok(())
}

const BEFORE_OFFER: &[(&str, RecipientSide)] = &[SENDER, APPROVER];
const ALL: &[(&str, RecipientSide)] = &[SENDER, APPROVER, RECEIVER];

both_backends!(every_party_hears_every_event, |store| async move {
    let r = router(&store).await?;
    let name = create(&r).await?;
    r.transfers
        .update_transfer(officer(UpdateTransferRequest {
            transfer: Some(Transfer {
                name: name.clone(),
                note: "补充说明".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["note".into()],
            }),
            request_id: rid(),
        }))
        .await
        .map_err(err)?;
    submit(&r, &name).await?;
    approve_both(&r, &name).await?;
    delivered(&r, &store, &name).await?;
    // A second receipt (e.g. the sender's copy, or a redelivery) changes nothing.
    delivered(&r, &store, &name).await?;
    r.transfers
        .accept_transfer(room(AcceptTransferRequest::named(&name)))
        .await
        .map_err(err)?;
    let feedback = TransferClock::Feedback as i32;
    r.transfers
        .pause_clock(room(PauseClockRequest {
            clock: feedback,
            reason_code: "appraisal".into(),
            reason: "伤情鉴定".into(),
            ..Named::named(&name)
        }))
        .await
        .map_err(err)?;
    r.transfers
        .resume_clock(room(ResumeClockRequest {
            clock: feedback,
            ..Named::named(&name)
        }))
        .await
        .map_err(err)?;
    r.transfers
        .extend_deadline(room(ExtendDeadlineRequest {
            clock: feedback,
            length: 5,
            reason: "双方同意延长".into(),
            consenting_party_ids: vec!["p1".into(), "p2".into()],
            ..Named::named(&name)
        }))
        .await
        .map_err(err)?;
    let inv = r
        .transfers
        .request_investigation(room(RequestInvestigationRequest {
            parent: name.clone(),
            questions: "请补充现场证人证言".into(),
            pause_feedback_clock: true,
            request_id: rid(),
            ..Default::default()
        }))
        .await
        .map_err(err)?
        .into_inner()
        .investigation
        .ok_or("no investigation")?;
    r.transfers
        .answer_investigation(officer(AnswerInvestigationRequest {
            answer: "已补充证人证言两份".into(),
            ..Named::named(&inv.name)
        }))
        .await
        .map_err(err)?;
    r.transfers
        .submit_feedback(room(SubmitFeedbackRequest {
            outcome_code: "agreement_reached".into(),
            summary: "双方达成调解协议".into(),
            ..Named::named(&name)
        }))
        .await
        .map_err(err)?;
    r.transfers
        .acknowledge_feedback(officer(AcknowledgeFeedbackRequest::named(&name)))
        .await
        .map_err(err)?;

    use TransferEventType as E;
    check(
        &told(&r, &store, &name).await?,
        &[
            (E::Created, &[SENDER]),
            (E::Updated, &[SENDER]),
            (E::Submitted, BEFORE_OFFER),
            (E::StepApproved, BEFORE_OFFER),
            (E::Approved, ALL),
            (E::Delivered, ALL),
            (E::Accepted, ALL),
            (E::ClockPaused, ALL),
            (E::ClockResumed, ALL),
            (E::DeadlineExtended, ALL),
            (E::InvestigationRequested, ALL),
            (E::InvestigationAnswered, ALL),
            (E::FeedbackSubmitted, ALL),
            (E::FeedbackAcknowledged, ALL),
        ],
    )?;
    // The kinds: the change's own message, copies of the same kind, TRANSFER_UPDATED for
    // changes without a message of their own.
    let kinds: Vec<(String, i32)> = envelopes(&store, &name)
        .await?
        .into_iter()
        .map(|e| (e.to_agency, e.kind))
        .collect();
    let accepted = MessageKind::TransferAccepted as i32;
    for party in [STATION, COMMAND, ROOM] {
        if !kinds.contains(&(party.to_string(), accepted)) {
            return Err(format!("{party} got no TRANSFER_ACCEPTED: {kinds:?}"));
        }
    }
    let updated = MessageKind::TransferUpdated as i32;
    if kinds.first() != Some(&(STATION.to_string(), updated)) {
        return Err(format!("CREATED is not a TRANSFER_UPDATED: {kinds:?}"));
    }
    Ok::<_, String>(())
});

both_backends!(
    nothing_reaches_the_receiver_before_the_offer,
    |store| async move {
        let r = router(&store).await?;
        let name = create(&r).await?;
        submit(&r, &name).await?;
        r.transfers
            .reject_transfer(req(
                COMMAND,
                "reviewer-01",
                "command_room_reviewer",
                RejectTransferRequest {
                    step_index: 0,
                    reason: "材料不全".into(),
                    ..Named::named(&name)
                },
            ))
            .await
            .map_err(err)?;
        // Sent back: the approver had it, so it hears of the edit and the withdrawal.
        r.transfers
            .update_transfer(officer(UpdateTransferRequest {
                transfer: Some(Transfer {
                    name: name.clone(),
                    note: "已补充材料".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["note".into()],
                }),
                request_id: rid(),
            }))
            .await
            .map_err(err)?;
        r.transfers
            .withdraw_transfer(officer(WithdrawTransferRequest {
                reason: "当事人已自行和解".into(),
                ..Named::named(&name)
            }))
            .await
            .map_err(err)?;
        use TransferEventType as E;
        check(
            &told(&r, &store, &name).await?,
            &[
                (E::Created, &[SENDER]),
                (E::Submitted, BEFORE_OFFER),
                (E::Rejected, BEFORE_OFFER),
                (E::Updated, BEFORE_OFFER),
                (E::Withdrawn, BEFORE_OFFER),
            ],
        )?;

        // A draft withdrawn before it was ever submitted: the sender only.
        let never = create(&r).await?;
        r.transfers
            .withdraw_transfer(officer(WithdrawTransferRequest {
                reason: "重复录入".into(),
                ..Named::named(&never)
            }))
            .await
            .map_err(err)?;
        check(
            &told(&r, &store, &never).await?,
            &[(E::Created, &[SENDER]), (E::Withdrawn, &[SENDER])],
        )?;

        // Withdrawn after the offer: the receiver is told.
        let offered = create(&r).await?;
        submit(&r, &offered).await?;
        approve_both(&r, &offered).await?;
        r.transfers
            .withdraw_transfer(officer(WithdrawTransferRequest {
                reason: "当事人已自行和解".into(),
                ..Named::named(&offered)
            }))
            .await
            .map_err(err)?;
        check(
            &told(&r, &store, &offered).await?,
            &[
                (E::Created, &[SENDER]),
                (E::Submitted, BEFORE_OFFER),
                (E::StepApproved, BEFORE_OFFER),
                (E::Approved, ALL),
                (E::Withdrawn, ALL),
            ],
        )?;
        Ok::<_, String>(())
    }
);

both_backends!(an_expiry_reaches_every_party, |store| async move {
    let r = router(&store).await?;
    let name = create(&r).await?;
    submit(&r, &name).await?;
    approve_both(&r, &name).await?;
    delivered(&r, &store, &name).await?;
    // Make the acceptance clock due now (the route's is one working day).
    let id = name.trim_start_matches("transfers/").to_string();
    let mut conn = store.pool().acquire().await.map_err(err)?;
    let l = Transfers::load(&mut conn, &id)
        .await
        .map_err(err)?
        .ok_or("no transfer")?;
    drop(conn);
    let mut clock = l.acceptance.ok_or("no acceptance clock after delivery")?;
    clock.due_at = clock.started_at + 1;
    sqlx::query("UPDATE transfers SET acceptance_clock = $1, next_due = $2 WHERE id = $3")
        .bind(serde_json::to_string(&clock).map_err(err)?)
        .bind(clock.due_at)
        .bind(&id)
        .execute(store.pool())
        .await
        .map_err(err)?;
    let fired = r.transfers.fire_due(10).await.map_err(err)?;
    if fired != 1 {
        return Err(format!("{fired} expiries fired, expected 1"));
    }
    use TransferEventType as E;
    check(
        &told(&r, &store, &name).await?,
        &[
            (E::Created, &[SENDER]),
            (E::Submitted, BEFORE_OFFER),
            (E::StepApproved, BEFORE_OFFER),
            (E::Approved, ALL),
            (E::Delivered, ALL),
            (E::Expired, ALL),
        ],
    )?;
    Ok::<_, String>(())
});

fn events_of(told: &Told) -> Vec<TransferEventType> {
    told.values().map(|(t, _)| *t).collect()
}

async fn accept(r: &Router, name: &str) -> Result<Transfer, Status> {
    r.transfers
        .accept_transfer(room(AcceptTransferRequest::named(name)))
        .await
        .map(|t| t.into_inner().transfer.unwrap_or_default())
}

async fn decline(r: &Router, name: &str) -> Result<Transfer, Status> {
    r.transfers
        .decline_transfer(room(DeclineTransferRequest {
            reason_code: "outside_jurisdiction".into(),
            ..Named::named(name)
        }))
        .await
        .map(|t| t.into_inner().transfer.unwrap_or_default())
}

async fn get(r: &Router, name: &str) -> Result<Transfer, String> {
    r.transfers
        .get_transfer(officer(GetTransferRequest { name: name.into() }))
        .await
        .map_err(err)?
        .into_inner()
        .transfer
        .ok_or_else(|| "no transfer".to_string())
}

async fn offered(r: &Router) -> Result<String, String> {
    let name = create(r).await?;
    submit(r, &name).await?;
    approve_both(r, &name).await?;
    Ok(name)
}

both_backends!(
    delivered_comes_before_an_overtaking_acceptance,
    |store| async move {
        use TransferEventType as E;
        let r = router(&store).await?;
        let a = offered(&r).await?;
        let t = accept(&r, &a).await.map_err(err)?;
        assert_eq!(t.state, TransferState::InProgress as i32);
        // The receipt arriving late changes nothing.
        delivered(&r, &store, &a).await?;
        let want = [
            E::Created,
            E::Submitted,
            E::StepApproved,
            E::Approved,
            E::Delivered,
            E::Accepted,
        ];
        assert_eq!(events_of(&told(&r, &store, &a).await?), want);

        let d = offered(&r).await?;
        decline(&r, &d).await.map_err(err)?;
        delivered(&r, &store, &d).await?;
        let want = [
            E::Created,
            E::Submitted,
            E::StepApproved,
            E::Approved,
            E::Delivered,
            E::Declined,
        ];
        assert_eq!(events_of(&told(&r, &store, &d).await?), want);
        Ok::<_, String>(())
    }
);

both_backends!(
    the_acceptance_clock_starts_on_delivery,
    |store| async move {
        let r = router(&store).await?;
        let name = offered(&r).await?;
        let t = get(&r, &name).await?;
        assert_eq!(t.state, TransferState::Approved as i32);
        assert!(
            t.acceptance_clock.is_none(),
            "clock runs before delivery: {t:?}"
        );
        delivered(&r, &store, &name).await?;
        let t = get(&r, &name).await?;
        let delivered_at = t.last_event.as_ref().and_then(|e| e.occurred_at);
        let clock = t.acceptance_clock.ok_or("no clock after delivery")?;
        assert_eq!(clock.started_at, delivered_at);
        assert!(clock.due_at.is_some());
        Ok::<_, String>(())
    }
);

/// Makes the acceptance clock of `name` due (started long enough ago), leaving `next_due` so
/// the timer has not fired.
async fn acceptance_due(store: &Store, name: &str) -> TestResult {
    let id = name.trim_start_matches("transfers/").to_string();
    let mut conn = store.pool().acquire().await.map_err(err)?;
    let l = Transfers::load(&mut conn, &id)
        .await
        .map_err(err)?
        .ok_or("no transfer")?;
    drop(conn);
    let mut clock = l.acceptance.ok_or("no acceptance clock")?;
    clock.due_at = clock.started_at + 1;
    sqlx::query("UPDATE transfers SET acceptance_clock = $1 WHERE id = $2")
        .bind(serde_json::to_string(&clock).map_err(err)?)
        .bind(&id)
        .execute(store.pool())
        .await
        .map_err(err)?;
    Ok(())
}

both_backends!(
    accepting_past_the_acceptance_deadline_is_refused,
    |store| async move {
        let r = router(&store).await?;
        let name = offered(&r).await?;
        delivered(&r, &store, &name).await?;
        acceptance_due(&store, &name).await?;
        for result in [accept(&r, &name).await, decline(&r, &name).await] {
            let st = result
                .err()
                .ok_or("accepted or declined past the deadline")?;
            assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
            assert_eq!(
                fengqiao_kit::error::reason_of(&st).as_deref(),
                Some("ACCEPTANCE_DEADLINE_PASSED")
            );
        }
        assert_eq!(get(&r, &name).await?.state, TransferState::Delivered as i32);
        // The timer carries out the expiry (its next pass; here called at once).
        let id = name.trim_start_matches("transfers/").to_string();
        sqlx::query("UPDATE transfers SET next_due = 1 WHERE id = $1")
            .bind(&id)
            .execute(store.pool())
            .await
            .map_err(err)?;
        assert_eq!(r.transfers.fire_due(10).await.map_err(err)?, 1);
        assert_eq!(get(&r, &name).await?.state, TransferState::Expired as i32);
        Ok::<_, String>(())
    }
);

both_backends!(
    every_concurrent_replay_gets_the_first_answer,
    |store| async move {
        let r = router(&store).await?;
        for _ in 0..6 {
            let name = create(&r).await?;
            submit(&r, &name).await?;
            // 50 identical approvals at once, then 50 identical acceptances.
            let approve = ApproveTransferRequest {
                step_index: 0,
                ..Named::named(&name)
            };
            let mut tasks = Vec::new();
            for i in 0..50u64 {
                let (t, req0) = (r.transfers.clone(), approve.clone());
                tasks.push(tokio::spawn(async move {
                    // Spread over the first commit: some peek before it and read after.
                    tokio::time::sleep(std::time::Duration::from_micros(100 * i)).await;
                    t.approve_transfer(req(COMMAND, "reviewer-01", "command_room_reviewer", req0))
                        .await
                        .map(|r| r.into_inner().encode_to_vec())
                        .map_err(|s| {
                            format!("{:?} {:?}", s.code(), fengqiao_kit::error::reason_of(&s))
                        })
                }));
            }
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.map_err(err)?);
            }
            if answers.iter().any(|a| a != &answers[0]) || answers[0].is_err() {
                let bad: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
                return Err(format!("approvals differ: {bad:?}"));
            }
            r.transfers
                .approve_transfer(req(
                    STATION,
                    "duty-chief-01",
                    "duty_chief",
                    ApproveTransferRequest {
                        step_index: 1,
                        ..Named::named(&name)
                    },
                ))
                .await
                .map_err(err)?;
            let acc = AcceptTransferRequest::named(&name);
            let mut tasks = Vec::new();
            for i in 0..50u64 {
                let (t, req0) = (r.transfers.clone(), acc.clone());
                tasks.push(tokio::spawn(async move {
                    // Spread over the first commit: some peek before it and read after.
                    tokio::time::sleep(std::time::Duration::from_micros(100 * i)).await;
                    t.accept_transfer(room(req0))
                        .await
                        .map(|r| r.into_inner().encode_to_vec())
                        .map_err(|s| {
                            format!("{:?} {:?}", s.code(), fengqiao_kit::error::reason_of(&s))
                        })
                }));
            }
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.map_err(err)?);
            }
            if answers.iter().any(|a| a != &answers[0]) || answers[0].is_err() {
                let bad: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
                return Err(format!("acceptances differ: {bad:?}"));
            }
        }
        Ok::<_, String>(())
    }
);

fn draft_of(case_id: &str) -> Transfer {
    let mut t = draft();
    if let Some(c) = t.case_snapshot.as_mut() {
        c.case_id = case_id.into();
    }
    t
}

async fn create_case(r: &Router, case_id: &str, submit: bool) -> Result<Transfer, Status> {
    r.transfers
        .create_transfer(officer(CreateTransferRequest {
            transfer: Some(draft_of(case_id)),
            request_id: rid(),
            submit,
        }))
        .await
        .map(|t| t.into_inner().transfer.unwrap_or_default())
}

both_backends!(
    one_open_transfer_per_case_route_and_sender,
    |store| async move {
        let r = router(&store).await?;
        let case = uuid::Uuid::new_v4().to_string();
        let first = create_case(&r, &case, false).await.map_err(err)?;
        let st = create_case(&r, &case, false)
            .await
            .err()
            .ok_or("a second open transfer for the same case")?;
        assert_eq!(st.code(), Code::AlreadyExists);
        assert_eq!(
            fengqiao_kit::error::reason_of(&st).as_deref(),
            Some("OPEN_TRANSFER_EXISTS")
        );
        let meta = fengqiao_kit::error::metadata_of(&st, "transfer");
        assert_eq!(meta.as_deref(), Some(first.name.as_str()));

        // Once it is over (withdrawn), the case may travel again.
        r.transfers
            .withdraw_transfer(officer(WithdrawTransferRequest {
                reason: "重新起草".into(),
                ..Named::named(&first.name)
            }))
            .await
            .map_err(err)?;
        create_case(&r, &case, false).await.map_err(err)?;

        // Concurrent creates with different request ids: exactly one wins.
        let case = uuid::Uuid::new_v4().to_string();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (r2, c) = (r.clone(), case.clone());
            tasks.push(tokio::spawn(
                async move { create_case(&r2, &c, false).await },
            ));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.map_err(err)? {
                Ok(_) => ok += 1,
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(format!("unexpected {s:?}")),
            }
        }
        assert_eq!(ok, 1);
        Ok::<_, String>(())
    }
);

both_backends!(draft_and_submission_are_one_change, |store| async move {
    use TransferEventType as E;
    let r = router(&store).await?;
    let request = CreateTransferRequest {
        transfer: Some(draft()),
        request_id: rid(),
        submit: true,
    };
    let t = r
        .transfers
        .create_transfer(officer(request.clone()))
        .await
        .map_err(err)?
        .into_inner()
        .transfer
        .ok_or("no transfer")?;
    assert_eq!(t.state, TransferState::AwaitingApproval as i32);
    let replay = r
        .transfers
        .create_transfer(officer(request))
        .await
        .map_err(err)?
        .into_inner()
        .transfer
        .ok_or("no transfer")?;
    assert_eq!(replay, t);
    check(
        &told(&r, &store, &t.name).await?,
        &[(E::Created, &[SENDER]), (E::Submitted, BEFORE_OFFER)],
    )?;
    Ok::<_, String>(())
});

both_backends!(
    listing_for_another_agency_is_for_platform_admins,
    |store| async move {
        let r = router(&store).await?;
        let name = offered(&r).await?;
        let list = |agency: &str| ListTransfersRequest {
            agency: agency.into(),
            ..Default::default()
        };
        let admin = r
            .transfers
            .list_transfers(req(
                "agencies/xigang-justice-bureau",
                "admin",
                "platform_admin",
                list(ROOM),
            ))
            .await
            .map_err(err)?
            .into_inner();
        let names: Vec<&str> = admin.transfers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, [name.as_str()]);
        let st = r
            .transfers
            .list_transfers(officer(list(ROOM)))
            .await
            .err()
            .ok_or("an officer listed another agency's transfers")?;
        assert_eq!(st.code(), Code::PermissionDenied);
        let st = r
            .transfers
            .list_transfers(req(
                "agencies/xigang-justice-bureau",
                "admin",
                "platform_admin",
                list("xigang-room"),
            ))
            .await
            .err()
            .ok_or("a malformed agency was accepted")?;
        assert_eq!(st.code(), Code::InvalidArgument);
        assert_eq!(fengqiao_kit::error::bad_fields_of(&st), ["agency"]);
        Ok::<_, String>(())
    }
);
