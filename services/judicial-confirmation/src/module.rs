//! Judicial confirmation's entry in the service registry ([`fengqiao_kit::module`]).

use std::time::Duration;

use fengqiao_kit::module::{AgencyModule, BuildCtx, Instance, ModuleError};
use fengqiao_kit::server::Shutdown;

use crate::JudicialConfirmation;

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "judicial-confirmation";

/// Judicial confirmation's (司法确认) registry entry. It publishes its
/// [`JudicialConfirmation`] in the build extensions: court diversion, later in the registry,
/// hands pre-filing applications (诉前调确) to it in-process.
pub static MODULE: AgencyModule = AgencyModule::new(
    NAME,
    "/fengqiao.judicialconfirmation.v1.",
    crate::SCHEMA,
    build,
);

fn build(ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
    // The court's inbox for `mediation-to-court-confirmation`; its acts are reflected on
    // the committee's transfers.
    let mut svc = JudicialConfirmation::new(ctx.store.clone()).with_router(ctx.router_channel()?);
    // With the service key it declines an offer its intake checks refuse.
    if let Some(key) = ctx.signing_key()? {
        svc = svc.with_signing_key(key, &ctx.config.auth.issuer);
    }
    svc.add_to(ctx.builder, ctx.max_message_bytes());
    ctx.add_inbox(svc.inbox_handler())?;
    ctx.extensions.insert(svc.clone());
    Ok(Box::new(Timer(svc)))
}

struct Timer(JudicialConfirmation);

impl Instance for Timer {
    /// Marks overdue decision clocks (2011 rules Art 4–5) without waiting for a read.
    fn start(&self, shutdown: Shutdown) {
        self.0.start_timer(
            Duration::from_secs(30),
            async move { shutdown.wait().await },
        );
    }
}
