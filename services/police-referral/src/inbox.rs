//! The router's messages for the agencies whose referrals this service keeps: each brings the
//! referral in step with its transfer (issue #9, see [`crate::reconcile`]).

use crate::domain::*;
use crate::error::{Error, Result};
use crate::store::*;
use crate::*;
use fengqiao_kit::FieldViolation;
use fengqiao_kit::handler;
use fengqiao_kit::time::{from_timestamp as from_ts, to_timestamp as to_ts};
use fengqiao_proto::inbox::{DeliverResponse, Envelope};
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::{
    Investigation, InvestigationState, TransferEventType, TransferMessage, TransferState,
};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, Tx};
use prost::Message as _;
use tonic::Status;

/// Receives the router's messages for the agencies whose records this service keeps.
#[derive(Clone, Debug)]
pub(crate) struct Inbox {
    pub(crate) store: Store,
}

#[tonic::async_trait]
impl fengqiao_kit::inbox::InboxHandler for Inbox {
    /// 警调对接: the station sends (and its duty chief approves as the sender), the command
    /// centre approves as the station's parent.
    fn receives(&self) -> &[fengqiao_kit::inbox::Receives] {
        use fengqiao_proto::inbox::RecipientSide;
        &[
            ("police-to-station-mediation", RecipientSide::Sender),
            ("police-to-station-mediation", RecipientSide::Approver),
        ]
    }

    async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status> {
        self.apply(&envelope).await.map_err(Status::from)
    }
}

impl Inbox {
    async fn apply(&self, envelope: &Envelope) -> Result<DeliverResponse> {
        let msg = TransferMessage::decode(envelope.payload.as_slice()).map_err(|_| {
            Error::Invalid(vec![FieldViolation::new(
                "envelope.payload",
                "must be a TransferMessage",
            )])
        })?;
        if self.is_stale(envelope, &msg).await? {
            // Nothing to apply (typically the copy of a change this service made itself and
            // recorded with the router's answer): answered from a read, no write transaction.
            return Ok(DeliverResponse { duplicate: false });
        }
        let Some((mut tx, now)) =
            handler::receive(&self.store, SERVICE, &envelope.message_id).await?
        else {
            return Ok(DeliverResponse { duplicate: true });
        };
        let event = msg.event.clone().unwrap_or_default();
        let case_id = handler::case_id_of(envelope, &event);
        // The referral is found by the case id it gave its transfer (`CaseSnapshot.case_id`),
        // so a transfer whose local link was lost still finds its referral.
        // Read and locked in one statement (the row lock of `lock_referral`; SQLite's write
        // transactions are serialised already).
        let lock = if fengqiao_store::Backend::of(&tx) == fengqiao_store::Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM referrals WHERE case_id = $1 \
             AND (police_station = $2 OR creator_agency = $2){lock}"
        ))
        .bind(case_id)
        .bind(&envelope.to_agency)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut s) = row.as_ref().map(stored_of).transpose()? else {
            // A transfer not made from a referral of ours (e.g. drafted on the router directly).
            tx.commit().await?;
            return Ok(DeliverResponse { duplicate: false });
        };
        let referral_id = s.referral.name.trim_start_matches("referrals/").to_string();
        let occurred = event.occurred_at.as_ref().map_or(now, from_ts);
        // Once per event: the copies the referral's other agency gets carry the same one.
        let new_event = !event.event_id.is_empty()
            && insert_event(&mut tx, &referral_id, &event, occurred).await?;
        if event.sequence != 0
            && event.sequence <= s.event_seq
            && !new_event
            && msg.investigation.is_none()
        {
            // Stale after all (the other party's copy, or our own call, committed since the
            // read of `is_stale`): nothing to keep, not even the inbox row; no commit to wait for.
            tx.rollback().await?;
            return Ok(DeliverResponse { duplicate: false });
        }
        let transfer_name = handler::transfer_of(envelope, &event).to_string();
        let etype = TransferEventType::try_from(event.event_type).unwrap_or_default();
        // Investigation tasks follow the investigation, whichever transfer it is on (a task
        // only ever moves on from OPEN, so an old message cannot revert it).
        if let Some(inv) = &msg.investigation {
            self.apply_task(&mut tx, &s, inv, now).await?;
        }
        // The router is the source of truth: only a message newer than what the referral
        // reflects changes it (it is recorded in the inbox as received either way).
        let newer = event.sequence == 0 || event.sequence > s.event_seq;
        let local = ReferralState::try_from(s.referral.state).unwrap_or_default();
        if let Some(t) = msg.transfer.as_ref().filter(|_| newer)
            && reconcile::is_current(
                &s.referral.transfer,
                local,
                &transfer_name,
                TransferState::try_from(t.state).unwrap_or_default(),
            )
        {
            let before = s.referral.clone();
            if s.referral.transfer != transfer_name {
                // Our own draft whose local commit was lost, or a new transfer after one came
                // back: the referral follows it from now on.
                s.referral.transfer = transfer_name;
                s.referral.feedback = None;
            }
            let ts = TransferState::try_from(t.state).unwrap_or_default();
            s.referral.transfer_state = t.state;
            if let Some(to) = reconcile::next_state(local, ts) {
                s.referral.state = to as i32;
            }
            s.event_seq = s.event_seq.max(event.sequence);
            let fb = s.referral.feedback.get_or_insert_with(Default::default);
            if let Some(c) = &t.feedback_clock {
                if c.stopped_at.is_none() {
                    fb.due_time = if c.paused { None } else { c.due_at };
                }
                if c.expired {
                    fb.overdue = true;
                }
            }
            if etype == TransferEventType::DeadlineMissed
                && event.reason_code == "FEEDBACK_DEADLINE_MISSED"
            {
                fb.overdue = true;
            }
            // The feedback as the transfer carries it, whichever message brings it first.
            if let Some(f) = &t.feedback
                && !f.outcome_code.is_empty()
                && fb.received_time.is_none()
            {
                fb.outcome_code = f.outcome_code.clone();
                fb.outcome_description = f.outcome_description.clone();
                fb.summary = f.summary.clone();
                fb.documents = f.documents.clone();
                fb.received_time = f.submit_time.or(Some(to_ts(occurred)));
                add_documents(&mut tx, &referral_id, &f.documents, now).await?;
            }
            // Acknowledged (办结), here or on the router directly: reported to the command room.
            if ts == TransferState::Closed && fb.reported_time.is_none() {
                fb.reported_time = t
                    .feedback
                    .as_ref()
                    .and_then(|f| f.acknowledge_time)
                    .or(Some(to_ts(occurred)));
            }
            if matches!(
                etype,
                TransferEventType::Returned | TransferEventType::Escalated
            ) && let Some(h) = &t.handback
            {
                add_documents(&mut tx, &referral_id, &h.documents, now).await?;
            }
            if s.referral == before {
                // Nothing changed: the etag a client holds stays valid.
                sqlx::query("UPDATE referrals SET event_seq = $1 WHERE id = $2")
                    .bind(fengqiao_kit::transfers::seq_column(s.event_seq))
                    .bind(&referral_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                save(&mut tx, &mut s, now).await?;
            }
        }
        tx.commit().await?;
        Ok(DeliverResponse { duplicate: false })
    }

    /// Whether applying `msg` would change nothing but the inbox row, decided by one read
    /// outside any transaction: no referral of ours has the transfer's case (the write path
    /// would only record the message), or the message carries no investigation, its event is
    /// not newer than the referral reflects and is already in the referral's history. Each
    /// fact only ever stays true (`event_seq` only grows, history rows are never deleted, a
    /// referral's case id and agencies never change), so a redelivery is answered the same way.
    async fn is_stale(&self, envelope: &Envelope, msg: &TransferMessage) -> Result<bool> {
        let event = msg.event.clone().unwrap_or_default();
        let case_id = handler::case_id_of(envelope, &event);
        let row = sqlx::query(
            "SELECT r.event_seq, (SELECT COUNT(*) FROM referral_events e \
             WHERE e.referral_id = r.id AND e.event_id = $3) AS known \
             FROM referrals r WHERE r.case_id = $1 \
             AND (r.police_station = $2 OR r.creator_agency = $2)",
        )
        .bind(case_id)
        .bind(&envelope.to_agency)
        .bind(&event.event_id)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else {
            return Ok(true);
        };
        if event.sequence == 0 || msg.investigation.is_some() {
            return Ok(false);
        }
        let held = fengqiao_kit::transfers::event_seq_of(&row)?;
        let known = event.event_id.is_empty() || row.try_get::<i64, _>("known")? > 0;
        Ok(event.sequence <= held && known)
    }

    async fn apply_task(
        &self,
        tx: &mut Tx,
        s: &Stored,
        inv: &Investigation,
        now: i64,
    ) -> Result<()> {
        let row = sqlx::query(
            "SELECT referral_id, version, body FROM investigation_tasks WHERE investigation = $1",
        )
        .bind(&inv.name)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            let mut t = task_of(&row)?;
            let open = t.task.state == InvestigationState::Open as i32;
            if open && inv.state != InvestigationState::Open as i32 {
                apply_investigation(&mut t.task, inv);
                save_task(tx, &mut t).await?;
            }
            return Ok(());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let task = InvestigationTask {
            name: format!("{}/investigationTasks/{id}", s.referral.name),
            investigation: inv.name.clone(),
            questions: inv.questions.clone(),
            requested_due_time: inv.requested_due_time,
            requested_by: inv.requested_by.clone(),
            request_time: inv.request_time.or(Some(to_ts(now))),
            state: inv.state,
            answer: inv.answer.clone(),
            answer_evidence: inv.answer_evidence.clone(),
            answered_by: inv.answered_by.clone(),
            answer_time: inv.answer_time,
            etag: fengqiao_kit::etag::etag(1),
        };
        sqlx::query(
            "INSERT INTO investigation_tasks (id, referral_id, investigation, state, request_time, body, version) \
             VALUES ($1, $2, $3, $4, $5, $6, 1)",
        )
        .bind(&id)
        .bind(s.referral.name.trim_start_matches("referrals/"))
        .bind(&inv.name)
        .bind(i64::from(task.state))
        .bind(task.request_time.as_ref().map_or(now, from_ts))
        .bind(sealed(TASKS_BODY, &task)?)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
