//! Court diversion's entry in the service registry ([`fengqiao_kit::module`]).

use fengqiao_kit::module::{
    AgencyModule, AgencySeed, BuildCtx, Instance, ModuleError, SeedCtx, SeedFuture,
};
use fengqiao_kit::server::Shutdown;

use crate::{CourtDiversion, SeedOrganization, SeedRoster};

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "court-diversion";

/// Court diversion's (诉前调解 / 委派调解) registry entry (after judicial confirmation in the
/// registry: it takes that service from the build extensions when both run in one process).
pub static MODULE: AgencyModule =
    AgencyModule::new(NAME, "/fengqiao.courtdiversion.v1.", crate::SCHEMA, build).with_seed(seed);

/// The sample rosters (特邀调解名册) of an agency seed: every court invites every mediation
/// committee of the seed, with the committee's actors holding the role `mediator` as its
/// invited mediators.
pub fn court_rosters(seed: &AgencySeed) -> Vec<SeedRoster> {
    let organizations: Vec<SeedOrganization> = seed
        .agency
        .iter()
        .filter(|a| a.kind == "mediation_committee")
        .map(|a| SeedOrganization {
            id: a.id.clone(),
            display_name: a.display_name.clone(),
            agency: format!("agencies/{}", a.id),
            region_code: a.region_code.clone(),
            mediators: a
                .actor
                .iter()
                .filter(|x| x.roles.iter().any(|r| r == "mediator"))
                .map(|x| (x.id.clone(), x.title.clone(), x.id.clone()))
                .collect(),
        })
        .collect();
    seed.agency
        .iter()
        .filter(|a| a.kind == "court")
        .map(|a| SeedRoster {
            court: format!("agencies/{}", a.id),
            organizations: organizations.clone(),
        })
        .collect()
}

/// The sample rosters of the agency seed, idempotently (several processes may start at once
/// on one database).
fn seed<'a>(ctx: &'a SeedCtx<'_>) -> SeedFuture<'a> {
    Box::pin(async move {
        let Some(seed) = ctx.agency_seed().map_err(ModuleError::Config)? else {
            return Ok(());
        };
        let added = crate::seed_rosters(ctx.store, &court_rosters(&seed))
            .await
            .map_err(|e| ModuleError::Config(format!("court roster seed: {e}")))?;
        tracing::info!(added, "court roster seed loaded");
        Ok(())
    })
}

fn build(ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
    let mut svc = CourtDiversion::new(ctx.store.clone(), ctx.router_channel()?);
    // With the service key it re-designates by itself after an acceptance timeout
    // (在线调解规则 Art 12); without one the judge does.
    if let Some(key) = ctx.signing_key()? {
        svc = svc.with_signing_key(key, &ctx.config.auth.issuer);
    }
    if let Some(jc) = ctx
        .extensions
        .get::<fengqiao_judicial_confirmation::JudicialConfirmation>()
    {
        svc = svc.with_confirmation(jc.clone());
    }
    svc.add_to(ctx.builder, ctx.max_message_bytes());
    ctx.add_inbox(svc.inbox_handler())?;
    Ok(Box::new(Timer(svc)))
}

struct Timer(CourtDiversion);

impl Instance for Timer {
    fn start(&self, shutdown: Shutdown) {
        self.0.start_timer(async move { shutdown.wait().await });
    }
}
