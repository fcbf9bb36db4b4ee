//! Police referral's entry in the service registry ([`fengqiao_kit::module`]).

use fengqiao_kit::module::{AgencyModule, BuildCtx, Instance, ModuleError, Passive};

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "police-referral";

/// Police referral's (警调对接) registry entry.
pub static MODULE: AgencyModule =
    AgencyModule::new(NAME, "/fengqiao.policereferral.v1.", crate::SCHEMA, build);

fn build(ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
    let svc = crate::PoliceReferral::new(ctx.store.clone(), ctx.router_channel()?);
    svc.add_to(ctx.builder, ctx.max_message_bytes());
    ctx.add_inbox(svc.inbox_handler())?;
    Ok(Box::new(Passive))
}
