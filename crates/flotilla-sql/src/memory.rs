//! A query's memory on one node: [`PeakMemoryPool`] is the query's view of the node's pool.
//! It counts what the query holds (now and at most), enforces `query.max-memory-per-node`,
//! and, on a worker, makes a reservation that finds the node's pool full wait for memory
//! instead of failing ([`MemoryWaits`]), as Trino's blocked memory pools do.
//!
//! ## Waiting on a full pool
//!
//! DataFusion fails a reservation the moment the pool cannot give it. On a shared worker that
//! turns one query's large hash table into another query's failure. So a reservation by an
//! operator that cannot spill, refused by the node's pool (not by the query's own limit),
//! waits while other queries hold memory: it blocks its thread inside
//! [`tokio::task::block_in_place`] (the runtime moves its other tasks to a fresh thread), and
//! tries again whenever memory is freed. It stops waiting when:
//! - the memory is there (the query goes on);
//! - the query is killed ([`PeakMemoryPool::kill`]: the low-memory killer's verdict reaches
//!   the worker in a heartbeat answer) — it fails with the kill's message;
//! - no other query holds memory any more, or the request could never fit the pool — it fails
//!   as DataFusion would have;
//! - it has waited `memory.blocked-timeout` — it fails, naming the setting.
//!
//! Operators that can spill are refused at once, as before: they spill. How long a node has
//! had waiting reservations is what its heartbeat reports to the cluster's low-memory killer.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};
use flotilla_proto::FlotillaError;
use parking_lot::{Condvar, Mutex};

/// The longest a waiting reservation sleeps before it looks again (a freed reservation wakes
/// it sooner).
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// Reservations waiting on one node's full pool, shared by every query's view of the pool.
#[derive(Debug)]
pub struct MemoryWaits {
    state: Mutex<WaitState>,
    freed: Condvar,
    /// `memory.blocked-timeout`.
    timeout: Duration,
}

#[derive(Debug, Default)]
struct WaitState {
    waiting: usize,
    /// When the current unbroken stretch of waiting began.
    since: Option<Instant>,
}

impl MemoryWaits {
    pub fn new(timeout: Duration) -> Self {
        Self { state: Mutex::new(WaitState::default()), freed: Condvar::new(), timeout }
    }

    /// How long reservations have been waiting without a break (zero when none waits).
    pub fn blocked_for(&self) -> Duration {
        self.state.lock().since.map(|since| since.elapsed()).unwrap_or_default()
    }

    /// Reservations waiting now.
    pub fn waiting(&self) -> usize {
        self.state.lock().waiting
    }

    fn enter(&self) {
        let mut state = self.state.lock();
        state.waiting += 1;
        state.since.get_or_insert_with(Instant::now);
    }

    fn leave(&self) {
        let mut state = self.state.lock();
        state.waiting -= 1;
        if state.waiting == 0 {
            state.since = None;
        }
    }

    /// Sleeps until memory is freed somewhere on the node, or one slice.
    fn sleep(&self) {
        let mut state = self.state.lock();
        self.freed.wait_for(&mut state, WAIT_SLICE);
    }

    fn wake(&self) {
        self.freed.notify_all();
    }
}

/// One query's view of a memory pool: forwards to the pool, and counts what the query
/// itself has reserved through it, now and at most. A coordinator gives each statement one
/// over its own pool; a worker gives each query one over the node's shared pool, used by
/// all of the query's tasks there.
#[derive(Debug)]
pub struct PeakMemoryPool {
    inner: Arc<dyn MemoryPool>,
    reserved: AtomicUsize,
    peak: AtomicUsize,
    /// The most the query may hold through this pool (`query.max-memory-per-node`).
    limit: AtomicUsize,
    /// Where reservations refused by a full pool wait; `None`: they fail at once.
    waits: Option<Arc<MemoryWaits>>,
    /// The query's reservations waiting now.
    blocked: AtomicUsize,
    /// Set when the query was killed: every reservation from then on fails with it.
    killed: Mutex<Option<FlotillaError>>,
}

impl PeakMemoryPool {
    pub fn new(inner: Arc<dyn MemoryPool>) -> Self {
        Self::with_limit(inner, usize::MAX)
    }

    /// A view whose reservations together may not pass `limit` bytes: past it a fallible
    /// reservation is refused (a spilling operator spills; others fail the query).
    pub fn with_limit(inner: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            inner,
            reserved: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            waits: None,
            blocked: AtomicUsize::new(0),
            killed: Mutex::new(None),
        }
    }

    /// Reservations the full pool refuses wait in `waits` (see the module doc).
    pub fn waiting_on(mut self, waits: Arc<MemoryWaits>) -> Self {
        self.waits = Some(waits);
        self
    }

    /// Lowers the limit (never raises it).
    pub fn lower_limit(&self, limit: usize) {
        self.limit.fetch_min(limit, Ordering::Relaxed);
    }

    /// The most the query may hold through this pool.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed).min(match self.inner.memory_limit() {
            MemoryLimit::Finite(size) => size,
            _ => usize::MAX,
        })
    }

    /// Bytes the query holds now.
    pub fn query_reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// The most the query ever held.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The query's reservations waiting for memory now.
    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Fails the query's waiting and future reservations with `error` (carried as a
    /// refusal, so it keeps its code on the coordinator).
    pub fn kill(&self, error: FlotillaError) {
        self.killed.lock().get_or_insert(error);
        if let Some(waits) = &self.waits {
            waits.wake();
        }
    }

    fn killed(&self) -> Option<DataFusionError> {
        self.killed.lock().as_ref().map(crate::error::carry_exhausted)
    }

    fn add(&self, bytes: usize) {
        let now = self.reserved.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether waiting could ever get `additional` more: other queries hold memory, and the
    /// query's total would fit the pool.
    fn worth_waiting(&self, additional: usize) -> bool {
        let mine = self.query_reserved();
        let others = self.inner.reserved().saturating_sub(mine);
        let fits = match self.inner.memory_limit() {
            MemoryLimit::Finite(size) => mine.saturating_add(additional) <= size,
            _ => true,
        };
        others > 0 && fits
    }

    /// Waits for the pool to give `additional` (see the module doc); `refused` is the pool's
    /// first answer.
    fn wait_for(
        &self,
        waits: &MemoryWaits,
        reservation: &MemoryReservation,
        additional: usize,
        refused: DataFusionError,
    ) -> Result<()> {
        let started = Instant::now();
        waits.enter();
        self.blocked.fetch_add(1, Ordering::Relaxed);
        let result = tokio::task::block_in_place(|| loop {
            waits.sleep();
            if let Some(killed) = self.killed() {
                break Err(killed);
            }
            match self.inner.try_grow(reservation, additional) {
                Ok(()) => break Ok(()),
                Err(_) if !self.worth_waiting(additional) => break Err(refused),
                Err(_) if started.elapsed() >= waits.timeout => {
                    break Err(DataFusionError::ResourcesExhausted(format!(
                        "{}: the node's memory pool stayed full for {:?} [memory.blocked-timeout]",
                        refused.strip_backtrace(),
                        waits.timeout
                    )))
                }
                Err(_) => {}
            }
        });
        self.blocked.fetch_sub(1, Ordering::Relaxed);
        waits.leave();
        result
    }
}

/// Whether this thread may block for memory: only on a multi-threaded runtime (or off any
/// runtime), where [`tokio::task::block_in_place`] hands the thread's other tasks on.
fn may_block() -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
        Err(_) => true,
    }
}

/// Bytes as Trino writes data sizes (`12.50MB`).
pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

impl fmt::Display for PeakMemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peak-tracking({})", self.inner)
    }
}

impl MemoryPool for PeakMemoryPool {
    fn name(&self) -> &str {
        "peak-tracking"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.add(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.reserved.fetch_sub(shrink, Ordering::Relaxed);
        if let Some(waits) = &self.waits {
            waits.wake();
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if let Some(killed) = self.killed() {
            return Err(killed);
        }
        let held = self.query_reserved();
        let limit = self.limit.load(Ordering::Relaxed);
        if held.saturating_add(additional) > limit {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "Query exceeded per-node memory limit of {} [query.max-memory-per-node]: it holds {} and {} asked for {} more",
                human_bytes(limit),
                human_bytes(held),
                reservation.consumer().name(),
                human_bytes(additional),
            )));
        }
        if let Err(refused) = self.inner.try_grow(reservation, additional) {
            match &self.waits {
                Some(waits) if !reservation.consumer().can_spill() && self.worth_waiting(additional) && may_block() => {
                    self.wait_for(waits, reservation, additional, refused)?
                }
                _ => return Err(refused),
            }
        }
        self.add(additional);
        Ok(())
    }

    /// The whole pool's reservation, as DataFusion expects of a pool.
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use flotilla_proto::ErrorCode;

    fn register(pool: &Arc<PeakMemoryPool>, name: &str) -> MemoryReservation {
        MemoryConsumer::new(name).register(&(pool.clone() as Arc<dyn MemoryPool>))
    }

    #[test]
    fn a_query_pool_counts_only_its_own_reservations() {
        let node: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let query_a = Arc::new(PeakMemoryPool::new(node.clone()));
        let query_b = Arc::new(PeakMemoryPool::new(node.clone()));
        let a = register(&query_a, "a");
        let b = register(&query_b, "b");
        a.try_grow(300).unwrap();
        b.try_grow(200).unwrap();
        a.shrink(100);
        assert_eq!((query_a.query_reserved(), query_a.peak()), (200, 300));
        assert_eq!(query_b.query_reserved(), 200);
        assert_eq!(node.reserved(), 400, "the node's pool holds both");
        assert!(a.try_grow(700).is_err(), "the node's limit still applies");
        drop(a);
        assert_eq!(query_a.query_reserved(), 0, "freed when the query's consumers go");
    }

    fn waiting_pair(timeout: Duration) -> (Arc<MemoryWaits>, Arc<PeakMemoryPool>, Arc<PeakMemoryPool>) {
        let node: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let waits = Arc::new(MemoryWaits::new(timeout));
        let a = Arc::new(PeakMemoryPool::new(node.clone()).waiting_on(waits.clone()));
        let b = Arc::new(PeakMemoryPool::new(node).waiting_on(waits.clone()));
        (waits, a, b)
    }

    fn wait_until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_reservation_on_a_full_pool_waits_until_another_query_frees_memory() {
        let (waits, a, b) = waiting_pair(Duration::from_secs(60));
        let held = register(&a, "a");
        held.try_grow(800).unwrap();
        let waiter = std::thread::spawn(move || {
            let reservation = register(&b, "b");
            let result = reservation.try_grow(500);
            (result.is_ok(), reservation.size(), b.query_reserved())
        });
        wait_until(|| waits.waiting() == 1);
        assert!(waits.blocked_for() > Duration::ZERO);
        held.shrink(400);
        assert_eq!(waiter.join().unwrap(), (true, 500, 500));
        assert_eq!((waits.waiting(), waits.blocked_for()), (0, Duration::ZERO));
    }

    #[test]
    fn a_killed_query_stops_waiting_with_the_kill_message() {
        let (waits, a, b) = waiting_pair(Duration::from_secs(60));
        let held = register(&a, "a");
        held.try_grow(800).unwrap();
        let query = b.clone();
        let waiter = std::thread::spawn(move || register(&query, "b").try_grow(500).unwrap_err());
        wait_until(|| b.blocked() == 1);
        b.kill(FlotillaError::new(ErrorCode::ClusterOutOfMemory, "Query killed. Try again."));
        let error = waiter.join().unwrap();
        assert_eq!(crate::error::from_datafusion(&error).code, ErrorCode::ClusterOutOfMemory, "{error}");
        assert_eq!(waits.waiting(), 0);
        assert!(register(&b, "later").try_grow(1).is_err(), "a killed query gets no more memory");
    }

    #[test]
    fn waiting_ends_when_it_cannot_help_or_times_out() {
        let (_, a, b) = waiting_pair(Duration::from_millis(200));
        let held = register(&a, "a");
        held.try_grow(600).unwrap();
        let started = Instant::now();
        // Nobody else holds memory: fails at once, as DataFusion would.
        assert!(register(&a, "more").try_grow(500).is_err());
        // More than the pool even if everything else were freed: at once too.
        assert!(register(&b, "b").try_grow(1001).is_err());
        assert!(started.elapsed() < Duration::from_millis(150));
        // Could fit, but the memory never comes: the timeout, named.
        let error = register(&b, "b").try_grow(500).unwrap_err().to_string();
        assert!(error.contains("memory.blocked-timeout"), "{error}");
        // Spilling operators are refused at once: they spill.
        let spiller = MemoryConsumer::new("sort").with_can_spill(true);
        let started = Instant::now();
        assert!(spiller.register(&(b.clone() as Arc<dyn MemoryPool>)).try_grow(500).is_err());
        assert!(started.elapsed() < Duration::from_millis(150));
    }
}
