//! People's mediation's entry in the service registry ([`fengqiao_kit::module`]).

use fengqiao_kit::module::{AgencyModule, BuildCtx, Instance, ModuleError, Passive};

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "mediation";

/// People's mediation's (人民调解) registry entry.
pub static MODULE: AgencyModule =
    AgencyModule::new(NAME, "/fengqiao.mediation.v1.", crate::SCHEMA, build);

fn build(ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
    let mut svc = crate::Mediation::new(ctx.store.clone(), ctx.router_channel()?);
    // With the service key it acknowledges the court's confirmation rulings.
    if let Some(key) = ctx.signing_key()? {
        svc = svc.with_signing_key(key, &ctx.config.auth.issuer);
    }
    svc.add_to(ctx.builder, ctx.max_message_bytes());
    ctx.add_inbox(svc.inbox_handler())?;
    Ok(Box::new(Passive))
}
