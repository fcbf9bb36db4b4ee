//! Police referral's entry in the service registry ([`fengqiao_kit::module`]).

use fengqiao_kit::module::{BuildCtx, Instance, ModuleError, Passive, ServiceModule};
use fengqiao_store::Store;

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "police-referral";

/// Police referral's registry entry.
pub static MODULE: PoliceReferralModule = PoliceReferralModule;

/// Police referral (警调对接) as the binary starts it.
#[derive(Debug, Clone, Copy)]
pub struct PoliceReferralModule;

#[tonic::async_trait]
impl ServiceModule for PoliceReferralModule {
    fn name(&self) -> &'static str {
        NAME
    }

    fn grpc_prefix(&self) -> &'static str {
        "/fengqiao.policereferral.v1."
    }

    async fn migrate(&self, store: &Store) -> Result<(), ModuleError> {
        crate::migrate(store)
            .await
            .map_err(|source| ModuleError::Store {
                service: NAME,
                source,
            })
    }

    fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
        let svc = crate::PoliceReferral::new(ctx.store.clone(), ctx.router_channel()?);
        svc.add_to(ctx.builder, ctx.max_message_bytes());
        ctx.add_inbox(svc.inbox_handler())?;
        Ok(Box::new(Passive))
    }
}
