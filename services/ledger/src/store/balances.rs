//! The balance projection: kept in the transaction of every write that
//! moves money between statuses, and read by GetBalances.

// The store's imports and shared helpers.
use super::*;

/// Applies the change of `ids` to the balance projection (the migration's
/// `apply_balance_changes`): `old_status[i]` / `old_reserved[i]` are what
/// entry i was before this transaction (shorter arrays are padded with NULL:
/// "created now" / "not reserved"). Call once per transaction, after its writes.
pub(crate) async fn apply_balance_changes<S: AsRef<str>>(
    tx: &mut sqlx::PgConnection,
    ids: &[EntryId],
    old_status: &[S],
    old_reserved: &[bool],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let old_status: Vec<&str> = old_status.iter().map(AsRef::as_ref).collect();
    sqlx::query("SELECT apply_balance_changes($1::uuid[], $2::text[], $3::boolean[])")
        .bind(ids)
        .bind(&old_status)
        .bind(old_reserved)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Applies to the balance projection the lines of postings this transaction
/// just inserted (the migration's `apply_posted_balances`: the change
/// `apply_balance_changes` would compute for new PENDING entries, without
/// reading them back). Call once per transaction, after its writes.
pub(crate) async fn apply_posted_balances<'a>(
    tx: &mut sqlx::PgConnection,
    program_id: ProgramId,
    lines: impl Iterator<Item = &'a PostedLine>,
) -> Result<(), StoreError> {
    let (mut partners, mut currencies, mut types, mut amounts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for posted in lines {
        partners.push(posted.line.partner_id);
        currencies.push(posted.currency().code());
        types.push(posted.entry_type().as_str());
        amounts.push(posted.amount());
    }
    if partners.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT apply_posted_balances($1, $2::uuid[], $3::text[], $4::text[], $5::numeric[])")
        .bind(program_id)
        .bind(&partners)
        .bind(&currencies)
        .bind(&types)
        .bind(&amounts)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One row of the balance projection.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceRow {
    /// Partner.
    pub partner_id: PartnerId,
    /// ISO 4217 code.
    pub currency: String,
    /// PENDING.
    pub pending: Decimal,
    /// CLEARED.
    pub cleared: Decimal,
    /// APPROVED, not reserved.
    pub approved: Decimal,
    /// APPROVED, reserved.
    pub reserved: Decimal,
    /// PAID.
    pub paid: Decimal,
    /// DISPUTED.
    pub disputed: Decimal,
    /// Σ non-VOIDED debits.
    pub clawed_back: Decimal,
}

/// The balance projection of a program, optionally for some partners and one
/// currency, ordered by partner id then currency. Reads nothing else.
pub async fn balances(
    pool: &PgPool,
    program_id: ProgramId,
    partner_ids: &[PartnerId],
    currency: Option<&str>,
) -> Result<Vec<BalanceRow>, StoreError> {
    Ok(sqlx::query_as::<_, BalanceRow>(
        "SELECT partner_id, currency, pending, cleared, approved, reserved, paid, disputed, clawed_back \
         FROM balances WHERE program_id = $1 \
           AND (cardinality($2::uuid[]) = 0 OR partner_id = ANY($2::uuid[])) \
           AND ($3::text IS NULL OR currency = $3) \
         ORDER BY partner_id, currency",
    )
    .bind(program_id)
    .bind(partner_ids)
    .bind(currency)
    .fetch_all(pool)
    .await?)
}
