//! The chaos itself: while the replay runs, SIGKILL a random service at a
//! random moment, start it again after a short random pause, and restart
//! Postgres in immediate mode; measure how long each recovery takes.
//!
//! Recovery is measured twice from the moment the process (or Postgres) is
//! back: until the service answers SERVING on grpc.health, and — when sagas
//! were unfinished — until the saga backlog moves again, i.e. until one more
//! saga has finished (reached done, failed or stuck) than at the restart.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::ChaosError;
use crate::pg::ThrowawayPostgres;
use crate::procs::{SERVICES, Services};

/// How long a recovery may take before the campaign calls it failed.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(90);
/// How often the saga backlog is read while waiting for it to move.
const BACKLOG_POLL: Duration = Duration::from_millis(100);
/// The name a Postgres restart goes by in the report.
pub const POSTGRES: &str = "postgres";

/// One kill (or Postgres restart) and its recovery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kill {
    /// 1-based, in order.
    pub index: usize,
    /// The service killed (`attribution`), or `postgres` for an immediate restart.
    pub target: String,
    /// Seconds since the chaos run's replay started.
    pub at_seconds: f64,
    /// What the replay was doing: `before the sales` (configuring, tracking
    /// leads, the first RecordSales), `sagas in flight (N)`, `monthly runs`
    /// (refunds, ClearMatured, payout runs) or `after the replay`.
    pub moment: String,
    /// Seconds the target was down (kill to restart; for Postgres, the
    /// immediate stop and the start including crash recovery).
    pub down_seconds: f64,
    /// Seconds from the restart until the target answered SERVING. For
    /// Postgres: until every service answered SERVING after the server
    /// accepted connections again; the services probe their database every
    /// 2 s, so this is a lower bound and `backlog_seconds` is the measure
    /// that work resumed.
    pub serving_seconds: f64,
    /// Seconds from the restart until one more saga finished, when sagas
    /// were unfinished at the restart; `None` when none were.
    pub backlog_seconds: Option<f64>,
}

/// The aimed events in order: attribution (whose restart leaves its sagas
/// to wait out their lease, which keeps sagas in flight for the next),
/// ledger, Postgres, then alternating attribution and ledger with the
/// remaining Postgres restarts spread among them.
fn aimed_order(kills: usize, postgres_restarts: usize) -> Vec<&'static str> {
    let mut order: Vec<&'static str> = (0..kills).map(|i| if i % 2 == 0 { "attribution" } else { "ledger" }).collect();
    for restart in 0..postgres_restarts {
        let at = (2 + restart * 3).min(order.len());
        order.insert(at, POSTGRES);
    }
    order
}

/// Saga counts of the chaos database: (unfinished, finished).
async fn saga_counts(pool: &PgPool) -> Option<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state IN ('running', 'unwinding')), \
                count(*) FILTER (WHERE state IN ('done', 'failed', 'stuck')) FROM attribution.sagas",
    )
    .fetch_one(pool)
    .await
    .ok()
}

/// What the chaos task needs.
pub struct Monkey<'a> {
    /// The service processes.
    pub services: &'a mut Services,
    /// The server, for immediate restarts.
    pub postgres: &'a mut ThrowawayPostgres,
    /// The chaos database as superuser (saga backlog).
    pub pool: PgPool,
    /// Random choices.
    pub rng: ChaCha8Rng,
    /// Mean time between two kills.
    pub mean_gap: Duration,
    /// Cancelled when the replay has finished.
    pub replay_done: CancellationToken,
    /// When the chaos run's replay started.
    pub started: Instant,
    /// Whether sagas have been seen in flight: the sales phase has begun.
    pub seen_sagas: bool,
}

impl Monkey<'_> {
    /// Runs `kills` kills and `postgres_restarts` immediate Postgres
    /// restarts; prints each as it recovers.
    ///
    /// Half the kills (rounded up) and every Postgres restart are aimed: they
    /// wait until sagas are in flight, then hit attribution (mid-saga), the
    /// ledger (mid-PostEntries) and the database under everything, in that
    /// order and then alternating (see [`aimed_order`]), a short random pause after the previous
    /// recovery: a short prefix settles its sagas in seconds, so what matters
    /// most goes first. The other kills hit any service at random moments, a
    /// random pause around `mean_gap` apart, whatever the replay is doing
    /// (configuring, tracking leads, recording, paying). Once the replay has
    /// finished, what is left runs at once, marked so. Aimed events left when
    /// the sales have settled hit the monthly runs at the random pace.
    pub async fn run(mut self, kills: usize, postgres_restarts: usize) -> Result<Vec<Kill>, ChaosError> {
        let mut aimed = aimed_order(kills.div_ceil(2), postgres_restarts).into_iter().peekable();
        let mut random_kills = kills - kills.div_ceil(2);
        let mut done = Vec::with_capacity(kills + postgres_restarts);
        let mut next_random = Instant::now() + self.random_gap();
        while aimed.peek().is_some() || random_kills > 0 {
            let index = done.len() + 1;
            let unfinished = saga_counts(&self.pool).await.map_or(0, |(unfinished, _)| unfinished);
            let finished_replay = self.replay_done.is_cancelled();
            self.seen_sagas |= unfinished > 0;
            // Once the sales have settled, what is left of the aimed events
            // hits the monthly runs (the ledger under ClearMatured and the
            // payout runs, attribution under the clawback sagas).
            let months = self.seen_sagas && Instant::now() >= next_random;
            let kill = if aimed.peek().is_some() && (unfinished > 0 || months || finished_replay) {
                if months {
                    next_random = Instant::now() + self.random_gap();
                }
                let pause = Duration::from_millis(self.rng.random_range(50..400));
                tokio::time::sleep(pause).await;
                match aimed.next() {
                    Some(POSTGRES) => self.restart_postgres(index).await?,
                    Some(target) => self.kill_service(index, target).await?,
                    None => continue,
                }
            } else if random_kills > 0 && (Instant::now() >= next_random || finished_replay) {
                random_kills -= 1;
                next_random = Instant::now() + self.random_gap();
                let target = SERVICES.choose(&mut self.rng).map_or("attribution", |(schema, _)| *schema);
                self.kill_service(index, target).await?
            } else {
                tokio::time::sleep(BACKLOG_POLL).await;
                continue;
            };
            eprintln!(
                "chaos: #{:<3} {:<12} at {:>6.1} s ({}): down {:.2} s, SERVING after {:.2} s, backlog moving after {}",
                kill.index,
                kill.target,
                kill.at_seconds,
                kill.moment,
                kill.down_seconds,
                kill.serving_seconds,
                kill.backlog_seconds.map_or_else(|| "- (no saga in flight)".to_string(), |s| format!("{s:.2} s"))
            );
            done.push(kill);
        }
        Ok(done)
    }

    fn random_gap(&mut self) -> Duration {
        // A uniform factor keeps the moments unpredictable around the mean.
        self.mean_gap.mul_f64(self.rng.random_range(0.5..1.5))
    }

    /// What the replay is doing now.
    async fn moment(&self) -> String {
        let unfinished = saga_counts(&self.pool).await.map_or(0, |(unfinished, _)| unfinished);
        if self.replay_done.is_cancelled() {
            "after the replay".to_string()
        } else if unfinished > 0 {
            format!("sagas in flight ({unfinished})")
        } else if self.seen_sagas {
            "monthly runs".to_string()
        } else {
            "before the sales".to_string()
        }
    }

    async fn kill_service(&mut self, index: usize, target: &'static str) -> Result<Kill, ChaosError> {
        let moment = self.moment().await;
        let at_seconds = self.started.elapsed().as_secs_f64();
        let killed = Instant::now();
        self.services.kill(target)?;
        // A service down for long makes its callers back off for long: most
        // restarts are quick, as a supervisor's would be.
        let pause = Duration::from_millis(self.rng.random_range(50..1000));
        tokio::time::sleep(pause).await;
        let before = saga_counts(&self.pool).await;
        self.services.restart(target)?;
        let restarted = Instant::now();
        let down_seconds = restarted.duration_since(killed).as_secs_f64();
        let serving = self.services.wait_serving(target, RECOVERY_LIMIT).await?;
        let backlog_seconds = self.backlog_moves(restarted, before).await?;
        Ok(Kill {
            index,
            target: target.to_string(),
            at_seconds,
            moment,
            down_seconds,
            serving_seconds: serving.as_secs_f64(),
            backlog_seconds,
        })
    }

    async fn restart_postgres(&mut self, index: usize) -> Result<Kill, ChaosError> {
        let moment = self.moment().await;
        let at_seconds = self.started.elapsed().as_secs_f64();
        let stopped = Instant::now();
        let before = saga_counts(&self.pool).await;
        self.postgres.restart_immediate().await.map_err(ChaosError::Postgres)?;
        let restarted = Instant::now();
        let down_seconds = restarted.duration_since(stopped).as_secs_f64();
        let mut serving = Duration::ZERO;
        for (schema, _) in SERVICES {
            self.services.wait_serving(schema, RECOVERY_LIMIT).await?;
            serving = restarted.elapsed();
        }
        let backlog_seconds = self.backlog_moves(restarted, before).await?;
        Ok(Kill {
            index,
            target: POSTGRES.to_string(),
            at_seconds,
            moment,
            down_seconds,
            serving_seconds: serving.as_secs_f64(),
            backlog_seconds,
        })
    }

    /// Seconds from `restarted` until more sagas have finished than in
    /// `before`, when some were unfinished then; `None` when none were (or
    /// the count could not be read).
    async fn backlog_moves(&self, restarted: Instant, before: Option<(i64, i64)>) -> Result<Option<f64>, ChaosError> {
        let Some((unfinished, finished)) = before else { return Ok(None) };
        if unfinished == 0 {
            return Ok(None);
        }
        loop {
            if let Some((now_unfinished, now_finished)) = saga_counts(&self.pool).await
                && (now_finished > finished || now_unfinished == 0)
            {
                return Ok(Some(restarted.elapsed().as_secs_f64()));
            }
            if restarted.elapsed() > RECOVERY_LIMIT {
                return Err(ChaosError::NoProgress(RECOVERY_LIMIT, unfinished));
            }
            tokio::time::sleep(BACKLOG_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aimed_events_start_with_attribution_then_the_ledger_then_postgres() {
        let (a, l) = ("attribution", "ledger");
        assert_eq!(aimed_order(5, 1), [a, l, POSTGRES, a, l, a]);
        assert_eq!(aimed_order(4, 2), [a, l, POSTGRES, a, l, POSTGRES]);
        assert_eq!(aimed_order(0, 2), [POSTGRES, POSTGRES]);
        assert_eq!(aimed_order(1, 1), [a, POSTGRES]);
    }
}
