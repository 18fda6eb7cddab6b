//! The event feed (issue 16 item 1; docs/events.md): a transactional outbox
//! per service, sequenced per program without gaps, served as
//! `accrue.events.v1.EventService` by every service over its own schema.
//!
//! - [`catalogue`]: every event type, with its source, subject and data
//!   message; a service writes only its own [`Source`]'s types.
//! - [`outbox`]: [`outbox::insert`] writes events inside the caller's
//!   transaction, many in one statement ([`NewEvent`]).
//! - [`sequencer`]: a background task per service that numbers committed
//!   events per program (1, 2, 3, … without gaps) and wakes watchers.
//! - [`feed`]: the gRPC service (ListEvents, WatchEvents).
//! - [`webhooks`]: signed webhooks over the same outbox
//!   (`accrue.events.v1.WebhookService` and its delivery worker).
//!
//! Why one feed per service and not one events service: the outbox must be
//! written in the transaction of the change, the service that makes the
//! change owns that schema, and no component reads another's schema. So
//! sequence numbers are per (program, source service), and the CloudEvents
//! `source` says which service an event came from.
//!
//! Every service's migrations create the same tables: `events`, written
//! once and never changed (`position bigserial`, `xid xid8` of the writing
//! transaction, `id uuid`, `program_id uuid`, `type`, `subject`,
//! `partner_id uuid` NULL, `time`, `data bytea`); `event_runs`
//! (`program_id`, first and last `sequence`, first and last `(xid,
//! position)`), one row per program and sequencer pass (see
//! [`sequencer`]); `event_sequences` (`program_id`, `last_sequence`);
//! `event_watermark` (the last event numbered); the function
//! `numbered_events(program, after, runs)` that the feed and the webhook
//! worker read numbers through; and the view `sequenced_events` (every
//! numbered event, for tests and operators).

pub mod catalogue;
pub mod feed;
mod lock;
pub mod materialize;
pub mod outbox;
pub mod sequencer;
pub mod webhooks;

use std::sync::Arc;

use tokio::sync::watch;

pub use catalogue::{EventType, Source};
pub use feed::{EventApi, Redact};
pub use materialize::Materialize;
pub use outbox::{NewEvent, insert};

use crate::service::Setup;
use accrue_proto::events::v1::event_service_server::EventServiceServer;
use accrue_proto::events::v1::webhook_service_server::WebhookServiceServer;
use tonic::service::Routes;

/// What [`host`] starts: the feed and the webhooks of one service, to add to
/// its routes with [`Hosted::add_to`].
#[derive(Debug)]
pub struct Hosted {
    /// `accrue.events.v1.EventService`.
    pub events: EventServiceServer<EventApi>,
    /// `accrue.events.v1.WebhookService`.
    pub webhooks: WebhookServiceServer<webhooks::WebhookApi>,
}

impl Hosted {
    /// `routes` with both services added.
    pub fn add_to(self, routes: Routes) -> Routes {
        routes.add_service(self.events).add_service(self.webhooks)
    }
}

/// How a service's events are shown beyond what the outbox stores.
#[derive(Default, Clone)]
pub struct Hooks {
    /// Shows an event to a partner token (see [`Redact`]); None when the
    /// service's events need no redaction beyond the partner filter.
    pub redact: Option<Redact>,
    /// Builds the data of the events it writes by reference (see
    /// [`materialize`]); None when it writes none.
    pub materialize: Option<Materialize>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("redact", &self.redact.is_some())
            .field("materialize", &self.materialize.is_some())
            .finish()
    }
}

/// Starts the feed of `source` for a service: its sequencer, its
/// notification listener and its webhook worker (background tasks that stop
/// with the service, the worker configured by `setup.webhooks`), and
/// returns the `EventService` and `WebhookService` servers to add to the
/// service's routes.
pub fn host(setup: &mut Setup, source: &'static Source, hooks: Hooks) -> Hosted {
    let (sender, receiver) = watch::channel(0u64);
    let wake = Arc::new(sender);
    let (pool, sequencing) = (setup.pool.clone(), wake.clone());
    setup.spawn(move |shutdown| sequencer::run(pool, source, sequencing, shutdown));
    let (pool, listening) = (setup.pool.clone(), wake);
    setup.spawn(move |shutdown| sequencer::listen(pool, source, listening, shutdown));
    let nudge = webhooks::Nudge::default();
    let (pool, options, woken, nudged) = (setup.pool.clone(), setup.webhooks.clone(), receiver.clone(), nudge.clone());
    let materialize = hooks.materialize.clone();
    setup.spawn(move |shutdown| webhooks::worker::run(pool, source, options, materialize, woken, nudged, shutdown));
    let api = EventApi::new(setup.pool.clone(), source, receiver, setup.shutdown_token(), hooks);
    let webhooks = webhooks::WebhookApi::new(setup.pool.clone(), source, nudge);
    Hosted {
        events: crate::server::limited(EventServiceServer::new(api)),
        webhooks: crate::server::limited(WebhookServiceServer::new(webhooks)),
    }
}
