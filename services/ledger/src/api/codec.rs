//! Store rows and errors as the wire shows them.

// The API module's imports.
use super::*;

/// A store failure as a status: a deadlock or serialization failure between
/// concurrent writers (SQLSTATE 40P01 / 40001; the transaction was rolled
/// back, nothing written) is ABORTED CONCURRENT_UPDATE so the caller retries;
/// anything else maps as usual (UNAVAILABLE / INTERNAL).
pub(super) fn store_status(error: store::StoreError) -> Status {
    if is_concurrency_failure(&error.0) {
        return accrue_kit::error::aborted("CONCURRENT_UPDATE", "a concurrent ledger write conflicted; retry");
    }
    error.into()
}

pub(super) fn is_concurrency_failure(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

pub(super) fn item_failure(code: &str, reason: &str, message: impl Into<String>) -> types::ItemFailure {
    types::ItemFailure { code: code.to_string(), reason: reason.to_string(), message: message.into() }
}

/// A stored breakdown (`entries.breakdown`, text since migration 0014): the
/// empty object, in whatever spacing a value kept, is none; anything else is
/// the shared `Breakdown`'s JSON as the ledger wrote it. (Every field of
/// `Breakdown` has a default, so `{}` would parse as an empty breakdown: it
/// is told apart first.) Text that does not parse is a stored-data fault
/// (INTERNAL), never a caller's mistake.
fn stored_breakdown(text: &str) -> Result<Option<Breakdown>, Status> {
    if text.chars().filter(|c| !c.is_whitespace()).eq("{}".chars()) {
        return Ok(None);
    }
    serde_json::from_str::<Breakdown>(text).map(Some).map_err(internal)
}

pub(crate) fn entry_to_proto(row: store::EntryRow, history: Vec<store::EventRow>) -> Result<pb::Entry, Status> {
    let currency = Currency::from_code(&row.currency).map_err(internal)?;
    let kind = EarningKind::from_name(&row.kind).ok_or_else(|| internal(format!("stored kind {:?}", row.kind)))?;
    let entry_type =
        EntryType::parse(&row.entry_type).ok_or_else(|| internal(format!("stored entry_type {:?}", row.entry_type)))?;
    let breakdown = stored_breakdown(&row.breakdown)?.map(breakdown_to_proto);
    Ok(pb::Entry {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        partner_id: row.partner_id.to_string(),
        sale_id: row.sale_id,
        kind: kind_to_proto(kind) as i32,
        entry_type: entry_type.to_proto() as i32,
        amount: Some(amount_to_proto(currency, row.amount)),
        status: proto_from_stored(&row.status) as i32,
        level: row.level,
        source_partner_id: row.source_partner_id.map(|id| id.to_string()).unwrap_or_default(),
        occurred_at: Some(timestamp(row.occurred_at)),
        clears_at: Some(timestamp(row.clears_at)),
        breakdown,
        idempotency_key: row.idempotency_key,
        payout_id: row.payout_id.map(|id| id.to_string()).unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        reverses_entry_id: row.reverses_entry_id.map(|id| id.to_string()).unwrap_or_default(),
        refund_id: row.refund_id.map(|id| id.to_string()).unwrap_or_default(),
        history: history
            .into_iter()
            .map(|event| pb::StatusEvent {
                from_status: proto_from_stored(&event.from_status) as i32,
                to_status: proto_from_stored(&event.to_status) as i32,
                actor: event.actor,
                reason: event.reason,
                event_time: Some(timestamp(event.created_at)),
            })
            .collect(),
    })
}

/// Breakdown inputs a partner may see on a line earned from another
/// partner's sale: how the line was priced, never how large that sale was.
const DOWNLINE_INPUTS_SHOWN: &[&str] = &["plan", "ancestor_position", "basis", "rate", "flat_amount"];

/// `entry` as the caller of `scope` may see it. A partner token's override
/// and margin lines are earned from a downline partner's sale, so the sale's
/// id, the idempotency key that embeds it, and the breakdown's amounts
/// (basis amount, formula, rounding, note) are cleared: a parent reads its
/// own amount, level, source partner, rule and rate, never a sub-partner's
/// raw sale (seed 004 "Auth"; issue 10 item 3). Other callers see it whole.
pub(crate) fn shown_to(scope: &Identity, mut entry: pb::Entry) -> pb::Entry {
    let downline_sale = matches!(
        types::EarningKind::try_from(entry.kind),
        Ok(types::EarningKind::Override | types::EarningKind::Margin)
    );
    if scope.partner_scope().is_none() || !downline_sale {
        return entry;
    }
    entry.sale_id.clear();
    entry.idempotency_key.clear();
    if let Some(breakdown) = entry.breakdown.as_mut() {
        breakdown.formula.clear();
        breakdown.rounding.clear();
        breakdown.note.clear();
        breakdown.inputs.retain(|name, _| DOWNLINE_INPUTS_SHOWN.contains(&name.as_str()));
    }
    entry
}

pub(super) fn money(currency: Currency, amount: Decimal) -> Option<types::Money> {
    Some(amount_to_proto(currency, amount))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three shapes a stored breakdown takes, and a fault.
    #[test]
    fn a_stored_breakdown_is_none_some_or_internal() {
        assert_eq!(stored_breakdown("{}").ok(), Some(None));
        assert_eq!(stored_breakdown(" { \n } ").ok(), Some(None), "the empty object in any spacing");
        let mut breakdown = Breakdown { model: "PERCENTAGE".into(), rule: "owner".into(), ..Breakdown::default() };
        breakdown.input("rate", "0.12");
        let text = serde_json::to_string(&breakdown).unwrap_or_default();
        assert_eq!(stored_breakdown(&text).ok(), Some(Some(breakdown)));
        let fault = stored_breakdown("{\"model\": 7").err().map(|status| status.code());
        assert_eq!(fault, Some(tonic::Code::Internal));
    }
}
