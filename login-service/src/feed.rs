//! The feed's watcher (issue #15 §2b): one background task per process reads the newest
//! revocation id once per [`POLL_INTERVAL`] while at least one long poll waits, and publishes it
//! through a [`tokio::sync::watch`] channel. Waiting polls of `GET /revocations` subscribe and
//! wake only when the newest id moves, then run one page query each; so the database cost of an
//! idle feed is one `MAX(id)` per interval per login-service process, whatever the number of
//! followers (before: two queries per interval per waiting poll).
//!
//! Why "only while someone waits": a replica nobody follows (a second login-service behind a
//! load balancer that all ext-authz happen to reach elsewhere, a CLI-only deployment) then costs
//! the database nothing; the price is one query of latency for the first poll after an idle
//! stretch, whose value may be stale until the watcher's read (a stale value never produces a
//! wrong answer: see [`crate::routes::revocation::feed`]).
//!
//! The watcher reads the database, not only this process's writes: rows written by another
//! replica, the admin CLI or a restored backup are seen within one interval. A local logout
//! also [`FeedWatch::nudge`]s it for lower latency; nudges coalesce (any number of them during
//! one read cause one more read), so no client can make it read more often than once per
//! interval plus once per write it made. Waiting polls are bounded ([`FeedWatch::try_wait`]), in
//! all and per client address.
//!
//! Polls woken by the same new row share its page query ([`FeedWatch::shared_page`], review
//! F2): followers of one login-service wait at the same cursor, so one new row costs one page
//! query per process, not one per follower.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use auth_token::FeedEntry;
use tokio::sync::{Notify, OnceCell, watch};
use tracing::{info, warn};

use crate::db::Db;
use crate::revocations::newest_id;

/// How often the watcher reads the newest id while a long poll waits: the longest delay before
/// a row written by another replica (or the CLI) reaches a waiting follower.
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);

/// What the watcher last learned about the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newest {
    /// Not read yet (the process just started, or nobody has waited yet).
    Unknown,
    /// The newest row id (0: the table is empty).
    Id(i64),
    /// The last read failed (the database is down): waiting polls ask the database themselves,
    /// which answers their 503 as before.
    Failed,
}

/// The watcher's shared half: the published newest id, the count of waiting polls (its demand)
/// and the nudge of local writes. One per process, in [`crate::state::AppState`].
#[derive(Debug)]
pub struct FeedWatch {
    newest: watch::Sender<Newest>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Waiting polls per client address (an entry only while one waits, so at most
    /// `max_waiting` entries); changed together with `waiting`, under this lock.
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    max_per_peer: usize,
    demand: Notify,
    nudge: Notify,
    interval: Duration,
    /// Reads of the newest id the watcher completed: a waiting poll trusts "nothing new" only
    /// when the watcher was seen alive during its wait ([`Waiting::watcher_read_since`]).
    reads: AtomicU64,
    /// The page query of the latest wake-up, shared by the polls it woke.
    shared: Mutex<Option<SharedPage>>,
    /// Set once the process shuts down: waiting polls then answer at once ([`Self::stop`]).
    stopping: watch::Sender<bool>,
}

/// One page query shared by waiting polls: for polls at cursor `since` asking `limit` rows,
/// woken by newest id `newest`. Filled once by the first of them; a failed query leaves it
/// empty and the next poll tries itself.
pub type PageCell = Arc<OnceCell<Arc<Vec<FeedEntry>>>>;

#[derive(Debug)]
struct SharedPage {
    key: (i64, i64, i64),
    page: PageCell,
}

/// A waiting poll's place: counted while it lives (the watcher reads only while one exists).
#[derive(Debug)]
pub struct Waiting {
    watch: Arc<FeedWatch>,
    /// The published newest id, as this poll last saw it.
    pub newest: watch::Receiver<Newest>,
    reads_at_start: u64,
    peer: IpAddr,
    stopping: watch::Receiver<bool>,
}

impl Waiting {
    /// Whether a read of the watcher started and completed while this poll waited (two reads
    /// completed since it registered: the first may have started before). Why (review F1):
    /// without it, a watcher whose task died or whose read hangs on a dead connection would
    /// let every waiting poll answer "nothing new" from memory, ext-authz would count itself
    /// up to date, and revoked tokens would pass; such a poll asks the database instead.
    pub fn watcher_read_since(&self) -> bool {
        self.watch.reads.load(Ordering::Acquire) >= self.reads_at_start + 2
    }

    /// Completes once the process shuts down (at once if it already does).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut stopping = self.stopping.clone();
        async move {
            // Why ignore the error: the sender lives in the `FeedWatch` this poll holds.
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut peers = self.watch.peers();
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
        self.watch.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl FeedWatch {
    /// A watcher admitting at most `max_waiting` waiting polls at once, `max_per_peer` of them
    /// from one client address, reading every `interval` while one waits.
    pub fn new(max_waiting: usize, max_per_peer: usize, interval: Duration) -> Self {
        Self {
            newest: watch::Sender::new(Newest::Unknown),
            waiting: AtomicUsize::new(0),
            max_waiting,
            per_peer: Mutex::new(HashMap::new()),
            max_per_peer,
            demand: Notify::new(),
            nudge: Notify::new(),
            interval,
            reads: AtomicU64::new(0),
            shared: Mutex::new(None),
            stopping: watch::Sender::new(false),
        }
    }

    /// The page query polls at `since` (asking `limit` rows) share once woken by newest id
    /// `newest`: the slot of that wake-up, or a new one replacing it. Why one slot (review F2):
    /// every follower of a process waits at the newest id, so one new row wakes them all at one
    /// cursor; before, each ran the same query. Polls at other cursors (a follower catching
    /// up) take the slot over and run their own query, as before. Sound: the query runs after
    /// the watcher saw row `newest` committed, so every poll that waited for `newest` gets it;
    /// rows committed later are read by its next poll. Bounded: one page of at most `limit`
    /// (≤ 10,000) rows.
    pub fn shared_page(&self, since: i64, limit: i64, newest: i64) -> PageCell {
        let key = (since, limit, newest);
        let mut slot = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(shared) if shared.key == key => Arc::clone(&shared.page),
            _ => {
                let page = PageCell::default();
                *slot = Some(SharedPage {
                    key,
                    page: Arc::clone(&page),
                });
                page
            }
        }
    }

    /// The newest id as last published (may be stale while nobody waits).
    pub fn newest(&self) -> Newest {
        *self.newest.borrow()
    }

    /// Long polls waiting right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_peer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiting poll from TCP peer `peer`, or `None` when `max_waiting` already
    /// wait, or `max_per_peer` of `peer`'s. Each holds its request and connection in memory: the
    /// global bound keeps that memory bounded, the per-address one keeps a single client (one
    /// holder of the feed token) from taking every place (review F3). An ext-authz holds one
    /// long poll at a time.
    ///
    /// Why the TCP peer, exactly (attack review of F3): the feed is internal, reached without a
    /// proxy, so a forwarded-address header would be the caller's own text (and naming a
    /// victim's address would take its places); and pods of one node or one cluster share an
    /// IPv6 /64, so grouping by prefix would refuse honest gateways.
    pub fn try_wait(self: &Arc<Self>, peer: IpAddr) -> Option<Waiting> {
        let peer = peer.to_canonical();
        {
            let mut peers = self.peers();
            let mine = peers.get(&peer).copied().unwrap_or(0);
            if mine >= self.max_per_peer {
                return None;
            }
            let admitted = self
                .waiting
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.max_waiting).then_some(n + 1)
                })
                .is_ok();
            if !admitted {
                return None;
            }
            peers.insert(peer, mine + 1);
        }
        // Why notify every time: a stored permit wakes a parked watcher; when it runs already,
        // the permit only costs it one more look at the counter.
        self.demand.notify_one();
        Some(Waiting {
            watch: self.clone(),
            newest: self.newest.subscribe(),
            reads_at_start: self.reads.load(Ordering::Acquire),
            peer,
            stopping: self.stopping.subscribe(),
        })
    }

    /// The process shuts down: every waiting poll (and any that starts after) stops waiting and
    /// answers as at the end of its wait. Why (review F4): otherwise each held the drain until
    /// its wait ran out, up to `--shutdown-timeout`, and a rolling update waited for it.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Asks for a read now (a local write): coalesced with reads already due.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// A newest id a request read from the database itself: published when larger than what
    /// is known (the watcher's sequential reads publish every value, larger or not, so an
    /// older read finishing late cannot move the value back and forth).
    pub fn observe(&self, id: i64) {
        self.newest.send_if_modified(|v| match *v {
            Newest::Id(known) if known >= id => false,
            _ => {
                *v = Newest::Id(id);
                true
            }
        });
    }

    fn publish(&self, value: Newest) {
        self.newest.send_if_modified(|v| {
            let changed = *v != value;
            *v = value;
            changed
        });
    }

    /// The watcher: while a poll waits, reads the newest id, publishes it, and sleeps one
    /// interval (or until nudged). Runs until aborted (spawned and stopped by
    /// [`crate::server::serve`]).
    pub async fn run(self: Arc<Self>, db: Db) {
        let mut failures: u64 = 0;
        loop {
            while self.waiting() == 0 {
                self.demand.notified().await;
            }
            match db.run(newest_id).await {
                Ok(id) => {
                    if failures > 0 {
                        info!(failures, "revocation feed watcher recovered");
                        failures = 0;
                    }
                    self.publish(Newest::Id(id.unwrap_or(0)));
                    self.reads.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => {
                    // Once per outage: the read repeats every interval while it lasts.
                    if failures == 0 {
                        warn!(error = %e, "revocation feed watcher cannot read the newest id");
                    }
                    failures += 1;
                    self.publish(Newest::Failed);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.nudge.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn peer(n: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn waiting_polls_are_counted_and_bounded() {
        let w = Arc::new(FeedWatch::new(2, 2, POLL_INTERVAL));
        let a = w.try_wait(PEER).unwrap();
        let b = w.try_wait(peer(1)).unwrap();
        assert!(w.try_wait(peer(2)).is_none(), "a third poll over the bound");
        assert_eq!(w.waiting(), 2);
        drop(a);
        let c = w.try_wait(peer(2)).unwrap();
        drop((b, c));
        assert_eq!(w.waiting(), 0);
        assert!(
            w.peers().is_empty(),
            "no address is kept once its polls end"
        );
    }

    /// Review F3: one address cannot take every place; others are still admitted (IPv6
    /// neighbours in one /64 too: pods share one), a refused poll takes nothing, and an
    /// IPv4-mapped IPv6 peer is its IPv4 address.
    #[test]
    fn one_address_takes_at_most_its_share() {
        let w = Arc::new(FeedWatch::new(10, 2, POLL_INTERVAL));
        let mine = [w.try_wait(PEER).unwrap(), w.try_wait(PEER).unwrap()];
        assert!(w.try_wait(PEER).is_none(), "a third of one address");
        let mapped = IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert!(
            w.try_wait(mapped).is_none(),
            "the same address, IPv4-mapped"
        );
        assert_eq!(w.waiting(), 2, "the refused polls are not counted");
        let other = w.try_wait(peer(1)).unwrap();
        let v6 =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last));
        let pods: Vec<_> = (1..=4).map(|n| w.try_wait(v6(n)).unwrap()).collect();
        drop(mine);
        let again = w.try_wait(PEER).unwrap();
        drop((other, pods, again));
        assert_eq!(w.waiting(), 0);
        assert!(w.peers().is_empty());
    }

    #[test]
    fn observed_ids_only_move_forward_but_the_watcher_may_move_back() {
        let w = Arc::new(FeedWatch::new(1, 1, POLL_INTERVAL));
        let mut waiting = w.try_wait(PEER).unwrap();
        let rx = &mut waiting.newest;
        w.observe(5);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Newest::Id(5));
        w.observe(3);
        w.observe(5);
        assert!(
            !rx.has_changed().unwrap(),
            "an older or equal read wakes nobody"
        );
        // The database was replaced: the watcher's read is the truth.
        w.publish(Newest::Id(2));
        assert_eq!(*rx.borrow_and_update(), Newest::Id(2));
        w.publish(Newest::Id(2));
        assert!(!rx.has_changed().unwrap(), "the same value wakes nobody");
    }
}
