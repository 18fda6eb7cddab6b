//! tonic implementation of `CommissionService`.

use sqlx::PgPool;

/// The `CommissionService` implementation.
#[derive(Debug, Clone)]
pub struct CommissionApi {
    #[allow(dead_code)]
    pool: PgPool,
}

impl CommissionApi {
    /// A new API over the service's pool.
    pub fn new(pool: PgPool) -> Self {
        CommissionApi { pool }
    }
}
