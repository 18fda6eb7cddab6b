//! tonic implementation of `AttributionService`.

use sqlx::PgPool;

/// The `AttributionService` implementation.
#[derive(Debug, Clone)]
pub struct AttributionApi {
    #[allow(dead_code)]
    pool: PgPool,
}

impl AttributionApi {
    /// A new API over the service's pool.
    pub fn new(pool: PgPool) -> Self {
        AttributionApi { pool }
    }
}
