//! The router's messages for mediation agencies (offers, withdrawals, answers, clocks).
//!
//! The router is the source of truth (issue #9): each case records the router event
//! sequence it last reflected, and a message whose event is not newer changes nothing (it
//! is still recorded in the inbox as received). A newer message reconciles the case from
//! the transfer it carries ([`crate::reconcile`]).

use fengqiao_proto::inbox::{DeliverResponse, Envelope, MessageKind};
use fengqiao_proto::mediation::{
    CaseFileEntryKind, Escalation, MediationCase, MediationCaseState as S,
};
use fengqiao_proto::router::{InvestigationState, TransferMessage};
use fengqiao_store::{Store, Tx};
use prost::Message as _;

use crate::SERVICE;
use crate::cases::entry;
use crate::error::{Error, Result};
use crate::store::{self as db, state_of};
use crate::util::to_timestamp;

/// Applies router envelopes to the mediation store.
#[derive(Clone, Debug)]
pub struct Inbox {
    store: Store,
    acknowledger: Option<Acknowledger>,
}

/// The committee's system acting by itself on the router (signed with the service key): it
/// acknowledges the court's feedback on a judicial confirmation application (the ruling, or
/// the withdrawal under review) when it arrives, so the transfer ends CLOSED — as the court's
/// system acknowledges a delegation's feedback.
#[derive(Clone)]
pub struct Acknowledger {
    router: tonic::transport::Channel,
    key: std::sync::Arc<fengqiao_kit::auth::SigningKey>,
    issuer: String,
}

impl std::fmt::Debug for Acknowledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acknowledger")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Actor id of the committee's system when it acts by itself.
pub const SYSTEM_ACTOR: &str = "mediation";

impl Acknowledger {
    /// Acknowledges on `router`, signing for `issuer` with `key`.
    pub fn new(
        router: tonic::transport::Channel,
        key: fengqiao_kit::auth::SigningKey,
        issuer: &str,
    ) -> Self {
        Self {
            router,
            key: std::sync::Arc::new(key),
            issuer: issuer.to_string(),
        }
    }

    /// Confirms receipt of the court's feedback on `transfer` for `committee`. The request
    /// id is derived from the transfer, so a second attempt is the same call; a transfer
    /// already closed (FAILED_PRECONDITION) is fine.
    pub async fn acknowledge(&self, committee: &str, transfer: &str) -> Result<()> {
        let token = self.key.sign(&fengqiao_kit::auth::claims(
            &self.issuer,
            committee,
            SYSTEM_ACTOR,
            &["mediation_admin"],
            300,
        ));
        let h = fengqiao_store::idempotency::hash_request(
            format!("AcknowledgeFeedback\n{transfer}").as_bytes(),
        );
        let mut request = tonic::Request::new(fengqiao_proto::router::AcknowledgeFeedbackRequest {
            name: transfer.to_string(),
            etag: String::new(),
            comment: "调解委员会已收到司法确认结果".into(),
            request_id: format!("committee-ack-{}", &h[..h.len().min(100)]),
        });
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::Corrupt("token is not a header value".into()))?;
        request.metadata_mut().insert("authorization", bearer);
        match fengqiao_proto::router::transfer_service_client::TransferServiceClient::new(
            self.router.clone(),
        )
        .acknowledge_feedback(request)
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(e) => Err(Error::Upstream(Box::new(e), &[])),
        }
    }
}

impl Inbox {
    /// The inbox over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            acknowledger: None,
        }
    }

    /// Acknowledges the court's feedback on confirmation applications on arrival.
    pub fn with_acknowledger(mut self, a: Acknowledger) -> Self {
        self.acknowledger = Some(a);
        self
    }

    /// Applies one envelope exactly once.
    pub async fn apply(&self, envelope: &Envelope) -> Result<DeliverResponse> {
        let msg = TransferMessage::decode(envelope.payload.as_slice())
            .map_err(|e| Error::Corrupt(format!("transfer message: {e}")))?;
        if self.is_stale(envelope, &msg).await? {
            // Nothing to apply (typically the copy of a change this service made itself and
            // recorded with the router's answer): answered from a read, no write transaction.
            return Ok(DeliverResponse { duplicate: false });
        }
        let mut tx = self.store.write().await?;
        let Some(now) =
            fengqiao_store::inbox::record_once_at(&mut tx, SERVICE, &envelope.message_id).await?
        else {
            tx.commit().await?;
            return Ok(DeliverResponse { duplicate: true });
        };
        let kind = MessageKind::try_from(envelope.kind).unwrap_or(MessageKind::Unspecified);
        let mut acknowledge = None;
        if envelope.route.strip_prefix("routes/") == Some(crate::confirmation::ROUTE) {
            // The committee's application for judicial confirmation: the court's answers.
            if let Some(t) = &msg.transfer {
                confirmation(&mut tx, envelope, t, now).await?;
                if t.state == fengqiao_proto::router::TransferState::FeedbackSubmitted as i32
                    && let Some(from) = t.from_agency.as_ref()
                {
                    acknowledge = Some((from.name.clone(), t.name.clone()));
                }
            }
        } else if kind == MessageKind::TransferOffered {
            offer(&mut tx, envelope, &msg, now).await?;
        } else if let Some(l) = db::load_by_transfer_locked(&mut tx, &envelope.transfer).await? {
            let seq = event_seq(&msg);
            if is_newer(seq, l.event_seq) {
                let mut c = l.case.clone();
                let mut out = Vec::new();
                update(&mut c, kind, &msg, now, &mut out);
                if let Some(t) = &msg.transfer {
                    crate::reconcile::apply(&mut c, t, &l.reserved_number, now, &mut out);
                }
                if c == l.case && out.is_empty() {
                    db::note_seq(&mut tx, &l.id, seq).await?;
                } else {
                    db::save_seq(&mut tx, &l, &mut c, now, seq).await?;
                    db::add_entries(&mut tx, &l.id, &out).await?;
                }
            } else {
                // Not newer after all (our own call committed since the read of `is_stale`):
                // nothing to keep, not even the inbox row; no commit to wait for.
                tracing::debug!(
                    kind = kind.as_str_name(),
                    seq,
                    reflected = l.event_seq,
                    "message not newer than the case: no change"
                );
                tx.rollback().await?;
                return Ok(DeliverResponse { duplicate: false });
            }
        } else {
            tracing::debug!(
                kind = kind.as_str_name(),
                "message for a transfer without a mediation case"
            );
        }
        tx.commit().await?;
        // The committee's system confirms receipt of the ruling (确认反馈): after the
        // commit, outside the transaction; the transfer closes on the router.
        if let (Some(a), Some((committee, transfer))) = (self.acknowledger.clone(), acknowledge) {
            tokio::spawn(async move {
                if let Err(e) = a.acknowledge(&committee, &transfer).await {
                    tracing::warn!(transfer = %transfer, error = %e, "confirmation feedback not acknowledged on the router");
                }
            });
        }
        Ok(DeliverResponse { duplicate: false })
    }
}

impl Inbox {
    /// Whether `msg` is a later message (not an offer, not the confirmation route) whose event
    /// is not newer than what its case already reflects. Applying it would change nothing but
    /// the inbox row: the case's `event_seq` only grows, so the answer of one read stays true,
    /// and a redelivery is answered the same way. Offers, confirmation messages and messages
    /// without an event (sequence 0) always take the write path.
    async fn is_stale(&self, envelope: &Envelope, msg: &TransferMessage) -> Result<bool> {
        let seq = event_seq(msg);
        let kind = MessageKind::try_from(envelope.kind).unwrap_or(MessageKind::Unspecified);
        if seq == 0
            || kind == MessageKind::TransferOffered
            || envelope.route.strip_prefix("routes/") == Some(crate::confirmation::ROUTE)
        {
            return Ok(false);
        }
        let held = db::event_seq_of_transfer(self.store.pool(), &envelope.transfer).await?;
        Ok(held.is_some_and(|held| !is_newer(seq, held)))
    }
}

/// A message on the committee's application for judicial confirmation: the case (the
/// sender's, by shared case id) shows the court's answer ([`crate::confirmation::status_from`]).
/// A case whose own commit of the application was lost adopts the transfer here.
async fn confirmation(
    tx: &mut Tx,
    envelope: &Envelope,
    t: &fengqiao_proto::router::Transfer,
    now: i64,
) -> Result<()> {
    let agency = t
        .from_agency
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let case_id = t
        .case_snapshot
        .as_ref()
        .map(|c| c.case_id.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| envelope.case_id.clone());
    let cases = db::load_by_case_id_locked(tx, &agency, &case_id).await?;
    let mine = cases
        .iter()
        .find(|l| {
            l.case
                .confirmation
                .as_ref()
                .is_some_and(|c| c.transfer == t.name)
        })
        .or_else(|| {
            cases.iter().find(|l| {
                l.case.agreement.as_ref().is_some_and(|a| a.effective)
                    && crate::confirmation::open_application(&l.case).is_none()
            })
        });
    let Some(l) = mine else {
        tracing::debug!("confirmation message for a transfer without a mediation case");
        return Ok(());
    };
    let prev = l
        .case
        .confirmation
        .as_ref()
        .filter(|c| c.transfer == t.name);
    let Some(next) = crate::confirmation::status_from(prev, t, now) else {
        return Ok(());
    };
    let same = prev.is_some_and(|p| {
        let mut a = p.clone();
        let mut b = next.clone();
        a.update_time = None;
        b.update_time = None;
        a == b
    });
    if same {
        return Ok(());
    }
    let mut c = l.case.clone();
    let title = crate::confirmation::progress_title(next.progress);
    let detail = crate::confirmation::progress_detail(&next);
    c.confirmation = Some(next);
    db::save_seq(tx, l, &mut c, now, l.event_seq).await?;
    db::add_entries(
        tx,
        &l.id,
        &[entry(CaseFileEntryKind::Other, title, now, detail)],
    )
    .await?;
    Ok(())
}

/// The router event sequence of a message (0 when it carries no event).
pub fn event_seq(msg: &TransferMessage) -> u64 {
    msg.event.as_ref().map_or(0, |e| e.sequence)
}

/// Whether a message with event sequence `seq` is newer than the `reflected` one. A message
/// without an event (sequence 0) is applied as it comes.
pub fn is_newer(seq: u64, reflected: u64) -> bool {
    seq == 0 || seq > reflected
}

/// A new offer: creates the case (OFFERED) with the snapshot, the transfer and the sender.
async fn offer(tx: &mut Tx, envelope: &Envelope, msg: &TransferMessage, now: i64) -> Result<()> {
    if db::load_by_transfer(tx, &envelope.transfer)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut t = msg.transfer.clone().unwrap_or_default();
    let mut snap = t.case_snapshot.clone().unwrap_or_default();
    // The sender's free text is redacted here too (an ID number or a mobile number typed into
    // a summary or a note is never stored), whoever drafted the transfer.
    fengqiao_kit::pii::redact_in_place(&mut snap.summary);
    fengqiao_kit::pii::redact_in_place(&mut t.note);
    let agency = envelope.to_agency.clone();
    let org = crate::roster::org_of_agency(tx, &agency).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let number = db::reserve_number(tx, &agency, now).await?;
    let mut c = MediationCase {
        name: format!("cases/{id}"),
        case_id: if snap.case_id.is_empty() {
            envelope.case_id.clone()
        } else {
            snap.case_id.clone()
        },
        organization: org.map(|o| o.name).unwrap_or_default(),
        transfer: envelope.transfer.clone(),
        source_agency: t.from_agency.clone(),
        category: snap.category,
        summary: snap.summary.clone(),
        parties: snap.parties.clone(),
        evidence: snap.evidence.clone(),
        region_code: snap.region_code.clone(),
        state: S::Offered as i32,
        ..Default::default()
    };
    let mut out = vec![entry(
        CaseFileEntryKind::TransferDocument,
        "移送单",
        now,
        format!("{}\n移送说明：{}", snap.summary, t.note),
    )];
    for d in &snap.evidence {
        out.push(crate::cases::entry(
            CaseFileEntryKind::Evidence,
            "移送证据材料",
            now,
            d.display_name.clone(),
        ));
        if let Some(last) = out.last_mut() {
            last.document = Some(d.clone());
        }
    }
    // The pinned route: the case reports with its outcome codes (in the offer only).
    db::insert(
        tx,
        &id,
        &agency,
        &number,
        &mut c,
        msg.route.as_ref(),
        now,
        event_seq(msg),
    )
    .await?;
    db::add_entries(tx, &id, &out).await?;
    Ok(())
}

/// Applies a later message to an existing case.
fn update(
    c: &mut MediationCase,
    kind: MessageKind,
    msg: &TransferMessage,
    now: i64,
    out: &mut Vec<fengqiao_proto::mediation::CaseFileEntry>,
) {
    let reason = msg
        .event
        .as_ref()
        .map(|e| e.reason.clone())
        .unwrap_or_default();
    let open = matches!(
        state_of(c),
        S::Accepted | S::InMediation | S::AgreementPendingSignature
    );
    match kind {
        MessageKind::TransferWithdrawn if state_of(c) == S::Offered => {
            c.state = S::Withdrawn as i32;
            out.push(entry(CaseFileEntryKind::Other, "移送单位撤回", now, reason));
        }
        MessageKind::TransferExpired if state_of(c) == S::Offered || open => {
            // Before acceptance the acceptance clock ran out; after it, the mediation period
            // did and the route sends the materials back (特邀调解规定 Art 21).
            let title = if state_of(c) == S::Offered {
                "逾期未受理，退回移送单位"
            } else {
                "调解期限届满，材料退回移送单位"
            };
            c.state = S::Expired as i32;
            out.push(entry(CaseFileEntryKind::Other, title, now, reason));
        }
        MessageKind::TransferEscalated if state_of(c) == S::Offered || open => {
            c.state = S::Escalated as i32;
            let ev = msg.event.clone().unwrap_or_default();
            c.escalation = Some(Escalation {
                reason_code: ev.reason_code,
                reason: ev.reason,
                to_agency: c
                    .source_agency
                    .as_ref()
                    .map(|a| a.name.clone())
                    .unwrap_or_default(),
                actor: ev.actor,
                escalate_time: Some(to_timestamp(now)),
            });
            out.push(entry(
                CaseFileEntryKind::Termination,
                "逾期上报",
                now,
                String::new(),
            ));
        }
        MessageKind::InvestigationAnswered => {
            let Some(inv) = &msg.investigation else {
                return;
            };
            if !c.investigations.iter().any(|r| r.investigation == inv.name) {
                c.investigations
                    .push(fengqiao_proto::mediation::InvestigationRequest {
                        investigation: inv.name.clone(),
                        questions: inv.questions.clone(),
                        pauses_clock: inv.pauses_feedback_clock,
                        requested_by: inv.requested_by.clone(),
                        request_time: inv.request_time,
                        ..Default::default()
                    });
            }
            if let Some(r) = c
                .investigations
                .iter_mut()
                .find(|r| r.investigation == inv.name)
            {
                r.state = InvestigationState::Answered as i32;
                r.answer = inv.answer.clone();
                r.answer_evidence = inv.answer_evidence.clone();
                r.answer_time = inv.answer_time.or(Some(to_timestamp(now)));
            }
            c.evidence.extend(inv.answer_evidence.iter().cloned());
            out.push(entry(
                CaseFileEntryKind::Investigation,
                "补充调查取证答复",
                now,
                inv.answer.clone(),
            ));
            for d in &inv.answer_evidence {
                let mut e = entry(
                    CaseFileEntryKind::Evidence,
                    "补充证据材料",
                    now,
                    d.display_name.clone(),
                );
                e.document = Some(d.clone());
                out.push(e);
            }
        }
        MessageKind::DeadlineMissed => {
            out.push(entry(CaseFileEntryKind::Other, "期限届满提醒", now, reason));
        }
        MessageKind::DeadlineApproaching => {
            out.push(entry(CaseFileEntryKind::Other, "期限临近提醒", now, reason));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_newer_events_apply() {
        assert!(is_newer(8, 7));
        assert!(!is_newer(7, 7));
        assert!(!is_newer(3, 7));
        assert!(is_newer(0, 7));
        assert!(is_newer(1, 0));
    }
}
