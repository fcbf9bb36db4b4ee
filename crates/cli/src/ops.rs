//! The operator CLI: read what a running suite holds (transfers, referrals, mediation cases,
//! pre-filing cases, confirmation applications, a case's timeline, delivery incidents,
//! statistics) and retry a delivery incident, with a token, as the caller's agency sees it.
//!
//! Every command is one or more calls of the public gRPC API, made generically from the
//! contracts' descriptor set (prost-reflect): the request is built as proto3 JSON from the
//! flags, the answer is printed as a table of chosen fields or, with `--output json`, as the
//! answer's canonical JSON (proto field names). Nothing here bypasses the API: the server's
//! authentication, visibility rules and audit apply as for any client.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut};
use clap::{Args, Subcommand, ValueEnum};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Value, json};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt;

/// How to reach the suite and how to print.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// The suite's gRPC address.
    #[arg(
        long,
        env = "FENGQIAO_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// Bearer token of the caller.
    #[arg(long, env = "FENGQIAO_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Dev only: call as this sample actor (`<agency>/<actor>`), signing with the dev key under
    /// `--data-dir`.
    #[arg(long = "as", global = true, conflicts_with = "token")]
    pub as_actor: Option<String>,
    /// Data directory of `fengqiao dev` (its dev key), for `--as`.
    #[arg(
        long,
        env = "FENGQIAO_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Token issuer for `--as`; must match the server's `auth.issuer`.
    #[arg(
        long,
        env = "FENGQIAO_AUTH_ISSUER",
        default_value = "fengqiao",
        global = true
    )]
    pub issuer: String,
    /// Output: a table (default) or the API's answer as JSON.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Follow `next_page_token` and print every page (lists only).
    #[arg(long, global = true)]
    pub all: bool,
    /// Deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for lists, `field: value` lines for one resource.
    Table,
    /// The API's answer, proto3 JSON with the contracts' field names.
    Json,
}

/// The operator commands.
#[derive(Subcommand, Debug)]
pub enum Ops {
    /// Transfers the caller's agency sends, receives or approves (router).
    Transfers {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ListShow<TransferFilter>,
    },
    /// Transfers past a deadline (acceptance or feedback clock).
    Overdue {
        #[command(flatten)]
        conn: Conn,
    },
    /// Every event of a case the caller took part in, oldest first (router).
    Timeline {
        #[command(flatten)]
        conn: Conn,
        /// The case id (案件统一编号).
        case_id: String,
    },
    /// 110 referrals (police-referral).
    Referrals {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ListShow<StateFilter>,
    },
    /// Mediation cases of the caller's organisation (mediation).
    Cases {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ListShow<StateFilter>,
    },
    /// A court's pre-filing cases (court-diversion).
    CourtCases {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ListShow<StateFilter>,
    },
    /// A court's judicial confirmation applications (judicial-confirmation).
    Applications {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ListShow<StateFilter>,
    },
    /// Delivery incidents (messages the router could not deliver), and retrying one.
    Incidents {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: IncidentCmd,
    },
    /// Transfer statistics (router).
    Stats {
        #[command(flatten)]
        conn: Conn,
        /// Start of the period (RFC 3339, or a date: 2026-11-01).
        #[arg(long)]
        from: String,
        /// End of the period, exclusive (RFC 3339, or a date).
        #[arg(long)]
        to: String,
        /// Group by these dimensions (route, state, region, period, from-agency, to-agency).
        #[arg(long, value_delimiter = ',')]
        group_by: Vec<String>,
    },
}

/// `list` or `show`.
#[derive(Subcommand, Debug)]
pub enum ListShow<F: Args> {
    /// One page (or, with `--all`, every page) of the list.
    List {
        #[command(flatten)]
        filter: F,
    },
    /// One resource by name (e.g. `transfers/…`, `referrals/…`, `cases/…`).
    Show {
        /// Resource name.
        name: String,
    },
}

/// Filters of `transfers list`.
#[derive(Args, Debug)]
pub struct TransferFilter {
    /// Only these states (e.g. in-progress, awaiting-approval); repeatable.
    #[arg(long = "state")]
    pub states: Vec<String>,
    /// Only incoming or outgoing transfers.
    #[arg(long)]
    pub direction: Option<Direction>,
    /// Only transfers of this case.
    #[arg(long)]
    pub case_id: Option<String>,
    /// Only overdue transfers.
    #[arg(long)]
    pub overdue: bool,
}

/// A transfer's direction as seen by the caller's agency.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Direction {
    /// Sent by the caller's agency.
    Outgoing,
    /// Received by the caller's agency.
    Incoming,
}

/// A state filter.
#[derive(Args, Debug)]
pub struct StateFilter {
    /// Only these states (e.g. in-mediation, closed); repeatable.
    #[arg(long = "state")]
    pub states: Vec<String>,
}

/// `incidents …`.
#[derive(Subcommand, Debug)]
pub enum IncidentCmd {
    /// Delivery incidents (open and scheduled for retry unless `--state` says otherwise).
    List {
        /// Only these states (open, retry-scheduled, resolved); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Retry one incident now (administrators).
    Retry {
        /// The incident's name (`deliveryIncidents/…`).
        name: String,
    },
}

/// What a list command prints: method, request, the answer's repeated field, columns.
struct ListSpec {
    method: &'static str,
    items: &'static str,
    /// (header, dotted path into each item, enum prefix to strip)
    columns: &'static [(&'static str, &'static str, &'static str)],
}

const TRANSFER_COLUMNS: &[(&str, &str, &str)] = &[
    ("NAME", "name", ""),
    ("STATE", "state", "TRANSFER_STATE_"),
    ("ROUTE", "route", "routes/"),
    ("FROM", "from_agency.name", "agencies/"),
    ("TO", "to_agency.name", "agencies/"),
    ("OVERDUE", "overdue", ""),
    ("UPDATED", "update_time", ""),
];

const TRANSFERS: ListSpec = ListSpec {
    method: "fengqiao.router.v1.TransferService/ListTransfers",
    items: "transfers",
    columns: TRANSFER_COLUMNS,
};
const REFERRALS: ListSpec = ListSpec {
    method: "fengqiao.policereferral.v1.PoliceReferralService/ListReferrals",
    items: "referrals",
    columns: &[
        ("NAME", "name", ""),
        ("STATE", "state", "REFERRAL_STATE_"),
        ("INCIDENT", "incident_number", ""),
        ("CATEGORY", "category", "DISPUTE_CATEGORY_"),
        ("STATION", "police_station", "agencies/"),
        ("TRANSFER", "transfer_state", "TRANSFER_STATE_"),
        ("UPDATED", "update_time", ""),
    ],
};
const CASES: ListSpec = ListSpec {
    method: "fengqiao.mediation.v1.MediationService/ListCases",
    items: "mediation_cases",
    columns: &[
        ("NAME", "name", ""),
        ("STATE", "state", "MEDIATION_CASE_STATE_"),
        ("NUMBER", "case_number", ""),
        ("CATEGORY", "category", "DISPUTE_CATEGORY_"),
        ("FROM", "source_agency.name", "agencies/"),
        ("MEDIATOR", "assignment.mediator", "organizations/"),
        ("UPDATED", "update_time", ""),
    ],
};
const COURT_CASES: ListSpec = ListSpec {
    method: "fengqiao.courtdiversion.v1.CourtDiversionService/ListCases",
    items: "pre_filing_cases",
    columns: &[
        ("NAME", "name", ""),
        ("STATE", "state", "PRE_FILING_CASE_STATE_"),
        ("NUMBER", "pre_filing_number", ""),
        ("CATEGORY", "category", "DISPUTE_CATEGORY_"),
        ("UPDATED", "update_time", ""),
    ],
};
const APPLICATIONS: ListSpec = ListSpec {
    method: "fengqiao.judicialconfirmation.v1.JudicialConfirmationService/ListApplications",
    items: "applications",
    columns: &[
        ("NAME", "name", ""),
        ("STATE", "state", "APPLICATION_STATE_"),
        ("NUMBER", "confirmation_number", ""),
        ("COMMITTEE", "committee.name", "agencies/"),
        ("UPDATED", "update_time", ""),
    ],
};
const INCIDENTS: ListSpec = ListSpec {
    method: "fengqiao.router.v1.DeliveryService/ListDeliveryIncidents",
    items: "delivery_incidents",
    columns: &[
        ("NAME", "name", ""),
        ("STATE", "state", "DELIVERY_INCIDENT_STATE_"),
        ("TO", "to_agency", "agencies/"),
        ("KIND", "kind", "MESSAGE_KIND_"),
        ("ATTEMPTS", "attempt_count", ""),
        ("LAST ERROR", "last_error_code", ""),
    ],
};

/// Runs one operator command; prints to stdout; an API error is printed with its reason and
/// turns into a non-zero exit.
pub async fn run(cmd: Ops) -> anyhow::Result<()> {
    let conn = match &cmd {
        Ops::Transfers { conn, .. }
        | Ops::Overdue { conn }
        | Ops::Timeline { conn, .. }
        | Ops::Referrals { conn, .. }
        | Ops::Cases { conn, .. }
        | Ops::CourtCases { conn, .. }
        | Ops::Applications { conn, .. }
        | Ops::Incidents { conn, .. }
        | Ops::Stats { conn, .. } => conn.clone(),
    };
    let client = Client::new(&conn)?;
    match cmd {
        Ops::Transfers { cmd, .. } => match cmd {
            ListShow::List { filter } => {
                let mut req = json!({});
                if !filter.states.is_empty() {
                    req["states"] = enum_values("TRANSFER_STATE_", &filter.states);
                }
                if let Some(d) = filter.direction {
                    req["direction"] = json!(match d {
                        Direction::Outgoing => "TRANSFER_DIRECTION_OUTGOING",
                        Direction::Incoming => "TRANSFER_DIRECTION_INCOMING",
                    });
                }
                if let Some(c) = filter.case_id {
                    req["case_id"] = json!(c);
                }
                if filter.overdue {
                    req["overdue_only"] = json!(true);
                }
                client.list(&TRANSFERS, req).await
            }
            ListShow::Show { name } => {
                client
                    .show(
                        "fengqiao.router.v1.TransferService/GetTransfer",
                        "transfer",
                        name,
                    )
                    .await
            }
        },
        Ops::Overdue { .. } => client.list(&TRANSFERS, json!({"overdue_only": true})).await,
        Ops::Timeline { case_id, .. } => {
            client
                .list(
                    &ListSpec {
                        method: "fengqiao.router.v1.TransferService/GetCaseTimeline",
                        items: "events",
                        columns: &[
                            ("SEQ", "sequence", ""),
                            ("WHEN", "occurred_at", ""),
                            ("TRANSFER", "transfer", "transfers/"),
                            ("EVENT", "event_type", "TRANSFER_EVENT_TYPE_"),
                            ("TO STATE", "to_state", "TRANSFER_STATE_"),
                            ("AGENCY", "actor.agency", "agencies/"),
                            ("REASON", "reason_code", ""),
                        ],
                    },
                    json!({ "case_id": case_id }),
                )
                .await
        }
        Ops::Referrals { cmd, .. } => {
            client
                .list_show(
                    &REFERRALS,
                    "REFERRAL_STATE_",
                    "fengqiao.policereferral.v1.PoliceReferralService/GetReferral",
                    "referral",
                    cmd,
                )
                .await
        }
        Ops::Cases { cmd, .. } => {
            client
                .list_show(
                    &CASES,
                    "MEDIATION_CASE_STATE_",
                    "fengqiao.mediation.v1.MediationService/GetCase",
                    "mediation_case",
                    cmd,
                )
                .await
        }
        Ops::CourtCases { cmd, .. } => {
            client
                .list_show(
                    &COURT_CASES,
                    "PRE_FILING_CASE_STATE_",
                    "fengqiao.courtdiversion.v1.CourtDiversionService/GetCase",
                    "pre_filing_case",
                    cmd,
                )
                .await
        }
        Ops::Applications { cmd, .. } => {
            client
                .list_show(
                    &APPLICATIONS,
                    "APPLICATION_STATE_",
                    "fengqiao.judicialconfirmation.v1.JudicialConfirmationService/GetApplication",
                    "application",
                    cmd,
                )
                .await
        }
        Ops::Incidents { cmd, .. } => match cmd {
            IncidentCmd::List { states } => {
                let states = if states.is_empty() {
                    vec!["open".to_string(), "retry-scheduled".to_string()]
                } else {
                    states
                };
                let req = json!({ "states": enum_values("DELIVERY_INCIDENT_STATE_", &states) });
                client.list(&INCIDENTS, req).await
            }
            IncidentCmd::Retry { name } => {
                let answer = client
                    .call(
                        "fengqiao.router.v1.DeliveryService/RetryDeliveryIncident",
                        json!({ "name": name, "request_id": uuid::Uuid::new_v4().to_string() }),
                    )
                    .await?;
                client.print_one(&answer["delivery_incident"]);
                Ok(())
            }
        },
        Ops::Stats {
            from, to, group_by, ..
        } => {
            let req = json!({
                "start_time": timestamp(&from).context("--from")?,
                "end_time": timestamp(&to).context("--to")?,
                "group_by": enum_values("STATISTICS_DIMENSION_", &group_by),
            });
            let answer = client
                .call(
                    "fengqiao.router.v1.StatisticsService/GetTransferStatistics",
                    req,
                )
                .await?;
            if conn.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let cols: &[(&str, &str, &str)] = &[
                ("ROUTE", "route", "routes/"),
                ("STATE", "state", "TRANSFER_STATE_"),
                ("REGION", "region_code", ""),
                ("PERIOD", "period_start", ""),
                ("FROM", "from_agency", "agencies/"),
                ("TO", "to_agency", "agencies/"),
                ("TRANSFERS", "transfer_count", ""),
                ("ACCEPTED", "accepted_count", ""),
                ("DECLINED", "declined_count", ""),
                ("CLOSED", "closed_count", ""),
                ("OVERDUE ACC", "overdue_acceptance_count", ""),
                ("OVERDUE FB", "overdue_feedback_count", ""),
            ];
            let rows = answer["rows"].as_array().cloned().unwrap_or_default();
            print_table(cols, &rows, true);
            Ok(())
        }
    }
}

/// `2026-11-01` or RFC 3339 → RFC 3339 (a bare date is midnight China Standard Time).
fn timestamp(s: &str) -> anyhow::Result<String> {
    if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        return Ok(format!("{s}T00:00:00+08:00"));
    }
    if s.contains('T') {
        return Ok(s.to_string());
    }
    bail!("expected a date (2026-11-01) or an RFC 3339 time, got {s:?}")
}

/// `in-progress` → `TRANSFER_STATE_IN_PROGRESS` (a full enum name is kept as it is).
fn enum_values(prefix: &str, values: &[String]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|v| {
                let up = v.trim().to_ascii_uppercase().replace('-', "_");
                if up.starts_with(prefix) {
                    json!(up)
                } else {
                    json!(format!("{prefix}{up}"))
                }
            })
            .collect(),
    )
}

struct Client {
    pool: DescriptorPool,
    channel: tonic::transport::Channel,
    token: String,
    output: Output,
    all: bool,
    timeout: Duration,
}

impl Client {
    fn new(conn: &Conn) -> anyhow::Result<Self> {
        let token = match (&conn.token, &conn.as_actor) {
            (Some(t), _) => t.clone(),
            (None, Some(actor)) => crate::dev_token(actor, &conn.data_dir, &conn.issuer)?,
            (None, None) => {
                bail!("no token: pass --token (or FENGQIAO_TOKEN), or in dev --as <agency>/<actor>")
            }
        };
        let pool = DescriptorPool::decode(fengqiao_proto::FILE_DESCRIPTOR_SET)
            .context("the contracts' descriptor set")?;
        let channel = fengqiao_kit::client::channel(&conn.addr, None)?;
        Ok(Self {
            pool,
            channel,
            token,
            output: conn.output,
            all: conn.all,
            timeout: Duration::from_millis(conn.timeout_ms),
        })
    }

    /// One unary call: `request` (proto3 JSON) → the answer (proto3 JSON, proto field names).
    async fn call(&self, method: &str, request: Value) -> anyhow::Result<Value> {
        let (service, name) = method.split_once('/').context("method path")?;
        let m = self
            .pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .with_context(|| format!("no method {method} in the contracts"))?;
        let req = DynamicMessage::deserialize(m.input(), request)
            .with_context(|| format!("request of {method}"))?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .with_context(|| "cannot reach the suite (is it running? --addr)".to_string())?;
        let mut r = tonic::Request::new(req);
        r.set_timeout(self.timeout);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token)
                .parse()
                .context("the token is not a valid header value")?,
        );
        let path = http::uri::PathAndQuery::from_str(&format!("/{method}"))?;
        let answer = grpc
            .unary(r, path, DynCodec(m.output()))
            .await
            .map_err(|s| anyhow::anyhow!(describe(&s)))?
            .into_inner();
        let opts = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false);
        Ok(answer.serialize_with_options(serde_json::value::Serializer, &opts)?)
    }

    async fn list(&self, spec: &ListSpec, mut request: Value) -> anyhow::Result<()> {
        let mut items = Vec::new();
        let mut pages = Vec::new();
        loop {
            let answer = self.call(spec.method, request.clone()).await?;
            if let Some(a) = answer[spec.items].as_array() {
                items.extend(a.iter().cloned());
            }
            let next = answer["next_page_token"].as_str().unwrap_or("").to_string();
            pages.push(answer);
            if !self.all || next.is_empty() {
                if !next.is_empty() && self.output == Output::Table {
                    eprintln!("(more: --all prints every page)");
                }
                break;
            }
            request["page_token"] = json!(next);
        }
        match self.output {
            Output::Json if pages.len() == 1 => {
                println!("{}", serde_json::to_string_pretty(&pages[0])?);
            }
            Output::Json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ spec.items: items }))?
                );
            }
            Output::Table => print_table(spec.columns, &items, false),
        }
        Ok(())
    }

    async fn show(&self, method: &str, field: &str, name: String) -> anyhow::Result<()> {
        let answer = self.call(method, json!({ "name": name })).await?;
        self.print_one(&answer[field]);
        Ok(())
    }

    async fn list_show(
        &self,
        spec: &ListSpec,
        state_prefix: &str,
        get: &str,
        field: &str,
        cmd: ListShow<StateFilter>,
    ) -> anyhow::Result<()> {
        match cmd {
            ListShow::List { filter } => {
                let mut req = json!({});
                if !filter.states.is_empty() {
                    req["states"] = enum_values(state_prefix, &filter.states);
                }
                self.list(spec, req).await
            }
            ListShow::Show { name } => self.show(get, field, name).await,
        }
    }

    fn print_one(&self, v: &Value) {
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
            ),
            Output::Table => {
                let mut lines = Vec::new();
                flatten("", v, &mut lines);
                let w = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                for (k, val) in lines {
                    println!("{k:<w$}  {val}");
                }
            }
        }
    }
}

/// `field.sub[0].x: value` lines of a JSON value.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, val, out);
            }
        }
        Value::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), val, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn cell(item: &Value, path: &str, strip: &str) -> String {
    let mut v = item;
    for part in path.split('.') {
        v = &v[part];
    }
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.strip_prefix(strip).map(str::to_string).unwrap_or(s)
}

/// Columns padded to their widest cell; with `drop_empty`, columns empty in every row are left
/// out (statistics print only the dimensions grouped by).
fn print_table(columns: &[(&str, &str, &str)], items: &[Value], drop_empty: bool) {
    let cells: Vec<Vec<String>> = items
        .iter()
        .map(|it| columns.iter().map(|(_, p, s)| cell(it, p, s)).collect())
        .collect();
    let keep: Vec<usize> = (0..columns.len())
        .filter(|&c| !drop_empty || cells.iter().any(|r| !r[c].is_empty()))
        .collect();
    let width = |c: usize| {
        cells
            .iter()
            .map(|r| r[c].chars().count())
            .chain([columns[c].0.len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = keep.iter().map(|&c| width(c)).collect();
    let line = |vals: Vec<&str>| {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(keep.iter().map(|&c| columns[c].0).collect());
    for r in &cells {
        line(keep.iter().map(|&c| r[c].as_str()).collect());
    }
    if items.is_empty() {
        println!("(none)");
    }
}

/// `CODE: message [REASON] (field: description; …)` of a failed call; never the request.
fn describe(s: &tonic::Status) -> String {
    let d = s.get_error_details();
    let mut out = format!("{:?}: {}", s.code(), s.message());
    if let Some(i) = d.error_info() {
        out.push_str(&format!(" [{}]", i.reason));
    }
    if let Some(b) = d.bad_request() {
        let v: Vec<String> = b
            .field_violations
            .iter()
            .map(|f| format!("{}: {}", f.field, f.description))
            .collect();
        out.push_str(&format!(" ({})", v.join("; ")));
    }
    out
}

/// Encodes any dynamic message; decodes answers of one message type.
struct DynCodec(MessageDescriptor);

impl Codec for DynCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;
    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }
    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.0.clone())
    }
}

struct DynEncoder;

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item.encode_to_vec());
        Ok(())
    }
}

struct DynDecoder(MessageDescriptor);

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.0.clone(), bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable answer: {e}")))
    }
}
