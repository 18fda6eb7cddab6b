//! tonic implementation of `LedgerService`.

use sqlx::PgPool;

/// The `LedgerService` implementation.
#[derive(Debug, Clone)]
pub struct LedgerApi {
    #[allow(dead_code)]
    pool: PgPool,
}

impl LedgerApi {
    /// A new API over the service's pool.
    pub fn new(pool: PgPool) -> Self {
        LedgerApi { pool }
    }
}
