//! The steps the agency services' handlers and inboxes share around their own logic: the gRPC
//! trait impl that only forwards to inherent handlers ([`forward_rpcs!`](crate::forward_rpcs)),
//! the caller and message of a request ([`open`]) and the checks of its fields ([`check`]), the
//! write transaction of an idempotent change (replay, or open it and read the database clock,
//! [`begin_or_replay!`](crate::begin_or_replay)) and its end ([`answered`]), the calls to the
//! router ([`router`]; as the agency's own system, [`SystemSigner`]), the prologue of a router
//! message ([`receive`], [`case_id_of`], [`transfer_of`]) and the resume token of a watch
//! stream ([`resume_after`]).

use fengqiao_proto::inbox::Envelope;
use fengqiao_proto::router::TransferEvent;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_store::{Store, Tx};
use tonic::Request;

use crate::auth::Identity;
use crate::client::TracedChannel;
use crate::error::{Error, FieldViolation};
use crate::idem::Idem;

#[doc(hidden)]
pub use tonic as __tonic;

/// The verified caller of `request` (UNAUTHENTICATED without one) and its message.
pub fn open<T>(request: Request<T>) -> Result<(Identity, T), Error> {
    let who = Identity::of(&request)?.clone();
    Ok((who, request.into_inner()))
}

/// What [`begin`] found: the stored answer of an earlier call with the same key, or the open
/// write transaction and the database time (unix µs) to make the change in.
#[derive(Debug)]
pub enum Begun<R> {
    /// The answer of the first call with this key.
    Replay(R),
    /// The open write transaction and its database time.
    Open(Tx, i64),
}

/// Opens a write transaction for an idempotent change: the first answer of a retried call, or
/// the transaction and the database time. [`begin_or_replay!`](crate::begin_or_replay) returns
/// the replay from the handler.
pub async fn begin<R: prost::Message + Default>(
    store: &Store,
    idem: &Idem,
) -> Result<Begun<R>, Error> {
    let mut tx = store.write().await?;
    if let Some(r) = idem.replay(&mut tx).await? {
        return Ok(Begun::Replay(r));
    }
    let now = fengqiao_store::db_now_micros(&mut tx).await?;
    Ok(Begun::Open(tx, now))
}

/// `(tx, now)` of [`begin`] in a handler returning `Result<R>`; a replayed call returns its
/// first answer from the handler.
#[macro_export]
macro_rules! begin_or_replay {
    ($store:expr, $idem:expr) => {
        match $crate::handler::begin(&$store, &$idem).await? {
            $crate::handler::Begun::Replay(r) => return Ok(r),
            $crate::handler::Begun::Open(tx, now) => (tx, now),
        }
    };
}

/// Ends an idempotent change: stores `resp` as the answer of the key, commits, answers it.
pub async fn answered<R: prost::Message>(idem: &Idem, mut tx: Tx, resp: R) -> Result<R, Error> {
    idem.save(&mut tx, &resp).await?;
    tx.commit().await?;
    Ok(resp)
}

/// The write transaction and database time to apply a router message in, after recording
/// `message_id` in the service's inbox; `None` for a message recorded already (a duplicate).
pub async fn receive(
    store: &Store,
    service: &str,
    message_id: &str,
) -> Result<Option<(Tx, i64)>, Error> {
    let mut tx = store.write().await?;
    if !fengqiao_store::inbox::record_once(&mut tx, service, message_id).await? {
        return Ok(None);
    }
    let now = fengqiao_store::db_now_micros(&mut tx).await?;
    Ok(Some((tx, now)))
}

/// The case id of a router message: its event's, else the envelope's.
pub fn case_id_of<'a>(envelope: &'a Envelope, event: &'a TransferEvent) -> &'a str {
    if event.case_id.is_empty() {
        &envelope.case_id
    } else {
        &event.case_id
    }
}

/// The transfer a router message is about: its event's, else the envelope's.
pub fn transfer_of<'a>(envelope: &'a Envelope, event: &'a TransferEvent) -> &'a str {
    if event.transfer.is_empty() {
        &envelope.transfer
    } else {
        &event.transfer
    }
}

/// The router's transfer service over `channel` (calls are CLIENT spans, issue #15).
pub fn router(channel: &TracedChannel) -> TransferServiceClient<TracedChannel> {
    TransferServiceClient::new(channel.clone())
}

/// The key a service signs its own calls with when it acts for an agency itself, not for a
/// caller (a court's automatic re-designation, declining an offer its intake refuses).
pub struct SystemSigner {
    key: crate::auth::SigningKey,
    issuer: String,
}

impl std::fmt::Debug for SystemSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemSigner")
            .field("kid", &self.key.kid())
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl SystemSigner {
    /// Signs with `key` as `issuer`.
    pub fn new(key: crate::auth::SigningKey, issuer: &str) -> Self {
        Self {
            key,
            issuer: issuer.to_owned(),
        }
    }

    /// The issuer the tokens name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `msg` as a request of `actor` for `agency` with `roles`, under a bearer token valid for
    /// five minutes (`None` if the token were no header value: it is base64, so never).
    pub fn request<U>(
        &self,
        agency: &str,
        actor: &str,
        roles: &[&str],
        msg: U,
    ) -> Option<Request<U>> {
        let claims = crate::auth::claims(&self.issuer, agency, actor, roles, 300);
        let bearer = format!("Bearer {}", self.key.sign(&claims)).parse().ok()?;
        let mut request = Request::new(msg);
        request.metadata_mut().insert("authorization", bearer);
        Some(request)
    }
}

/// Adds the violation `description` of `field` to a request's list unless `ok`.
pub fn check(out: &mut Vec<FieldViolation>, ok: bool, field: &str, description: &str) {
    if !ok {
        out.push(FieldViolation::new(field, description));
    }
}

/// Where a watch stream resumes: after the event of a `resume_token` this server issued,
/// `None` for an empty token (from now on), INVALID_ARGUMENT for any other.
pub fn resume_after(resume_token: &str) -> Result<Option<i64>, Error> {
    if resume_token.is_empty() {
        return Ok(None);
    }
    resume_token.parse().map(Some).map_err(|_| {
        Error::from(FieldViolation::new(
            "resume_token",
            "is not a token this server issued",
        ))
    })
}

/// A gRPC service trait implemented by forwarding each method to an inherent handler of the
/// type (`async fn(&self, Request<Q>) -> Result<P, Error>`), its answer given whole (`reply`)
/// or masked (`masked`, for mutations: [`crate::agency::masked`]). The handler is named after
/// `=`, or has the method's own name:
///
/// ```ignore
/// fengqiao_kit::forward_rpcs! {
///     impl CourtDiversionService for CourtDiversion;
///     reply get_case(GetCaseRequest) -> GetCaseResponse;
///     masked register_case(RegisterCaseRequest) -> RegisterCaseResponse = register;
/// }
/// ```
///
/// The handler is called as `<Type>::handler`, so it may have the trait method's name.
#[macro_export]
macro_rules! forward_rpcs {
    (
        impl $service:ident for $ty:ty;
        $( $answer:ident $rpc:ident ( $req:ty ) -> $resp:ty $( = $handler:ident )? ; )*
    ) => {
        #[$crate::handler::__tonic::async_trait]
        impl $service for $ty {
            $(
                async fn $rpc(
                    &self,
                    r: $crate::handler::__tonic::Request<$req>,
                ) -> $crate::agency::Reply<$resp> {
                    let handler = $crate::forward_rpcs!(@handler $ty, $rpc $(, $handler)?);
                    $crate::agency::$answer(handler(self, r).await)
                }
            )*
        }
    };
    (@handler $ty:ty, $rpc:ident) => { <$ty>::$rpc };
    (@handler $ty:ty, $rpc:ident, $handler:ident) => { <$ty>::$handler };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_their_case_and_transfer_from_the_event_first() {
        let envelope = Envelope {
            case_id: "c-env".into(),
            transfer: "transfers/env".into(),
            ..Envelope::default()
        };
        let mut event = TransferEvent::default();
        assert_eq!(case_id_of(&envelope, &event), "c-env");
        assert_eq!(transfer_of(&envelope, &event), "transfers/env");
        event.case_id = "c-ev".into();
        event.transfer = "transfers/ev".into();
        assert_eq!(case_id_of(&envelope, &event), "c-ev");
        assert_eq!(transfer_of(&envelope, &event), "transfers/ev");
    }

    #[test]
    fn checks_add_their_violation_only_when_failed() {
        let mut v = Vec::new();
        check(&mut v, true, "a", "is required");
        check(&mut v, false, "b", "at most 2 items");
        assert_eq!(v, [FieldViolation::new("b", "at most 2 items")]);
    }

    #[test]
    fn system_requests_carry_a_token_of_the_agency_and_role() {
        let key = crate::auth::SigningKey::generate("k1").expect("key");
        let keys = crate::auth::PublicKeyFile {
            keys: vec![key.public_entry()],
        };
        let signer = SystemSigner::new(key, "fengqiao");
        assert_eq!(signer.issuer(), "fengqiao");
        assert!(format!("{signer:?}").contains("k1"));
        let r = signer
            .request("agencies/court", "court-diversion", &["judge"], 7u32)
            .expect("request");
        let bearer = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .expect("authorization");
        let token = bearer.strip_prefix("Bearer ").expect("bearer");
        let verifier = crate::auth::Verifier::new("fengqiao", &keys).expect("verifier");
        let who = verifier
            .verify(token, crate::auth::unix_now())
            .expect("valid token");
        assert_eq!(who.agency, "agencies/court");
        assert_eq!(who.actor, "court-diversion");
        assert!(who.has_role("judge"));
        assert_eq!(r.into_inner(), 7);
    }

    #[test]
    fn resume_tokens_are_numbers_this_server_issued() {
        assert_eq!(resume_after("").ok(), Some(None));
        assert_eq!(resume_after("42").ok(), Some(Some(42)));
        assert!(
            matches!(resume_after("x"), Err(Error::Invalid(v)) if v[0].field == "resume_token")
        );
    }
}
