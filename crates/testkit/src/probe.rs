//! A test-only agency service, started through the same [`ServiceModule`] trait as the real
//! ones, to show that a new service needs only its own crate (here: this file), one registry
//! line (here: [`TestSuite::start_with_modules`](crate::TestSuite::start_with_modules)'s
//! `extra`) and one kustomize component — no `match` anywhere else.
//!
//! It keeps one table (its own migration) and receives the envelopes of route
//! [`ROUTE`] as the receiver, recording each message once.

use std::sync::Arc;

use fengqiao_kit::inbox::{InboxHandler, Receives};
use fengqiao_kit::module::{AgencyModule, BuildCtx, Instance, ModuleError, Passive};
use fengqiao_kit::records::Schema;
use fengqiao_proto::inbox::{DeliverResponse, Envelope, RecipientSide};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Migration, Store};

/// The probe's name (flags, file names, store URLs).
pub const NAME: &str = "probe";

/// The route whose envelopes the probe receives (as the receiver).
pub const ROUTE: &str = "probe-route";

/// The probe's registry entry.
pub static MODULE: AgencyModule = AgencyModule::new(NAME, "/fengqiao.probe.v1.", SCHEMA, build);

/// The probe's schema (after the shared migrations, as every agency service's).
const SCHEMA: Schema = Schema {
    service: "probe",
    migrations: &[Migration::portable(
        1,
        "probe_envelopes",
        "CREATE TABLE probe_envelopes (message_id TEXT PRIMARY KEY, route TEXT NOT NULL);",
    )],
};

fn build(ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
    ctx.add_inbox(Arc::new(Inbox {
        store: ctx.store.clone(),
    }))?;
    Ok(Box::new(Passive))
}

struct Inbox {
    store: Store,
}

#[tonic::async_trait]
impl InboxHandler for Inbox {
    fn receives(&self) -> &[Receives] {
        &[(ROUTE, RecipientSide::Receiver)]
    }

    async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, tonic::Status> {
        let internal = |e: fengqiao_store::Error| tonic::Status::internal(e.to_string());
        let mut tx = self.store.write().await.map_err(internal)?;
        let done = sqlx::query(
            "INSERT INTO probe_envelopes (message_id, route) VALUES ($1, $2) \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(&envelope.message_id)
        .bind(&envelope.route)
        .execute(&mut *tx)
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
        tx.commit()
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(DeliverResponse {
            duplicate: done.rows_affected() == 0,
        })
    }
}

/// The message ids the probe recorded in `store`, in order.
pub async fn recorded(store: &Store) -> Vec<String> {
    let rows = sqlx::query("SELECT message_id FROM probe_envelopes ORDER BY message_id")
        .fetch_all(store.pool())
        .await
        .unwrap_or_else(|e| panic!("probe table: {e}"));
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
        .collect()
}
