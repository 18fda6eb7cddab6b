//! Status changes: transitions an operator asks for and clearance on the
//! timer, with their status events and outbox events, written with the
//! balances in the same transaction.

// The store's imports and shared helpers.
use super::*;

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// Applied; how many entries changed.
    Done(u64),
    /// An entry id is not in the program (nothing changed).
    NotFound(EntryId),
    /// The state machine refused (nothing changed).
    Refused(TransitionError),
}

/// Moves `ids` (distinct) of `program_id` to `to`, all or nothing, in one
/// transaction: locks their status rows — and those of the clawback debits
/// that travel with them (issue 9 item 4) — in id order, reads reservations,
/// plans with [`plan_transition`], then updates the projection and appends
/// one event per changed entry in one statement, and the balances in one
/// more. A travelling debit in the same status as its line moves with it
/// (same event actor and reason); it is not counted in the result, which
/// counts the requested entries that changed.
pub async fn transition(
    pool: &PgPool,
    program_id: ProgramId,
    ids: &[EntryId],
    to: Status,
    actor: &str,
    reason: &str,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(EntryId, String, Option<EntryId>)> = sqlx::query_as(
        "SELECT s.entry_id, s.status, e.reverses_entry_id FROM entry_states s JOIN entries e ON e.id = s.entry_id \
         WHERE s.program_id = $1 \
           AND (s.entry_id = ANY($2::uuid[]) OR (e.reverses_entry_id = ANY($2::uuid[]) AND e.placement = 'TRAVELS')) \
         ORDER BY s.entry_id FOR UPDATE OF s",
    )
    .bind(program_id)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let locked: Vec<EntryId> = rows.iter().map(|(id, _, _)| *id).collect();
    // Read after locking (a fresh snapshot), so a reservation committed while
    // we waited is seen.
    let reserved: Vec<(EntryId,)> =
        sqlx::query_as("SELECT entry_id FROM payout_reservations WHERE entry_id = ANY($1::uuid[])")
            .bind(&locked)
            .fetch_all(&mut *tx)
            .await?;
    let reserved: HashSet<EntryId> = reserved.into_iter().map(|(id,)| id).collect();
    let requested: HashSet<EntryId> = ids.iter().copied().collect();
    let mut statuses: HashMap<EntryId, Status> = HashMap::with_capacity(rows.len());
    let mut followers: HashMap<EntryId, Vec<EntryId>> = HashMap::new();
    for (id, status, line) in &rows {
        let status = Status::parse(status).ok_or_else(|| sqlx::Error::Decode(format!("bad status {status}").into()))?;
        statuses.insert(*id, status);
        if let Some(line) = line
            && requested.contains(line)
            && !requested.contains(id)
        {
            followers.entry(*line).or_default().push(*id);
        }
    }
    let mut current = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(status) = statuses.get(id) else {
            return Ok(TransitionOutcome::NotFound(*id));
        };
        current.push(Current { id: *id, status: *status, reserved: reserved.contains(id) });
    }
    let moves = match plan_transition(&current, to) {
        Ok(moves) => moves,
        Err(error) => return Ok(TransitionOutcome::Refused(error)),
    };
    if moves.is_empty() {
        return Ok(TransitionOutcome::Done(0));
    }
    let requested_moves = moves.len() as u64;
    let mut all_moves = moves.clone();
    for (line, from) in &moves {
        for debit in followers.get(line).into_iter().flatten() {
            // A debit voided by VoidReversal or reversed with its line no
            // longer travels: only those still in the line's status follow.
            if statuses.get(debit) == Some(from) {
                all_moves.push((*debit, *from));
            }
        }
    }
    let move_ids: Vec<EntryId> = all_moves.iter().map(|(id, _)| *id).collect();
    let froms: Vec<&str> = all_moves.iter().map(|(_, from)| from.as_str()).collect();
    let tos: Vec<&str> = vec![to.as_str(); all_moves.len()];
    let was_reserved: Vec<bool> = move_ids.iter().map(|id| reserved.contains(id)).collect();
    write_moves(&mut tx, &move_ids, &froms, &tos, actor, reason).await?;
    apply_balance_changes(&mut tx, &move_ids, &froms, &was_reserved).await?;
    tx.commit().await?;
    Ok(TransitionOutcome::Done(requested_moves))
}

/// Moves entries' status rows (`ids[i]`: `froms[i]` → `tos[i]`, rows already
/// locked by the caller) and appends one status event each, in input order,
/// in one statement.
pub(crate) async fn write_moves(
    tx: &mut sqlx::PgConnection,
    ids: &[EntryId],
    froms: &[&str],
    tos: &[&str],
    actor: &str,
    reason: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"
        WITH m AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS m(id, from_status, to_status, n)),
        u AS (UPDATE entry_states s SET status = m.to_status, updated_at = now() FROM m WHERE s.entry_id = m.id)
        INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
        SELECT id, from_status, to_status, $4, $5 FROM m ORDER BY n
        "#,
    )
    .bind(ids)
    .bind(froms)
    .bind(tos)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    let changes: Vec<events::Change<'_>> = ids
        .iter()
        .zip(froms.iter().zip(tos))
        .map(|(id, (from, to))| events::Change { id: *id, from, to, reason })
        .collect();
    entry_events(tx, &accrue_kit::events::catalogue::ENTRY_STATUS_CHANGED, &changes, actor).await
}

/// Writes one event of `kind` per change (in order) to the outbox, in the
/// caller's transaction: each entry read once, after its changes.
pub(crate) async fn entry_events(
    tx: &mut sqlx::PgConnection,
    kind: &'static accrue_kit::events::EventType,
    changes: &[events::Change<'_>],
    actor: &str,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<EntryId> = changes.iter().map(|change| change.id).collect();
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id WHERE e.id = ANY($1::uuid[])"
    );
    let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(&ids).fetch_all(&mut *tx).await?;
    let rows: HashMap<EntryId, EntryRow> = rows.into_iter().map(|row| (row.id, row)).collect();
    let now = Utc::now();
    let written = changes
        .iter()
        .map(|change| {
            let row = rows.get(&change.id).ok_or(sqlx::Error::RowNotFound)?;
            // A posting's time is its entry's creation (the transaction's
            // now(), as PostEntries' events have it); a change's, now.
            let time = if kind == &accrue_kit::events::catalogue::ENTRY_POSTED { row.created_at } else { now };
            events::changed(kind, row, change, actor, time)
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    accrue_kit::events::insert(tx, &written).await
}

/// Moves a program's PENDING entries with `clears_at ≤ as_of` to CLEARED —
/// or straight on to APPROVED when `auto_approve` — in one statement, with one
/// event PENDING → CLEARED and, when approving, a second CLEARED → APPROVED
/// (reason: the program auto-approves), both by `actor` (the caller's token
/// subject); then the balances, in the same
/// transaction. A travelling clawback debit has its line's clears_at and
/// status, so it clears with it. Returns (cleared, approved).
pub async fn clear_matured(
    pool: &PgPool,
    program_id: ProgramId,
    as_of: DateTime<Utc>,
    auto_approve: bool,
    actor: &str,
) -> Result<(i64, i64), StoreError> {
    let target = if auto_approve { Status::Approved } else { Status::Cleared };
    let mut tx = pool.begin().await?;
    let (cleared_ids,): (Vec<EntryId>,) = sqlx::query_as(
        r#"
        WITH c AS (
            UPDATE entry_states SET status = $3, updated_at = now()
            WHERE program_id = $1 AND status = 'PENDING' AND clears_at <= $2
            RETURNING entry_id
        ), ev AS (
            INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
            SELECT c.entry_id, x.from_status, x.to_status, x.actor, x.reason
            FROM c CROSS JOIN (VALUES
                (1, 'PENDING', 'CLEARED', $5, 'clearance period ended'),
                (2, 'CLEARED', 'APPROVED', $5, 'program auto-approves cleared entries')
            ) AS x(n, from_status, to_status, actor, reason)
            WHERE x.n = 1 OR $4
            ORDER BY c.entry_id, x.n
        )
        SELECT COALESCE(array_agg(entry_id), '{}') FROM c
        "#,
    )
    .bind(program_id)
    .bind(as_of)
    .bind(target.as_str())
    .bind(auto_approve)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    // A PENDING entry is never reserved (reservations take APPROVED ones).
    let froms = vec![Status::Pending.as_str(); cleared_ids.len()];
    apply_balance_changes(&mut tx, &cleared_ids, &froms, &[]).await?;
    // One entry.status_changed per status event written above, in the same order.
    let mut changes = Vec::with_capacity(cleared_ids.len() * if auto_approve { 2 } else { 1 });
    let mut sorted = cleared_ids.clone();
    sorted.sort_unstable();
    for id in sorted {
        changes.push(events::Change { id, from: "PENDING", to: "CLEARED", reason: "clearance period ended" });
        if auto_approve {
            changes.push(events::Change {
                id,
                from: "CLEARED",
                to: "APPROVED",
                reason: "program auto-approves cleared entries",
            });
        }
    }
    entry_events(&mut tx, &accrue_kit::events::catalogue::ENTRY_STATUS_CHANGED, &changes, actor).await?;
    tx.commit().await?;
    let cleared = i64::try_from(cleared_ids.len()).unwrap_or(i64::MAX);
    Ok((cleared, if auto_approve { cleared } else { 0 }))
}
