//! Every state change of a transfer reaches every party of it, on SQLite and PostgreSQL
//! (the router is the source of truth; agency records are reconciled from its messages):
//! the sender always, the approving agency once the transfer is or was awaiting its approval,
//! the receiver once the transfer has been offered and never before. Each party gets one
//! envelope per event, naming the route, its version and the party's side.
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
use prost::Message as _;
use tonic::Request;

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
        .submit_transfer(officer(SubmitTransferRequest {
            name: name.into(),
            request_id: rid(),
            ..Default::default()
        }))
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
                name: name.into(),
                step_index: 0,
                request_id: rid(),
                ..Default::default()
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
                name: name.into(),
                step_index: 1,
                request_id: rid(),
                ..Default::default()
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
        .map_err(err)?;
    for (_, e) in events.iter().filter(|(_, e)| e.transfer == transfer) {
        let t = TransferEventType::try_from(e.event_type).map_err(err)?;
        out.insert(e.sequence, (t, Vec::new()));
    }
    let station_events = r
        .transfers
        .events_after(STATION, 0, 1000)
        .await
        .map_err(err)?;
    for (_, e) in station_events
        .iter()
        .filter(|(_, e)| e.transfer == transfer)
    {
        let t = TransferEventType::try_from(e.event_type).map_err(err)?;
        out.entry(e.sequence).or_insert((t, Vec::new()));
    }
    for env in envelopes(store, transfer).await? {
        if env.route != ROUTE || env.route_version != 1 {
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
        .accept_transfer(room(AcceptTransferRequest {
            name: name.clone(),
            request_id: rid(),
            ..Default::default()
        }))
        .await
        .map_err(err)?;
    let feedback = TransferClock::Feedback as i32;
    r.transfers
        .pause_clock(room(PauseClockRequest {
            name: name.clone(),
            clock: feedback,
            reason_code: "appraisal".into(),
            reason: "伤情鉴定".into(),
            request_id: rid(),
            ..Default::default()
        }))
        .await
        .map_err(err)?;
    r.transfers
        .resume_clock(room(ResumeClockRequest {
            name: name.clone(),
            clock: feedback,
            request_id: rid(),
            ..Default::default()
        }))
        .await
        .map_err(err)?;
    r.transfers
        .extend_deadline(room(ExtendDeadlineRequest {
            name: name.clone(),
            clock: feedback,
            length: 5,
            reason: "双方同意延长".into(),
            consenting_party_ids: vec!["p1".into(), "p2".into()],
            request_id: rid(),
            ..Default::default()
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
            name: inv.name,
            answer: "已补充证人证言两份".into(),
            request_id: rid(),
            ..Default::default()
        }))
        .await
        .map_err(err)?;
    r.transfers
        .submit_feedback(room(SubmitFeedbackRequest {
            name: name.clone(),
            outcome_code: "agreement_reached".into(),
            summary: "双方达成调解协议".into(),
            request_id: rid(),
            ..Default::default()
        }))
        .await
        .map_err(err)?;
    r.transfers
        .acknowledge_feedback(officer(AcknowledgeFeedbackRequest {
            name: name.clone(),
            request_id: rid(),
            ..Default::default()
        }))
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
                    name: name.clone(),
                    step_index: 0,
                    reason: "材料不全".into(),
                    request_id: rid(),
                    ..Default::default()
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
                name: name.clone(),
                reason: "当事人已自行和解".into(),
                request_id: rid(),
                ..Default::default()
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
                name: never.clone(),
                reason: "重复录入".into(),
                request_id: rid(),
                ..Default::default()
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
                name: offered.clone(),
                reason: "当事人已自行和解".into(),
                request_id: rid(),
                ..Default::default()
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
