//! The `TransferService` gRPC surface over [`Transfers`]: each custom method is one
//! `Transfers::mutate` with its own rule.

use fengqiao_kit::Reason;
use fengqiao_store::bind::{Bind, bind_all};
use std::pin::Pin;
use std::time::Duration;

use fengqiao_kit::pii::{View, redact_in_place};
use fengqiao_kit::{FieldViolation, Identity, validate};
use fengqiao_proto::inbox::MessageKind;
use fengqiao_proto::router::transfer_service_server::TransferService;
use fengqiao_proto::router::*;
use fengqiao_store::sqlx::{self, Row as _};
use prost::Message as _;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    Change, Loaded, PAUSE_FOR_INVESTIGATION, Transfers, allowed_code, clock_error, fixed, offer,
    pick_clock, start_clock, stop_running, store_err,
};
use crate::error::{Error, Result};
use crate::lifecycle::Action;
use crate::time::to_timestamp;

type Reply<T> = std::result::Result<Response<T>, Status>;
type WatchStream = Pin<
    Box<dyn Stream<Item = std::result::Result<WatchTransfersResponse, Status>> + Send + 'static>,
>;

fn who<T>(req: &Request<T>) -> std::result::Result<Identity, Status> {
    Identity::of(req).cloned().map_err(Into::into)
}

fn required_text(field: &str, text: &str, max: usize) -> Result<()> {
    let n = text.trim().chars().count();
    if n == 0 || n > max {
        return Err(
            FieldViolation::new(field, format!("is required, at most {max} characters")).into(),
        );
    }
    Ok(())
}

fn event_from_row(row: &fengqiao_store::sqlx::any::AnyRow) -> Result<TransferEvent> {
    let body: Vec<u8> = row.try_get("body").map_err(store_err)?;
    let body = fengqiao_store::seal::open(super::EVENT_BODY_CONTEXT, &body)?;
    TransferEvent::decode(body.as_slice()).map_err(|e| Error::Corrupt(format!("event: {e}")))
}

/// Whether `agency` may see an event stored in `row` (with its `from_agency`,
/// `approver_agency` columns): the sender and the approver see every event of their transfers,
/// the receiver only the events from the offer on.
fn event_visible_to(
    row: &fengqiao_store::sqlx::any::AnyRow,
    e: &TransferEvent,
    agency: &str,
) -> Result<bool> {
    let from: String = row.try_get("from_agency").map_err(store_err)?;
    let approver: Option<String> = row.try_get("approver_agency").map_err(store_err)?;
    if from == agency || approver.as_deref() == Some(agency) {
        return Ok(true);
    }
    let state = |v: i32| TransferState::try_from(v).unwrap_or(TransferState::Unspecified);
    Ok(super::offered(state(e.from_state), state(e.to_state)))
}

impl Transfers {
    /// Lists transfers the caller's agency sent, received or approves, newest first.
    pub async fn list(
        &self,
        who: &Identity,
        req: &ListTransfersRequest,
    ) -> Result<ListTransfersResponse> {
        let me = self.list_agency(who, req).await?;
        let mut conn = self.store().pool().acquire().await.map_err(store_err)?;
        self.list_on(&mut conn, who, &me, req).await
    }

    /// Lists like [`Self::list`], unmasked, for a caller that asked for the full view: every
    /// listed transfer's route must allow it ([`super::personal::full_view_allowed`], else
    /// PERMISSION_DENIED `PERSONAL_INFO_VIEW_DENIED`, audited), and each one leaves a
    /// `pii.read` audit record written in the transaction the page is read in.
    pub async fn list_full(
        &self,
        who: &Identity,
        req: &ListTransfersRequest,
    ) -> Result<ListTransfersResponse> {
        let me = self.list_agency(who, req).await?;
        let mut tx = self.store().write().await?;
        let resp = self.list_on(&mut tx, who, &me, req).await?;
        for t in &resp.transfers {
            let route_id = t.route.trim_start_matches("routes/");
            let allowed = self
                .routes
                .get(route_id, t.route_version)
                .is_some_and(|r| super::personal::full_view_allowed(who, r));
            if !allowed {
                drop(tx);
                return Err(self
                    .full_view_denied(who, &t.name, route_id, t.route_version)
                    .await);
            }
            self.audit_full_read(&mut tx, who, "ListTransfers", t)
                .await?;
        }
        tx.commit().await.map_err(store_err)?;
        Ok(resp)
    }

    /// The agency whose transfers `req` lists: the caller's, or for a platform administrator
    /// the one it names (anyone else naming one is refused, audited).
    async fn list_agency(&self, who: &Identity, req: &ListTransfersRequest) -> Result<String> {
        // Platform administrators may list for another agency; nobody else may.
        let me = if req.agency.is_empty() {
            who.agency.clone()
        } else {
            validate::parse_name("agency", "agencies", &req.agency)?;
            if !who.has_role(crate::agencies::ROLE_PLATFORM_ADMIN) {
                self.denied(who, "transfer.list", &req.agency, "ROLE_REQUIRED")
                    .await;
                return Err(Error::Refused(
                    Reason::RoleRequired,
                    format!(
                        "listing another agency's transfers needs the role {}",
                        crate::agencies::ROLE_PLATFORM_ADMIN
                    ),
                ));
            }
            req.agency.clone()
        };
        Ok(me)
    }

    /// The list query of [`Self::list`] on `conn`, for agency `me`.
    async fn list_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        who: &Identity,
        me: &str,
        req: &ListTransfersRequest,
    ) -> Result<ListTransfersResponse> {
        let size = validate::page_size(req.page_size)?;
        // `sql` collects the filters shared by every part of the query below.
        let mut sql = String::new();
        let mut binds: Vec<Bind> = Vec::new();
        let me = me.to_string();
        let push = |binds: &mut Vec<Bind>, b: Bind| -> String {
            binds.push(b);
            format!("${}", binds.len())
        };
        let p = push(&mut binds, Bind::Text(me.clone()));
        let sides: &[&str] = match validate::enum_value("direction", req.direction)? {
            TransferDirection::Outgoing => &["from_agency"],
            TransferDirection::Incoming => &["to_agency"],
            TransferDirection::Unspecified => &["from_agency", "to_agency", "approver_agency"],
        };
        if !req.states.is_empty() {
            // At most one entry per state; each a state the contract defines.
            validate::enum_values::<TransferState>("states", &req.states, 32)?;
            let list: Vec<String> = req.states.iter().map(|s| s.to_string()).collect();
            sql.push_str(&format!(" AND state IN ({})", list.join(",")));
        }
        if !req.route.is_empty() {
            let id = validate::parse_name("route", "routes", &req.route)?;
            let p = push(&mut binds, Bind::Text(id.to_string()));
            sql.push_str(&format!(" AND route_id = {p}"));
        }
        if !req.counterpart_agency.is_empty() {
            validate::parse_name("counterpart_agency", "agencies", &req.counterpart_agency)?;
            let p = push(&mut binds, Bind::Text(req.counterpart_agency.clone()));
            sql.push_str(&format!(" AND (from_agency = {p} OR to_agency = {p})"));
        }
        if !req.case_id.is_empty() {
            validate::uuid("case_id", &req.case_id)?;
            let p = push(&mut binds, Bind::Text(req.case_id.clone()));
            sql.push_str(&format!(" AND case_id = {p}"));
        }
        if let Some(t) = &req.create_time_start {
            let t = fengqiao_kit::time::parse_timestamp("create_time_start", t)?;
            let p = push(&mut binds, Bind::Int(t));
            sql.push_str(&format!(" AND create_time >= {p}"));
        }
        if let Some(t) = &req.create_time_end {
            let t = fengqiao_kit::time::parse_timestamp("create_time_end", t)?;
            let p = push(&mut binds, Bind::Int(t));
            sql.push_str(&format!(" AND create_time < {p}"));
        }
        let now = fengqiao_store::db_now_micros(&mut *conn).await?;
        if req.overdue_only {
            let p = push(&mut binds, Bind::Int(now));
            sql.push_str(&format!(" AND (overdue = 1 OR next_due <= {p})"));
        }
        let query = fengqiao_kit::list_query!(req, &who.agency);
        if let Some((t, id)) = validate::parse_keyset_page_token(&req.page_token, &query)? {
            let pt = push(&mut binds, Bind::Int(t));
            let pi = push(&mut binds, Bind::Text(id));
            sql.push_str(&format!(
                " AND (create_time < {pt} OR (create_time = {pt} AND id < {pi}))"
            ));
        }
        // One index-ordered part per side (`transfers_from`, `transfers_to`,
        // `transfers_approver`), merged: an OR across the three columns would read and sort
        // every transfer of the agency.
        let order = format!("ORDER BY create_time DESC, id DESC LIMIT {}", size + 1);
        let part = |side: &str| {
            // The receiver sees a transfer only once it is offered (DRAFT = 1 and
            // AWAITING_APPROVAL = 2 never; a withdrawal before the offer is filtered below).
            let offered = if side == "to_agency" {
                " AND state NOT IN (1, 2)"
            } else {
                ""
            };
            format!(
                "SELECT id, route_id, route_version, from_agency, to_agency, approver_agency, \
                 case_id, state, body, acceptance_clock, feedback_clock, next_due, overdue, \
                 create_time, update_time, version, named_clocks FROM transfers \
                 WHERE {side} = {p}{offered}{sql} {order}"
            )
        };
        let sql = if sides.len() == 1 {
            part(sides[0])
        } else {
            let parts: Vec<String> = sides
                .iter()
                .enumerate()
                .map(|(i, side)| format!("SELECT * FROM ({}) AS part{i}", part(side)))
                .collect();
            format!("{} {order}", parts.join(" UNION "))
        };
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(&mut *conn)
            .await
            .map_err(store_err)?;
        let mut loaded = rows
            .iter()
            .map(|r| {
                let ct: i64 = r.try_get("create_time").map_err(store_err)?;
                Ok((ct, super::row_to_loaded(r)?))
            })
            .collect::<Result<Vec<(i64, Loaded)>>>()?;
        let mut next_page_token = String::new();
        if loaded.len() > size as usize {
            loaded.truncate(size as usize);
            if let Some((ct, l)) = loaded.last() {
                next_page_token = validate::keyset_page_token(&query, *ct, l.id());
            }
        }
        Ok(ListTransfersResponse {
            transfers: loaded
                .iter()
                .filter(|(_, l)| l.visible_to(&me))
                .map(|(_, l)| l.view(now))
                .collect(),
            next_page_token,
        })
    }

    /// Events of one case on transfers the caller's agency took part in, oldest first.
    pub async fn timeline(
        &self,
        who: &Identity,
        req: &GetCaseTimelineRequest,
    ) -> Result<GetCaseTimelineResponse> {
        if uuid::Uuid::parse_str(&req.case_id).is_err() {
            return Err(FieldViolation::new("case_id", "must be a UUID").into());
        }
        let size = validate::page_size(req.page_size)?;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let after: i64 = match validate::parse_page_token(&req.page_token, &query)? {
            Some(t) => t.parse().map_err(|_| {
                FieldViolation::new("page_token", "is not a token this server issued")
            })?,
            None => 0,
        };
        let rows = sqlx::query(&format!(
            "SELECT seq, transfer_id, from_agency, approver_agency, body FROM transfer_events \
             WHERE case_id = $1 AND seq > $2 \
             AND (from_agency = $3 OR to_agency = $3 OR approver_agency = $3) \
             ORDER BY seq LIMIT {}",
            size + 1
        ))
        .bind(&req.case_id)
        .bind(after)
        .bind(&who.agency)
        .fetch_all(self.store().pool())
        .await
        .map_err(store_err)?;
        if rows.is_empty() && after == 0 {
            return Err(Error::NotFound(format!("case {}", req.case_id)));
        }
        let mut events = Vec::new();
        let mut transfers: Vec<String> = Vec::new();
        let mut last = after;
        for r in rows.iter().take(size as usize) {
            let e = event_from_row(r)?;
            last = r.try_get("seq").map_err(store_err)?;
            if !event_visible_to(r, &e, &who.agency)? {
                continue;
            }
            if !transfers.contains(&e.transfer) {
                transfers.push(e.transfer.clone());
            }
            events.push(e);
        }
        let next_page_token = if rows.len() > size as usize {
            validate::page_token(&query, &last.to_string())
        } else {
            String::new()
        };
        if events.is_empty() && after == 0 && next_page_token.is_empty() {
            // Only events from before the offer: as if the case did not exist.
            return Err(Error::NotFound(format!("case {}", req.case_id)));
        }
        Ok(GetCaseTimelineResponse {
            events,
            transfers,
            next_page_token,
        })
    }

    /// Events visible to `agency` after `after`, from at most `limit` stored events, and the
    /// last sequence number read (events the agency may not see yet — a receiver's before the
    /// offer — are read and skipped, so the next call starts after them).
    pub async fn events_after(
        &self,
        agency: &str,
        after: i64,
        limit: u32,
    ) -> Result<(i64, Vec<(i64, TransferEvent)>)> {
        let rows = sqlx::query(&format!(
            "SELECT seq, from_agency, approver_agency, body FROM transfer_events WHERE seq > $1 \
             AND (from_agency = $2 OR to_agency = $2 OR approver_agency = $2) \
             ORDER BY seq LIMIT {limit}"
        ))
        .bind(after)
        .bind(agency)
        .fetch_all(self.store().pool())
        .await
        .map_err(store_err)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = after;
        for r in &rows {
            let seq = r.try_get::<i64, _>("seq").map_err(store_err)?;
            last = seq;
            let e = event_from_row(r)?;
            if event_visible_to(r, &e, agency)? {
                out.push((seq, e));
            }
        }
        Ok((last, out))
    }

    /// The newest event sequence number.
    pub async fn last_event_seq(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM transfer_events")
            .fetch_one(self.store().pool())
            .await
            .map_err(store_err)?;
        row.try_get::<i64, _>("last").map_err(store_err)
    }
}

macro_rules! transfer_reply {
    ($resp:ident) => {
        |t: Transfer, _inv: Option<Investigation>| $resp { transfer: Some(t) }
    };
}

#[tonic::async_trait]
impl TransferService for Transfers {
    async fn create_transfer(
        &self,
        request: Request<CreateTransferRequest>,
    ) -> Reply<CreateTransferResponse> {
        let who = who(&request)?;
        let mut t = self.create(&who, request.into_inner()).await?;
        // Masked, a replay too; the full view is offered on reads only.
        super::personal::mask(&mut t);
        Ok(Response::new(CreateTransferResponse { transfer: Some(t) }))
    }

    async fn get_transfer(
        &self,
        request: Request<GetTransferRequest>,
    ) -> Reply<GetTransferResponse> {
        let who = who(&request)?;
        let name = &request.get_ref().name;
        let t = match fengqiao_kit::pii::requested_view(request.metadata())? {
            View::Masked => {
                let mut t = self.get(&who, name).await?;
                super::personal::mask(&mut t);
                t
            }
            View::Full => self.get_full(&who, name).await?,
        };
        Ok(Response::new(GetTransferResponse { transfer: Some(t) }))
    }

    async fn list_transfers(
        &self,
        request: Request<ListTransfersRequest>,
    ) -> Reply<ListTransfersResponse> {
        let who = who(&request)?;
        let resp = match fengqiao_kit::pii::requested_view(request.metadata())? {
            View::Masked => {
                let mut r = self.list(&who, request.get_ref()).await?;
                fengqiao_kit::pii::mask(&mut r);
                r
            }
            View::Full => self.list_full(&who, request.get_ref()).await?,
        };
        Ok(Response::new(resp))
    }

    async fn update_transfer(
        &self,
        request: Request<UpdateTransferRequest>,
    ) -> Reply<UpdateTransferResponse> {
        let who = who(&request)?;
        let req = request.into_inner();
        let patch = req.transfer.clone().unwrap_or_default();
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(Error::from(FieldViolation::new(
                "update_mask",
                "must name at least one field",
            ))
            .into());
        }
        let resp = self
            .mutate(
                &who,
                "UpdateTransfer",
                &req.request_id,
                &req,
                &patch.name,
                &patch.etag,
                fixed(Action::Update),
                |l, route, _cal, _now| {
                    for p in &paths {
                        match p.as_str() {
                            "note" => {
                                l.transfer.note = patch.note.clone();
                                redact_in_place(&mut l.transfer.note);
                            }
                            "case_snapshot" => {
                                let mut case = patch.case_snapshot.clone().unwrap_or_default();
                                let mut v = super::validate_case(&case);
                                if v.is_empty() {
                                    v = super::personal::intake_case(&mut case);
                                }
                                if !v.is_empty() {
                                    return Err(Error::Invalid(v));
                                }
                                // The case keeps its identity.
                                case.case_id = l.case_id().to_string();
                                l.transfer.redacted_fields =
                                    super::minimise(&mut case, &route.allowed_personal_info);
                                l.transfer.case_snapshot = Some(case);
                            }
                            _ => {
                                return Err(FieldViolation::new(
                                    "update_mask",
                                    "may name note, case_snapshot",
                                )
                                .into());
                            }
                        }
                    }
                    Ok(Change {
                        event_type: TransferEventType::Updated,
                        ..Default::default()
                    })
                },
                transfer_reply!(UpdateTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn submit_transfer(
        &self,
        request: Request<SubmitTransferRequest>,
    ) -> Reply<SubmitTransferResponse> {
        let who = who(&request)?;
        let req = request.into_inner();
        let resp = self
            .mutate(
                &who,
                "SubmitTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                // Decided from the pinned route of the transfer as read for the change.
                |_l: &Loaded, route: &Route| Action::Submit {
                    no_steps: route.approval_steps.is_empty(),
                },
                super::submission,
                transfer_reply!(SubmitTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn approve_transfer(
        &self,
        request: Request<ApproveTransferRequest>,
    ) -> Reply<ApproveTransferResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.comment);
        // Whether this is the route's last step; the step itself is checked inside the change,
        // after the idempotent replay (a retried approval must get its first answer).
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "ApproveTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                |_l: &Loaded, route: &Route| Action::Approve {
                    last: req.step_index as usize + 1 >= route.approval_steps.len(),
                },
                |l, route, cal, now| {
                    if l.transfer.current_step != req.step_index {
                        return Err(Error::WrongState {
                            resource: l.transfer.name.clone(),
                            state: "TRANSFER_STATE_AWAITING_APPROVAL".into(),
                            action: "approve a step other than the pending one",
                        });
                    }
                    // One person may not approve two steps of one transfer (four eyes): the
                    // person, not the (agency, actor) pair — one officer may hold tokens of the
                    // command centre and of the station. Approvals recorded before `person`
                    // existed compare by actor id.
                    if l.transfer.approvals.iter().any(|a| {
                        a.approver.as_ref().is_some_and(|p| {
                            let earlier = if p.person.is_empty() {
                                p.actor_id.as_str()
                            } else {
                                p.person.as_str()
                            };
                            earlier == actor.person()
                        })
                    }) {
                        return Err(Error::Refused(
                            Reason::SameApprover,
                            "one person may not approve two steps of one transfer".into(),
                        ));
                    }
                    let step = l.transfer.current_step;
                    let step_name = route
                        .approval_steps
                        .get(step as usize)
                        .map(|s| s.display_name.clone())
                        .unwrap_or_default();
                    l.transfer.approvals.push(Approval {
                        step_index: step,
                        step_name,
                        approver: Some(actor.as_actor()),
                        approve_time: Some(to_timestamp(now)),
                        comment: req.comment.clone(),
                    });
                    l.transfer.current_step = step + 1;
                    let mut change = Change {
                        event_type: TransferEventType::StepApproved,
                        ..Default::default()
                    };
                    // The same test as the action's `last` (both from the pinned route).
                    if step as usize + 1 >= route.approval_steps.len() {
                        change.event_type = TransferEventType::Approved;
                        offer(l, route, cal, now, &mut change)?;
                    } else {
                        super::approval_required(l, route, (step + 1) as usize, &mut change);
                    }
                    Ok(change)
                },
                transfer_reply!(ApproveTransferResponse),
            )
            .await;
        match resp {
            Err(Error::Refused(Reason::SameApprover, m)) => {
                self.denied(&who, "ApproveTransfer", &req.name, "SAME_APPROVER")
                    .await;
                Err(Error::Refused(Reason::SameApprover, m).into())
            }
            r => Ok(Response::new(r?)),
        }
    }

    async fn reject_transfer(
        &self,
        request: Request<RejectTransferRequest>,
    ) -> Reply<RejectTransferResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.reason);
        required_text("reason", &req.reason, 2000)?;
        let resp = self
            .mutate(
                &who,
                "RejectTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Reject),
                |l, _route, _cal, _now| {
                    if l.transfer.current_step != req.step_index {
                        return Err(Error::WrongState {
                            resource: l.transfer.name.clone(),
                            state: "TRANSFER_STATE_AWAITING_APPROVAL".into(),
                            action: "reject at a step other than the pending one",
                        });
                    }
                    l.transfer.approvals.clear();
                    l.transfer.current_step = 0;
                    Ok(Change {
                        event_type: TransferEventType::Rejected,
                        reason: req.reason.clone(),
                        messages: vec![(MessageKind::TransferRejected, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(RejectTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn withdraw_transfer(
        &self,
        request: Request<WithdrawTransferRequest>,
    ) -> Reply<WithdrawTransferResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.reason);
        required_text("reason", &req.reason, 2000)?;
        let resp = self
            .mutate(
                &who,
                "WithdrawTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Withdraw),
                |l, _route, _cal, now| {
                    // Offered once approved (the acceptance clock starts only on delivery).
                    let offered = matches!(
                        l.state(),
                        TransferState::Approved | TransferState::Delivered
                    );
                    stop_running(&mut l.acceptance, now)?;
                    let mut change = Change {
                        event_type: TransferEventType::Withdrawn,
                        reason: req.reason.clone(),
                        ..Default::default()
                    };
                    if offered {
                        change
                            .messages
                            .push((MessageKind::TransferWithdrawn, l.receiver().to_string()));
                    }
                    Ok(change)
                },
                transfer_reply!(WithdrawTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn accept_transfer(
        &self,
        request: Request<AcceptTransferRequest>,
    ) -> Reply<AcceptTransferResponse> {
        let who = who(&request)?;
        let req = request.into_inner();
        let mut v = Vec::new();
        super::personal::identifier(&mut v, "receiver_reference", &req.receiver_reference);
        if !v.is_empty() {
            return Err(Error::Invalid(v).into());
        }
        let resp = self
            .mutate(
                &who,
                "AcceptTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Accept),
                |l, route, cal, now| {
                    super::check_acceptance_deadline(l, now)?;
                    stop_running(&mut l.acceptance, now)?;
                    l.feedback = start_clock("feedback", route.feedback_clock.as_ref(), now, cal)?;
                    super::start_named(l, route, ClockStart::Accepted, now, cal)?;
                    if !req.receiver_reference.is_empty()
                        && let Some(case) = l.transfer.case_snapshot.as_mut()
                    {
                        let to = l
                            .transfer
                            .to_agency
                            .as_ref()
                            .map(|a| a.name.clone())
                            .unwrap_or_default();
                        case.external_references
                            .insert(to, req.receiver_reference.clone());
                    }
                    Ok(Change {
                        event_type: TransferEventType::Accepted,
                        messages: vec![(MessageKind::TransferAccepted, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(AcceptTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn decline_transfer(
        &self,
        request: Request<DeclineTransferRequest>,
    ) -> Reply<DeclineTransferResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.reason);
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "DeclineTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Decline),
                |l, route, _cal, now| {
                    super::check_acceptance_deadline(l, now)?;
                    let code =
                        allowed_code("reason_code", &req.reason_code, &route.decline_reasons)?;
                    stop_running(&mut l.acceptance, now)?;
                    l.transfer.decline = Some(Decline {
                        reason_code: code.code.clone(),
                        reason_description: code.description.clone(),
                        reason: req.reason.clone(),
                        actor: Some(actor.as_actor()),
                        decline_time: Some(to_timestamp(now)),
                    });
                    Ok(Change {
                        event_type: TransferEventType::Declined,
                        reason_code: code.code.clone(),
                        reason: req.reason.clone(),
                        messages: vec![(MessageKind::TransferDeclined, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(DeclineTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn pause_clock(&self, request: Request<PauseClockRequest>) -> Reply<PauseClockResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.reason);
        let resp = self
            .mutate(
                &who,
                "PauseClock",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Clock),
                |l, _route, _cal, now| {
                    pick_clock(l, req.clock)?
                        .pause(now, &req.reason_code)
                        .map_err(clock_error)?;
                    Ok(Change {
                        event_type: TransferEventType::ClockPaused,
                        reason_code: req.reason_code.clone(),
                        reason: req.reason.clone(),
                        messages: vec![(MessageKind::ClockPaused, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(PauseClockResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn resume_clock(
        &self,
        request: Request<ResumeClockRequest>,
    ) -> Reply<ResumeClockResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.comment);
        let resp = self
            .mutate(
                &who,
                "ResumeClock",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Clock),
                |l, _route, cal, now| {
                    pick_clock(l, req.clock)?
                        .resume(now, cal)
                        .map_err(clock_error)?;
                    Ok(Change {
                        event_type: TransferEventType::ClockResumed,
                        reason: req.comment.clone(),
                        messages: vec![(MessageKind::ClockResumed, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(ResumeClockResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn extend_deadline(
        &self,
        request: Request<ExtendDeadlineRequest>,
    ) -> Reply<ExtendDeadlineResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.reason);
        if req.length == 0 {
            return Err(Error::from(FieldViolation::new("length", "must be at least 1")).into());
        }
        required_text("reason", &req.reason, 2000)?;
        let roles = who.roles.clone();
        let resp = self
            .mutate(
                &who,
                "ExtendDeadline",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Clock),
                |l, _route, cal, _now| {
                    // Consent of every party (特邀调解规定 Art 27: extension with all parties' consent).
                    let parties: Vec<String> = l
                        .transfer
                        .case_snapshot
                        .as_ref()
                        .map(|c| c.parties.iter().map(|p| p.party_id.clone()).collect())
                        .unwrap_or_default();
                    let all_consent = !parties.is_empty()
                        && parties.iter().all(|p| req.consenting_party_ids.contains(p));
                    pick_clock(l, req.clock)?
                        .extend(req.length, &roles, all_consent, cal)
                        .map_err(clock_error)?;
                    Ok(Change {
                        event_type: TransferEventType::DeadlineExtended,
                        reason: req.reason.clone(),
                        messages: vec![(MessageKind::DeadlineExtended, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(ExtendDeadlineResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn complete_clock(
        &self,
        request: Request<CompleteClockRequest>,
    ) -> Reply<CompleteClockResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.comment);
        if !crate::routes::is_clock_name(&req.clock) {
            return Err(Error::from(FieldViolation::new(
                "clock",
                "must name a clock of the transfer's route (a-z and '_', at most 40)",
            ))
            .into());
        }
        if req.comment.chars().count() > 2000 {
            return Err(
                Error::from(FieldViolation::new("comment", "at most 2000 characters")).into(),
            );
        }
        let resp = self
            .mutate(
                &who,
                "CompleteClock",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::CompleteClock),
                |l, route, _cal, now| {
                    // The clock must be one of the pinned route version's named clocks.
                    if !route.clocks.iter().any(|r| r.name == req.clock) {
                        return Err(FieldViolation::new(
                            "clock",
                            format!(
                                "route {} version {} has no clock {:?}",
                                route.name, route.version, req.clock
                            ),
                        )
                        .into());
                    }
                    let Some(c) = l.named.iter_mut().find(|c| c.name == req.clock) else {
                        return Err(crate::error::clock_not_running(format!(
                            "the clock {:?} has not started",
                            req.clock
                        )));
                    };
                    // The deadline is the rule, not only the timer (as for accepting): once due,
                    // the expiry is the timer's to carry out.
                    if c.is_due(now) {
                        return Err(Error::Refused(
                            Reason::ClockDeadlinePassed,
                            format!("the deadline of the clock {:?} has passed", req.clock),
                        ));
                    }
                    c.stop(now).map_err(clock_error)?;
                    Ok(Change {
                        event_type: TransferEventType::ClockCompleted,
                        reason_code: req.clock.clone(),
                        reason: req.comment.clone(),
                        messages: vec![(MessageKind::TransferUpdated, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(CompleteClockResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn request_investigation(
        &self,
        request: Request<RequestInvestigationRequest>,
    ) -> Reply<RequestInvestigationResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.questions);
        required_text("questions", &req.questions, 4000)?;
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "RequestInvestigation",
                &req.request_id,
                &req,
                &req.parent,
                &req.etag,
                fixed(Action::RequestInvestigation),
                |l, _route, _cal, now| {
                    let n = l.transfer.investigations.len() + 1;
                    if req.pause_feedback_clock {
                        let c = l.feedback.as_mut().ok_or_else(|| {
                            crate::error::clock_not_running("the feedback clock is not running")
                        })?;
                        c.pause(now, PAUSE_FOR_INVESTIGATION).map_err(clock_error)?;
                    }
                    let inv = Investigation {
                        name: format!("{}/investigations/{n}", l.transfer.name),
                        questions: req.questions.clone(),
                        requested_due_time: req.requested_due_time,
                        pauses_feedback_clock: req.pause_feedback_clock,
                        state: InvestigationState::Open as i32,
                        requested_by: Some(actor.as_actor()),
                        request_time: Some(to_timestamp(now)),
                        ..Default::default()
                    };
                    l.transfer.investigations.push(inv.clone());
                    Ok(Change {
                        event_type: TransferEventType::InvestigationRequested,
                        reason_code: if req.pause_feedback_clock {
                            PAUSE_FOR_INVESTIGATION.into()
                        } else {
                            String::new()
                        },
                        messages: vec![(
                            MessageKind::InvestigationRequested,
                            l.sender().to_string(),
                        )],
                        investigation: Some(inv),
                        ..Default::default()
                    })
                },
                |t, inv| RequestInvestigationResponse {
                    investigation: inv,
                    transfer: Some(t),
                },
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn answer_investigation(
        &self,
        request: Request<AnswerInvestigationRequest>,
    ) -> Reply<AnswerInvestigationResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.answer);
        super::personal::redact_documents(&mut req.evidence);
        required_text("answer", &req.answer, 8000)?;
        let parent = req
            .name
            .split("/investigations/")
            .next()
            .unwrap_or_default()
            .to_string();
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "AnswerInvestigation",
                &req.request_id,
                &req,
                &parent,
                &req.etag,
                fixed(Action::AnswerInvestigation),
                |l, _route, cal, now| {
                    let Some(inv) = l
                        .transfer
                        .investigations
                        .iter_mut()
                        .find(|i| i.name == req.name)
                    else {
                        return Err(Error::NotFound(req.name.clone()));
                    };
                    if inv.state != InvestigationState::Open as i32 {
                        return Err(Error::WrongState {
                            resource: req.name.clone(),
                            state: "INVESTIGATION_STATE_ANSWERED".into(),
                            action: "answer",
                        });
                    }
                    inv.state = InvestigationState::Answered as i32;
                    inv.answer = req.answer.clone();
                    inv.answer_evidence = req.evidence.clone();
                    inv.answered_by = Some(actor.as_actor());
                    inv.answer_time = Some(to_timestamp(now));
                    let answered = inv.clone();
                    let still_pausing = l.transfer.investigations.iter().any(|i| {
                        i.state == InvestigationState::Open as i32 && i.pauses_feedback_clock
                    });
                    if answered.pauses_feedback_clock
                        && !still_pausing
                        && let Some(c) = l.feedback.as_mut()
                        && c.paused_at.is_some()
                    {
                        c.resume(now, cal).map_err(clock_error)?;
                    }
                    Ok(Change {
                        event_type: TransferEventType::InvestigationAnswered,
                        messages: vec![(
                            MessageKind::InvestigationAnswered,
                            l.receiver().to_string(),
                        )],
                        investigation: Some(answered),
                        ..Default::default()
                    })
                },
                |t, inv| AnswerInvestigationResponse {
                    investigation: inv,
                    transfer: Some(t),
                },
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn submit_feedback(
        &self,
        request: Request<SubmitFeedbackRequest>,
    ) -> Reply<SubmitFeedbackResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.summary);
        super::personal::redact_documents(&mut req.documents);
        required_text("summary", &req.summary, 8000)?;
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "SubmitFeedback",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::SubmitFeedback),
                |l, route, _cal, now| {
                    let code =
                        allowed_code("outcome_code", &req.outcome_code, &route.feedback_outcomes)?;
                    stop_running(&mut l.feedback, now)?;
                    l.transfer.feedback = Some(Feedback {
                        outcome_code: code.code.clone(),
                        outcome_description: code.description.clone(),
                        summary: req.summary.clone(),
                        documents: req.documents.clone(),
                        amount: req.amount.clone(),
                        submitted_by: Some(actor.as_actor()),
                        submit_time: Some(to_timestamp(now)),
                        ..Default::default()
                    });
                    Ok(Change {
                        event_type: TransferEventType::FeedbackSubmitted,
                        reason_code: code.code.clone(),
                        messages: vec![(MessageKind::Feedback, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(SubmitFeedbackResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn acknowledge_feedback(
        &self,
        request: Request<AcknowledgeFeedbackRequest>,
    ) -> Reply<AcknowledgeFeedbackResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.comment);
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "AcknowledgeFeedback",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::AcknowledgeFeedback),
                |l, _route, _cal, now| {
                    if let Some(f) = l.transfer.feedback.as_mut() {
                        f.acknowledged_by = Some(actor.as_actor());
                        f.acknowledge_time = Some(to_timestamp(now));
                        f.acknowledge_comment = req.comment.clone();
                    }
                    Ok(Change {
                        event_type: TransferEventType::FeedbackAcknowledged,
                        messages: vec![(
                            MessageKind::FeedbackAcknowledged,
                            l.receiver().to_string(),
                        )],
                        ..Default::default()
                    })
                },
                transfer_reply!(AcknowledgeFeedbackResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn return_transfer(
        &self,
        request: Request<ReturnTransferRequest>,
    ) -> Reply<ReturnTransferResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.reason);
        super::personal::redact_documents(&mut req.documents);
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "ReturnTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Return),
                |l, route, _cal, now| {
                    let code =
                        allowed_code("reason_code", &req.reason_code, &route.return_reasons)?;
                    stop_running(&mut l.feedback, now)?;
                    l.transfer.handback = Some(Handback {
                        escalation: false,
                        reason_code: code.code.clone(),
                        reason_description: code.description.clone(),
                        reason: req.reason.clone(),
                        documents: req.documents.clone(),
                        actor: Some(actor.as_actor()),
                        handback_time: Some(to_timestamp(now)),
                    });
                    Ok(Change {
                        event_type: TransferEventType::Returned,
                        reason_code: code.code.clone(),
                        reason: req.reason.clone(),
                        messages: vec![(MessageKind::TransferReturned, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(ReturnTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn escalate_transfer(
        &self,
        request: Request<EscalateTransferRequest>,
    ) -> Reply<EscalateTransferResponse> {
        let who = who(&request)?;
        let mut req = request.into_inner();
        // Free text is redacted before it is stored (issue #14 §1).
        redact_in_place(&mut req.reason);
        super::personal::redact_documents(&mut req.documents);
        required_text("reason", &req.reason, 4000)?;
        let actor = who.clone();
        let resp = self
            .mutate(
                &who,
                "EscalateTransfer",
                &req.request_id,
                &req,
                &req.name,
                &req.etag,
                fixed(Action::Escalate),
                |l, route, _cal, now| {
                    // Checked against the pinned route version (`route` is what the transfer
                    // pinned on creation, not the current version).
                    if route.escalation_reasons.is_empty() {
                        return Err(Error::Refused(
                            Reason::EscalationNotAllowed,
                            format!(
                                "route {} version {} lists no escalation reasons; return the \
                                 case or report feedback instead",
                                route.name, route.version
                            ),
                        ));
                    }
                    let code =
                        allowed_code("reason_code", &req.reason_code, &route.escalation_reasons)?;
                    stop_running(&mut l.feedback, now)?;
                    // 人民调解法 Art 25: a dispute that may intensify is reported at once.
                    l.transfer.handback = Some(Handback {
                        escalation: true,
                        reason_code: code.code.clone(),
                        reason_description: code.description.clone(),
                        reason: req.reason.clone(),
                        documents: req.documents.clone(),
                        actor: Some(actor.as_actor()),
                        handback_time: Some(to_timestamp(now)),
                    });
                    Ok(Change {
                        event_type: TransferEventType::Escalated,
                        reason_code: code.code.clone(),
                        reason: req.reason.clone(),
                        messages: vec![(MessageKind::TransferEscalated, l.sender().to_string())],
                        ..Default::default()
                    })
                },
                transfer_reply!(EscalateTransferResponse),
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn watch_transfers(&self, request: Request<WatchTransfersRequest>) -> Reply<WatchStream> {
        let who = who(&request)?;
        let req = request.into_inner();
        let mut after: i64 = match fengqiao_kit::handler::resume_after(&req.resume_token)? {
            Some(after) => after,
            None => self.last_event_seq().await?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let me = self.clone();
        let mut changed = self.subscribe();
        tokio::spawn(async move {
            loop {
                let (read_to, batch) = match me.events_after(&who.agency, after, 100).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let empty = read_to == after;
                after = read_to;
                for (seq, event) in batch {
                    let wanted = (req.case_id.is_empty() || event.case_id == req.case_id)
                        && (req.transfers.is_empty() || req.transfers.contains(&event.transfer));
                    if wanted {
                        let resume_token = seq.to_string();
                        if tx
                            .send(Ok(WatchTransfersResponse {
                                event: Some(event),
                                resume_token,
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                if empty {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = changed.changed() => {}
                        // Other router replicas commit too: poll now and then.
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_case_timeline(
        &self,
        request: Request<GetCaseTimelineRequest>,
    ) -> Reply<GetCaseTimelineResponse> {
        let who = who(&request)?;
        Ok(Response::new(self.timeline(&who, request.get_ref()).await?))
    }
}
