//! The OpenAPI 3 document of the JSON/HTTP gateway, generated from the descriptor set and the
//! `google.api.http` rules (served at [`PATH`], without a token, like reflection).
//!
//! Paths: a variable `{name=transfers/*}` is written out as the URL it stands for,
//! `/v1/transfers/{transfer}`, one path parameter per `*` (named after the collection before
//! it). GET methods list the request's top-level scalar fields as query parameters; POST and
//! PATCH take the body the rule names. Schemas follow the proto3 JSON mapping (64-bit integers
//! as strings, enums as their names, well-known types as their JSON forms); every error is a
//! `google.rpc.Status`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::{Rule, table};

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

/// The document, encoded once.
pub fn document_bytes() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_vec_pretty(&document()).unwrap_or_default())
}

/// `transfers` → `transfer`, `agencies` → `agency`.
fn singular(plural: &str) -> String {
    if let Some(s) = plural.strip_suffix("ies") {
        format!("{s}y")
    } else if let Some(s) = plural.strip_suffix('s') {
        s.to_string()
    } else {
        format!("{plural}Id")
    }
}

/// The OpenAPI path of a rule's template and its path parameters (name, the field it fills).
fn openapi_path(template: &str) -> (String, Vec<(String, String)>) {
    let mut out = String::new();
    let mut params = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}').map(|e| e + i) else {
            break;
        };
        let inner = &rest[i + 1..end];
        let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
        let mut prev = field.rsplit('.').next().unwrap_or(field).to_string();
        let segs: Vec<String> = pattern
            .split('/')
            .map(|seg| {
                if seg == "*" {
                    let mut name = singular(&prev);
                    while params.iter().any(|(n, _): &(String, String)| *n == name) {
                        name.push('_');
                    }
                    params.push((name.clone(), field.to_string()));
                    format!("{{{name}}}")
                } else {
                    prev = seg.to_string();
                    seg.to_string()
                }
            })
            .collect();
        out.push_str(&segs.join("/"));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    (out, params)
}

fn schema_ref(m: &MessageDescriptor) -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", m.full_name()) })
}

/// The schema of one value of `kind`, queueing messages for the components.
fn kind_schema(kind: &Kind, queue: &mut Vec<MessageDescriptor>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => json!({
            "type": "string",
            "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>(),
        }),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" => json!({"type": "string", "example": "3.5s"}),
            "google.protobuf.FieldMask" => json!({"type": "string", "example": "a,b.c"}),
            "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
            "google.protobuf.Value" => json!({}),
            "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
            "google.protobuf.Empty" => json!({"type": "object"}),
            "google.protobuf.Any" => json!({
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": true,
            }),
            "google.protobuf.StringValue" => json!({"type": "string", "nullable": true}),
            "google.protobuf.BoolValue" => json!({"type": "boolean", "nullable": true}),
            "google.protobuf.BytesValue" => {
                json!({"type": "string", "format": "byte", "nullable": true})
            }
            "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
                json!({"type": "number", "nullable": true})
            }
            "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
                json!({"type": "integer", "nullable": true})
            }
            "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
                json!({"type": "string", "format": "int64", "nullable": true})
            }
            _ => {
                queue.push(m.clone());
                schema_ref(m)
            }
        },
    }
}

fn field_schema(f: &FieldDescriptor, queue: &mut Vec<MessageDescriptor>) -> Value {
    if f.is_map()
        && let Kind::Message(entry) = f.kind()
    {
        let value = entry.map_entry_value_field();
        return json!({
            "type": "object",
            "additionalProperties": kind_schema(&value.kind(), queue),
        });
    }
    let one = kind_schema(&f.kind(), queue);
    if f.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

fn message_schema(m: &MessageDescriptor, queue: &mut Vec<MessageDescriptor>) -> Value {
    let mut props = Map::new();
    for f in m.fields() {
        props.insert(f.json_name().to_string(), field_schema(&f, queue));
    }
    json!({ "type": "object", "properties": props })
}

/// Query parameters of a GET: the top-level scalar, enum and repeated scalar fields not bound
/// by the path.
fn query_parameters(
    rule: &Rule,
    bound: &BTreeSet<String>,
    queue: &mut Vec<MessageDescriptor>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for f in rule.method.input().fields() {
        if bound.contains(f.name()) || f.is_map() || matches!(f.kind(), Kind::Message(_)) {
            continue;
        }
        let schema = field_schema(&f, queue);
        out.push(json!({
            "name": f.json_name(),
            "in": "query",
            "required": false,
            "schema": schema,
        }));
    }
    out
}

/// The whole document.
pub fn document() -> Value {
    let t = table();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut queue: Vec<MessageDescriptor> = Vec::new();
    for rule in &t.rules {
        let (path, params) = openapi_path(&rule.path);
        let bound: BTreeSet<String> = params
            .iter()
            .map(|(_, field)| field.split('.').next().unwrap_or(field).to_string())
            .collect();
        let mut parameters: Vec<Value> = params
            .iter()
            .map(|(name, field)| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "description": format!("fills `{field}`"),
                    "schema": {"type": "string"},
                })
            })
            .collect();
        let svc = rule.method.parent_service();
        let mut op = Map::new();
        op.insert(
            "operationId".into(),
            json!(format!("{}_{}", svc.name(), rule.method.name())),
        );
        op.insert("tags".into(), json!([svc.name()]));
        op.insert(
            "summary".into(),
            json!(format!(
                "{} (gRPC {})",
                rule.method.name(),
                rule.grpc_path()
            )),
        );
        match rule.body.as_str() {
            "" => parameters.extend(query_parameters(rule, &bound, &mut queue)),
            "*" => {
                queue.push(rule.method.input());
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/json": {"schema": schema_ref(&rule.method.input())}}}),
                );
            }
            field => {
                let schema = rule
                    .method
                    .input()
                    .get_field_by_name(field)
                    .map(|f| field_schema(&f, &mut queue))
                    .unwrap_or_else(|| json!({"type": "object"}));
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/json": {"schema": schema}}}),
                );
                // The request's other fields travel as query parameters.
                let mut also = bound.clone();
                also.insert(field.to_string());
                parameters.extend(query_parameters(rule, &also, &mut queue));
            }
        }
        op.insert("parameters".into(), Value::Array(parameters));
        queue.push(rule.method.output());
        let ok = if rule.method.is_server_streaming() {
            json!({
                "description": "newline-delimited JSON: one {\"result\": message} line per message, a last {\"error\": google.rpc.Status} line if the stream fails",
                "content": {"application/x-ndjson": {"schema": {
                    "type": "object",
                    "properties": {
                        "result": schema_ref(&rule.method.output()),
                        "error": {"$ref": "#/components/schemas/google.rpc.Status"},
                    },
                }}},
            })
        } else {
            json!({
                "description": "the response message",
                "content": {"application/json": {"schema": schema_ref(&rule.method.output())}},
            })
        };
        op.insert(
            "responses".into(),
            json!({
                "200": ok,
                "default": {
                    "description": "an error: google.rpc.Status with its details (HTTP status per AIP-193)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}},
                },
            }),
        );
        op.insert("security".into(), json!([{"bearer": []}]));
        paths
            .entry(path)
            .or_default()
            .insert(rule.verb.as_str().to_ascii_lowercase(), Value::Object(op));
    }
    let mut schemas = Map::new();
    if let Some(status) = t.pool.get_message_by_name("google.rpc.Status") {
        queue.push(status);
    }
    while let Some(m) = queue.pop() {
        if schemas.contains_key(m.full_name()) {
            continue;
        }
        // Placeholder first: recursive messages terminate.
        schemas.insert(m.full_name().to_string(), Value::Null);
        let s = message_schema(&m, &mut queue);
        schemas.insert(m.full_name().to_string(), s);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Fengqiao (枫桥) JSON over HTTP",
            "version": "v1",
            "description": "Every RPC of the Fengqiao contracts over HTTP/1.1 and JSON (proto3 JSON mapping), generated from the descriptor set and its google.api.http rules. Authenticate with `Authorization: Bearer <token>`; deadlines with `grpc-timeout` or `X-Server-Timeout: <seconds>`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_spell_out_resource_names() {
        assert_eq!(
            openapi_path("/v1/{name=transfers/*}:approve"),
            (
                "/v1/transfers/{transfer}:approve".into(),
                vec![("transfer".into(), "name".into())]
            )
        );
        assert_eq!(
            openapi_path("/v1/mediation/{mediator.name=organizations/*/mediators/*}").0,
            "/v1/mediation/organizations/{organization}/mediators/{mediator}"
        );
        assert_eq!(openapi_path("/v1/transfers").0, "/v1/transfers");
    }

    #[test]
    fn every_rule_is_an_operation_and_every_ref_resolves() {
        let doc = document();
        let mut ops = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            ops += item.as_object().expect("item").len();
        }
        assert_eq!(ops, table().rules.len());
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for r in text.split("\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().expect("name");
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
        }
        let get = &doc["paths"]["/v1/transfers/{transfer}"]["get"];
        assert_eq!(get["operationId"], "TransferService_GetTransfer");
    }
}
