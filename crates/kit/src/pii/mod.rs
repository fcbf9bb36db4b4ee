//! Personal information (个人信息保护法 Art 28: identity numbers and the like of a natural person
//! are sensitive personal information): masking by role, full reads audited, free text redacted,
//! one set of validators ([`validate`]).
//!
//! Every message of the contracts that holds a party or an address implements
//! [`Personal`] (generated from the descriptor set), so the functions here reach every
//! resource, response and envelope of every service.
//!
//! - **Masked by default.** Every response is masked ([`mask`]) unless the caller asks for the
//!   full values with the request header [`VIEW_HEADER`]`: full` (gRPC metadata or HTTP
//!   header) *and* holds one of the roles the service names for it ([`FullView`]). A full read
//!   leaves one row per resource in the access log ([`fengqiao_store::access`]), committed
//!   before the answer is sent; a refused full read is logged as a denial. PIPL Art 6
//!   (minimum necessary), Art 51 (access control, audit).
//! - **Masking rules** (GB/T 35273-2020 §3.14 de-identification by masking; the same shapes as
//!   the 公安 and 法院 public systems): 居民身份证号码 keeps the region (6) and last 2 characters,
//!   `210203**********19`; other document numbers keep the first and the last 2; mobile
//!   numbers keep 3 + 4, `139****5201`; landlines keep the area code and last 2; a person's
//!   name keeps the family name's first character, `张*`; an address keeps its region code and
//!   loses its detail and coordinates. An organisation (统一社会信用代码) is not a natural
//!   person: its name and code are not masked.
//! - **Free text** (summaries, reasons, notes) is redacted at intake ([`redact_text`]): what
//!   looks like a resident ID number or a mobile number is masked in place, so it is never
//!   stored.

pub mod validate;

use std::borrow::Cow;

use fengqiao_proto::common::{Address, IdType, Party};
pub use fengqiao_proto::personal::{Personal, PersonalMut};
use fengqiao_store::Store;
use fengqiao_store::access::{self, Access, Outcome};

use crate::auth::Identity;
use crate::error::{ApiError, FieldViolation, Reason};

/// Request header (gRPC metadata key) that asks for unmasked personal information: `full`.
/// Absent or `masked`: masked values.
pub const VIEW_HEADER: &str = "x-fengqiao-personal-info";

/// Field names used in access-log rows and in routes' `allowed_personal_info`.
pub const FIELD_NAMES: [&str; 4] = [
    "party_name",
    "party_id_number",
    "party_phone",
    "party_address",
];

/// Which view of personal information the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Masked values (the default).
    Masked,
    /// Full values; needs a role the service names, and is audited.
    Full,
}

/// The view asked for by the request's [`VIEW_HEADER`]; anything but `full`/`masked` is
/// INVALID_ARGUMENT naming the header.
pub fn requested_view(meta: &tonic::metadata::MetadataMap) -> Result<View, ApiError> {
    match meta.get(VIEW_HEADER).map(|v| v.to_str()) {
        None => Ok(View::Masked),
        Some(Ok(v)) if v.eq_ignore_ascii_case("masked") => Ok(View::Masked),
        Some(Ok(v)) if v.eq_ignore_ascii_case("full") => Ok(View::Full),
        Some(_) => Err(ApiError::invalid(vec![FieldViolation::new(
            VIEW_HEADER,
            "must be `full` or `masked`",
        )])),
    }
}

fn is_organisation(p: &Party) -> bool {
    IdType::try_from(p.id_type) == Ok(IdType::UnifiedSocialCreditCode)
}

fn star(n: usize) -> String {
    "*".repeat(n)
}

/// Masks an identity document number: a resident ID keeps its first 6 (region) and last 2
/// characters; any other keeps its first and last 2; 4 characters or fewer become stars.
pub fn mask_id_number(id: &str, id_type: i32) -> String {
    let chars: Vec<char> = id.chars().collect();
    let n = chars.len();
    let (head, tail) = if IdType::try_from(id_type) == Ok(IdType::ResidentIdCard) && n == 18 {
        (6, 2)
    } else if n > 4 {
        (1, 2)
    } else {
        (0, 0)
    };
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&star(n - head - tail));
    out.extend(&chars[n - tail..]);
    out
}

/// Masks a phone number: a mobile keeps 3 + 4 digits (`139****5201`); a landline keeps its
/// area code (up to the first `-`, or 4 characters) and last 2; short numbers become stars.
pub fn mask_phone(phone: &str) -> String {
    // Masking twice (a masked answer passed on and masked again) changes nothing.
    if phone.contains('*') {
        return phone.to_string();
    }
    let chars: Vec<char> = phone.chars().collect();
    let n = chars.len();
    if validate::is_mobile(phone) {
        let mut out: String = chars[..3].iter().collect();
        out.push_str("****");
        out.extend(&chars[7..]);
        return out;
    }
    if n <= 6 {
        return star(n);
    }
    let head = phone.find('-').map_or(4, |i| i + 1).min(n - 2);
    let mut out: String = chars[..head].iter().collect();
    out.extend(
        chars[head..n - 2]
            .iter()
            .map(|c| if *c == '-' { '-' } else { '*' }),
    );
    out.extend(&chars[n - 2..]);
    out
}

/// Masks a natural person's name: the first character stays, every other becomes `*`.
pub fn mask_name(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        None => String::new(),
        Some(first) => {
            let rest = c.count();
            if rest == 0 {
                "*".into()
            } else {
                format!("{first}{}", star(rest))
            }
        }
    }
}

/// Masks an address: keeps the region code, replaces the detail, drops the coordinates.
pub fn mask_address(a: &mut Address) {
    if !a.detail.is_empty() {
        a.detail = "***".into();
    }
    a.location = None;
}

/// Masks one party in place (an organisation keeps its name and code).
pub fn mask_party(p: &mut Party) {
    if !is_organisation(p) {
        p.name = mask_name(&p.name);
        if !p.id_number.is_empty() {
            p.id_number = mask_id_number(&p.id_number, p.id_type);
        }
    }
    if !p.phone.is_empty() {
        p.phone = mask_phone(&p.phone);
    }
    if let Some(a) = &mut p.address {
        mask_address(a);
    }
}

/// Masks every party and address of `msg` in place.
pub fn mask(msg: &mut impl Personal) {
    msg.visit_personal(&mut |p| match p {
        PersonalMut::Party(p) => mask_party(p),
        PersonalMut::Address(a) => mask_address(a),
    });
}

/// The personal-information fields `msg` holds values for ([`FIELD_NAMES`]), for access-log
/// rows (which fields were read in full, never the values).
pub fn fields_present(msg: &mut impl Personal) -> Vec<&'static str> {
    let mut seen = [false; 4];
    msg.visit_personal(&mut |p| match p {
        PersonalMut::Party(p) => {
            seen[0] |= !p.name.is_empty();
            seen[1] |= !p.id_number.is_empty();
            seen[2] |= !p.phone.is_empty();
            seen[3] |= p.address.is_some();
        }
        PersonalMut::Address(_) => seen[3] = true,
    });
    FIELD_NAMES
        .iter()
        .zip(seen)
        .filter_map(|(n, s)| s.then_some(*n))
        .collect()
}

/// Whether `c` can be part of a resident ID number.
fn id_char(c: u8) -> bool {
    c.is_ascii_digit() || c == b'X' || c == b'x'
}

/// Masks, in free text, every run that is a resident ID number (18 characters, 17 digits and a
/// check character that verifies, GB 11643-1999) or a mainland mobile number (11 digits,
/// `1[3-9]`), standing alone (not inside a longer run of digits). Other text is kept.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && id_char(b[i - 1])) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && id_char(b[j]) {
            j += 1;
        }
        let run = &text[i..j];
        let masked = if run.len() == 18
            && validate::resident_id_check_char(&run[..17])
                == run[17..].chars().next().map(|c| c.to_ascii_uppercase())
        {
            Some(mask_id_number(run, IdType::ResidentIdCard as i32))
        } else if run.len() == 11 && validate::is_mobile(run) {
            Some(mask_phone(run))
        } else {
            None
        };
        if let Some(m) = masked {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[last..i]);
            o.push_str(&m);
            last = j;
        }
        i = j;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[last..]);
            Cow::Owned(o)
        }
    }
}

/// Redacts `s` in place ([`redact_text`]).
pub fn redact_in_place(s: &mut String) {
    if let Cow::Owned(r) = redact_text(s) {
        *s = r;
    }
}

/// Whether `s` holds something [`redact_text`] would mask: identifiers (incident numbers,
/// case numbers, request ids) that do are refused instead of redacted.
pub fn looks_personal(s: &str) -> bool {
    matches!(redact_text(s), Cow::Owned(_))
}

/// The roles of one service that may read personal information in full (PIPL Art 6: only who
/// needs the values to do the work, e.g. the mediator who must call the parties).
#[derive(Debug, Clone, Copy)]
pub struct FullView {
    /// Service name, as in the access log (`police-referral`, …).
    pub service: &'static str,
    /// Roles that may ask for [`View::Full`].
    pub roles: &'static [&'static str],
}

impl FullView {
    /// Whether `who` holds one of the roles.
    pub fn allows(&self, who: &Identity) -> bool {
        self.roles.iter().any(|r| who.has_role(r))
    }
}

/// One resource in an answer, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct Disclosed<'a> {
    /// Resource name (`referrals/…`).
    pub resource: &'a str,
    /// Case the resource belongs to.
    pub case_id: Option<&'a str>,
}

/// What a read handler does with personal information before it answers: masks `msg`
/// (the default), or — for [`View::Full`] asked by a role of `policy` — leaves it whole and
/// writes one access-log row per resource in `resources`, committed before this returns. A
/// full view asked without the role is refused (PERMISSION_DENIED,
/// `PERSONAL_INFO_VIEW_DENIED`) and logged as a denial.
pub async fn disclose(
    store: &Store,
    policy: &FullView,
    method: &str,
    who: &Identity,
    view: View,
    msg: &mut impl Personal,
    resources: &[Disclosed<'_>],
) -> Result<(), ApiError> {
    let row =
        |resource: &str, case_id: Option<&str>, outcome, fields: String, reason: &str| Access {
            service: policy.service.to_string(),
            agency: who.agency.clone(),
            actor: who.actor.clone(),
            person: who.person().to_string(),
            method: method.to_string(),
            resource: resource.to_string(),
            case_id: case_id.map(str::to_string),
            outcome,
            fields,
            reason: reason.to_string(),
            recorded_at: 0,
        };
    match view {
        View::Masked => {
            mask(msg);
            Ok(())
        }
        View::Full if !policy.allows(who) => {
            let reason = Reason::PersonalInfoViewDenied;
            let first = resources.first();
            let a = row(
                first.map_or("", |d| d.resource),
                first.and_then(|d| d.case_id),
                Outcome::Denied,
                String::new(),
                reason.as_str(),
            );
            access::record_now(store, &a)
                .await
                .map_err(|e| ApiError::internal(&e))?;
            Err(ApiError::new(
                reason,
                format!(
                    "unmasked personal information needs one of the roles: {}",
                    policy.roles.join(", ")
                ),
            ))
        }
        View::Full => {
            let fields = fields_present(msg).join(",");
            let mut tx = store.write().await.map_err(|e| ApiError::internal(&e))?;
            for d in resources {
                let a = row(d.resource, d.case_id, Outcome::FullRead, fields.clone(), "");
                access::record(&mut tx, &a)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
            }
            tx.commit().await.map_err(|e| ApiError::internal(&e))?;
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use fengqiao_proto::common::Address;
    use fengqiao_proto::policereferral::Referral;

    fn person() -> Party {
        Party {
            party_id: "p".into(),
            role: 1,
            name: "张三丰".into(),
            id_type: IdType::ResidentIdCard as i32,
            id_number: "210203199001011233".into(),
            phone: "13900005201".into(),
            address: Some(Address {
                region_code: "210203".into(),
                detail: "八一路12号".into(),
                location: None,
            }),
        }
    }

    #[test]
    fn masks_as_documented() {
        assert_eq!(
            mask_id_number("210203199001011219", IdType::ResidentIdCard as i32),
            "210203**********19"
        );
        assert_eq!(
            mask_id_number("E12345678", IdType::Passport as i32),
            "E******78"
        );
        assert_eq!(mask_id_number("1234", IdType::Other as i32), "****");
        assert_eq!(mask_phone("13900005201"), "139****5201");
        assert_eq!(mask_phone("0411-82345678"), "0411-******78");
        assert_eq!(mask_phone("12345"), "*****");
        // Idempotent: a masked value masked again is the same.
        for v in ["13900005201", "0411-82345678"] {
            assert_eq!(mask_phone(&mask_phone(v)), mask_phone(v));
        }
        let id = mask_id_number("210203199001011219", IdType::ResidentIdCard as i32);
        assert_eq!(mask_id_number(&id, IdType::ResidentIdCard as i32), id);
        assert_eq!(mask_name(&mask_name("张三丰")), mask_name("张三丰"));
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("李"), "*");
        let mut p = person();
        mask_party(&mut p);
        assert_eq!(p.name, "张**");
        assert_eq!(p.id_number, "210203**********33");
        assert_eq!(p.phone, "139****5201");
        let a = p.address.unwrap();
        assert_eq!(
            (a.region_code.as_str(), a.detail.as_str()),
            ("210203", "***")
        );
        // An organisation is not a natural person.
        let mut org = Party {
            name: "大连某某物业有限公司".into(),
            id_type: IdType::UnifiedSocialCreditCode as i32,
            id_number: "91210200MA0Q00000X".into(),
            ..Party::default()
        };
        mask_party(&mut org);
        assert_eq!(org.name, "大连某某物业有限公司");
        assert_eq!(org.id_number, "91210200MA0Q00000X");
    }

    #[test]
    fn mask_reaches_every_party_and_address_of_a_resource() {
        let mut r = Referral {
            caller: Some(person()),
            parties: vec![person(), person()],
            location: Some(Address {
                region_code: "210203".into(),
                detail: "某小区3号楼".into(),
                location: None,
            }),
            ..Referral::default()
        };
        assert_eq!(fields_present(&mut r), FIELD_NAMES.to_vec());
        mask(&mut r);
        let bytes = prost::Message::encode_to_vec(&r);
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains("210203199001011233"));
        assert!(!hay.contains("13900005201"));
        assert!(!hay.contains("张三丰"));
        assert!(!hay.contains("某小区"));
        assert!(!hay.contains("八一路"));
    }

    #[test]
    fn free_text_is_redacted_only_where_it_holds_an_id_or_a_mobile() {
        let id = "210203199001011239";
        assert_eq!(validate::resident_id("x", id), Ok(()));
        let t = format!("报警人{id}称，电话13900005201，邻居噪音");
        let r = redact_text(&t);
        assert_eq!(r, "报警人210203**********39称，电话139****5201，邻居噪音");
        assert!(looks_personal(&t));
        // Not an ID (bad check digit), not a phone (12 digits), a longer run: kept.
        for keep in [
            "210203199001011234",
            "139000052011",
            "警情编号20261201000123",
            "",
        ] {
            assert_eq!(redact_text(keep), keep, "{keep}");
            assert!(!looks_personal(keep));
        }
    }

    #[test]
    fn the_view_header_is_checked() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(requested_view(&m).unwrap(), View::Masked);
        m.insert(VIEW_HEADER, "full".parse().unwrap());
        assert_eq!(requested_view(&m).unwrap(), View::Full);
        m.insert(VIEW_HEADER, "everything".parse().unwrap());
        assert_eq!(
            requested_view(&m).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
