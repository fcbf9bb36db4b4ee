//! Personal information in transfers (issue #14 §1; 个人信息保护法 Art 6, 28, 51).
//!
//! - **At rest**: `transfers.body` and `transfer_events.body` are sealed
//!   ([`fengqiao_store::seal`], contexts [`super::BODY_CONTEXT`], [`super::EVENT_BODY_CONTEXT`]);
//!   the outbox payloads and idempotent answers are sealed by the store.
//! - **Masked by role**: every answer that holds a transfer is masked
//!   ([`fengqiao_kit::pii::mask`]): the mutation answers always, `GetTransfer` and
//!   `ListTransfers` unless the caller asks for `x-fengqiao-personal-info: full` and holds a
//!   role the transfer's route names ([`full_view_allowed`]). Event streams and timelines
//!   carry no parties (their free text is redacted at intake).
//! - **Full reads audited** in the router's own hash-chained audit (action [`PII_READ`], the
//!   fields read in `personal_info_fields`, never the values), in the read's transaction; a
//!   refused full view is a `denied` record (`PERSONAL_INFO_VIEW_DENIED`).
//! - **Intake**: parties checked with the kit's validators, free text redacted
//!   ([`fengqiao_kit::pii::redact_in_place`]), identifiers that look personal refused.
//! - **Delivery**: envelopes carry the transfer whole — they are the hand-over itself, to the
//!   receiving agency's system, already minimised to the route's `allowed_personal_info`.

use fengqiao_kit::pii::{self, FullView};
use fengqiao_kit::{FieldViolation, Identity};
use fengqiao_proto::common::{EvidenceRef, PersonalInfoField};
use fengqiao_proto::router::{CaseSnapshot, Route, Transfer};

/// Audit action of a full read of a transfer's personal information.
pub const PII_READ: &str = "pii.read";

/// Role of a Fengqiao service identity (an agency service reading what it needs): may always
/// ask for the full view of the transfers it can see.
pub const ROLE_SERVICE: &str = "service";

/// The router's default full view, for routes that name no `full_personal_info_roles`: the
/// people who work the case with the parties — the mediator who calls them, the station officer,
/// the court clerk and the judge — and the service identity. Never dispatchers, reviewers or
/// approvers (they decide on the hand-over, not on the people).
pub const FULL_VIEW: FullView = FullView {
    service: "router",
    roles: &["mediator", "officer", "court_clerk", "judge", ROLE_SERVICE],
};

/// Whether `who` may read transfers of `route` unmasked: the route's
/// `full_personal_info_roles`, or [`FULL_VIEW`] when it names none; [`ROLE_SERVICE`] always.
pub fn full_view_allowed(who: &Identity, route: &Route) -> bool {
    if who.has_role(ROLE_SERVICE) {
        return true;
    }
    if route.full_personal_info_roles.is_empty() {
        FULL_VIEW.allows(who)
    } else {
        route
            .full_personal_info_roles
            .iter()
            .any(|r| who.has_role(r))
    }
}

/// The roles that may read `route`'s transfers unmasked, for the refusal's message.
pub fn full_view_roles(route: &Route) -> String {
    if route.full_personal_info_roles.is_empty() {
        FULL_VIEW.roles.join(", ")
    } else {
        let mut r = route.full_personal_info_roles.clone();
        r.push(ROLE_SERVICE.into());
        r.join(", ")
    }
}

/// The personal-information fields `t` holds values for (for the audit record of a full read).
pub fn fields_of(t: &Transfer) -> Vec<PersonalInfoField> {
    let mut out = Vec::new();
    let mut add = |f: PersonalInfoField, present: bool| {
        if present && !out.contains(&f) {
            out.push(f);
        }
    };
    if let Some(c) = &t.case_snapshot {
        for p in &c.parties {
            add(PersonalInfoField::PartyName, !p.name.is_empty());
            add(PersonalInfoField::PartyIdNumber, !p.id_number.is_empty());
            add(PersonalInfoField::PartyPhone, !p.phone.is_empty());
            add(
                PersonalInfoField::PartyAddress,
                p.address
                    .as_ref()
                    .is_some_and(|a| !a.detail.is_empty() || a.location.is_some()),
            );
        }
        add(
            PersonalInfoField::LocationDetail,
            c.location
                .as_ref()
                .is_some_and(|a| !a.detail.is_empty() || a.location.is_some()),
        );
    }
    out
}

/// Masks `t` (every party and address of its snapshot).
pub fn mask(t: &mut Transfer) {
    pii::mask(t);
}

/// Redacts free-text display names of documents.
pub fn redact_documents(docs: &mut [EvidenceRef]) {
    for d in docs {
        pii::redact_in_place(&mut d.display_name);
    }
}

/// Refuses an identifier that holds a resident ID or a mobile number (INVALID_ARGUMENT naming
/// `field`): identifiers are indexed and shown, so they must not carry personal information.
pub fn identifier(out: &mut Vec<FieldViolation>, field: &str, value: &str) {
    if pii::looks_personal(value) {
        out.push(FieldViolation::new(
            field,
            "must not hold a resident ID number or a mobile number",
        ));
    }
}

/// Intake of a case snapshot (CreateTransfer, UpdateTransfer), fields under
/// `transfer.case_snapshot.`: parties and the location checked with the kit's validators,
/// identifiers (external references) that look personal refused; if all is well, the free
/// text (summary, document names) redacted in place.
pub fn intake_case(case: &mut CaseSnapshot) -> Vec<FieldViolation> {
    let pre = "transfer.case_snapshot.";
    let mut v = Vec::new();
    for (i, p) in case.parties.iter().enumerate() {
        pii::validate::party(&mut v, &format!("{pre}parties[{i}]"), p, false);
    }
    if case.location.is_some() {
        pii::validate::address(
            &mut v,
            &format!("{pre}location"),
            case.location.as_ref(),
            false,
        );
    }
    for (k, val) in &case.external_references {
        // The key is an agency name, the value its reference (e.g. a 警情编号).
        identifier(&mut v, &format!("{pre}external_references"), k);
        identifier(&mut v, &format!("{pre}external_references"), val);
    }
    if v.is_empty() {
        pii::redact_in_place(&mut case.summary);
        redact_documents(&mut case.evidence);
        if let Some(c) = case.confirmation.as_mut()
            && let Some(a) = c.agreement.as_mut()
        {
            pii::redact_in_place(&mut a.display_name);
        }
    }
    v
}
