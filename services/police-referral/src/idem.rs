//! Idempotent mutations: the same `request_id` from the same agency to the same method returns
//! the first answer; with a different request it is refused.

use fengqiao_kit::Identity;
use fengqiao_store::Tx;
use fengqiao_store::idempotency::{self, IdempotencyKey};

use crate::error::{Error, Result};

/// The key and request hash of one mutating call.
pub struct Idem {
    key: IdempotencyKey,
    hash: String,
}

impl Idem {
    /// Validates `request_id` and hashes the encoded request.
    pub fn new<M: prost::Message>(
        id: &Identity,
        method: &str,
        request_id: &str,
        request: &M,
    ) -> Result<Self> {
        fengqiao_kit::validate::request_id(request_id)?;
        Ok(Self {
            key: IdempotencyKey::new(id.agency.clone(), method, request_id),
            hash: idempotency::hash_request(&request.encode_to_vec()),
        })
    }

    /// The stored answer of an earlier call with this key, if any.
    pub async fn replay<R: prost::Message + Default>(&self, tx: &mut Tx) -> Result<Option<R>> {
        match idempotency::lookup(tx, &self.key, &self.hash).await? {
            Some(bytes) => R::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("idempotent response: {e}"))),
            None => Ok(None),
        }
    }

    /// Stores the answer in the same transaction as the change.
    pub async fn save<R: prost::Message>(&self, tx: &mut Tx, response: &R) -> Result<()> {
        idempotency::record(tx, &self.key, &self.hash, &response.encode_to_vec()).await?;
        Ok(())
    }
}
