//! Administrative dispute coordination's entry in the service registry
//! ([`fengqiao_kit::module`]).

use fengqiao_kit::module::{BuildCtx, Instance, ModuleError, Passive, ServiceModule};
use fengqiao_store::Store;

/// The service's name in flags, file names and store URLs.
pub const NAME: &str = "admin-dispute";

/// Administrative dispute coordination's registry entry.
pub static MODULE: AdminDisputeModule = AdminDisputeModule;

/// Administrative dispute coordination (行政争议实质性化解) as the binary starts it.
#[derive(Debug, Clone, Copy)]
pub struct AdminDisputeModule;

#[tonic::async_trait]
impl ServiceModule for AdminDisputeModule {
    fn name(&self) -> &'static str {
        NAME
    }

    fn grpc_prefix(&self) -> &'static str {
        "/fengqiao.admindispute.v1."
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
        // The centre's side of coordination-to-procuratorate (sender) and
        // procuratorate-to-coordination (receiver).
        let svc = crate::AdminDispute::new(ctx.store.clone(), ctx.router_channel()?)
            .with_procuratorate_review_months(ctx.config.admin_dispute.procuratorate_review_months);
        svc.add_to(ctx.builder, ctx.max_message_bytes());
        ctx.add_inbox(svc.inbox_handler())?;
        Ok(Box::new(Passive))
    }
}
