//! Police referral (警调对接): 110 referrals screened and handed to people's mediation through
//! the router, with the result fed back to the command room.
//!
//! The contract is `proto/fengqiao/policereferral/v1`. A referral is taken in from the 110
//! dispatch system (or a station), validated, screened by the rules in [`screening`], and — when
//! it is a civil dispute — handed to the station's mediation room with a transfer on the router
//! (移送单). The router's messages keep the referral in step with its transfer; supplementary
//! investigation and the acknowledgement of feedback go back through the router for the caller.
//!
//! **One truth** (issue #9): the router is the source of truth of the transfer; the referral
//! is reconciled from the router's messages. A call that changes the transfer calls the router
//! first (with a request id derived only from the method, the referral and the client's
//! `request_id`, never from a re-read etag or state) and commits the referral after, recording
//! the event sequence of the router's answer. If that commit is lost (a cut-off call, a crash),
//! the router's message for the same event finds the referral by its case id
//! (`CaseSnapshot.case_id`), adopts the transfer if the referral did not link it yet, and
//! brings the referral in step ([`reconcile`]); a retry with the same `request_id` then
//! completes and returns the first answer. A message whose event sequence is not newer than
//! what the referral reflects changes nothing (it is still recorded in the inbox).
//! `CreateReferral` takes `officer` from the caller's token and assigns each party a UUID.

mod domain;
pub mod error;
mod inbox;
pub mod lifecycle;
/// The service's entry in the registry the binary starts services from.
pub mod module;
pub mod reconcile;
pub mod screening;
mod service;
mod store;
pub mod validate;

use fengqiao_kit::pii;
use fengqiao_kit::records::Schema;
use fengqiao_store::Store;

use crate::error::Result;

/// Name under which this service's migrations are recorded.
pub const SERVICE: &str = "police_referral";

/// This service's own migrations, applied after the shared ones.
pub const SCHEMA: Schema = fengqiao_kit::schema!(
    SERVICE,
    [
        (1, "referrals", "migrations/0001_referrals.sql"),
        (2, "event_seq", "migrations/0002_event_seq.sql"),
    ]
);

/// The route used when `DraftTransfer.route` is empty.
pub const DEFAULT_ROUTE: &str = "routes/police-to-station-mediation";

/// Applies the shared migrations, then this service's.
pub async fn migrate(store: &Store) -> Result<(), fengqiao_store::Error> {
    SCHEMA.migrate(store).await
}

/// Who may ask for the full personal information (`x-fengqiao-personal-info: full`) of a
/// referral: the station's officers and duty chief, who handle the referral and must reach the
/// parties, and other Fengqiao services (`service`). Not the
/// 110 dispatcher (`dispatcher`) nor the command-room reviewer (`command_room_reviewer`): they
/// take the call in and review screening, for which the masked values suffice (PIPL Art 6,
/// minimum necessary). Every full read leaves an access-log row.
pub const FULL_VIEW: pii::FullView = pii::FullView {
    service: "police-referral",
    roles: &["officer", "duty_chief", "service"],
};

// What the binary (the registry entry, the service) and the tests use.
pub use domain::{state_for_screening, state_for_transfer};
pub use module::MODULE;
pub use service::PoliceReferral;
