//! People's mediation's entry in the service registry ([`fengqiao_kit::module`]).

use fengqiao_kit::module::{BuildCtx, Instance, ModuleError, Passive, ServiceModule};
use fengqiao_store::Store;

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "mediation";

/// Mediation's registry entry.
pub static MODULE: MediationModule = MediationModule;

/// People's mediation (人民调解) as the binary starts it.
#[derive(Debug, Clone, Copy)]
pub struct MediationModule;

#[tonic::async_trait]
impl ServiceModule for MediationModule {
    fn name(&self) -> &'static str {
        NAME
    }

    fn grpc_prefix(&self) -> &'static str {
        "/fengqiao.mediation.v1."
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
        let mut svc = crate::Mediation::new(ctx.store.clone(), ctx.router_channel()?);
        // With the service key it acknowledges the court's confirmation rulings.
        if let Some(key) = ctx.signing_key()? {
            svc = svc.with_signing_key(key, &ctx.config.auth.issuer);
        }
        svc.add_to(ctx.builder, ctx.max_message_bytes());
        ctx.add_inbox(svc.inbox_handler())?;
        Ok(Box::new(Passive))
    }
}
