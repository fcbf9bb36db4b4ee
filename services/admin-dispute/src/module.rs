//! Administrative dispute coordination's entry in the service registry
//! ([`fengqiao_kit::module`]).

use fengqiao_kit::module::{AgencyModule, BuildCtx, Instance, ModuleError, Passive};

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "admin-dispute";

/// Administrative dispute coordination's (行政争议实质性化解) registry entry.
pub static MODULE: AgencyModule =
    AgencyModule::new(NAME, "/fengqiao.admindispute.v1.", crate::SCHEMA, build);

fn build(ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
    // The centre's side of coordination-to-procuratorate (sender) and
    // procuratorate-to-coordination (receiver).
    let svc = crate::AdminDispute::new(ctx.store.clone(), ctx.router_channel()?)
        .with_procuratorate_review_months(ctx.config.admin_dispute.procuratorate_review_months);
    svc.add_to(ctx.builder, ctx.max_message_bytes());
    ctx.add_inbox(svc.inbox_handler())?;
    Ok(Box::new(Passive))
}
