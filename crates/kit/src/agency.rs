//! What the gRPC handlers of every agency service share: the caller's identity, the answer
//! (masked for mutations), the role checks with their stable reasons, refusing personal
//! information in identifiers, and the request ids and metadata of the calls a handler makes
//! to the router for its caller.

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::auth::Identity;
use crate::error::{Error, FieldViolation, Reason};
use crate::pii::{self, Personal};
use crate::validate;

/// The answer of a unary handler.
pub type Reply<T> = Result<Response<T>, Status>;

/// The verified caller of `req` (UNAUTHENTICATED without one).
pub fn who<T>(req: &Request<T>) -> Result<Identity, Status> {
    Identity::of(req).cloned().map_err(Into::into)
}

/// `r` as a handler's answer.
pub fn reply<T>(r: Result<T, Error>) -> Reply<T> {
    r.map(Response::new).map_err(Status::from)
}

/// The answer to a mutation, masked (a full view is offered only by the reads, where it is
/// audited); idempotent replays pass here too.
pub fn masked<T: Personal>(r: Result<T, Error>) -> Reply<T> {
    reply(r.map(|mut t| {
        pii::mask(&mut t);
        t
    }))
}

/// `resp` as a read answers it ([`pii::disclose`]): masked, or whole for a full view a role
/// of `policy` allows, with one access-log row per resource `(name, case_id)` it holds.
pub async fn disclosed<M: Personal>(
    store: &fengqiao_store::Store,
    policy: &pii::FullView,
    method: &str,
    who: &Identity,
    view: pii::View,
    mut resp: M,
    resources: &[(String, String)],
) -> Result<M, Error> {
    let rows: Vec<pii::Disclosed<'_>> = resources
        .iter()
        .map(|(name, case_id)| pii::Disclosed {
            resource: name,
            case_id: Some(case_id),
        })
        .collect();
    pii::disclose(store, policy, method, who, view, &mut resp, &rows).await?;
    Ok(resp)
}

/// A read handler's answer: `read` (made for `who`, the verified caller of `req`) disclosed as
/// [`disclosed`] in the view `req` asks for ([`pii::requested_view`], checked before the read
/// runs), with one access-log row per `(name, case_id)` that `resources` names in it.
pub async fn read_reply<T, M: Personal>(
    store: &fengqiao_store::Store,
    policy: &pii::FullView,
    method: &str,
    req: &Request<T>,
    who: &Identity,
    read: impl std::future::Future<Output = Result<M, Error>>,
    resources: impl FnOnce(&M) -> Vec<(String, String)>,
) -> Reply<M> {
    let result = async {
        let view = pii::requested_view(req.metadata())?;
        let resp = read.await?;
        let names = resources(&resp);
        disclosed(store, policy, method, who, view, resp, &names).await
    }
    .await;
    reply(result)
}

/// Refuses an identifier that holds a resident ID number or a mobile number (it would be
/// stored and indexed in the clear).
pub fn not_personal(field: &str, s: &str) -> Result<(), Error> {
    if pii::looks_personal(s) {
        return Err(FieldViolation::new(
            field,
            "must not hold an identity number or a phone number",
        )
        .into());
    }
    Ok(())
}

/// ETAG_MISMATCH on `resource` for a non-empty `given` etag that is not that of row version
/// `version` (an empty one asks for no check).
pub fn check_etag(resource: &str, given: &str, version: i64) -> Result<(), Error> {
    if !given.is_empty() && !crate::etag::matches(given, version) {
        return Err(Error::EtagMismatch(resource.to_owned()));
    }
    Ok(())
}

/// The record `name` loaded, or NOT_FOUND naming it.
pub fn found<T>(loaded: Option<T>, name: &str) -> Result<T, Error> {
    loaded.ok_or_else(|| Error::NotFound(name.to_owned()))
}

/// Checks a free-text field: non-empty (after trimming) when `required`, at most `max`
/// characters.
pub fn text(out: &mut Vec<FieldViolation>, field: &str, value: &str, required: bool, max: usize) {
    if required && value.trim().is_empty() {
        out.push(FieldViolation::new(field, "is required"));
    } else if value.chars().count() > max {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}

/// The creation-time window of a statistics request: `[start, end)`, open where not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    /// From (unix µs, inclusive).
    pub start: Option<i64>,
    /// To (unix µs, exclusive).
    pub end: Option<i64>,
}

impl Period {
    /// The window of a request's `create_time_start` and `create_time_end` (INVALID_ARGUMENT
    /// naming the field for a timestamp out of range).
    pub fn of(
        start: Option<&prost_types::Timestamp>,
        end: Option<&prost_types::Timestamp>,
    ) -> Result<Self, FieldViolation> {
        let parse = |field, t| crate::time::parse_timestamp(field, t);
        Ok(Period {
            start: start.map(|t| parse("create_time_start", t)).transpose()?,
            end: end.map(|t| parse("create_time_end", t)).transpose()?,
        })
    }

    /// Whether `t` (unix µs) falls in the window.
    pub fn contains(&self, t: i64) -> bool {
        self.start.is_none_or(|s| t >= s) && self.end.is_none_or(|e| t < e)
    }
}

/// A resource's creation time (unix µs; 0 when not set).
pub fn created_at(create_time: Option<&prost_types::Timestamp>) -> i64 {
    create_time.map_or(0, crate::time::from_timestamp)
}

/// The mean of a statistics response's day counts (intake to decision, to the end, …): a count
/// that is not a finite, non-negative number is left out; 0 while none is in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeanDays {
    sum: f64,
    count: u64,
}

impl MeanDays {
    /// Adds one resource's days, when it has them.
    pub fn add(&mut self, days: Option<f64>) {
        if let Some(d) = days.filter(|d| d.is_finite() && *d >= 0.0) {
            self.sum += d;
            self.count += 1;
        }
    }

    /// The mean (0 while none is in).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The keyset cursor `(create_time, id)` of the resource `{collection}/{id}` named `name`.
pub fn cursor_of(
    create_time: Option<&prost_types::Timestamp>,
    name: &str,
    collection: &str,
) -> (i64, String) {
    let id = name
        .strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(name);
    (created_at(create_time), id.to_owned())
}

/// Splits `{parent}/{a}/{child}/{b}` into `(a, b)`; `pattern` names the form in the
/// violation (e.g. `organizations/{organization}/mediators/{mediator}`), and an id that is not
/// a resource id gets [`validate::resource_id`]'s.
pub fn parse_child_name(
    field: &str,
    name: &str,
    parent: &str,
    child: &str,
    pattern: &str,
) -> Result<(String, String), FieldViolation> {
    let bad = || FieldViolation::new(field, format!("must be {pattern}"));
    let rest = name
        .strip_prefix(parent)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(bad)?;
    let (a, b) = rest.split_once(&format!("/{child}/")).ok_or_else(bad)?;
    validate::resource_id(field, a)?;
    validate::resource_id(field, b)?;
    Ok((a.to_owned(), b.to_owned()))
}

/// ROLE_REQUIRED unless the caller holds `role`: "`{action}` needs the role `{role}`".
pub fn need_role(who: &Identity, role: &str, action: &str) -> Result<(), Error> {
    if who.has_role(role) {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::RoleRequired,
            format!("{action} needs the role {role}"),
        ))
    }
}

/// ROLE_REQUIRED unless the caller holds one of `roles`.
pub fn need_any_role(who: &Identity, roles: &[&str]) -> Result<(), Error> {
    if roles.iter().any(|r| who.has_role(r)) {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::RoleRequired,
            format!("this action needs one of the roles {}", roles.join(", ")),
        ))
    }
}

/// The caller must act for `agency` (WRONG_PARTY otherwise: it sees the resource but this is
/// not its act) with `role` (ROLE_REQUIRED).
pub fn need_party_role(who: &Identity, agency: &str, role: &str, what: &str) -> Result<(), Error> {
    if who.agency != agency {
        return Err(Error::Refused(
            Reason::WrongParty,
            format!("{what} is for {agency}"),
        ));
    }
    need_role(who, role, what)
}

/// The request id of a router call made for a client's call: `{prefix}-` and a hash of only
/// the method, the resource and the client's `request_id`, so a retry sends the router the
/// same request (at most 120 characters).
pub fn router_rid(prefix: &str, method: &str, resource: &str, request_id: &str) -> String {
    let h = fengqiao_store::idempotency::hash_request(
        format!("{method}\n{resource}\n{request_id}").as_bytes(),
    );
    let mut s = format!("{prefix}-{h}");
    s.truncate(120);
    s
}

/// The transfer the router's answer to a create-transfer call made for a caller holds; its
/// refusal in the caller's terms ([`Error::upstream`]), and CORRUPT for an answer without one.
pub fn created_transfer(
    answer: Result<Response<fengqiao_proto::router::CreateTransferResponse>, Status>,
) -> Result<fengqiao_proto::router::Transfer, Error> {
    answer
        .map_err(Error::upstream)?
        .into_inner()
        .transfer
        .ok_or_else(|| Error::Corrupt("router answered without a transfer".into()))
}

/// A fresh random id (UUID v4) for a new resource.
pub fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `msg` as a request to another service carrying the caller's token and trace context, from
/// the metadata of the caller's request kept for later.
pub fn forwarded<U>(caller: &MetadataMap, msg: U) -> Request<U> {
    let mut carrier = Request::new(());
    *carrier.metadata_mut() = caller.clone();
    let mut out = Request::new(msg);
    crate::inbox::forward_auth(&carrier, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_days_leave_out_what_is_not_a_finite_non_negative_count() {
        let mut m = MeanDays::default();
        assert_eq!(m.mean(), 0.0);
        for d in [
            Some(10.0),
            None,
            Some(f64::NAN),
            Some(-1.0),
            Some(f64::INFINITY),
            Some(20.0),
        ] {
            m.add(d);
        }
        assert_eq!(m.mean(), 15.0);
    }

    fn caller(agency: &str, roles: &[&str]) -> Identity {
        Identity {
            agency: agency.into(),
            actor: "a1".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            method: crate::auth::AuthMethod::Token,
            person: None,
        }
    }

    fn reason(r: Result<(), Error>) -> Option<Reason> {
        match r {
            Ok(()) => None,
            Err(Error::Refused(reason, _)) => Some(reason),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn roles_and_parties_are_refused_with_their_reasons() {
        let clerk = caller("agencies/court", &["clerk"]);
        assert_eq!(reason(need_role(&clerk, "clerk", "filing")), None);
        assert_eq!(
            reason(need_role(&clerk, "judge", "ruling")),
            Some(Reason::RoleRequired)
        );
        assert_eq!(reason(need_any_role(&clerk, &["judge", "clerk"])), None);
        assert_eq!(
            reason(need_any_role(&clerk, &["judge"])),
            Some(Reason::RoleRequired)
        );
        assert_eq!(
            reason(need_party_role(&clerk, "agencies/court", "clerk", "x")),
            None
        );
        assert_eq!(
            reason(need_party_role(&clerk, "agencies/other", "clerk", "x")),
            Some(Reason::WrongParty)
        );
        assert_eq!(
            reason(need_party_role(&clerk, "agencies/court", "judge", "x")),
            Some(Reason::RoleRequired)
        );
    }

    #[test]
    fn child_names_split_into_their_ids() {
        let p = "organizations/{organization}/mediators/{mediator}";
        let parse = |n| parse_child_name("mediator", n, "organizations", "mediators", p);
        assert_eq!(
            parse("organizations/o-1/mediators/m2"),
            Ok(("o-1".into(), "m2".into()))
        );
        for bad in [
            "organizations/o-1",
            "organizationso/mediators/m",
            "invited/o/mediators/m",
            "organizations/o/judges/m",
        ] {
            let v = parse(bad).expect_err(bad);
            assert_eq!(v.description, format!("must be {p}"), "{bad}");
        }
        assert!(parse("organizations/O/mediators/m").is_err());
        assert!(parse("organizations/o/mediators/m/x").is_err());
    }

    #[test]
    fn periods_are_half_open_and_cursors_name_time_and_id() {
        let ts = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
        let p = Period::of(Some(&ts(10)), Some(&ts(20))).expect("valid");
        assert!(!p.contains(9_999_999));
        assert!(p.contains(10_000_000));
        assert!(p.contains(19_999_999));
        assert!(!p.contains(20_000_000));
        assert!(Period::default().contains(i64::MIN));
        let bad = Period::of(None, Some(&ts(i64::MAX))).expect_err("out of range");
        assert_eq!(bad.field, "create_time_end");
        assert_eq!(
            cursor_of(Some(&ts(3)), "disputes/d1", "disputes"),
            (3_000_000, "d1".into())
        );
        assert_eq!(cursor_of(None, "d2", "disputes"), (0, "d2".into()));
    }

    #[test]
    fn etags_and_missing_records_are_refused_naming_the_resource() {
        assert!(check_etag("cases/1", "", 3).is_ok());
        assert!(check_etag("cases/1", &crate::etag::etag(3), 3).is_ok());
        assert!(matches!(
            check_etag("cases/1", &crate::etag::etag(2), 3),
            Err(Error::EtagMismatch(r)) if r == "cases/1"
        ));
        assert_eq!(found(Some(1), "cases/1").ok(), Some(1));
        assert!(matches!(found::<i32>(None, "cases/2"), Err(Error::NotFound(r)) if r == "cases/2"));
    }

    #[test]
    fn created_transfers_are_taken_from_the_routers_answer() {
        use fengqiao_proto::router::{CreateTransferResponse, Transfer};
        let t = Transfer {
            name: "transfers/t1".into(),
            ..Transfer::default()
        };
        let ok = Response::new(CreateTransferResponse {
            transfer: Some(t.clone()),
        });
        assert_eq!(created_transfer(Ok(ok)).ok(), Some(t));
        let empty = Response::new(CreateTransferResponse { transfer: None });
        assert!(matches!(
            created_transfer(Ok(empty)),
            Err(Error::Corrupt(_))
        ));
        let refused = created_transfer(Err(Status::failed_precondition("no")));
        assert!(matches!(refused, Err(Error::Upstream(..))));
    }

    #[test]
    fn text_fields_are_required_and_bounded_in_characters() {
        let mut v = Vec::new();
        text(&mut v, "a", "  ", true, 5);
        text(&mut v, "b", "", false, 5);
        text(&mut v, "c", "调解协议书", true, 5);
        text(&mut v, "d", "调解协议书。", false, 5);
        let got: Vec<(&str, &str)> = v
            .iter()
            .map(|f| (f.field.as_str(), f.description.as_str()))
            .collect();
        assert_eq!(
            got,
            [("a", "is required"), ("d", "must be at most 5 characters")]
        );
    }

    #[test]
    fn personal_identifiers_are_refused() {
        assert!(not_personal("request_id", "r-1").is_ok());
        assert!(matches!(
            not_personal("request_id", "13812345678"),
            Err(Error::Invalid(v)) if v.len() == 1
        ));
    }

    #[test]
    fn router_request_ids_depend_only_on_method_resource_and_client_id() {
        let a = router_rid("court", "Accept", "cases/1", "r1");
        assert!(a.starts_with("court-"));
        assert_eq!(a, router_rid("court", "Accept", "cases/1", "r1"));
        assert_ne!(a, router_rid("court", "Accept", "cases/2", "r1"));
        assert_ne!(a, router_rid("court", "Decline", "cases/1", "r1"));
        assert_ne!(a, router_rid("court", "Accept", "cases/1", "r2"));
        assert!(router_rid(&"p".repeat(200), "m", "n", "r").len() <= 120);
        assert_ne!(uuid_v4(), uuid_v4());
    }

    #[test]
    fn forwarded_requests_carry_the_callers_token() {
        let mut md = MetadataMap::new();
        md.insert("authorization", "Bearer t".parse().expect("ascii"));
        md.insert("x-other", "v".parse().expect("ascii"));
        let out = forwarded(&md, 7u32);
        assert_eq!(
            out.metadata().get("authorization").map(|v| v.to_str().ok()),
            Some(Some("Bearer t"))
        );
        assert!(out.metadata().get("x-other").is_none());
        assert_eq!(out.into_inner(), 7);
    }
}
