//! The descriptor set served by reflection carries the `google.api` annotations of the
//! contracts, and they agree with the comments that document them.
//!
//! prost-types drops unknown fields (extensions) when decoding, so the options are read
//! through a minimal mirror of `descriptor.proto` that names only the extensions we check
//! (`google.api.field_behavior` = 1052 on `FieldOptions`, `google.api.resource` = 1053 on
//! `MessageOptions`, `google.api.resource_reference` = 1055 on `FieldOptions`); comments come
//! from prost-types' `SourceCodeInfo`. Both decode the same bytes, so indexes line up.

use fengqiao_proto::google::api::{FieldBehavior, ResourceDescriptor, ResourceReference};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct Fds {
    #[prost(message, repeated, tag = "1")]
    file: Vec<File>,
}

#[derive(Clone, PartialEq, Message)]
struct File {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<Msg>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<Svc>,
}

#[derive(Clone, PartialEq, Message)]
struct Svc {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<Method>,
}

#[derive(Clone, PartialEq, Message)]
struct Method {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "4")]
    options: Option<MethodOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodOptions {
    /// `google.api.http` (google/api/annotations.proto).
    #[prost(message, optional, tag = "72295728")]
    http: Option<fengqiao_proto::google::api::HttpRule>,
}

#[derive(Clone, PartialEq, Message)]
struct Msg {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    field: Vec<Field>,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<Msg>,
    #[prost(message, optional, tag = "7")]
    options: Option<MsgOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct MsgOptions {
    #[prost(message, optional, tag = "1053")]
    resource: Option<ResourceDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct Field {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "8")]
    options: Option<FieldOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct FieldOptions {
    #[prost(
        enumeration = "FieldBehavior",
        repeated,
        packed = "false",
        tag = "1052"
    )]
    field_behavior: Vec<i32>,
    #[prost(message, optional, tag = "1055")]
    resource_reference: Option<ResourceReference>,
}

fn fds() -> Fds {
    Fds::decode(fengqiao_proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn message<'a>(fds: &'a Fds, file: &str, name: &str) -> &'a Msg {
    let f = fds.file.iter().find(|f| f.name == file).expect(file);
    f.message_type.iter().find(|m| m.name == name).expect(name)
}

fn behaviors(m: &Msg, field: &str) -> Vec<FieldBehavior> {
    let f = m.field.iter().find(|f| f.name == field).expect(field);
    f.options
        .as_ref()
        .map(|o| {
            o.field_behavior
                .iter()
                .filter_map(|b| FieldBehavior::try_from(*b).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn descriptor_set_carries_the_vendored_google_api_files() {
    let fds = fds();
    for f in [
        "google/api/field_behavior.proto",
        "google/api/resource.proto",
        "google/api/http.proto",
        "google/api/annotations.proto",
    ] {
        assert!(
            fds.file.iter().any(|x| x.name == f),
            "{f} missing: reflection clients could not resolve the annotations"
        );
    }
}

#[test]
fn transfer_is_an_annotated_resource() {
    let fds = fds();
    let t = message(&fds, "fengqiao/router/v1/transfer.proto", "Transfer");
    let r = t
        .options
        .as_ref()
        .and_then(|o| o.resource.as_ref())
        .expect("google.api.resource on Transfer");
    assert_eq!(r.r#type, "fengqiao.gov.cn/Transfer");
    assert_eq!(r.pattern, vec!["transfers/{transfer}".to_string()]);
    assert_eq!(behaviors(t, "state"), vec![FieldBehavior::OutputOnly]);
    assert_eq!(behaviors(t, "name"), vec![FieldBehavior::Identifier]);
    assert_eq!(
        behaviors(t, "route"),
        vec![FieldBehavior::Required, FieldBehavior::Immutable]
    );
    let route = t.field.iter().find(|f| f.name == "route").expect("route");
    let rr = route
        .options
        .as_ref()
        .and_then(|o| o.resource_reference.as_ref())
        .expect("reference");
    assert_eq!(rr.r#type, "fengqiao.gov.cn/Route");
    // A nested resource has its real pattern.
    let inv = message(&fds, "fengqiao/router/v1/transfer.proto", "Investigation");
    let r = inv
        .options
        .as_ref()
        .and_then(|o| o.resource.as_ref())
        .expect("resource");
    assert_eq!(
        r.pattern,
        vec!["transfers/{transfer}/investigations/{investigation}".to_string()]
    );
    let get = message(
        &fds,
        "fengqiao/router/v1/transfer.proto",
        "GetTransferRequest",
    );
    assert_eq!(behaviors(get, "name"), vec![FieldBehavior::Required]);
}

/// Walks every message of a file with its `SourceCodeInfo` path (4 = message_type,
/// 3 = nested_type, 2 = field).
fn walk<'a>(msgs: &'a [Msg], prefix: Vec<i32>, tag: i32, out: &mut Vec<(Vec<i32>, &'a Msg)>) {
    for (i, m) in msgs.iter().enumerate() {
        let mut p = prefix.clone();
        p.extend([tag, i as i32]);
        out.push((p.clone(), m));
        walk(&m.nested_type, p, 3, out);
    }
}

/// Every field of every contract whose
/// comment says "Output only" is OUTPUT_ONLY (or IDENTIFIER, a resource's own `name`), and
/// every `request_id` of a request is REQUIRED: the annotations and the docs do not drift.
#[test]
fn annotations_agree_with_the_comments() {
    let raw = fds();
    let typed = prost_types::FileDescriptorSet::decode(fengqiao_proto::FILE_DESCRIPTOR_SET)
        .expect("decodes");
    let (mut output_only, mut request_ids) = (0, 0);
    for (f, tf) in raw.file.iter().zip(&typed.file) {
        if !f.name.starts_with("fengqiao/") {
            continue;
        }
        let info = tf.source_code_info.as_ref().expect("source info");
        let comment = |path: &[i32]| {
            info.location
                .iter()
                .find(|l| l.path == path)
                .and_then(|l| l.leading_comments.clone())
                .unwrap_or_default()
                .replace('\n', " ")
        };
        let mut msgs = Vec::new();
        walk(&f.message_type, vec![], 4, &mut msgs);
        for (path, m) in msgs {
            for (k, field) in m.field.iter().enumerate() {
                let mut p = path.clone();
                p.extend([2, k as i32]);
                let b = behaviors(m, &field.name);
                let where_ = format!("{}: {}.{}", f.name, m.name, field.name);
                if comment(&p).contains("Output only") {
                    output_only += 1;
                    assert!(
                        b.contains(&FieldBehavior::OutputOnly)
                            || b.contains(&FieldBehavior::Identifier),
                        "{where_} says Output only but is {b:?}"
                    );
                }
                if m.name.ends_with("Request") && field.name == "request_id" {
                    request_ids += 1;
                    assert!(b.contains(&FieldBehavior::Required), "{where_} is {b:?}");
                }
            }
        }
    }
    assert!(
        output_only > 100,
        "only {output_only} Output-only fields found"
    );
    assert!(request_ids > 30, "only {request_ids} request ids found");
}

/// Every method of every Fengqiao service has a `google.api.http` rule (written by
/// `scripts/http-annotations.py`), so the JSON/HTTP gateway serves every RPC; an AIP-127 path
/// under `/v1/`, a body for every POST and PATCH and none for GET.
#[test]
fn every_method_has_an_http_rule() {
    use fengqiao_proto::google::api::http_rule::Pattern;
    let fds = fds();
    let mut seen = std::collections::BTreeSet::new();
    let mut count = 0;
    for f in fds.file.iter().filter(|f| f.name.starts_with("fengqiao/")) {
        for svc in &f.service {
            for m in &svc.method {
                let rule = m
                    .options
                    .as_ref()
                    .and_then(|o| o.http.as_ref())
                    .unwrap_or_else(|| {
                        panic!("{}.{} has no google.api.http rule", svc.name, m.name)
                    });
                let (verb, path) = match rule.pattern.as_ref().expect("a pattern") {
                    Pattern::Get(p) => ("GET", p),
                    Pattern::Post(p) => ("POST", p),
                    Pattern::Patch(p) => ("PATCH", p),
                    other => panic!("{}.{}: unexpected pattern {other:?}", svc.name, m.name),
                };
                assert!(path.starts_with("/v1/"), "{}.{}: {path}", svc.name, m.name);
                assert_eq!(
                    rule.body.is_empty(),
                    verb == "GET",
                    "{}.{}: GET has no body, POST/PATCH have one",
                    svc.name,
                    m.name
                );
                assert!(
                    seen.insert((verb, path.clone())),
                    "{verb} {path} is used twice"
                );
                count += 1;
            }
        }
    }
    assert!(count >= 100, "only {count} methods found");
}
