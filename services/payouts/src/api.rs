//! tonic implementation of `PayoutsService`.

use sqlx::PgPool;

/// The `PayoutsService` implementation.
#[derive(Debug, Clone)]
pub struct PayoutsApi {
    #[allow(dead_code)]
    pool: PgPool,
}

impl PayoutsApi {
    /// A new API over the service's pool.
    pub fn new(pool: PgPool) -> Self {
        PayoutsApi { pool }
    }
}
