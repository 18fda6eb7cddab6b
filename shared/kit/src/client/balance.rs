//! Calls spread over every replica of a peer (issue 13 item 6). A peer URL
//! whose host is a DNS name (a Kubernetes headless Service answers with one
//! A record per ready pod) becomes a balanced channel: a resolver task
//! looks the name up now and every [`resolve_interval`], and adds or
//! removes endpoints as pods come and go; tonic's balancer (tower's
//! power-of-two-choices) picks one per call. A URL with an IP address or
//! `localhost` keeps one plain endpoint.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

/// How often a DNS name is looked up again unless told otherwise
/// (`--peer-resolve-interval`, `ACCRUE_PEER_RESOLVE_INTERVAL`): a new pod
/// gets calls, and a removed one stops getting them, within this long.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

static RESOLVE_INTERVAL: OnceLock<Duration> = OnceLock::new();

/// Sets the process's re-resolution interval (once, before any client is
/// made; later calls change nothing and return false).
pub fn set_resolve_interval(interval: Duration) -> bool {
    RESOLVE_INTERVAL.set(interval.max(Duration::from_secs(1))).is_ok()
}

/// The process's re-resolution interval ([`DEFAULT_RESOLVE_INTERVAL`]
/// unless [`set_resolve_interval`] said otherwise).
pub fn resolve_interval() -> Duration {
    RESOLVE_INTERVAL.get().copied().unwrap_or(DEFAULT_RESOLVE_INTERVAL)
}

/// The addresses a name stands for right now.
pub type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// Looks a peer's name up; DNS ([`dns`]) in production, anything in tests.
pub type Resolver = Arc<dyn Fn() -> Lookup + Send + Sync>;

/// A [`Resolver`] of `host:port` through the system's resolver
/// (`tokio::net::lookup_host`).
pub fn dns(host: &str, port: u16) -> Resolver {
    let target = format!("{host}:{port}");
    Arc::new(move || {
        let target = target.clone();
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    })
}

/// Whether calls to `host` are balanced over what it resolves to: a DNS
/// name, not an IP address nor `localhost` (which resolves to 127.0.0.1 and
/// ::1, where a dev service listens on one only).
pub fn is_balanced_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_err() && !bare.eq_ignore_ascii_case("localhost")
}

/// One endpoint of the balanced channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    /// A resolved address.
    Addr(SocketAddr),
    /// The URL as given, resolved by the connection itself: used while the
    /// name resolves to nothing (DNS down at start), so that calls behave
    /// as an unbalanced channel's would instead of waiting for endpoints.
    Name,
}

/// What to insert and remove to go from `current` to `resolved`. An empty
/// `resolved` (a failed or empty lookup) keeps the addresses known, or
/// falls back to [`Key::Name`] when none are: a DNS hiccup never leaves a
/// channel without endpoints.
fn diff(current: &BTreeSet<Key>, resolved: &BTreeSet<SocketAddr>) -> (Vec<Key>, Vec<Key>) {
    if resolved.is_empty() {
        return if current.is_empty() { (vec![Key::Name], Vec::new()) } else { (Vec::new(), Vec::new()) };
    }
    let wanted: BTreeSet<Key> = resolved.iter().copied().map(Key::Addr).collect();
    let insert = wanted.difference(current).cloned().collect();
    let remove = current.difference(&wanted).cloned().collect();
    (insert, remove)
}

/// A channel balanced over what `resolver` returns, looked up now and every
/// `every`; `endpoint` makes the endpoint of an address (`None`: the URL as
/// given). The resolver task ends when the channel is dropped.
pub fn balanced(
    resolver: Resolver,
    every: Duration,
    endpoint: impl Fn(Option<SocketAddr>) -> Result<Endpoint, tonic::transport::Error> + Send + 'static,
) -> Channel {
    let (channel, changes) = Channel::balance_channel::<Key>(64);
    tokio::spawn(async move {
        let mut current = BTreeSet::new();
        loop {
            let resolved: BTreeSet<SocketAddr> = match resolver().await {
                Ok(addrs) => addrs.into_iter().collect(),
                Err(error) => {
                    tracing::warn!(%error, "resolving a peer failed; keeping its known endpoints");
                    BTreeSet::new()
                }
            };
            let (insert, remove) = diff(&current, &resolved);
            for key in insert {
                let made = endpoint(match &key {
                    Key::Addr(addr) => Some(*addr),
                    Key::Name => None,
                });
                match made {
                    Ok(made) => {
                        if changes.send(Change::Insert(key.clone(), made)).await.is_err() {
                            return;
                        }
                        current.insert(key);
                    }
                    Err(error) => tracing::warn!(%error, ?key, "cannot make a peer endpoint"),
                }
            }
            for key in remove {
                if changes.send(Change::Remove(key.clone())).await.is_err() {
                    return;
                }
                current.remove(&key);
            }
            tokio::select! {
                () = changes.closed() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
    channel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn set(addrs: &[&str]) -> BTreeSet<SocketAddr> {
        addrs.iter().map(|a| addr(a)).collect()
    }

    #[test]
    fn a_new_pod_is_inserted_and_a_gone_one_removed() {
        let current: BTreeSet<Key> = [Key::Addr(addr("10.0.0.1:50051")), Key::Addr(addr("10.0.0.2:50051"))].into();
        let (insert, remove) = diff(&current, &set(&["10.0.0.2:50051", "10.0.0.3:50051"]));
        assert_eq!(insert, vec![Key::Addr(addr("10.0.0.3:50051"))]);
        assert_eq!(remove, vec![Key::Addr(addr("10.0.0.1:50051"))]);
    }

    #[test]
    fn the_same_answer_changes_nothing() {
        let current: BTreeSet<Key> = [Key::Addr(addr("10.0.0.1:50051"))].into();
        assert_eq!(diff(&current, &set(&["10.0.0.1:50051"])), (vec![], vec![]));
    }

    #[test]
    fn an_empty_answer_keeps_the_known_endpoints_or_falls_back_to_the_name() {
        let current: BTreeSet<Key> = [Key::Addr(addr("10.0.0.1:50051"))].into();
        assert_eq!(diff(&current, &BTreeSet::new()), (vec![], vec![]));
        assert_eq!(diff(&BTreeSet::new(), &BTreeSet::new()), (vec![Key::Name], vec![]));
        let fallback: BTreeSet<Key> = [Key::Name].into();
        let (insert, remove) = diff(&fallback, &set(&["10.0.0.1:50051"]));
        assert_eq!(insert, vec![Key::Addr(addr("10.0.0.1:50051"))]);
        assert_eq!(remove, vec![Key::Name]);
    }

    #[test]
    fn names_are_balanced_and_addresses_are_not() {
        assert!(is_balanced_host("ledger.accrue.svc.cluster.local"));
        assert!(is_balanced_host("ledger-headless"));
        assert!(!is_balanced_host("127.0.0.1"));
        assert!(!is_balanced_host("[::1]"));
        assert!(!is_balanced_host("localhost"));
    }
}
