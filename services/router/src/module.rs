//! The router's entry in the service registry ([`fengqiao_kit::module`]).

use std::sync::Arc;
use std::time::Duration;

use fengqiao_kit::auth::SigningKey;
use fengqiao_kit::config::Config;
use fengqiao_kit::inbox::ROUTER_PRINCIPAL;
use fengqiao_kit::module::{
    BuildCtx, Instance, ModuleError, SeedCtx, SeedSource, ServiceModule, ServingCtx,
};
use fengqiao_kit::server::Shutdown;
use fengqiao_store::Store;

use crate::{Agencies, Router, RouterOptions};

/// The router's name in flags, file names and store URLs.
pub const NAME: &str = "router";

/// The router's registry entry.
pub static MODULE: RouterModule = RouterModule;

/// The router (hub) as the binary starts it.
#[derive(Debug, Clone, Copy)]
pub struct RouterModule;

fn err(message: impl std::fmt::Display) -> ModuleError {
    ModuleError::Service {
        service: NAME,
        message: message.to_string(),
    }
}

/// The router's options from the configuration: policy files, delivery timeout and leases
/// (`[delivery]`), and a push credential signed with the service key when one is configured.
pub fn options(config: &Config) -> Result<RouterOptions, ModuleError> {
    let mut o = RouterOptions {
        routes_dir: config.routes_dir.clone(),
        holidays_file: config.holidays_file.clone(),
        ..Default::default()
    };
    let d = &config.delivery;
    o.delivery.call_timeout = Duration::from_millis(d.push_timeout_ms);
    o.delivery.push_lease = Duration::from_millis(d.effective_push_lease_ms());
    o.delivery.pull_lease = Duration::from_millis(d.pull_lease_ms);
    if let Some(path) = &config.auth.service_key_file {
        let key = Arc::new(SigningKey::load(path)?);
        let issuer = config.auth.issuer.clone();
        o.push_token = Arc::new(move || {
            Some(key.sign(&fengqiao_kit::auth::claims(
                &issuer,
                ROUTER_PRINCIPAL,
                "router",
                &["router"],
                300,
            )))
        });
    }
    Ok(o)
}

#[tonic::async_trait]
impl ServiceModule for RouterModule {
    fn name(&self) -> &'static str {
        NAME
    }

    fn grpc_prefix(&self) -> &'static str {
        "/fengqiao.router.v1."
    }

    fn hub(&self) -> bool {
        true
    }

    async fn migrate(&self, store: &Store) -> Result<(), ModuleError> {
        crate::migrate(store).await.map_err(err)
    }

    /// The agency seed (the sample district in `dev`, `agencies_file` otherwise); agencies
    /// seeded with endpoint `self` are pushed to at this server's address.
    async fn seed(&self, ctx: &SeedCtx<'_>) -> Result<(), ModuleError> {
        let seed: crate::agencies::SeedFile = match ctx.seed {
            SeedSource::None => return Ok(()),
            SeedSource::Text(text) => {
                toml::from_str(text).map_err(|e| err(format!("agency seed: {e}")))?
            }
            SeedSource::File(path) => crate::agencies::SeedFile::load(path).map_err(err)?,
        };
        let self_endpoint = format!("http://{}", ctx.addr);
        let added = Agencies::new(ctx.store.clone())
            .seed(&seed, &self_endpoint)
            .await
            .map_err(|e| err(format!("agency seed: {e}")))?;
        tracing::info!(added, "agency seed loaded");
        Ok(())
    }

    fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
        let r = Router::new(ctx.store.clone(), options(ctx.config)?).map_err(err)?;
        r.add_to(ctx.builder, ctx.max_message_bytes(), ctx.shutdown_signal());
        ctx.metrics
            .register_group_commit(NAME, r.transfers.group_commit().clone());
        crate::metrics::register(ctx.metrics, ctx.store.clone());
        Ok(Box::new(RouterInstance(r)))
    }
}

struct RouterInstance(Router);

#[tonic::async_trait]
impl Instance for RouterInstance {
    /// Pushes to agencies served here (seeded with endpoint `self`) go in-process.
    fn on_serving(&self, ctx: &ServingCtx<'_>) {
        if let Some(local) = ctx.local {
            self.0
                .delivery
                .use_channel(&format!("http://{}", ctx.addr), local.clone());
        }
    }

    fn start(&self, shutdown: Shutdown) {
        self.0.start_workers(shutdown);
    }

    async fn stopped(&self, limit: Duration) -> bool {
        self.0.workers_stopped(limit).await
    }
}
