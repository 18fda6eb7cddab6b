//! The saga states and step-log events, stored as text exactly as steno names
//! them (`running`, `undo_finished`, …) so that SQL such as
//! `WHERE state IN ('running', 'unwinding')` and existing rows keep working.

/// A saga's state (`sagas.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SagaState {
    /// Running its actions (runnable).
    Running,
    /// Running undo actions after a permanent failure (runnable).
    Unwinding,
    /// Every action succeeded.
    Done,
    /// Every started step was undone.
    Failed,
    /// An operator must look (see the failure reason): an undo failed
    /// permanently, or a step kept failing with internal errors (which
    /// [`resume_stuck`](crate::resume_stuck) can resume once the cause is
    /// fixed), or the log could not be read.
    Stuck,
}

impl SagaState {
    /// Every state.
    pub const ALL: [SagaState; 5] =
        [SagaState::Running, SagaState::Unwinding, SagaState::Done, SagaState::Failed, SagaState::Stuck];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Unwinding => "unwinding",
            SagaState::Done => "done",
            SagaState::Failed => "failed",
            SagaState::Stuck => "stuck",
        }
    }
}

impl std::fmt::Display for SagaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the append-only step log (`saga_step_events.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum StepEvent {
    /// Written before the action's side effect.
    Started,
    /// The action took effect; the detail is its output.
    Succeeded,
    /// The action or undo failed (detail: phase, error, transient).
    Failed,
    /// Written before the undo's side effect.
    UndoStarted,
    /// The undo took effect; the detail is its output.
    UndoFinished,
}

impl StepEvent {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepEvent::Started => "started",
            StepEvent::Succeeded => "succeeded",
            StepEvent::Failed => "failed",
            StepEvent::UndoStarted => "undo_started",
            StepEvent::UndoFinished => "undo_finished",
        }
    }
}

impl std::fmt::Display for StepEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_the_ones_sql_spells_out() {
        // The claim and the `sagas_runnable` index name the runnable states literally.
        assert_eq!([SagaState::Running.as_str(), SagaState::Unwinding.as_str()], ["running", "unwinding"]);
        let events = [
            StepEvent::Started,
            StepEvent::Succeeded,
            StepEvent::Failed,
            StepEvent::UndoStarted,
            StepEvent::UndoFinished,
        ];
        let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
        assert_eq!(names, ["started", "succeeded", "failed", "undo_started", "undo_finished"]);
    }
}
