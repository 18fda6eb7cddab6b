//! ExportPayouts (issue 12 item 5): the payouts ListPayouts would list, as
//! RFC 4180 CSV written by the `csv` crate, streamed in chunks of
//! [`EXPORT_BATCH`] rows. One task pages through the payouts by keyset in a
//! REPEATABLE READ, READ ONLY transaction (one consistent snapshot for the
//! whole file) and hands each chunk to a channel of [`EXPORT_BUFFER`]
//! chunks, so memory stays constant however many payouts there are: the
//! task waits while the caller reads slowly, and stops when it goes away.

use std::pin::Pin;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use super::*;

/// Rows per chunk (and per database page).
pub const EXPORT_BATCH: i64 = 500;
/// Chunks buffered ahead of the caller.
const EXPORT_BUFFER: usize = 2;

/// The CSV header, in column order.
pub const EXPORT_COLUMNS: [&str; 16] = [
    "payout_id",
    "partner_id",
    "payout_run_id",
    "period",
    "currency_code",
    "amount",
    "status",
    "entry_count",
    "approved_by",
    "approve_time",
    "payment_reference",
    "payment_method",
    "paid_time",
    "status_reason",
    "create_time",
    "update_time",
];

/// The response stream of ExportPayouts.
pub type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportPayoutsResponse, Status>> + Send + 'static>>;

fn time(value: Option<DateTime<Utc>>) -> String {
    value.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)).unwrap_or_default()
}

/// One payout as a CSV record, in [`EXPORT_COLUMNS`] order. The amount is
/// written in the currency's minor unit ("42.00").
fn record(row: &PayoutRow) -> Result<[String; 16], Status> {
    let currency = currency_of(&row.currency)?;
    Ok([
        row.id.to_string(),
        row.partner_id.to_string(),
        row.payout_run_id.map(|id| id.to_string()).unwrap_or_default(),
        row.period.clone(),
        row.currency.clone(),
        currency.rescale(row.amount).to_string(),
        row.status.clone(),
        row.entry_count.to_string(),
        row.approved_by.clone().unwrap_or_default(),
        time(row.approved_at),
        row.payment_reference.clone().unwrap_or_default(),
        row.payment_method.clone().unwrap_or_default(),
        time(row.paid_at),
        row.status_reason.clone().unwrap_or_default(),
        time(Some(row.created_at)),
        time(Some(row.updated_at)),
    ])
}

/// Encodes `rows` (after the header when `header`) as one CSV chunk.
pub(super) fn chunk(rows: &[PayoutRow], header: bool) -> Result<Vec<u8>, Status> {
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    if header {
        writer.write_record(EXPORT_COLUMNS).map_err(internal)?;
    }
    for row in rows {
        writer.write_record(record(row)?).map_err(internal)?;
    }
    writer.into_inner().map_err(|error| internal(error.to_string()))
}

/// Runs the export into `sender` until the last page or until the caller
/// goes away.
async fn run_export(
    pool: PgPool,
    filter: Filters,
    sender: tokio::sync::mpsc::Sender<Result<pb::ExportPayoutsResponse, Status>>,
) -> Result<(), Status> {
    let mut tx = pool.begin().await.map_err(store::StoreError::from)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(store::StoreError::from)?;
    let store_filter = filter.as_store();
    let mut after = None;
    let mut header = true;
    loop {
        let rows = store::list_payouts(&mut *tx, &store_filter, after, EXPORT_BATCH).await?;
        let last = rows.len() < EXPORT_BATCH as usize;
        // The header goes out even when there is no payout.
        if !rows.is_empty() || header {
            let message = pb::ExportPayoutsResponse { csv_chunk: chunk(&rows, header)?, row_count: rows.len() as i64 };
            if sender.send(Ok(message)).await.is_err() {
                return Ok(()); // The caller went away.
            }
            header = false;
        }
        match rows.last() {
            Some(row) if !last => after = Some((row.created_at, row.id)),
            _ => break,
        }
    }
    tx.commit().await.map_err(store::StoreError::from)?;
    Ok(())
}

/// Starts the export task and returns its stream.
pub(super) fn export(pool: PgPool, filter: Filters) -> ExportStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
    tokio::spawn(async move {
        let errors = sender.clone();
        if let Err(status) = run_export(pool, filter, sender).await {
            let _ = errors.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}
