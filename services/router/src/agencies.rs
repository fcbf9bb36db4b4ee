//! Agency registry (机构注册): register, get, list, update and deactivate the agencies that take
//! part in transfers. Registration and changes are a platform administrator's action; any
//! authenticated agency may look agencies up to address its transfers.

use std::path::Path;

use fengqiao_kit::validate;
use fengqiao_kit::{FieldViolation, Identity};
use fengqiao_proto::common::AgencyKind;
use fengqiao_proto::router::agency_service_server::AgencyService;
use fengqiao_proto::router::{
    Agency, DeactivateAgencyRequest, DeactivateAgencyResponse, DeliveryMode, GetAgencyRequest,
    GetAgencyResponse, ListAgenciesRequest, ListAgenciesResponse, RegisterAgencyRequest,
    RegisterAgencyResponse, UpdateAgencyRequest, UpdateAgencyResponse,
};
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Store, Tx};
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::time::to_timestamp;
use fengqiao_kit::idem::Idem;

/// Role allowed to register and change agencies (the justice bureau's platform administrator).
pub const ROLE_PLATFORM_ADMIN: &str = "platform_admin";

const COLUMNS: &str = "id, kind, display_name, region_code, parent, delivery_mode, endpoint, \
                       active, deactivate_reason, create_time, update_time, deactivate_time, version";

/// The agency registry backed by the router's store.
#[derive(Clone, Debug)]
pub struct Agencies {
    store: Store,
}

fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

fn row_to_agency(row: &AnyRow) -> Result<Agency> {
    let id: String = row.try_get("id").map_err(fengqiao_store::Error::from)?;
    let get_i = |c: &str| -> Result<i64> {
        row.try_get::<i64, _>(c)
            .map_err(|e| Error::Store(fengqiao_store::Error::from(e)))
    };
    let get_s = |c: &str| -> Result<String> {
        row.try_get::<String, _>(c)
            .map_err(|e| Error::Store(fengqiao_store::Error::from(e)))
    };
    let parent: Option<String> = row.try_get("parent").map_err(fengqiao_store::Error::from)?;
    let deactivate_time: Option<i64> = row
        .try_get("deactivate_time")
        .map_err(fengqiao_store::Error::from)?;
    Ok(Agency {
        name: format!("agencies/{id}"),
        kind: get_i("kind")? as i32,
        display_name: get_s("display_name")?,
        region_code: get_s("region_code")?,
        parent,
        delivery_mode: get_i("delivery_mode")? as i32,
        endpoint: get_s("endpoint")?,
        active: get_i("active")? != 0,
        deactivate_reason: get_s("deactivate_reason")?,
        create_time: Some(to_timestamp(get_i("create_time")?)),
        update_time: Some(to_timestamp(get_i("update_time")?)),
        deactivate_time: deactivate_time.map(to_timestamp),
        etag: etag(get_i("version")?),
    })
}

/// Checks the caller is a platform administrator.
fn require_admin(id: &Identity) -> Result<()> {
    fengqiao_kit::agency::need_role(id, ROLE_PLATFORM_ADMIN, "registering or changing agencies")
}

/// Validates the writable fields of an agency.
fn validate_agency(a: &Agency, prefix: &str) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if AgencyKind::try_from(a.kind).map_or(true, |k| k == AgencyKind::Unspecified) {
        v.push(FieldViolation::new(
            format!("{prefix}kind"),
            "must be a known agency kind",
        ));
    }
    let name_len = a.display_name.chars().count();
    if name_len == 0 || name_len > 200 {
        v.push(FieldViolation::new(
            format!("{prefix}display_name"),
            "is required, at most 200 characters",
        ));
    }
    if let Err(e) = validate::region_code(&format!("{prefix}region_code"), &a.region_code) {
        v.push(e);
    }
    if let Some(p) = &a.parent
        && let Err(e) = validate::parse_name(&format!("{prefix}parent"), "agencies", p)
    {
        v.push(e);
    }
    match DeliveryMode::try_from(a.delivery_mode) {
        Ok(DeliveryMode::Push) => {
            if !(a.endpoint.starts_with("http://") || a.endpoint.starts_with("https://")) {
                v.push(FieldViolation::new(
                    format!("{prefix}endpoint"),
                    "push delivery needs an http:// or https:// endpoint",
                ));
            }
        }
        Ok(DeliveryMode::Pull) => {}
        _ => v.push(FieldViolation::new(
            format!("{prefix}delivery_mode"),
            "must be PUSH or PULL",
        )),
    }
    v
}

impl Agencies {
    /// The registry over `store` (already migrated).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Reads one agency by id inside `tx`.
    pub async fn get_in(
        conn: &mut fengqiao_store::sqlx::AnyConnection,
        id: &str,
    ) -> Result<Option<Agency>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM agencies WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(fengqiao_store::Error::from)?;
        row.as_ref().map(row_to_agency).transpose()
    }

    /// Reads one agency by resource name.
    pub async fn get(&self, name: &str) -> Result<Option<Agency>> {
        let id = validate::parse_name("name", "agencies", name)?;
        let mut tx = self.store.read().await?;
        let a = Self::get_in(&mut tx, id).await?;
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        Ok(a)
    }

    async fn insert(tx: &mut Tx, id: &str, a: &Agency) -> Result<()> {
        let now = fengqiao_store::db_now_micros(tx).await?;
        sqlx::query(&format!(
            "INSERT INTO agencies ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, '', $8, $8, NULL, 1)"
        ))
        .bind(id)
        .bind(i64::from(a.kind))
        .bind(&a.display_name)
        .bind(&a.region_code)
        .bind(a.parent.clone())
        .bind(i64::from(a.delivery_mode))
        .bind(&a.endpoint)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(fengqiao_store::Error::from)?;
        Ok(())
    }

    /// Inserts `a` under `id` unless an agency with that id exists (`true` if inserted).
    /// `ON CONFLICT DO NOTHING` on both backends: on PostgreSQL a concurrent inserter's
    /// uncommitted row makes this wait for its commit and then do nothing.
    async fn insert_if_absent(tx: &mut Tx, id: &str, a: &Agency) -> Result<bool> {
        let now = fengqiao_store::db_now_micros(tx).await?;
        let done = sqlx::query(&format!(
            "INSERT INTO agencies ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, '', $8, $8, NULL, 1) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(id)
        .bind(i64::from(a.kind))
        .bind(&a.display_name)
        .bind(&a.region_code)
        .bind(a.parent.clone())
        .bind(i64::from(a.delivery_mode))
        .bind(&a.endpoint)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(fengqiao_store::Error::from)?;
        Ok(done.rows_affected() == 1)
    }

    /// Registers an agency.
    pub async fn register(&self, who: &Identity, req: RegisterAgencyRequest) -> Result<Agency> {
        require_admin(who)?;
        let idem = Idem::new(who, "RegisterAgency", &req.request_id, &req)?;
        let mut violations = Vec::new();
        if let Err(e) = validate::resource_id("agency_id", &req.agency_id) {
            violations.push(e);
        }
        let agency = req.agency.clone().unwrap_or_default();
        if req.agency.is_none() {
            violations.push(FieldViolation::new("agency", "is required"));
        } else {
            violations.extend(validate_agency(&agency, "agency."));
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<RegisterAgencyResponse>(&mut tx).await? {
            return r
                .agency
                .ok_or_else(|| Error::Corrupt("empty stored response".into()));
        }
        if Self::get_in(&mut tx, &req.agency_id).await?.is_some() {
            return Err(Error::AlreadyExists(format!("agencies/{}", req.agency_id)));
        }
        if let Some(parent) = &agency.parent {
            let pid = validate::parse_name("agency.parent", "agencies", parent)?;
            if Self::get_in(&mut tx, pid).await?.is_none() {
                return Err(Error::Invalid(vec![FieldViolation::new(
                    "agency.parent",
                    "no such agency",
                )]));
            }
        }
        Self::insert(&mut tx, &req.agency_id, &agency).await?;
        let stored = Self::get_in(&mut tx, &req.agency_id)
            .await?
            .ok_or_else(|| Error::Corrupt("inserted agency vanished".into()))?;
        let resp = RegisterAgencyResponse {
            agency: Some(stored.clone()),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        tracing::info!(agency = %stored.name, "agency registered");
        Ok(stored)
    }

    /// Lists agencies in id order, one page at a time.
    pub async fn list(&self, req: &ListAgenciesRequest) -> Result<ListAgenciesResponse> {
        let size = validate::page_size(req.page_size)?;
        let query = fengqiao_kit::list_query!(req, "");
        let after = validate::parse_page_token(&req.page_token, &query)?;
        let mut sql = format!("SELECT {COLUMNS} FROM agencies WHERE id > $1");
        let mut binds: Vec<String> = vec![after.unwrap_or_default()];
        if req.kind != 0 {
            validate::enum_value::<AgencyKind>("kind", req.kind)?;
            binds.push(req.kind.to_string());
            sql.push_str(&format!(" AND CAST(kind AS TEXT) = ${}", binds.len()));
        }
        if !req.region_code_prefix.is_empty() {
            if !req.region_code_prefix.bytes().all(|b| b.is_ascii_digit())
                || req.region_code_prefix.len() > 6
            {
                return Err(FieldViolation::new("region_code_prefix", "must be 1-6 digits").into());
            }
            binds.push(format!("{}%", req.region_code_prefix));
            sql.push_str(&format!(" AND region_code LIKE ${}", binds.len()));
        }
        if let Some(active) = req.active {
            sql.push_str(if active {
                " AND active = 1"
            } else {
                " AND active = 0"
            });
        }
        if !req.parent.is_empty() {
            validate::parse_name("parent", "agencies", &req.parent)?;
            binds.push(req.parent.clone());
            sql.push_str(&format!(" AND parent = ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", size + 1));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q
            .fetch_all(self.store.pool())
            .await
            .map_err(fengqiao_store::Error::from)?;
        let mut agencies = rows.iter().map(row_to_agency).collect::<Result<Vec<_>>>()?;
        let next_page_token = if agencies.len() > size as usize {
            agencies.truncate(size as usize);
            agencies
                .last()
                .map(|a| validate::page_token(&query, a.name.trim_start_matches("agencies/")))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListAgenciesResponse {
            agencies,
            next_page_token,
        })
    }

    /// Updates the fields named by the mask.
    pub async fn update(&self, who: &Identity, req: UpdateAgencyRequest) -> Result<Agency> {
        require_admin(who)?;
        let idem = Idem::new(who, "UpdateAgency", &req.request_id, &req)?;
        let patch = validate::required("agency", &req.agency)?;
        let id = validate::parse_name("agency.name", "agencies", &patch.name)?.to_string();
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(FieldViolation::new("update_mask", "must name at least one field").into());
        }
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<UpdateAgencyResponse>(&mut tx).await? {
            return r
                .agency
                .ok_or_else(|| Error::Corrupt("empty stored response".into()));
        }
        let mut current = Self::get_in(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("agencies/{id}")))?;
        if !patch.etag.is_empty() && patch.etag != current.etag {
            return Err(Error::EtagMismatch(current.name));
        }
        for p in &paths {
            match p.as_str() {
                "display_name" => current.display_name = patch.display_name.clone(),
                "region_code" => current.region_code = patch.region_code.clone(),
                "parent" => current.parent = patch.parent.clone(),
                "delivery_mode" => current.delivery_mode = patch.delivery_mode,
                "endpoint" => current.endpoint = patch.endpoint.clone(),
                _ => {
                    return Err(FieldViolation::new(
                        "update_mask",
                        "may name display_name, region_code, parent, delivery_mode, endpoint",
                    )
                    .into());
                }
            }
        }
        let v = validate_agency(&current, "agency.");
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        let version: i64 = current.etag.trim_matches('"').parse().unwrap_or(0);
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let done = sqlx::query(
            "UPDATE agencies SET display_name = $1, region_code = $2, parent = $3, \
             delivery_mode = $4, endpoint = $5, update_time = $6, version = version + 1 \
             WHERE id = $7 AND version = $8",
        )
        .bind(&current.display_name)
        .bind(&current.region_code)
        .bind(current.parent.clone())
        .bind(i64::from(current.delivery_mode))
        .bind(&current.endpoint)
        .bind(now)
        .bind(&id)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(fengqiao_store::Error::from)?;
        if done.rows_affected() != 1 {
            return Err(Error::EtagMismatch(current.name));
        }
        let stored = Self::get_in(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::Corrupt("updated agency vanished".into()))?;
        let resp = UpdateAgencyResponse {
            agency: Some(stored.clone()),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        Ok(stored)
    }

    /// Deactivates an agency: it can no longer be the sender or receiver of new transfers.
    pub async fn deactivate(&self, who: &Identity, req: DeactivateAgencyRequest) -> Result<Agency> {
        require_admin(who)?;
        let idem = Idem::new(who, "DeactivateAgency", &req.request_id, &req)?;
        let id = validate::parse_name("name", "agencies", &req.name)?.to_string();
        if req.reason.trim().is_empty() {
            return Err(FieldViolation::new("reason", "is required").into());
        }
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<DeactivateAgencyResponse>(&mut tx).await? {
            return r
                .agency
                .ok_or_else(|| Error::Corrupt("empty stored response".into()));
        }
        let current = Self::get_in(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::NotFound(req.name.clone()))?;
        if !req.etag.is_empty() && req.etag != current.etag {
            return Err(Error::EtagMismatch(current.name));
        }
        if !current.active {
            return Err(Error::WrongState {
                resource: current.name,
                state: "INACTIVE".into(),
                action: "deactivate",
            });
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        sqlx::query(
            "UPDATE agencies SET active = 0, deactivate_reason = $1, deactivate_time = $2, \
             update_time = $2, version = version + 1 WHERE id = $3",
        )
        .bind(req.reason.trim())
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(fengqiao_store::Error::from)?;
        let stored = Self::get_in(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::Corrupt("deactivated agency vanished".into()))?;
        let resp = DeactivateAgencyResponse {
            agency: Some(stored.clone()),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        Ok(stored)
    }

    /// Loads agencies from a seed file; existing agencies are left as they are (changes made
    /// through the API win). Returns how many were added.
    ///
    /// An `endpoint = "self"` in the file stands for `self_endpoint` (the suite's own address,
    /// for agencies whose records live in an agency service of the same process).
    pub async fn seed(&self, file: &SeedFile, self_endpoint: &str) -> Result<usize> {
        let mut added = 0;
        let mut tx = self.store.write().await?;
        for (i, s) in file.agency.iter().enumerate() {
            let mut s = s.clone();
            if s.endpoint.as_deref() == Some("self") {
                s.endpoint = Some(self_endpoint.to_string());
            }
            let a = s.to_agency().map_err(|d| {
                Error::Invalid(vec![FieldViolation::new(format!("agency[{i}]"), d)])
            })?;
            let v = validate_agency(&a, &format!("agency[{i}]."));
            validate::resource_id(&format!("agency[{i}].id"), &s.id)?;
            if !v.is_empty() {
                return Err(Error::Invalid(v));
            }
            // Insert-if-absent: replicas started together on a fresh database seed at once;
            // a concurrent seeder's row (committed or not) makes this a no-op, never an error.
            if Self::insert_if_absent(&mut tx, &s.id, &a).await? {
                added += 1;
            }
        }
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        Ok(added)
    }
}

/// A seed file of agencies (TOML), e.g. the dev suite's sample district.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// The agencies.
    #[serde(default)]
    pub agency: Vec<SeedAgency>,
}

/// One agency of a seed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAgency {
    /// Resource id (`agencies/{id}`).
    pub id: String,
    /// `police_command_centre`, `police_station`, `mediation_committee`,
    /// `station_mediation_room`, `court`, `procuratorate`, `coordination_centre` or
    /// `administrative_organ`.
    pub kind: String,
    /// Display name.
    pub display_name: String,
    /// GB/T 2260 region code.
    pub region_code: String,
    /// Parent agency id, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// `push` or `pull` (default `pull`).
    #[serde(default)]
    pub delivery: Option<String>,
    /// Push endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Sample actors of the agency (used by the dev suite to mint tokens; not stored).
    #[serde(default)]
    pub actor: Vec<SeedActor>,
}

/// A sample actor of a seed agency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedActor {
    /// Actor id.
    pub id: String,
    /// Description (e.g. the post held), never personal information.
    #[serde(default)]
    pub title: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Parses an agency kind keyword.
pub fn parse_kind(s: &str) -> Option<AgencyKind> {
    Some(match s {
        "police_command_centre" => AgencyKind::PoliceCommandCentre,
        "police_station" => AgencyKind::PoliceStation,
        "mediation_committee" => AgencyKind::MediationCommittee,
        "station_mediation_room" => AgencyKind::StationMediationRoom,
        "court" => AgencyKind::Court,
        "procuratorate" => AgencyKind::Procuratorate,
        "coordination_centre" => AgencyKind::CoordinationCentre,
        "administrative_organ" => AgencyKind::AdministrativeOrgan,
        _ => return None,
    })
}

impl SeedAgency {
    fn to_agency(&self) -> std::result::Result<Agency, String> {
        let kind = parse_kind(&self.kind).ok_or_else(|| "unknown kind".to_string())?;
        let mode = match self.delivery.as_deref().unwrap_or("pull") {
            "pull" => DeliveryMode::Pull,
            "push" => DeliveryMode::Push,
            _ => return Err("delivery must be push or pull".into()),
        };
        Ok(Agency {
            kind: kind as i32,
            display_name: self.display_name.clone(),
            region_code: self.region_code.clone(),
            parent: self.parent.as_ref().map(|p| format!("agencies/{p}")),
            delivery_mode: mode as i32,
            endpoint: self.endpoint.clone().unwrap_or_default(),
            ..Default::default()
        })
    }
}

impl SeedFile {
    /// Reads a seed file.
    pub fn load(path: &Path) -> std::result::Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn identity<T>(req: &Request<T>) -> std::result::Result<Identity, Status> {
    Identity::of(req).cloned().map_err(Into::into)
}

#[tonic::async_trait]
impl AgencyService for Agencies {
    async fn register_agency(
        &self,
        request: Request<RegisterAgencyRequest>,
    ) -> std::result::Result<Response<RegisterAgencyResponse>, Status> {
        let who = identity(&request)?;
        let agency = self.register(&who, request.into_inner()).await?;
        Ok(Response::new(RegisterAgencyResponse {
            agency: Some(agency),
        }))
    }

    async fn get_agency(
        &self,
        request: Request<GetAgencyRequest>,
    ) -> std::result::Result<Response<GetAgencyResponse>, Status> {
        identity(&request)?;
        let name = request.into_inner().name;
        let agency = self
            .get(&name)
            .await?
            .ok_or_else(|| Error::NotFound(name.clone()))?;
        Ok(Response::new(GetAgencyResponse {
            agency: Some(agency),
        }))
    }

    async fn list_agencies(
        &self,
        request: Request<ListAgenciesRequest>,
    ) -> std::result::Result<Response<ListAgenciesResponse>, Status> {
        identity(&request)?;
        Ok(Response::new(self.list(request.get_ref()).await?))
    }

    async fn update_agency(
        &self,
        request: Request<UpdateAgencyRequest>,
    ) -> std::result::Result<Response<UpdateAgencyResponse>, Status> {
        let who = identity(&request)?;
        let agency = self.update(&who, request.into_inner()).await?;
        Ok(Response::new(UpdateAgencyResponse {
            agency: Some(agency),
        }))
    }

    async fn deactivate_agency(
        &self,
        request: Request<DeactivateAgencyRequest>,
    ) -> std::result::Result<Response<DeactivateAgencyResponse>, Status> {
        let who = identity(&request)?;
        let agency = self.deactivate(&who, request.into_inner()).await?;
        Ok(Response::new(DeactivateAgencyResponse {
            agency: Some(agency),
        }))
    }
}
