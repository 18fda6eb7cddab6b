//! tonic implementation of `HierarchyService`.

use sqlx::PgPool;

/// The `HierarchyService` implementation.
#[derive(Debug, Clone)]
pub struct HierarchyApi {
    #[allow(dead_code)]
    pool: PgPool,
}

impl HierarchyApi {
    /// A new API over the service's pool.
    pub fn new(pool: PgPool) -> Self {
        HierarchyApi { pool }
    }
}
