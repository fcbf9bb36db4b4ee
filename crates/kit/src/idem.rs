//! Idempotent mutations for every service: the same `request_id` from the same agency to the
//! same method returns the first answer; with a different request it is refused.
//!
//! Use inside the write transaction of the change: [`Idem::replay`] first, then do the work,
//! then [`Idem::save`] the answer and commit.

use fengqiao_store::Tx;
use fengqiao_store::idempotency::{self, IdempotencyKey};

use crate::auth::Identity;
use crate::error::FieldViolation;

/// Why an idempotent call failed.
#[derive(Debug, thiserror::Error)]
pub enum IdemError {
    /// The `request_id` is missing or malformed.
    #[error("invalid request_id")]
    Invalid(FieldViolation),
    /// The store failed, or the id was used for a different request
    /// (`fengqiao_store::Error::IdempotencyConflict`).
    #[error(transparent)]
    Store(#[from] fengqiao_store::Error),
    /// A stored answer could not be decoded.
    #[error("stored response: {0}")]
    Corrupt(String),
}

/// The key and request hash of one mutating call.
#[derive(Debug)]
pub struct Idem {
    key: IdempotencyKey,
    hash: String,
}

impl Idem {
    /// Validates `request_id` and hashes the encoded request (maps are encoded in a fixed
    /// order, so equal requests hash equally).
    pub fn new<M: prost::Message>(
        id: &Identity,
        method: &str,
        request_id: &str,
        request: &M,
    ) -> Result<Self, IdemError> {
        crate::validate::request_id(request_id).map_err(IdemError::Invalid)?;
        Ok(Self {
            key: IdempotencyKey::new(id.agency.clone(), method, request_id),
            hash: idempotency::hash_request(&request.encode_to_vec()),
        })
    }

    /// The stored answer of an earlier call with this key, if any.
    pub async fn replay<R: prost::Message + Default>(
        &self,
        tx: &mut Tx,
    ) -> Result<Option<R>, IdemError> {
        decode_stored(idempotency::lookup(tx, &self.key, &self.hash).await?)
    }

    /// The stored answer of an earlier call, read without the key's lock on any connection:
    /// lets a retried call answer early. It can miss an answer committed right after it, so
    /// the change must still call [`Idem::replay`] in its write transaction.
    pub async fn peek<R: prost::Message + Default>(
        &self,
        conn: &mut fengqiao_store::sqlx::AnyConnection,
    ) -> Result<Option<R>, IdemError> {
        decode_stored(idempotency::lookup_unlocked(conn, &self.key, &self.hash).await?)
    }

    /// [`Idem::replay`] for a change that has already locked the row its request names (so
    /// every call with this key waits for that lock): no lock of the key's own, and the
    /// database clock (microseconds) read in the same statement. See
    /// [`idempotency::lookup_unlocked_with_now`].
    pub async fn replay_under_row_lock<R: prost::Message + Default>(
        &self,
        tx: &mut Tx,
    ) -> Result<(Option<R>, i64), IdemError> {
        let (stored, now) =
            idempotency::lookup_unlocked_with_now(tx, &self.key, &self.hash).await?;
        Ok((decode_stored(stored)?, now))
    }

    /// The key's parameters, in the order [`idempotency::join_sql`] numbers them: a
    /// statement that reads a row and the key's stored answer at once (an advisory read, like
    /// [`Idem::peek`]) binds these and decodes with [`Idem::replay_in_row`].
    pub fn join_binds(&self) -> [&str; 3] {
        [&self.key.caller, &self.key.method, &self.key.request_id]
    }

    /// The stored answer in a row read with [`idempotency::join_sql`] and
    /// [`idempotency::JOINED_COLUMNS`].
    pub fn replay_in_row<R: prost::Message + Default>(
        &self,
        row: &fengqiao_store::sqlx::any::AnyRow,
    ) -> Result<Option<R>, IdemError> {
        decode_stored(idempotency::stored_in_row(row, &self.hash)?)
    }

    /// Stores the answer in the same transaction as the change.
    pub async fn save<R: prost::Message>(
        &self,
        tx: &mut Tx,
        response: &R,
    ) -> Result<(), IdemError> {
        idempotency::record(tx, &self.key, &self.hash, &response.encode_to_vec()).await?;
        Ok(())
    }
}

/// Decodes a stored answer, if any.
fn decode_stored<R: prost::Message + Default>(
    bytes: Option<Vec<u8>>,
) -> Result<Option<R>, IdemError> {
    bytes
        .map(|b| R::decode(b.as_slice()).map_err(|e| IdemError::Corrupt(e.to_string())))
        .transpose()
}
