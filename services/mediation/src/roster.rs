//! The roster (调解组织与调解员): organisations linked to router agencies and their
//! mediators. Changes need `mediation_admin` of the organisation's agency; organisations are
//! a public directory, mediators are listed to the organisation's own agency.

use fengqiao_kit::Reason;
use fengqiao_kit::{FieldViolation, Identity, validate};
use fengqiao_proto::mediation::{
    CreateMediatorRequest, CreateMediatorResponse, CreateOrganizationRequest,
    CreateOrganizationResponse, ListMediatorsRequest, ListMediatorsResponse,
    ListOrganizationsRequest, ListOrganizationsResponse, Mediator, MediatorSpecialty, Organization,
    OrganizationKind, UpdateMediatorRequest, UpdateMediatorResponse,
};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, Tx};

use crate::error::{Error, Result};
use crate::util::{
    MEDIATORS_BODY, ORGANIZATIONS_BODY, check_etag, etag, opened, require_admin, sealed, text,
    to_timestamp, violations,
};
use fengqiao_kit::idem::Idem;

/// Checks an organisation or mediator id: 4–63 of [a-z0-9-], starting with a letter.
fn long_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    validate::resource_id(field, id)?;
    if id.len() < 4 || !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(FieldViolation::new(
            field,
            "must be 4-63 characters of a-z, 0-9 and '-', starting with a letter",
        ));
    }
    Ok(())
}

/// Splits `organizations/{o}/mediators/{m}`.
pub fn parse_mediator_name(field: &str, name: &str) -> Result<(String, String), FieldViolation> {
    fengqiao_kit::agency::parse_child_name(
        field,
        name,
        "organizations",
        "mediators",
        "of the form organizations/{organization}/mediators/{mediator}",
    )
}

/// Reads an organisation by id.
pub async fn get_org(tx: &mut Tx, id: &str) -> Result<Option<Organization>> {
    let row = sqlx::query("SELECT body, version FROM mediation_organizations WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| {
        let body: Vec<u8> = r.try_get("body")?;
        let version: i64 = r.try_get("version")?;
        let mut o: Organization = opened(ORGANIZATIONS_BODY, &body)?;
        o.etag = etag(version);
        Ok(o)
    })
    .transpose()
}

/// The organisation registered for an agency (the first by id), if any.
pub async fn org_of_agency(tx: &mut Tx, agency: &str) -> Result<Option<Organization>> {
    let row =
        sqlx::query("SELECT id FROM mediation_organizations WHERE agency = $1 ORDER BY id LIMIT 1")
            .bind(agency)
            .fetch_optional(&mut **tx)
            .await?;
    match row {
        Some(r) => {
            let id: String = r.try_get("id")?;
            get_org(tx, &id).await
        }
        None => Ok(None),
    }
}

/// Open cases assigned to a mediator (在办案件数).
pub async fn load_of(tx: &mut Tx, mediator: &str) -> Result<u32> {
    // The open states count towards a mediator's load (the lifecycle's one definition).
    let row = sqlx::query(&format!(
        "SELECT COUNT(*) AS n FROM mediation_cases WHERE mediator = $1 AND state IN {}",
        crate::lifecycle::open_states_sql()
    ))
    .bind(mediator)
    .fetch_one(&mut **tx)
    .await?;
    let n: i64 = row.try_get("n")?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The mediators of an organisation with their current load, ordered by name.
pub async fn mediators_of(tx: &mut Tx, org: &str) -> Result<Vec<Mediator>> {
    let rows = sqlx::query(
        "SELECT body, version FROM mediation_mediators WHERE organization = $1 ORDER BY id",
    )
    .bind(org)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let body: Vec<u8> = r.try_get("body")?;
        let version: i64 = r.try_get("version")?;
        let mut m: Mediator = opened(MEDIATORS_BODY, &body)?;
        m.etag = etag(version);
        m.current_load = load_of(tx, &m.name).await?;
        out.push(m);
    }
    Ok(out)
}

/// Reads one mediator with its load.
pub async fn get_mediator(tx: &mut Tx, org: &str, id: &str) -> Result<Option<Mediator>> {
    let row = sqlx::query(
        "SELECT body, version FROM mediation_mediators WHERE organization = $1 AND id = $2",
    )
    .bind(org)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(r) => {
            let body: Vec<u8> = r.try_get("body")?;
            let version: i64 = r.try_get("version")?;
            let mut m: Mediator = opened(MEDIATORS_BODY, &body)?;
            m.etag = etag(version);
            m.current_load = load_of(tx, &m.name).await?;
            Ok(Some(m))
        }
        None => Ok(None),
    }
}

fn validate_mediator(m: &Mediator, prefix: &str, v: &mut Vec<FieldViolation>) {
    text(
        v,
        &format!("{prefix}display_name"),
        &m.display_name,
        true,
        100,
    );
    if let Err(e) = validate::region_code(&format!("{prefix}region_code"), &m.region_code) {
        v.push(e);
    }
    for (i, s) in m.specialties.iter().enumerate() {
        if MediatorSpecialty::try_from(*s).map_or(true, |s| s == MediatorSpecialty::Unspecified) {
            v.push(FieldViolation::new(
                format!("{prefix}specialties[{i}]"),
                "must be a known specialty",
            ));
        }
    }
}

/// The roster over the service's store.
#[derive(Clone, Debug)]
pub struct Roster {
    store: Store,
}

impl Roster {
    /// The roster over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Registers an organisation for the caller's own agency.
    pub async fn create_org(
        &self,
        who: &Identity,
        req: CreateOrganizationRequest,
    ) -> Result<CreateOrganizationResponse> {
        require_admin(who)?;
        let idem = Idem::new(who, "CreateOrganization", &req.request_id, &req)?;
        let mut v = Vec::new();
        if let Err(e) = long_id("organization_id", &req.organization_id) {
            v.push(e);
        }
        let mut org = req.organization.clone().unwrap_or_default();
        if req.organization.is_none() {
            v.push(FieldViolation::new("organization", "is required"));
        } else {
            text(
                &mut v,
                "organization.display_name",
                &org.display_name,
                true,
                200,
            );
            if OrganizationKind::try_from(org.kind)
                .map_or(true, |k| k == OrganizationKind::Unspecified)
            {
                v.push(FieldViolation::new(
                    "organization.kind",
                    "must be a known organisation kind",
                ));
            }
            if let Err(e) = validate::region_code("organization.region_code", &org.region_code) {
                v.push(e);
            }
            if let Err(e) = validate::parse_name("organization.agency", "agencies", &org.agency) {
                v.push(e);
            }
        }
        violations(v)?;
        if org.agency != who.agency {
            return Err(Error::Refused(
                Reason::WrongParty,
                "an organisation can only be registered by its own agency".into(),
            ));
        }
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<CreateOrganizationResponse>(&mut tx).await? {
            return Ok(r);
        }
        if get_org(&mut tx, &req.organization_id).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "organizations/{}",
                req.organization_id
            )));
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        org.name = format!("organizations/{}", req.organization_id);
        org.active = true;
        org.create_time = Some(to_timestamp(now));
        org.update_time = Some(to_timestamp(now));
        org.etag = etag(1);
        sqlx::query(
            "INSERT INTO mediation_organizations (id, agency, kind, region_code, version, body) \
             VALUES ($1, $2, $3, $4, 1, $5)",
        )
        .bind(&req.organization_id)
        .bind(&org.agency)
        .bind(i64::from(org.kind))
        .bind(&org.region_code)
        .bind(sealed(ORGANIZATIONS_BODY, &org)?)
        .execute(&mut *tx)
        .await?;
        let resp = CreateOrganizationResponse {
            organization: Some(org),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    /// Gets one organisation (the directory is visible to every authenticated caller).
    pub async fn get_org(&self, name: &str) -> Result<Organization> {
        let id = validate::parse_name("name", "organizations", name)?;
        let mut tx = self.store.read().await?;
        let o = get_org(&mut tx, id).await?;
        tx.commit().await?;
        o.ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Lists organisations by resource name.
    pub async fn list_orgs(
        &self,
        req: ListOrganizationsRequest,
    ) -> Result<ListOrganizationsResponse> {
        let size = validate::page_size(req.page_size)? as usize;
        let query = fengqiao_kit::list_query!(req, "");
        let after = validate::parse_page_token(&req.page_token, &query)?.unwrap_or_default();
        if !req.agency.is_empty() {
            validate::parse_name("agency", "agencies", &req.agency)?;
        }
        let mut tx = self.store.read().await?;
        let rows = sqlx::query("SELECT id FROM mediation_organizations WHERE id > $1 ORDER BY id")
            .bind(&after)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::new();
        let mut next = String::new();
        for r in rows {
            let id: String = r.try_get("id")?;
            let Some(o) = get_org(&mut tx, &id).await? else {
                continue;
            };
            if (req.kind != 0 && o.kind != req.kind)
                || !o.region_code.starts_with(&req.region_code_prefix)
                || (!req.agency.is_empty() && o.agency != req.agency)
            {
                continue;
            }
            if out.len() == size {
                if let Some(last) = out.last() {
                    let last: &Organization = last;
                    next = validate::page_token(
                        &query,
                        last.name.trim_start_matches("organizations/"),
                    );
                }
                break;
            }
            out.push(o);
        }
        tx.commit().await?;
        Ok(ListOrganizationsResponse {
            organizations: out,
            next_page_token: next,
        })
    }

    /// The organisation `name`, which must belong to the caller's agency.
    async fn own_org(tx: &mut Tx, who: &Identity, field: &str, name: &str) -> Result<Organization> {
        let id = validate::parse_name(field, "organizations", name)?;
        let org = get_org(tx, id)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if org.agency != who.agency {
            return Err(Error::Refused(
                Reason::WrongParty,
                "the roster of an organisation is kept by its own agency".into(),
            ));
        }
        Ok(org)
    }

    /// Adds a mediator to an organisation of the caller's agency.
    pub async fn create_mediator(
        &self,
        who: &Identity,
        req: CreateMediatorRequest,
    ) -> Result<CreateMediatorResponse> {
        require_admin(who)?;
        let idem = Idem::new(who, "CreateMediator", &req.request_id, &req)?;
        let mut v = Vec::new();
        if let Err(e) = validate::parse_name("parent", "organizations", &req.parent) {
            v.push(e);
        }
        if !req.mediator_id.is_empty()
            && let Err(e) = long_id("mediator_id", &req.mediator_id)
        {
            v.push(e);
        }
        let mut m = req.mediator.clone().unwrap_or_default();
        if req.mediator.is_none() {
            v.push(FieldViolation::new("mediator", "is required"));
        } else {
            validate_mediator(&m, "mediator.", &mut v);
            text(&mut v, "mediator.actor_id", &m.actor_id, true, 128);
        }
        violations(v)?;
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<CreateMediatorResponse>(&mut tx).await? {
            return Ok(r);
        }
        let org = Self::own_org(&mut tx, who, "parent", &req.parent).await?;
        let org_id = org.name.trim_start_matches("organizations/").to_string();
        let mid = if req.mediator_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.mediator_id.clone()
        };
        if get_mediator(&mut tx, &org_id, &mid).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "{}/mediators/{mid}",
                org.name
            )));
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        m.name = format!("{}/mediators/{mid}", org.name);
        m.active = true;
        m.current_load = 0;
        m.create_time = Some(to_timestamp(now));
        m.update_time = Some(to_timestamp(now));
        m.etag = etag(1);
        sqlx::query(
            "INSERT INTO mediation_mediators (organization, id, agency, version, body) \
             VALUES ($1, $2, $3, 1, $4)",
        )
        .bind(&org_id)
        .bind(&mid)
        .bind(&org.agency)
        .bind(sealed(MEDIATORS_BODY, &m)?)
        .execute(&mut *tx)
        .await?;
        let resp = CreateMediatorResponse { mediator: Some(m) };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    /// Lists mediators of one organisation, or of all organisations of the caller's agency.
    pub async fn list_mediators(
        &self,
        who: &Identity,
        req: ListMediatorsRequest,
    ) -> Result<ListMediatorsResponse> {
        let size = validate::page_size(req.page_size)? as usize;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let after = validate::parse_page_token(&req.page_token, &query)?.unwrap_or_default();
        let mut tx = self.store.read().await?;
        let orgs: Vec<String> = if req.parent == "organizations/-" {
            let rows =
                sqlx::query("SELECT id FROM mediation_organizations WHERE agency = $1 ORDER BY id")
                    .bind(&who.agency)
                    .fetch_all(&mut *tx)
                    .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("id"))
                .collect::<std::result::Result<_, _>>()?
        } else {
            let org = Self::own_org(&mut tx, who, "parent", &req.parent).await?;
            vec![org.name.trim_start_matches("organizations/").to_string()]
        };
        let mut all = Vec::new();
        for o in orgs {
            all.extend(mediators_of(&mut tx, &o).await?);
        }
        tx.commit().await?;
        let mut out = Vec::new();
        let mut next = String::new();
        for m in all.into_iter().filter(|m| m.name > after) {
            if (req.specialty != 0 && !m.specialties.contains(&req.specialty))
                || !m.region_code.starts_with(&req.region_code_prefix)
                || req.active.is_some_and(|a| a != m.active)
            {
                continue;
            }
            if out.len() == size {
                if let Some(last) = out.last() {
                    let last: &Mediator = last;
                    next = validate::page_token(&query, &last.name);
                }
                break;
            }
            out.push(m);
        }
        Ok(ListMediatorsResponse {
            mediators: out,
            next_page_token: next,
        })
    }

    /// Updates a mediator's roster entry.
    pub async fn update_mediator(
        &self,
        who: &Identity,
        req: UpdateMediatorRequest,
    ) -> Result<UpdateMediatorResponse> {
        require_admin(who)?;
        let idem = Idem::new(who, "UpdateMediator", &req.request_id, &req)?;
        let input = validate::required("mediator", &req.mediator)?;
        let (org_id, mid) = parse_mediator_name("mediator.name", &input.name)?;
        const ALLOWED: [&str; 5] = [
            "display_name",
            "specialties",
            "region_code",
            "active",
            "max_load",
        ];
        let paths: Vec<String> = match &req.update_mask {
            Some(m) if !m.paths.is_empty() => m.paths.clone(),
            _ => ALLOWED.iter().map(|s| s.to_string()).collect(),
        };
        let mut v = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if !ALLOWED.contains(&p.as_str()) {
                v.push(FieldViolation::new(
                    format!("update_mask.paths[{i}]"),
                    "is not an updatable field",
                ));
            }
        }
        let mut check = Vec::new();
        validate_mediator(&input, "mediator.", &mut check);
        v.extend(check.into_iter().filter(|f| {
            paths
                .iter()
                .any(|p| f.field.starts_with(&format!("mediator.{p}")))
        }));
        violations(v)?;
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<UpdateMediatorResponse>(&mut tx).await? {
            return Ok(r);
        }
        Self::own_org(
            &mut tx,
            who,
            "mediator.name",
            &format!("organizations/{org_id}"),
        )
        .await?;
        let mut m = get_mediator(&mut tx, &org_id, &mid)
            .await?
            .ok_or_else(|| Error::NotFound(input.name.clone()))?;
        let version: i64 = m.etag.trim_matches('"').parse().unwrap_or(0);
        check_etag(&input.name, &input.etag, version)?;
        for p in &paths {
            match p.as_str() {
                "display_name" => m.display_name = input.display_name.clone(),
                "specialties" => m.specialties = input.specialties.clone(),
                "region_code" => m.region_code = input.region_code.clone(),
                "active" => m.active = input.active,
                "max_load" => m.max_load = input.max_load,
                _ => {}
            }
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        m.update_time = Some(to_timestamp(now));
        m.etag = etag(version + 1);
        let done = sqlx::query(
            "UPDATE mediation_mediators SET body = $1, version = version + 1 \
             WHERE organization = $2 AND id = $3 AND version = $4",
        )
        .bind(sealed(MEDIATORS_BODY, &m)?)
        .bind(&org_id)
        .bind(&mid)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::EtagMismatch(input.name));
        }
        let resp = UpdateMediatorResponse { mediator: Some(m) };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }
}
