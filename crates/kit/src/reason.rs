//! The one catalogue of stable error reasons (`google.rpc.ErrorInfo.reason`, domain
//! `fengqiao`) that any Fengqiao service answers with.
//!
//! A reason names one situation, always with the same gRPC status code, so a client can branch
//! on it. Every [`crate::ApiError`] carries a [`Reason`] from this table, so a reason that is not
//! in the catalogue cannot be sent; `docs/errors.md` lists the same table (a test holds them
//! together).

use tonic::Code;

macro_rules! catalogue {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $name:literal, $code:ident; )+) => {
        /// A stable error reason. See the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Reason {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl Reason {
            /// Every reason, in catalogue order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),+];

            /// The wire form (`UPPER_SNAKE_CASE`), e.g. `WRONG_STATE`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $name,)+ }
            }

            /// The gRPC status code every error with this reason has.
            pub const fn code(self) -> Code {
                match self { $(Reason::$variant => Code::$code,)+ }
            }

            /// The situation the reason names (one line, for the catalogue).
            pub fn summary(self) -> &'static str {
                match self { $(Reason::$variant => concat!($($doc),+).trim_ascii(),)+ }
            }
        }
    };
}

catalogue! {
    // ── Any call ────────────────────────────────────────────────────────────────────────────
    /// The request is malformed; `google.rpc.BadRequest` names each bad field.
    InvalidArgument = "INVALID_ARGUMENT", InvalidArgument;
    /// The call carries no verified identity.
    Unauthenticated = "UNAUTHENTICATED", Unauthenticated;
    /// No bearer token was sent.
    TokenMissing = "TOKEN_MISSING", Unauthenticated;
    /// The token is not a well-formed signed token.
    TokenMalformed = "TOKEN_MALFORMED", Unauthenticated;
    /// The token names a signing key this server does not know.
    TokenUnknownKey = "TOKEN_UNKNOWN_KEY", Unauthenticated;
    /// The token's signature does not verify.
    TokenBadSignature = "TOKEN_BAD_SIGNATURE", Unauthenticated;
    /// The token has expired.
    TokenExpired = "TOKEN_EXPIRED", Unauthenticated;
    /// The token is not valid yet.
    TokenNotYetValid = "TOKEN_NOT_YET_VALID", Unauthenticated;
    /// The token was issued by another issuer.
    TokenWrongIssuer = "TOKEN_WRONG_ISSUER", Unauthenticated;
    /// The caller lacks a role the action needs.
    RoleRequired = "ROLE_REQUIRED", PermissionDenied;
    /// The caller's agency sees the resource but is not the party that takes this action
    /// (not the handling station, not the approver of the current step, not the receiver, the
    /// roster of another agency).
    WrongParty = "WRONG_PARTY", PermissionDenied;
    /// The same person already approved an earlier step (four eyes).
    SameApprover = "SAME_APPROVER", PermissionDenied;
    /// Only the router may call this (agency inboxes).
    RouterOnly = "ROUTER_ONLY", PermissionDenied;
    /// Unmasked personal information (`x-fengqiao-personal-info: full`) was asked for by a
    /// caller without a role the service names for it.
    PersonalInfoViewDenied = "PERSONAL_INFO_VIEW_DENIED", PermissionDenied;
    /// No such resource, or not visible to the caller (the same answer either way).
    NotFound = "NOT_FOUND", NotFound;
    /// A resource with this name already exists.
    AlreadyExists = "ALREADY_EXISTS", AlreadyExists;
    /// The `request_id` was already used for a different request.
    RequestIdReused = "REQUEST_ID_REUSED", AlreadyExists;
    /// The `etag` does not match the resource's current version: read it again and retry.
    EtagMismatch = "ETAG_MISMATCH", Aborted;
    /// A concurrent update won; retrying the same request is safe.
    StoreConflict = "STORE_CONFLICT", Aborted;
    /// The resource's state does not allow the action (`metadata["state"]` is the state's enum
    /// name, `google.rpc.PreconditionFailure` names the resource).
    WrongState = "WRONG_STATE", FailedPrecondition;
    /// Too many calls from this caller; retry after the delay in `google.rpc.RetryInfo`.
    RateLimited = "RATE_LIMITED", ResourceExhausted;
    /// The server is at its limit of calls in flight; retry shortly.
    ServerOverloaded = "SERVER_OVERLOADED", ResourceExhausted;
    /// The caller's agency already holds as many open streams (`Watch…`) as one agency may;
    /// close one first.
    TooManyStreams = "TOO_MANY_STREAMS", ResourceExhausted;
    /// The request body is not a valid encoding of the method's message (bad wire type, invalid
    /// UTF-8, truncated field, nesting too deep, broken gRPC framing).
    MalformedMessage = "MALFORMED_MESSAGE", InvalidArgument;
    /// The request message is larger than the server accepts (`metadata["limit_bytes"]`).
    MessageTooLarge = "MESSAGE_TOO_LARGE", ResourceExhausted;
    /// The request's metadata (headers) is larger than the server accepts.
    HeadersTooLarge = "HEADERS_TOO_LARGE", InvalidArgument;
    /// The server is stopping; reconnect (to another replica).
    ShuttingDown = "SHUTTING_DOWN", Unavailable;
    /// A service this call depends on (the router) could not be reached; retry with the same
    /// `request_id`.
    UpstreamUnavailable = "UPSTREAM_UNAVAILABLE", Unavailable;
    /// The call's deadline passed before the server finished.
    DeadlineExceeded = "DEADLINE_EXCEEDED", DeadlineExceeded;
    /// A fault of the server; the detail is logged, not returned.
    Internal = "INTERNAL", Internal;

    // ── Routes and transfers (router) ──────────────────────────────────────────────────────
    /// No route with this id (and version) is published.
    RouteUnknown = "ROUTE_UNKNOWN", FailedPrecondition;
    /// The route does not start at the calling agency's kind.
    RouteNotForSender = "ROUTE_NOT_FOR_SENDER", PermissionDenied;
    /// The route's data cannot carry the action (a missing code list, clock or step).
    RouteMisconfigured = "ROUTE_MISCONFIGURED", FailedPrecondition;
    /// The sending agency is not in the router's registry.
    SenderNotRegistered = "SENDER_NOT_REGISTERED", PermissionDenied;
    /// An open transfer of this case on this route from this sender exists
    /// (`metadata["transfer"]` names it).
    OpenTransferExists = "OPEN_TRANSFER_EXISTS", AlreadyExists;
    /// The pinned route has no escalation reasons, or not this one.
    EscalationNotAllowed = "ESCALATION_NOT_ALLOWED", FailedPrecondition;
    /// The pinned route has no feedback outcome for this ending.
    NoRouteOutcome = "NO_ROUTE_OUTCOME", FailedPrecondition;
    /// The acceptance deadline has passed (the database's time decides); the case goes back.
    AcceptanceDeadlinePassed = "ACCEPTANCE_DEADLINE_PASSED", FailedPrecondition;
    /// A named clock's deadline has passed; it can no longer be completed.
    ClockDeadlinePassed = "CLOCK_DEADLINE_PASSED", FailedPrecondition;
    /// The clock asked for is not running (not started, stopped, or not pausable in this
    /// state).
    ClockNotRunning = "CLOCK_NOT_RUNNING", FailedPrecondition;
    /// A message arrived before one it follows; the router redelivers in order.
    OutOfOrder = "OUT_OF_ORDER", FailedPrecondition;
    /// No service in this process keeps records for the envelope's route and side.
    NoHandler = "NO_HANDLER", FailedPrecondition;

    // ── Clocks (the shared clock engine) ───────────────────────────────────────────────────
    /// A clock rule is incomplete or out of bounds.
    ClockRuleInvalid = "CLOCK_RULE_INVALID", InvalidArgument;
    /// A time given to the clock is invalid.
    ClockTimeInvalid = "CLOCK_TIME_INVALID", Internal;
    /// The clock is already paused.
    ClockAlreadyPaused = "CLOCK_ALREADY_PAUSED", FailedPrecondition;
    /// The clock is not paused.
    ClockNotPaused = "CLOCK_NOT_PAUSED", FailedPrecondition;
    /// The clock is paused; resume it first.
    ClockPaused = "CLOCK_PAUSED", FailedPrecondition;
    /// The rule does not list this pause reason.
    ClockReasonNotPausable = "CLOCK_REASON_NOT_PAUSABLE", InvalidArgument;
    /// The rule allows no extension.
    ClockNotExtendable = "CLOCK_NOT_EXTENDABLE", FailedPrecondition;
    /// The extension asked for is empty.
    ClockExtensionInvalid = "CLOCK_EXTENSION_INVALID", InvalidArgument;
    /// The rule extends only with every party's consent, and it is not recorded.
    ClockPartyConsentRequired = "CLOCK_PARTY_CONSENT_REQUIRED", FailedPrecondition;
    /// The rule extends only on an approver's decision; the caller lacks the role.
    ClockApproverRoleRequired = "CLOCK_APPROVER_ROLE_REQUIRED", PermissionDenied;
    /// The extension exceeds the rule's maximum.
    ClockExtensionTooLong = "CLOCK_EXTENSION_TOO_LONG", FailedPrecondition;
    /// The extension would pass the rule's hard cap.
    ClockBeyondHardCap = "CLOCK_BEYOND_HARD_CAP", FailedPrecondition;
    /// The clock is stopped.
    ClockStopped = "CLOCK_STOPPED", FailedPrecondition;
    /// The clock has expired.
    ClockExpired = "CLOCK_EXPIRED", FailedPrecondition;
    /// The clock is not due yet.
    ClockNotDue = "CLOCK_NOT_DUE", FailedPrecondition;
    /// A deadline falls outside the calendar the server knows.
    ClockOutOfRange = "CLOCK_OUT_OF_RANGE", Internal;

    // ── Police referral (警调对接) ───────────────────────────────────────────────────────────
    /// A different referral was already taken in under this incident number.
    IncidentNumberReused = "INCIDENT_NUMBER_REUSED", AlreadyExists;
    /// The screening found no civil dispute; only civil disputes go to people's mediation
    /// (公安机关治安调解工作规范 Art 4).
    NotCivilDispute = "NOT_CIVIL_DISPUTE", FailedPrecondition;

    // ── People's mediation (人民调解) ───────────────────────────────────────────────────────
    /// The case has no mediator assigned.
    NotAssigned = "NOT_ASSIGNED", FailedPrecondition;
    /// The case already has this mediator.
    AlreadyAssigned = "ALREADY_ASSIGNED", FailedPrecondition;
    /// The mediator is inactive.
    MediatorInactive = "MEDIATOR_INACTIVE", FailedPrecondition;
    /// The mediator has withdrawn from (recused) this case.
    MediatorRecused = "MEDIATOR_RECUSED", FailedPrecondition;
    /// No active mediator of the committee matches the case.
    NoMediatorMatches = "NO_MEDIATOR_MATCHES", FailedPrecondition;
    /// The agency has no mediation organisation registered.
    NoOrganization = "NO_ORGANIZATION", FailedPrecondition;
    /// The case has no agreement.
    NoAgreement = "NO_AGREEMENT", FailedPrecondition;
    /// The case has no agreement in effect.
    NoEffectiveAgreement = "NO_EFFECTIVE_AGREEMENT", FailedPrecondition;
    /// This party has already signed the agreement.
    AlreadySigned = "ALREADY_SIGNED", FailedPrecondition;
    /// The agreement is already in effect.
    AlreadyEffective = "ALREADY_EFFECTIVE", FailedPrecondition;
    /// The follow-up visit is already done.
    FollowUpDone = "FOLLOW_UP_DONE", FailedPrecondition;

    // ── Court diversion (诉前调解) ───────────────────────────────────────────────────────────
    /// This party's consent is already recorded.
    ConsentAlreadyRecorded = "CONSENT_ALREADY_RECORDED", FailedPrecondition;
    /// Delegation needs every party's consent (特邀调解规定 Art 1, 11).
    PartyConsentRequired = "PARTY_CONSENT_REQUIRED", FailedPrecondition;
    /// The organisation already declined or let this case time out.
    OrganizationExcluded = "ORGANIZATION_EXCLUDED", FailedPrecondition;
    /// A different case was already registered under this pre-filing number (诉前调 number).
    PreFilingNumberReused = "PRE_FILING_NUMBER_REUSED", AlreadyExists;
    /// The parties' joint choice of a mediator has lapsed (在线调解规则 Art 10); the court
    /// designates.
    JointChoiceLapsed = "JOINT_CHOICE_LAPSED", FailedPrecondition;
    /// The parties' joint choice is still open; the court designates only when they waive it
    /// or it lapses.
    JointChoiceOpen = "JOINT_CHOICE_OPEN", FailedPrecondition;

    // ── Judicial confirmation (司法确认) ──────────────────────────────────────────────────────
    /// The application is not joint: every party to the agreement must apply (人民调解法
    /// Art 33; 民事诉讼法 Art 205).
    NotJointApplication = "NOT_JOINT_APPLICATION", FailedPrecondition;
    /// The 30 days from the agreement taking effect have passed (人民调解法 Art 33).
    ApplicationPeriodLapsed = "APPLICATION_PERIOD_LAPSED", FailedPrecondition;
    /// The application went to a court that is not competent for it (法释〔2011〕5号 Art 2).
    WrongCourt = "WRONG_COURT", FailedPrecondition;
    /// The objection window has closed (民诉法解释 Art 372: a party 15 days, an interested
    /// person 6 months).
    ObjectionPeriodLapsed = "OBJECTION_PERIOD_LAPSED", FailedPrecondition;
    /// A different application was already accepted under this 调确 number.
    ConfirmationNumberReused = "CONFIRMATION_NUMBER_REUSED", AlreadyExists;

    // ── Administrative disputes (行政争议实质性化解) ─────────────────────────────────────────
    /// Mediation is not allowed for this dispute: only administrative compensation,
    /// compensation and matters of discretionary power may be mediated (行政诉讼法 Art 60);
    /// the message names the article. Coordination without an agreement is still possible.
    OutsideMediationScope = "OUTSIDE_MEDIATION_SCOPE", FailedPrecondition;
    /// An application on the same facts and reasons was withdrawn after a settlement and
    /// cannot be brought again (行政复议法 Art 74).
    SameFactsWithdrawn = "SAME_FACTS_WITHDRAWN", FailedPrecondition;

    // ── Parts not built ─────────────────────────────────────────────────────────────────────
    /// The method is in the contract but not built yet; the message says what to do instead.
    NotBuilt = "NOT_BUILT", Unimplemented;
    /// The message cannot be applied yet (a local commit it follows is under way); the router
    /// redelivers it.
    NotYet = "NOT_YET", Unavailable;
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Reason {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or(())
    }
}

/// The catalogue as a Markdown table (what `docs/errors.md` holds between its markers).
pub fn markdown_table() -> String {
    let mut out = String::from("| reason | status | situation |\n|---|---|---|\n");
    for r in Reason::ALL {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            r.as_str(),
            code_name(r.code()),
            r.summary().replace('\n', " ")
        ));
    }
    out
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_upper_snake_and_round_trip() {
        let mut seen = BTreeSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{s} is not UPPER_SNAKE_CASE"
            );
            assert_eq!(s.parse::<Reason>(), Ok(*r));
            assert!(!r.summary().is_empty());
            assert_ne!(r.code(), Code::Ok);
        }
        assert!("BOGUS".parse::<Reason>().is_err());
    }

    /// `FENGQIAO_BLESS=1 cargo test -p fengqiao-kit reason` rewrites the table in the docs.
    #[test]
    fn the_docs_hold_the_catalogue() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
        let doc = std::fs::read_to_string(path).expect("docs/errors.md");
        let (begin, end) = ("<!-- catalogue:begin -->", "<!-- catalogue:end -->");
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let stop = doc.find(end).expect("end marker");
        let table = markdown_table();
        if std::env::var_os("FENGQIAO_BLESS").is_some() {
            let fresh = format!("{}\n{}{}", &doc[..start], table, &doc[stop..]);
            std::fs::write(path, fresh).expect("write docs/errors.md");
            return;
        }
        assert_eq!(
            doc[start..stop].trim(),
            table.trim(),
            "docs/errors.md is out of date: run FENGQIAO_BLESS=1 cargo test -p fengqiao-kit reason"
        );
    }
}
