//! Validation helpers shared by services: resource names, region codes, paging, request ids.
//!
//! Each returns a [`FieldViolation`] naming the field; values are never echoed (they may be
//! personal information).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::FieldViolation;

/// Default page size of List methods.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size of List methods.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Checks a resource id segment: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn resource_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        ))
    }
}

/// Parses `collection/{id}` and returns the id.
pub fn parse_name<'a>(
    field: &str,
    collection: &str,
    name: &'a str,
) -> Result<&'a str, FieldViolation> {
    let id = name
        .strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| {
            FieldViolation::new(field, format!("must be of the form {collection}/{{id}}"))
        })?;
    resource_id(field, id)?;
    Ok(id)
}

/// The message `field` of a request, which must be set: a copy of it, or "is required".
pub fn required<T: Clone>(field: &str, value: &Option<T>) -> Result<T, FieldViolation> {
    value
        .clone()
        .ok_or_else(|| FieldViolation::new(field, "is required"))
}

/// Checks a GB/T 2260 administrative division code: six digits, a real province prefix
/// (11–15, 21–23, 31–37, 41–46, 50–54, 61–65, 71, 81, 82).
pub fn region_code(field: &str, code: &str) -> Result<(), FieldViolation> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldViolation::new(
            field,
            "must be a six-digit GB/T 2260 code",
        ));
    }
    let province: u32 = code[..2].parse().unwrap_or(0);
    let known = matches!(province, 11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81 | 82);
    if known {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "unknown province in GB/T 2260 code",
        ))
    }
}

/// Checks a `request_id`: required, at most 128 printable ASCII characters.
pub fn request_id(id: &str) -> Result<(), FieldViolation> {
    if id.is_empty() {
        return Err(FieldViolation::new(
            "request_id",
            "is required on every mutating call (a UUID is recommended)",
        ));
    }
    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldViolation::new(
            "request_id",
            "must be at most 128 printable ASCII characters",
        ));
    }
    Ok(())
}

/// Most values a repeated field of a request may hold unless a method documents its own cap
/// (filters such as `states`, `group_by`): beyond it the whole field is refused at once, so
/// validating one request stays cheap.
pub const MAX_REPEATED: usize = 100;

/// Checks that the repeated field `field` holds at most `max` values.
pub fn max_items(field: &str, len: usize, max: usize) -> Result<(), FieldViolation> {
    if len > max {
        Err(FieldViolation::new(
            field,
            format!("must hold at most {max} values"),
        ))
    } else {
        Ok(())
    }
}

/// A closed enum value of a request: a value the contract does not define is refused on
/// `field` (proto3 keeps unknown numbers, so `direction = 99` decodes without error).
pub fn enum_value<T: TryFrom<i32>>(field: &str, value: i32) -> Result<T, FieldViolation> {
    T::try_from(value).map_err(|_| FieldViolation::new(field, "is not a known value"))
}

/// Checks every value of a repeated enum field (at most `max` values), naming the first bad
/// one as `field[i]`.
pub fn enum_values<T: TryFrom<i32>>(
    field: &str,
    values: &[i32],
    max: usize,
) -> Result<Vec<T>, FieldViolation> {
    max_items(field, values.len(), max)?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| enum_value(&format!("{field}[{i}]"), *v))
        .collect()
}

/// Checks a free-text filter or identifier: at most `max_len` bytes and no control characters
/// (C0, DEL, C1), which no identifier or filter of the contracts contains.
pub fn plain_text(field: &str, value: &str, max_len: usize) -> Result<(), FieldViolation> {
    if value.len() > max_len {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max_len} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a UUID in its canonical hyphenated text form (case ids, request ids of peers).
pub fn uuid(field: &str, value: &str) -> Result<(), FieldViolation> {
    let ok = value.len() == 36 && uuid::Uuid::try_parse(value).is_ok();
    if ok {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "must be a UUID (8-4-4-4-12 hexadecimal digits)",
        ))
    }
}

/// Page size: 0 means the default; larger than the maximum is clamped; negative is refused.
pub fn page_size(size: i32) -> Result<u32, FieldViolation> {
    match size {
        s if s < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        s => Ok((s as u32).min(MAX_PAGE_SIZE)),
    }
}

/// The canonical query of a list request, for [`page_token`] and [`parse_page_token`]: the
/// calling agency and the request with its `page_size` and `page_token` cleared. A token is then
/// good only for the same filters, ordering and caller.
#[macro_export]
macro_rules! list_query {
    ($req:expr, $agency:expr) => {{
        let mut q = ($req).clone();
        q.page_size = 0;
        q.page_token = ::std::string::String::new();
        $crate::validate::query_text(&q, $agency)
    }};
}

/// The text [`list_query!`] builds: the agency and the encoded request.
pub fn query_text(request: &impl prost::Message, agency: &str) -> String {
    format!(
        "{agency}\n{}",
        URL_SAFE_NO_PAD.encode(request.encode_to_vec())
    )
}

/// A page token that binds the query it was issued for: `cursor` (the position after the last
/// row returned) and a digest of `query` (the request's filters and ordering, in a canonical
/// text the caller builds) and the cursor. [`parse_page_token`] refuses a token from another
/// query, a garbled one and one this server did not make (its digest does not match); the
/// cursor itself grants nothing (authorisation applies to every page).
pub fn page_token(query: &str, cursor: &str) -> String {
    let mut raw = cursor.as_bytes().to_vec();
    raw.push(b'\n');
    raw.extend_from_slice(&page_digest(query, cursor));
    URL_SAFE_NO_PAD.encode(raw)
}

/// The cursor of a token made by [`page_token`] for the same `query`; empty means the
/// first page. Any other token is INVALID_ARGUMENT on `page_token`.
pub fn parse_page_token(token: &str, query: &str) -> Result<Option<String>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let refused = || {
        FieldViolation::new(
            "page_token",
            "is not a token this server issued for this query (filters must not change between pages)",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
    if raw.len() < PAGE_DIGEST_LEN + 1 {
        return Err(refused());
    }
    let (head, digest) = raw.split_at(raw.len() - PAGE_DIGEST_LEN);
    let cursor = head
        .strip_suffix(b"\n")
        .and_then(|c| std::str::from_utf8(c).ok())
        .ok_or_else(refused)?;
    if page_digest(query, cursor).as_slice() != digest {
        return Err(refused());
    }
    Ok(Some(cursor.to_string()))
}

/// A page token for a keyset position `(time, id)` — the last row of a page ordered by a
/// time column and then the id — bound to `query` like [`page_token`].
pub fn keyset_page_token(query: &str, time: i64, id: &str) -> String {
    page_token(query, &format!("{time}|{id}"))
}

/// The keyset position of a token made by [`keyset_page_token`] for the same `query`; empty
/// means the first page. Any other token is INVALID_ARGUMENT on `page_token`.
pub fn parse_keyset_page_token(
    token: &str,
    query: &str,
) -> Result<Option<(i64, String)>, FieldViolation> {
    let Some(cursor) = parse_page_token(token, query)? else {
        return Ok(None);
    };
    cursor
        .split_once('|')
        .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
        .map(Some)
        .ok_or_else(|| FieldViolation::new("page_token", "is not a token this server issued"))
}

const PAGE_DIGEST_LEN: usize = 12;

fn page_digest(query: &str, cursor: &str) -> [u8; PAGE_DIGEST_LEN] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"fengqiao.page-token.v1\n");
    ctx.update(&(query.len() as u64).to_be_bytes());
    ctx.update(query.as_bytes());
    ctx.update(cursor.as_bytes());
    let d = ctx.finish();
    let mut out = [0u8; PAGE_DIGEST_LEN];
    out.copy_from_slice(&d.as_ref()[..PAGE_DIGEST_LEN]);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn keyset_tokens_round_trip_and_are_bound_to_their_query() {
        let t = keyset_page_token("q", 1_790_000_000_000_000, "abc");
        assert_eq!(
            parse_keyset_page_token(&t, "q").expect("ours"),
            Some((1_790_000_000_000_000, "abc".to_string()))
        );
        assert_eq!(parse_keyset_page_token("", "q").expect("first page"), None);
        assert!(parse_keyset_page_token(&t, "other query").is_err());
        // A token of this server and query whose cursor is not a keyset position.
        assert!(parse_keyset_page_token(&page_token("q", "no-separator"), "q").is_err());
        assert!(parse_keyset_page_token(&page_token("q", "x|abc"), "q").is_err());
    }

    use super::*;

    #[test]
    fn names_and_ids() {
        assert_eq!(
            parse_name("name", "agencies", "agencies/xigang-110").ok(),
            Some("xigang-110")
        );
        assert!(parse_name("name", "agencies", "agency/x").is_err());
        assert!(parse_name("name", "agencies", "agencies/").is_err());
        assert!(parse_name("name", "agencies", "agencies/Bad_Id").is_err());
        assert!(resource_id("id", "-x").is_err());
        assert!(resource_id("id", &"a".repeat(64)).is_err());
    }

    #[test]
    fn required_messages() {
        let missing: Option<String> = None;
        let e = required("agency", &missing).expect_err("unset");
        assert_eq!(
            (e.field.as_str(), e.description.as_str()),
            ("agency", "is required")
        );
        assert_eq!(
            required("agency", &Some("a".to_string())),
            Ok("a".to_string())
        );
    }

    #[test]
    fn region_codes() {
        assert!(region_code("r", "210203").is_ok(), "大连市西岗区");
        assert!(region_code("r", "520502").is_ok(), "毕节市七星关区");
        assert!(region_code("r", "990000").is_err());
        assert!(region_code("r", "21020").is_err());
        assert!(region_code("r", "21020x").is_err());
    }

    #[test]
    fn paging() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(10_000).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn enums_repeated_text_and_uuids() {
        use fengqiao_proto::common::AgencyKind;
        assert!(enum_value::<AgencyKind>("kind", 1).is_ok());
        for bad in [99, 999, -1] {
            let e = enum_value::<AgencyKind>("kind", bad).err().map(|e| e.field);
            assert_eq!(e.as_deref(), Some("kind"), "{bad}");
        }
        assert_eq!(
            enum_values::<AgencyKind>("kinds", &[1, 2, 999], 10)
                .err()
                .map(|e| e.field)
                .as_deref(),
            Some("kinds[2]")
        );
        assert_eq!(
            enum_values::<AgencyKind>("kinds", &[1; 11], 10)
                .err()
                .map(|e| e.field)
                .as_deref(),
            Some("kinds")
        );
        assert!(enum_values::<AgencyKind>("kinds", &[1, 2], 10).is_ok());
        assert!(max_items("f", 100, MAX_REPEATED).is_ok());
        assert!(max_items("f", 101, MAX_REPEATED).is_err());
        assert!(plain_text("q", "西岗-110", 64).is_ok());
        assert!(plain_text("q", "a\u{0}b", 64).is_err());
        assert!(plain_text("q", "a\nb", 64).is_err());
        assert!(plain_text("q", "a\u{85}b", 64).is_err(), "C1 control");
        assert!(plain_text("q", &"a".repeat(65), 64).is_err());
        assert!(uuid("case_id", "0b6f7c1e-0000-4000-8000-000000000000").is_ok());
        assert!(uuid("case_id", "0b6f7c1e000040008000000000000000").is_err());
        assert!(uuid("case_id", "not-a-uuid").is_err());
        assert!(uuid("case_id", "").is_err());
    }

    #[test]
    fn request_ids() {
        assert!(request_id("").is_err());
        assert!(request_id("0b6f7c1e-0000-4000-8000-000000000000").is_ok());
        assert!(request_id("has space").is_err());
    }

    #[test]
    fn page_tokens_bind_their_query() {
        let q = "states=1,2|agency=agencies/x";
        let t = page_token(q, "1700000000|abc");
        assert_eq!(
            parse_page_token(&t, q).ok().flatten().as_deref(),
            Some("1700000000|abc")
        );
        assert_eq!(parse_page_token("", q).ok(), Some(None));
        // Another query's token, a forged one, a garbled one.
        assert!(parse_page_token(&t, "states=1|agency=agencies/x").is_err());
        assert!(parse_page_token(&URL_SAFE_NO_PAD.encode("1700000000|abc"), q).is_err());
        assert!(parse_page_token("!!", q).is_err());
        let mut raw = URL_SAFE_NO_PAD.decode(&t).expect("own token");
        raw[0] ^= 1;
        assert!(parse_page_token(&URL_SAFE_NO_PAD.encode(raw), q).is_err());
        assert_eq!(
            parse_page_token(&t, q).err().map(|e| e.field),
            None,
            "own token accepted"
        );
        assert_eq!(
            parse_page_token("AAAA", q)
                .err()
                .map(|e| e.field)
                .as_deref(),
            Some("page_token")
        );
    }

    #[test]
    fn list_queries_differ_by_filter_and_caller_not_by_page() {
        let req = fengqiao_proto::router::ListAgenciesRequest {
            page_size: 5,
            page_token: "x".into(),
            ..Default::default()
        };
        let next = fengqiao_proto::router::ListAgenciesRequest {
            page_size: 50,
            page_token: "y".into(),
            ..req.clone()
        };
        assert_eq!(list_query!(req, "a"), list_query!(next, "a"));
        assert_ne!(list_query!(req, "a"), list_query!(req, "b"));
        let filtered = fengqiao_proto::router::ListAgenciesRequest {
            kind: 1,
            ..req.clone()
        };
        assert_ne!(list_query!(req, "a"), list_query!(filtered, "a"));
    }
}
