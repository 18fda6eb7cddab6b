//! PostEntries: a batch of sale postings, each all-or-nothing and idempotent
//! on its key and request hash, with its entries, their first status, their
//! outbox events and the balances, in one transaction.

// The store's imports and shared helpers.
use super::*;

/// What became of one posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostingOutcome {
    /// Newly written; entry ids in line order.
    Posted(Vec<EntryId>),
    /// The key was already posted with the same body: the stored ids.
    Replayed(Vec<EntryId>),
    /// The key was already posted with a different body (nothing written).
    KeyReused,
}

/// Posts `postings` (distinct keys) for `program_id` in ONE transaction:
/// keys already stored are skipped up front; the rest go through
/// `INSERT … ON CONFLICT DO NOTHING` on the postings (with `actor`, the
/// caller's token subject), then, for the keys actually inserted, their
/// entries and status projections — all in one statement —, their outbox
/// events, and last the balances. No creation event
/// is stored per line: readers derive it from the posting's actor
/// (`entry_history`, migration 0010). Keys that
/// already existed are read back and compared by request hash. A concurrent
/// poster of the same key blocks on the unique index until the first commits,
/// then reads its row (no unique-violation error escapes). Results are in input
/// order.
pub async fn post(
    pool: &PgPool,
    program_id: ProgramId,
    postings: &[&Posting],
    actor: &str,
) -> Result<Vec<PostingOutcome>, StoreError> {
    if postings.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    // Every posting is sent; a key already posted inserts nothing (ON
    // CONFLICT below) and is read back afterwards. A pre-read of the posted
    // keys cost a statement per batch for the rare replay, and its plan,
    // made on a young table, scanned the program's every posting (issue 15).
    let all_keys: Vec<&str> = postings.iter().map(|p| p.key.as_str()).collect();
    let line_count: usize = postings.iter().map(|p| p.lines.len()).sum();
    let mut keys = Vec::with_capacity(postings.len());
    let mut sale_ids = Vec::with_capacity(postings.len());
    let mut hashes = Vec::with_capacity(postings.len());
    let mut lows = Vec::with_capacity(postings.len());
    let mut highs = Vec::with_capacity(postings.len());
    let mut ids: Vec<EntryId> = Vec::with_capacity(line_count);
    let mut partner_ids = Vec::with_capacity(line_count);
    let mut line_sales = Vec::with_capacity(line_count);
    let mut kinds = Vec::with_capacity(line_count);
    let mut entry_types = Vec::with_capacity(line_count);
    let mut currencies = Vec::with_capacity(line_count);
    let mut amounts = Vec::with_capacity(line_count);
    let mut levels = Vec::with_capacity(line_count);
    let mut sources = Vec::with_capacity(line_count);
    let mut occurred = Vec::with_capacity(line_count);
    let mut clears = Vec::with_capacity(line_count);
    let mut breakdowns = Vec::with_capacity(line_count);
    let mut line_keys = Vec::with_capacity(line_count);
    let mut line_indexes = Vec::with_capacity(line_count);
    let mut posting_ids: HashMap<&str, Vec<EntryId>> = HashMap::with_capacity(postings.len());
    for posting in postings {
        keys.push(posting.key.as_str());
        sale_ids.push(posting.sale_id.as_str());
        hashes.push(posting.hash.as_slice());
        // 1-based inclusive slice bounds into the flat id array.
        lows.push(i32::try_from(ids.len() + 1).unwrap_or(i32::MAX));
        let mut these = Vec::with_capacity(posting.lines.len());
        for (index, posted) in posting.lines.iter().enumerate() {
            let line = &posted.line;
            let id = EntryId::new_v7();
            these.push(id);
            ids.push(id);
            partner_ids.push(line.partner_id);
            line_sales.push(posting.sale_id.as_str());
            kinds.push(line.kind.as_str());
            entry_types.push(posted.entry_type().as_str());
            currencies.push(posted.currency().code());
            amounts.push(posted.amount());
            // Validated to 0..=MAX_LEVEL, so it fits the int4 column.
            levels.push(i32::try_from(line.level).unwrap_or(i32::MAX));
            sources.push(line.source_partner_id);
            occurred.push(posted.occurred_at);
            clears.push(line.clears_at);
            // JSON text, stored as text (migrations 0006 and 0014: nothing
            // queries into it, and Postgres parsing it cost settlement time).
            breakdowns.push(match &line.breakdown {
                Some(breakdown) => serde_json::to_string(breakdown).unwrap_or_else(|_| "{}".to_string()),
                None => "{}".to_string(),
            });
            line_keys.push(posting.key.as_str());
            line_indexes.push(i32::try_from(index).unwrap_or(i32::MAX));
        }
        highs.push(i32::try_from(ids.len()).unwrap_or(i32::MAX));
        posting_ids.insert(posting.key.as_str(), these);
    }

    // With each inserted key, the transaction's now(): the entries'
    // created_at, for their events.
    let inserted: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        r#"
        WITH p AS (
            INSERT INTO postings (program_id, idempotency_key, sale_id, request_hash, entry_ids, actor)
            SELECT $1, k.key, k.sale_id, k.hash, ($6::uuid[])[k.lo:k.hi], $21
            FROM unnest($2::text[], $3::text[], $4::bytea[], $5::int4[], $7::int4[]) AS k(key, sale_id, hash, lo, hi)
            ON CONFLICT (program_id, idempotency_key) DO NOTHING
            RETURNING idempotency_key
        ), e AS (
            INSERT INTO entries (id, program_id, partner_id, sale_id, kind, entry_type, currency, amount, level,
                                 source_partner_id, occurred_at, clears_at, breakdown, idempotency_key, line_index)
            SELECT l.id, $1, l.partner_id, l.sale_id, l.kind, l.entry_type, l.currency, l.amount, l.level,
                   l.source_partner_id, l.occurred_at, l.clears_at, l.breakdown, l.key, l.line_index
            FROM unnest($6::uuid[], $8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[], $13::numeric[],
                        $14::int4[], $15::uuid[], $16::timestamptz[], $17::timestamptz[], $18::text[], $19::text[],
                        $20::int4[])
                 AS l(id, partner_id, sale_id, kind, entry_type, currency, amount, level, source_partner_id,
                      occurred_at, clears_at, breakdown, key, line_index)
            WHERE l.key IN (SELECT idempotency_key FROM p)
            RETURNING id, partner_id, currency, clears_at
        ), st AS (
            INSERT INTO entry_states (entry_id, program_id, partner_id, currency, status, clears_at)
            SELECT id, $1, partner_id, currency, 'PENDING', clears_at FROM e
        )
        SELECT idempotency_key, now() FROM p
        "#,
    )
    .bind(program_id)
    .bind(&keys)
    .bind(&sale_ids)
    .bind(&hashes)
    .bind(&lows)
    .bind(&ids)
    .bind(&highs)
    .bind(&partner_ids)
    .bind(&line_sales)
    .bind(&kinds)
    .bind(&entry_types)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&levels)
    .bind(&sources)
    .bind(&occurred)
    .bind(&clears)
    .bind(&breakdowns)
    .bind(&line_keys)
    .bind(&line_indexes)
    .bind(actor)
    .fetch_all(&mut *tx)
    .await?;
    let created_at = inserted.first().map(|(_, time)| *time);
    let inserted: HashSet<String> = inserted.into_iter().map(|(key, _)| key).collect();
    if let Some(created_at) = created_at {
        // The outbox: one entry.posted per new entry, by reference (see
        // events::posted), in one more statement.
        let mut posted = Vec::with_capacity(line_count);
        for posting in postings.iter().filter(|p| inserted.contains(&p.key)) {
            let ids = posting_ids.get(posting.key.as_str()).map(Vec::as_slice).unwrap_or_default();
            for line in ids.iter().copied().zip(&posting.lines) {
                posted.push(events::posted(program_id, line, created_at));
            }
        }
        accrue_kit::events::insert(&mut tx, &posted).await?;
    }

    let existing_keys: Vec<&str> = all_keys.iter().copied().filter(|key| !inserted.contains(*key)).collect();
    let mut existing: HashMap<String, (Vec<u8>, Vec<EntryId>)> = HashMap::new();
    if !existing_keys.is_empty() {
        // One key probe per key (a join on the keys rather than `= ANY`,
        // whose generic plan filtered the program's every posting).
        let rows: Vec<(String, Vec<u8>, Vec<EntryId>)> = sqlx::query_as(
            "SELECT p.idempotency_key, p.request_hash, p.entry_ids \
             FROM unnest($2::text[]) AS k(key) \
             JOIN postings p ON p.program_id = $1 AND p.idempotency_key = k.key",
        )
        .bind(program_id)
        .bind(&existing_keys)
        .fetch_all(&mut *tx)
        .await?;
        existing = rows.into_iter().map(|(key, hash, ids)| (key, (hash, ids))).collect();
    }
    // The balance projection, in the same transaction and last before the
    // commit: one statement for the whole batch, from the lines of the
    // postings that went in. Last, because the balance rows of partners near
    // the top of a tree are in nearly every batch, and a concurrent posting
    // waits on each row this one updated until it commits: written before
    // the outbox, its locks were held over the events' insert as well
    // (issue 15).
    if !inserted.is_empty() {
        let lines = postings.iter().filter(|p| inserted.contains(&p.key)).flat_map(|p| p.lines.iter());
        apply_posted_balances(&mut tx, program_id, lines).await?;
    }
    tx.commit().await?;
    crate::counters::entries_posted(
        postings
            .iter()
            .filter(|posting| inserted.contains(&posting.key))
            .flat_map(|posting| posting.lines.iter())
            .map(|posted| (posted.line.kind.as_str(), posted.entry_type().as_str())),
    );

    let mut outcomes = Vec::with_capacity(postings.len());
    for posting in postings {
        if inserted.contains(&posting.key) {
            outcomes.push(PostingOutcome::Posted(posting_ids.remove(posting.key.as_str()).unwrap_or_default()));
        } else {
            match existing.remove(&posting.key) {
                Some((hash, stored)) if hash == posting.hash => outcomes.push(PostingOutcome::Replayed(stored)),
                Some(_) => outcomes.push(PostingOutcome::KeyReused),
                // Neither inserted nor found: cannot happen under READ COMMITTED
                // (DO NOTHING only skips a committed or in-flight-then-committed row).
                None => return Err(sqlx::Error::RowNotFound.into()),
            }
        }
    }
    Ok(outcomes)
}
