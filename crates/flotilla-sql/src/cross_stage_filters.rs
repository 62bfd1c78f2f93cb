//! Dynamic join filters that cross stages.
//!
//! In one process a hash join publishes what its build side holds (the key range, and the
//! keys themselves when there are few) as a dynamic filter, and the Parquet scans of its
//! probe side skip what it rules out: TPC-H q18's IN-subquery keeps 57 orders of 1.5 million,
//! and the scans of `orders` and `lineitem` under it read almost nothing. In a distributed
//! statement those scans often run in other stages (below a shuffle) than the join, on other
//! workers, and the filter never reaches them: the workers decode the stage's plan with their
//! own copy of the filter, which nobody updates.
//!
//! [`share_join_filters_across_stages`] (run by the coordinator on the distributed plan)
//! connects the two ends for the hash joins in the workers' stages:
//!
//! - the join's probe side gets a [`JoinFilterExportExec`]: when the build side is done, it
//!   sends the filter to every worker of the statement, over the workers' data service
//!   ([`FilterPublisher`]). What travels is [`relax`]ed: the key ranges and key lists, not a
//!   lookup into the hash table (it cannot be encoded). For a build side too large for
//!   DataFusion to list its keys (150), the task's keys are listed as its join reads them
//!   ([`JoinKeysExec`], up to [`MAX_COLLECTED_KEYS`] rows), so that what travels filters rows,
//!   not only key ranges; the lists of a task's partitions, and the parts from every task, are
//!   merged into one list per key ([`merge_key_lists`]), which a scan evaluates as one lookup a
//!   row ([`KeySetExpr`]). A join whose build side is collected
//!   has the same table in every task, so any task's filter is whole; a partitioned join's
//!   task knows only its partitions' keys, so each task sends its part ([`PublishedFilter`]
//!   says which of how many) and a row passes if it passes any part;
//! - each scan in another stage that the filter reaches gets a [`JoinFilterWaitExec`]: it
//!   registers the scan's copy of the filter in its worker's [`FilterInbox`] and starts the
//!   scan when the whole filter has arrived, at most [`WAIT_FOR_FILTERS`] later, filtering
//!   rows with it in the Parquet reader. Starting the scan after the filter is what one
//!   process does too (a join reads its probe side only after its build side); without the
//!   wait, the scan's stage, started at once by the distributed runtime, would have read most
//!   of its input before the filter came.
//!
//! A filter only drops rows the join would drop, so one that comes late, is lost with a
//! worker, or cannot be decoded costs time and changes no answer. The wait cannot deadlock: a
//! join's filter reaches only scans of its probe side, and its build side, which the filter
//! waits for, never reads from its probe side.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{lit, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_distributed::{DistributedLeafExec, NetworkBoundaryExt};
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
use datafusion_proto::protobuf;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;

use crate::catalog::files_write::only_child;

/// How long a scan waits for the filters it was promised before it reads without them (a
/// filter that comes later still reaches the filters above the scan, batch by batch). Short:
/// a filter that is not there soon comes from a build side that is slow to finish (TPC-H
/// q21's semi and anti joins wait for the stage that joins `lineitem`, `orders` and
/// `supplier`, 400 ms at scale 1), and a waiting scan leaves idle the cores it would share
/// with that stage. Build sides that finish early sent theirs within 25 ms in the TPC-H runs
/// on two workers (q13, q17, q20).
pub const WAIT_FOR_FILTERS: Duration = Duration::from_millis(100);
/// How long sending a filter to one worker may take.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest filter sent, encoded; a larger one is sent with its short key lists only (as
/// DataFusion would have made it), and if still larger as "no filter" (the waiting scans start
/// unfiltered).
pub const MAX_FILTER_BYTES: usize = 4 << 20;
/// Encoded bytes of key lists one task of a join may send to all the statement's workers
/// together (its filter's size times their number); beyond it the filter travels with its
/// short lists only, so the traffic stays bounded on a large cluster.
pub const MAX_LIST_TRAFFIC: usize = 16 << 20;
/// The most build-side rows of a task whose keys its join's published filter lists
/// ([`JoinKeysExec`]); a task that reads more publishes key ranges (and DataFusion's short
/// lists) only. The lists travel as DataFusion encodes an `IN` list, a message per key, and
/// are decoded and merged on every worker: with 38 thousand keys a task (TPC-H q21's semi and
/// anti joins at scale 1) that cost the workers more CPU than the rows it kept from the
/// exchanges saved (q21 440 → 690 ms on two workers), so the bound is low. TPC-H q20's join
/// of 312 `partsupp` rows, too many for DataFusion to list, is well within it.
pub const MAX_COLLECTED_KEYS: usize = 4096;
/// The longest key list that travels when the long ones would be too large, and the longest
/// a scan evaluates as DataFusion's `InListExpr` (longer ones become a [`KeySetExpr`]):
/// DataFusion's `hash_join_inlist_pushdown_max_distinct_values` default.
const SHORT_LIST: usize = 150;
/// Filters and waiting scans a worker keeps track of at most.
pub const MAX_INBOX_ENTRIES: usize = 4096;
/// Encoded bytes of the filters a worker keeps at most.
pub const MAX_INBOX_BYTES: usize = 256 << 20;
/// How long a filter that arrived is kept for scans that register later.
const ARRIVAL_TTL: Duration = Duration::from_secs(120);
/// Longest query id accepted in a published filter.
const MAX_QUERY_ID: usize = 256;
/// Most tasks a published filter may say its join has.
const MAX_TASKS: u32 = 4096;
/// Levels of a join's filter expression [`relax`] looks through.
const MAX_RELAX_DEPTH: usize = 32;
/// Plan levels the planning walk looks through (it is recursive).
pub const MAX_DEPTH: usize = 512;

/// One join's filter as it travels between workers: the expression over the join's probe
/// side (`schema`), and the probe keys it was built on (the filter's columns).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishedFilter {
    #[prost(string, tag = "1")]
    pub query_id: String,
    #[prost(uint64, tag = "2")]
    pub expression_id: u64,
    #[prost(message, optional, tag = "3")]
    pub schema: Option<protobuf::Schema>,
    /// None: the join has no filter to send (it could not be encoded, or is too large); the
    /// scans waiting for it start unfiltered.
    #[prost(message, optional, tag = "4")]
    pub expr: Option<protobuf::PhysicalExprNode>,
    #[prost(message, repeated, tag = "5")]
    pub keys: Vec<protobuf::PhysicalExprNode>,
    /// Which task of the join's stage sent it, of how many must: a partitioned join's task
    /// knows only its partitions' keys, and the filter is whole when every task's has come
    /// (1 for a join whose build side is collected: every task has the whole filter).
    #[prost(uint32, tag = "6")]
    pub task: u32,
    #[prost(uint32, tag = "7")]
    pub tasks: u32,
}

impl PublishedFilter {
    fn tasks(&self) -> u32 {
        self.tasks.max(1)
    }

    /// Task `task` of `tasks` of the join has no filter to send.
    fn none(query_id: &str, expression_id: u64, (task, tasks): (u32, u32)) -> Self {
        Self { query_id: query_id.to_string(), expression_id, task, tasks, ..Default::default() }
    }
}

/// Sends a filter to a worker's data service.
pub trait FilterPublisher: Send + Sync + fmt::Debug {
    fn publish(&self, url: &str, filter: PublishedFilter) -> BoxFuture<'static, Result<()>>;
}

/// What a task needs to send and receive filters: set in the session of every task a worker
/// runs. Without it the export and wait nodes pass their rows through and do nothing else.
#[derive(Debug, Clone)]
pub struct FilterExchange {
    pub query_id: String,
    pub inbox: Arc<FilterInbox>,
    pub publisher: Arc<dyn FilterPublisher>,
    /// The keys the task's joins read on their build sides, by their filters' ids.
    build_keys: Arc<Mutex<HashMap<u64, Arc<BuildKeys>>>>,
}

impl FilterExchange {
    pub fn new(query_id: String, inbox: Arc<FilterInbox>, publisher: Arc<dyn FilterPublisher>) -> Self {
        Self { query_id, inbox, publisher, build_keys: Default::default() }
    }

    fn build_keys(&self, id: u64) -> Arc<BuildKeys> {
        self.build_keys.lock().entry(id).or_default().clone()
    }
}

/// The keys a task's join has read on its build side ([`JoinKeysExec`]), for the filter it
/// publishes: its lookup into the hash table cannot travel, a list of the keys can.
#[derive(Debug, Default)]
pub struct BuildKeys {
    state: Mutex<Collected>,
}

#[derive(Debug, Default)]
enum Collected {
    #[default]
    Nothing,
    /// Each key's arrays, batch by batch.
    Keys { rows: usize, columns: Vec<Vec<ArrayRef>> },
    /// More than [`MAX_COLLECTED_KEYS`] rows, or keys that could not be evaluated.
    TooMany,
}

impl BuildKeys {
    fn add(&self, keys: Result<Vec<ArrayRef>>) {
        let mut state = self.state.lock();
        let keys = match keys {
            Ok(keys) => keys,
            Err(_) => {
                *state = Collected::TooMany;
                return;
            }
        };
        let added = keys.first().map_or(0, |key| key.len());
        match &mut *state {
            Collected::TooMany => {}
            Collected::Keys { rows, .. } if *rows + added > MAX_COLLECTED_KEYS => *state = Collected::TooMany,
            Collected::Keys { rows, columns } if columns.len() == keys.len() => {
                *rows += added;
                columns.iter_mut().zip(keys).for_each(|(column, key)| column.push(key));
            }
            Collected::Keys { .. } => *state = Collected::TooMany,
            Collected::Nothing if added > MAX_COLLECTED_KEYS => *state = Collected::TooMany,
            Collected::Nothing => {
                *state = Collected::Keys { rows: added, columns: keys.into_iter().map(|key| vec![key]).collect() }
            }
        }
    }

    fn too_many(&self) -> bool {
        matches!(*self.state.lock(), Collected::TooMany)
    }

    /// Each key's values, once per row read (`None`: too many, or none read).
    fn values(&self) -> Option<Vec<ArrayRef>> {
        let state = self.state.lock();
        let Collected::Keys { rows, columns } = &*state else { return None };
        if *rows == 0 {
            return None;
        }
        columns
            .iter()
            .map(|arrays| {
                let arrays: Vec<&dyn datafusion::arrow::array::Array> = arrays.iter().map(|a| a.as_ref()).collect();
                datafusion::arrow::compute::concat(&arrays).ok()
            })
            .collect()
    }
}

/// Why a worker refused a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    #[error("a published filter needs a query id of 1 to {MAX_QUERY_ID} characters")]
    BadQueryId,
    #[error("too many filters pending on this worker ({MAX_INBOX_ENTRIES}, {MAX_INBOX_BYTES} bytes)")]
    Full,
    #[error("a published filter must come from task 0 to {MAX_TASKS} of as many")]
    BadTask,
}

/// A worker's filters from other stages, by query and filter: those that arrived, and the
/// scans waiting for them.
#[derive(Debug, Default)]
pub struct FilterInbox {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_filter: HashMap<(String, u64), Entry>,
    /// Encoded size of the parts held.
    bytes: usize,
}

struct Entry {
    since: Instant,
    /// The parts that came, by task; complete when every task's has.
    arrived: std::collections::BTreeMap<u32, Arc<PublishedFilter>>,
    waiting: Vec<Waiting>,
    /// The whole filter decoded, once for every scan that uses it.
    prepared: Option<Arc<Prepared>>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("arrived", &self.arrived.len()).field("waiting", &self.waiting.len()).finish()
    }
}

/// A scan's copy of a filter, and its task's context (to decode the filter in).
struct Waiting {
    filter: Weak<dyn PhysicalExpr>,
    ctx: Weak<TaskContext>,
}

impl Entry {
    fn new() -> Self {
        Self { since: Instant::now(), arrived: Default::default(), waiting: Vec::new(), prepared: None }
    }

    /// Every part of the filter, once all have come.
    fn whole(&self) -> Option<Vec<Arc<PublishedFilter>>> {
        let tasks = self.arrived.values().next()?.tasks();
        (self.arrived.len() as u32 == tasks).then(|| self.arrived.values().cloned().collect())
    }

    fn forgettable(&self) -> bool {
        self.since.elapsed() > ARRIVAL_TTL && self.waiting.iter().all(|w| w.filter.strong_count() == 0)
    }

    fn bytes(&self) -> usize {
        self.arrived.values().map(|part| prost::Message::encoded_len(part.as_ref())).sum()
    }
}

impl FilterInbox {
    /// Filters and waiting scans tracked now.
    pub fn len(&self) -> usize {
        self.entries.lock().by_filter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A filter (or one task's part of it) from another worker: once whole, applied to the
    /// scans waiting for it, and kept for those that register later. A second copy of a part
    /// (every task of a collected join's stage sends the whole filter) is ignored.
    pub fn deliver(&self, filter: PublishedFilter) -> std::result::Result<(), InboxError> {
        if filter.query_id.is_empty() || filter.query_id.len() > MAX_QUERY_ID {
            return Err(InboxError::BadQueryId);
        }
        if filter.tasks() > MAX_TASKS || filter.task >= filter.tasks() {
            return Err(InboxError::BadTask);
        }
        let size = prost::Message::encoded_len(&filter);
        let filter = Arc::new(filter);
        let (parts, waiting) = {
            let mut entries = self.entries.lock();
            let key = (filter.query_id.clone(), filter.expression_id);
            if !entries.by_filter.contains_key(&key) || entries.bytes + size > MAX_INBOX_BYTES {
                Self::make_room(&mut entries)?;
            }
            if entries.bytes + size > MAX_INBOX_BYTES {
                return Err(InboxError::Full);
            }
            let Entries { by_filter, bytes } = &mut *entries;
            let entry = by_filter.entry(key).or_insert_with(Entry::new);
            let whole_before = entry.whole().is_some();
            let same_join = entry.arrived.values().next().is_none_or(|first| first.tasks() == filter.tasks());
            if whole_before || !same_join || entry.arrived.contains_key(&filter.task) {
                return Ok(());
            }
            entry.arrived.insert(filter.task, filter.clone());
            *bytes += size;
            entry.since = Instant::now();
            let Some(parts) = entry.whole() else { return Ok(()) };
            (parts, std::mem::take(&mut entry.waiting))
        };
        let mut prepared = None;
        for waiting in waiting {
            let Some(expr) = waiting.filter.upgrade() else { continue };
            match waiting.ctx.upgrade() {
                Some(ctx) => {
                    let prepared = prepared.get_or_insert_with(|| self.prepared(&filter, &parts, &ctx));
                    apply(&expr, prepared);
                }
                // The task is over; nobody should wait on its copy.
                None => {
                    if let Some(filter) = expr.downcast_ref::<DynamicFilterPhysicalExpr>() {
                        filter.mark_complete();
                    }
                }
            }
        }
        Ok(())
    }

    /// The whole filter `parts` make, decoded once (in the context of the first task that
    /// uses it) and kept with them.
    fn prepared(&self, part: &PublishedFilter, parts: &[Arc<PublishedFilter>], ctx: &TaskContext) -> Arc<Prepared> {
        let key = (part.query_id.clone(), part.expression_id);
        if let Some(prepared) = self.entries.lock().by_filter.get(&key).and_then(|entry| entry.prepared.clone()) {
            return prepared;
        }
        let prepared = Arc::new(prepare(parts, ctx).map_err(|error| error.to_string()));
        if let Some(entry) = self.entries.lock().by_filter.get_mut(&key) {
            entry.prepared = Some(prepared.clone());
        }
        prepared
    }

    /// A scan's copy of filter `expression_id` of `query_id`: updated now if the filter is
    /// here, else when it arrives.
    pub fn register(
        &self,
        query_id: &str,
        expression_id: u64,
        filter: &Arc<dyn PhysicalExpr>,
        ctx: &Arc<TaskContext>,
    ) -> std::result::Result<(), InboxError> {
        let arrived = {
            let mut entries = self.entries.lock();
            let key = (query_id.to_string(), expression_id);
            if !entries.by_filter.contains_key(&key) {
                Self::make_room(&mut entries)?;
            }
            let entry = entries.by_filter.entry(key).or_insert_with(Entry::new);
            match entry.whole() {
                Some(parts) => parts,
                None => {
                    entry.waiting.retain(|w| w.filter.strong_count() > 0);
                    entry.waiting.push(Waiting { filter: Arc::downgrade(filter), ctx: Arc::downgrade(ctx) });
                    return Ok(());
                }
            }
        };
        if let Some(first) = arrived.first() {
            let prepared = self.prepared(first, &arrived, ctx);
            apply(filter, &prepared);
        }
        Ok(())
    }

    /// Forgets what no scan needs any more when the inbox is full; fails if it stays full.
    fn make_room(entries: &mut Entries) -> std::result::Result<(), InboxError> {
        if entries.by_filter.len() >= MAX_INBOX_ENTRIES || entries.bytes > MAX_INBOX_BYTES / 2 {
            let mut freed = 0;
            entries.by_filter.retain(|_, entry| {
                let forget = entry.forgettable();
                if forget {
                    freed += entry.bytes();
                }
                !forget
            });
            entries.bytes -= freed;
        }
        if entries.by_filter.len() >= MAX_INBOX_ENTRIES {
            return Err(InboxError::Full);
        }
        Ok(())
    }
}

/// A whole filter from another stage as this worker's scans use it (its long key lists as
/// [`KeySetExpr`]s), over the join's probe keys, which it comes with; `None` for one that
/// keeps every row; the error that kept it from being decoded.
type Prepared = std::result::Result<Option<(Arc<dyn PhysicalExpr>, Vec<Arc<dyn PhysicalExpr>>)>, String>;

/// The filter the parts from the producer's tasks make (a row passes if it passes any part).
fn prepare(
    parts: &[Arc<PublishedFilter>],
    ctx: &TaskContext,
) -> Result<Option<(Arc<dyn PhysicalExpr>, Vec<Arc<dyn PhysicalExpr>>)>> {
    let mut keys = None;
    let mut filters = Vec::with_capacity(parts.len());
    for part in parts {
        let (filter, part_keys, schema) = decode(part, ctx)?;
        filters.push(filter);
        keys.get_or_insert((part_keys, schema));
    }
    let (keys, schema) = keys.ok_or_else(|| DataFusionError::Internal("a join filter without parts".into()))?;
    let filter = any_of(filters, &schema);
    if is_literal(&filter, true) {
        return Ok(None);
    }
    Ok(Some((for_scans(filter)?, keys)))
}

/// Updates a scan's copy of a filter with what its producer's tasks sent, and marks it
/// complete (so the scan stops waiting) whether or not the filter could be used.
fn apply(expr: &Arc<dyn PhysicalExpr>, prepared: &Prepared) {
    let Some(filter) = expr.downcast_ref::<DynamicFilterPhysicalExpr>() else { return };
    let installed = match prepared {
        Ok(Some((prepared, keys))) => install(expr, prepared, keys),
        Ok(None) => Ok(()),
        Err(error) => Err(DataFusionError::Execution(error.clone())),
    };
    if let Err(error) = installed {
        tracing::debug!(%error, "a join filter from another stage was not applied");
    }
    filter.mark_complete();
}

fn install(expr: &Arc<dyn PhysicalExpr>, filter: &Arc<dyn PhysicalExpr>, keys: &[Arc<dyn PhysicalExpr>]) -> Result<()> {
    if expr.children().len() != keys.len() {
        return Err(DataFusionError::Internal("a published join filter has other keys than the scan's copy".into()));
    }
    // Every copy of a dynamic filter keeps the filter as its producer wrote it (over the
    // join's keys) and maps the keys to its own columns when it reads it: the scan's copy,
    // and the copies the Parquet reader derives from it for its row filter. So the filter is
    // stored through a copy that maps the keys to themselves.
    let as_the_join = Arc::clone(expr).with_new_children(keys.to_vec())?;
    let as_the_join = as_the_join
        .downcast_ref::<DynamicFilterPhysicalExpr>()
        .ok_or_else(|| DataFusionError::Internal("a dynamic filter's copy is not one".into()))?;
    as_the_join.update(Arc::clone(filter))
}

/// A decoded part of a published filter, the join keys it reads, and the schema of the
/// join's probe side they are over.
type Part = (Arc<dyn PhysicalExpr>, Vec<Arc<dyn PhysicalExpr>>, Schema);

/// One part of a published filter (`true` for a part without one).
fn decode(published: &PublishedFilter, ctx: &TaskContext) -> Result<Part> {
    let Some(expr) = published.expr.as_ref() else { return Ok((lit(true), Vec::new(), Schema::empty())) };
    let schema: Schema = published
        .schema
        .as_ref()
        .ok_or_else(|| DataFusionError::Internal("published join filter without a schema".into()))?
        .try_into()?;
    let codec = DefaultPhysicalExtensionCodec {};
    let expr = parse_physical_expr(expr, ctx, &schema, &codec)?;
    let keys =
        published.keys.iter().map(|key| parse_physical_expr(key, ctx, &schema, &codec)).collect::<Result<Vec<_>>>()?;
    if expr.data_type(&schema)? != DataType::Boolean {
        return Err(DataFusionError::Internal("a published join filter is not a predicate".into()));
    }
    // The filter may read only the join's keys: those are what the scan's copy maps to its
    // own columns, one for one.
    let key_columns: HashSet<_> = keys.iter().flat_map(collect_columns).collect();
    if !collect_columns(&expr).iter().all(|column| key_columns.contains(column)) {
        return Err(DataFusionError::Internal("a published join filter reads columns other than its keys".into()));
    }
    Ok((expr, keys, schema))
}

fn is_literal(expr: &Arc<dyn PhysicalExpr>, value: bool) -> bool {
    use datafusion::common::ScalarValue;
    use datafusion::physical_expr::expressions::Literal;
    expr.downcast_ref::<Literal>().is_some_and(|literal| literal.value() == &ScalarValue::Boolean(Some(value)))
}

/// `a OR b OR ...` (over `schema`): false for none; the parts' key lists merged into one
/// ([`merge_key_lists`]) where each part has one.
fn any_of(parts: Vec<Arc<dyn PhysicalExpr>>, schema: &Schema) -> Arc<dyn PhysicalExpr> {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::BinaryExpr;
    if parts.iter().any(|part| is_literal(part, true)) {
        return lit(true);
    }
    let parts: Vec<_> = parts
        .iter()
        .flat_map(datafusion::physical_expr::utils::split_disjunction)
        .filter(|part| !is_literal(part, false))
        .cloned()
        .collect();
    if let Some(merged) = merge_key_lists(&parts, schema) {
        return merged;
    }
    parts
        .into_iter()
        .reduce(|a, b| Arc::new(BinaryExpr::new(a, Operator::Or, b)) as Arc<dyn PhysicalExpr>)
        .unwrap_or_else(|| lit(false))
}

/// `range_1 AND k IN (list_1) OR range_2 AND k IN (list_2) OR ...`, DataFusion's filter of a
/// partitioned join (one disjunct a partition), or the parts from every task, as one
/// `k >= min AND k <= max AND k IN (list_1 ∪ list_2 ∪ ...)`, each key once, and so for each
/// key a join has several of (a list each): it keeps every row the disjunction keeps (a part
/// keeps only keys of its lists), with one lookup a row and key instead of one a part, and
/// its range still prunes row groups and pages. None unless every part lists the same keys,
/// once each, with literals.
fn merge_key_lists(parts: &[Arc<dyn PhysicalExpr>], schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr, Literal};
    struct Merged<'a> {
        key: &'a Arc<dyn PhysicalExpr>,
        seen: HashSet<&'a ScalarValue>,
        values: Vec<ScalarValue>,
    }
    let mut merged: Vec<Merged<'_>> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let lists: Vec<&InListExpr> = datafusion::physical_expr::split_conjunction(part)
            .into_iter()
            .filter_map(|conjunct| conjunct.downcast_ref::<InListExpr>())
            .collect();
        if lists.is_empty() || (i > 0 && lists.len() != merged.len()) {
            return None;
        }
        for list in lists {
            if list.negated() {
                return None;
            }
            let at = merged.iter().position(|m| m.key.as_ref() == list.expr().as_ref());
            let entry = match at {
                Some(at) => &mut merged[at],
                None if i == 0 => {
                    merged.push(Merged { key: list.expr(), seen: HashSet::new(), values: Vec::new() });
                    merged.last_mut()?
                }
                None => return None,
            };
            for item in list.list() {
                let value = item.downcast_ref::<Literal>()?.value();
                if entry.seen.insert(value) {
                    entry.values.push(value.clone());
                }
            }
        }
    }
    let and = |a: Arc<dyn PhysicalExpr>, b: Arc<dyn PhysicalExpr>| -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(a, Operator::And, b))
    };
    let mut conjuncts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for Merged { key, values, .. } in &merged {
        let array = ScalarValue::iter_to_array(values.iter().cloned()).ok()?;
        let list: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new_from_array(Arc::clone(key), array, false, schema).ok()?);
        if !key.data_type(schema).ok()?.is_nested() {
            let ordered = |a: &&ScalarValue, b: &&ScalarValue| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
            let present = || values.iter().filter(|value| !value.is_null());
            if let (Some(min), Some(max)) = (present().min_by(ordered), present().max_by(ordered)) {
                let bound = |op, value: &ScalarValue| -> Arc<dyn PhysicalExpr> {
                    Arc::new(BinaryExpr::new(Arc::clone(key), op, lit(value.clone())))
                };
                conjuncts.push(bound(Operator::GtEq, min));
                conjuncts.push(bound(Operator::LtEq, max));
            }
        }
        conjuncts.push(list);
    }
    conjuncts.into_iter().reduce(and)
}

/// A filter from other stages as a scan evaluates it: its long key lists as [`KeySetExpr`]s.
fn for_scans(filter: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    use datafusion::physical_expr::expressions::InListExpr;
    let rewritten = filter.transform_up(|expr| {
        let Some(list) = expr.downcast_ref::<InListExpr>() else { return Ok(Transformed::no(expr)) };
        if list.negated() || list.len() <= SHORT_LIST {
            return Ok(Transformed::no(expr));
        }
        Ok(KeySetExpr::try_new(list)?.map_or(Transformed::no(expr), |set| Transformed::yes(Arc::new(set) as _)))
    })?;
    Ok(rewritten.data)
}

/// `key IN (keys)` for a long list of keys from another stage: what DataFusion's `InListExpr`
/// computes (a hash-set lookup a row), with the list out of the expression tree. DataFusion
/// walks a dynamic filter's whole tree on every batch it evaluates it for (to map its columns)
/// and analyses every listed literal whenever a Parquet scan opens a file (literal
/// guarantees, pruning predicates); with thousands of keys that costs more than the lookups.
/// Here the tree is the key alone, and pruning sees no list (the key range beside it prunes).
#[derive(Debug)]
pub struct KeySetExpr {
    key: Arc<dyn PhysicalExpr>,
    /// The list over column 0 of [`Self::input`].
    set: Arc<dyn PhysicalExpr>,
    input: Arc<Schema>,
    len: usize,
}

impl KeySetExpr {
    fn try_new(list: &datafusion::physical_expr::expressions::InListExpr) -> Result<Option<Self>> {
        use datafusion::common::ScalarValue;
        use datafusion::physical_expr::expressions::{Column, InListExpr, Literal};
        let values: Option<Vec<ScalarValue>> =
            list.list().iter().map(|item| item.downcast_ref::<Literal>().map(|l| l.value().clone())).collect();
        let Some(values) = values else { return Ok(None) };
        let array = ScalarValue::iter_to_array(values)?;
        let input = Arc::new(Schema::new(vec![Field::new("key", array.data_type().clone(), true)]));
        let set = InListExpr::try_new_from_array(Arc::new(Column::new("key", 0)), array, false, &input)?;
        Ok(Some(Self { key: Arc::clone(list.expr()), set: Arc::new(set), input, len: list.len() }))
    }
}

impl PartialEq for KeySetExpr {
    fn eq(&self, other: &Self) -> bool {
        self.key.as_ref() == other.key.as_ref() && Arc::ptr_eq(&self.set, &other.set)
    }
}

impl Eq for KeySetExpr {}

impl std::hash::Hash for KeySetExpr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        (Arc::as_ptr(&self.set) as *const () as usize).hash(state);
    }
}

impl fmt::Display for KeySetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} IN ({} keys)", self.key, self.len)
    }
}

impl PhysicalExpr for KeySetExpr {
    fn data_type(&self, _: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _: &Schema) -> Result<bool> {
        Ok(true)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<datafusion::logical_expr::ColumnarValue> {
        let keys = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        self.set.evaluate(&RecordBatch::try_new_with_options(Arc::clone(&self.input), vec![keys], &options)?)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.key]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [key] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a key set has one child, its key".into()))?;
        Ok(Arc::new(Self { key, set: Arc::clone(&self.set), input: Arc::clone(&self.input), len: self.len }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A filter that keeps at least the rows `expr` keeps, made of what DataFusion's codec can
/// write and what holds in every task: a conjunct that cannot travel (a lookup into the
/// join's hash table) or a key list longer than [`SHORT_LIST`] is dropped, and a partitioned
/// join's routing of rows to its partitions' filters (`CASE hash(key) % n WHEN p THEN
/// filter_p ...`, valid only for the partition numbers of the task that built it) becomes
/// `filter_0 OR filter_1 OR ...`, their key lists merged into one.
fn relax(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Arc<dyn PhysicalExpr> {
    let relaxed = relax_within(expr, schema, 0);
    let parts: Vec<_> = datafusion::physical_expr::utils::split_disjunction(&relaxed).into_iter().cloned().collect();
    merge_key_lists(&parts, schema).unwrap_or(relaxed)
}

fn relax_within(expr: &Arc<dyn PhysicalExpr>, schema: &Schema, depth: usize) -> Arc<dyn PhysicalExpr> {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, InListExpr};
    if depth > MAX_RELAX_DEPTH {
        return lit(true);
    }
    let relax = |expr: &Arc<dyn PhysicalExpr>| relax_within(expr, schema, depth + 1);
    if let Some(case) = expr.downcast_ref::<CaseExpr>() {
        let mut branches: Vec<_> = case.when_then_expr().iter().map(|(_, then)| relax(then)).collect();
        branches.extend(case.else_expr().map(relax));
        return any_of(branches, schema);
    }
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let (left, right) = (relax(binary.left()), relax(binary.right()));
        match binary.op() {
            Operator::And if is_literal(&left, true) => return right,
            Operator::And if is_literal(&right, true) => return left,
            Operator::And => return Arc::new(BinaryExpr::new(left, Operator::And, right)),
            Operator::Or => return any_of(vec![left, right], schema),
            _ => {}
        }
    }
    if expr.downcast_ref::<InListExpr>().is_some_and(|list| list.len() > SHORT_LIST) {
        return lit(true);
    }
    match serialize_physical_expr(expr, &DefaultPhysicalExtensionCodec {}) {
        Ok(_) => expr.clone(),
        Err(_) => lit(true),
    }
}

/// A complete join filter as task `task` of `tasks` sends it to `receivers` workers, encoded:
/// [`relax`]ed, with a list of the keys the task read on its build side (`collected`, one
/// array a key) where DataFusion listed none; without that list where it would make the
/// filter larger than [`MAX_FILTER_BYTES`], or the traffic larger than [`MAX_LIST_TRAFFIC`].
fn snapshot(
    filter: &DynamicFilterPhysicalExpr,
    schema: &Schema,
    query_id: &str,
    expression_id: u64,
    (task, tasks): (u32, u32),
    receivers: usize,
    collected: Option<Vec<ArrayRef>>,
) -> Result<PublishedFilter> {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr};
    let codec = DefaultPhysicalExtensionCodec {};
    let relaxed = relax(&filter.current()?, schema);
    let probe_keys = PhysicalExpr::children(filter);
    let keys = probe_keys.iter().map(|key| serialize_physical_expr(key, &codec)).collect::<Result<Vec<_>>>()?;
    let publish = |expr: &Arc<dyn PhysicalExpr>| -> Result<PublishedFilter> {
        Ok(PublishedFilter {
            query_id: query_id.to_string(),
            expression_id,
            schema: Some(schema.try_into()?),
            expr: Some(serialize_physical_expr(expr, &codec)?),
            keys: keys.clone(),
            task,
            tasks,
        })
    };
    // The task's keys are listed where DataFusion listed none, and where the filter says
    // which rows the build side rules out: not where it is `true` (a partition's build side
    // is unknown: its stream was dropped), nor where it keeps probe rows with a NULL key (a
    // null-aware anti join, or a join on nulls being equal with a NULL among the build keys).
    let mut listed = is_literal(&relaxed, true) || is_literal(&relaxed, false);
    relaxed.apply(|expr| {
        use datafusion::physical_expr::expressions::IsNullExpr;
        listed |= expr.is::<InListExpr>() || expr.is::<IsNullExpr>();
        Ok(if listed { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })?;
    let lists = match collected {
        Some(columns) if !listed && columns.len() == probe_keys.len() => probe_keys
            .iter()
            .zip(columns)
            .map(|(key, values)| {
                InListExpr::try_new_from_array(Arc::clone(key), values, false, schema)
                    .map(|list| Arc::new(list) as Arc<dyn PhysicalExpr>)
            })
            .collect::<Result<Vec<_>>>()
            .ok(),
        _ => None,
    };
    if let Some(lists) = lists {
        let with_lists = lists.into_iter().fold(Arc::clone(&relaxed), |filter, list| {
            Arc::new(BinaryExpr::new(filter, Operator::And, list)) as Arc<dyn PhysicalExpr>
        });
        let with_lists = merge_key_lists(&[with_lists.clone()], schema).unwrap_or(with_lists);
        let published = publish(&with_lists)?;
        let size = prost::Message::encoded_len(&published);
        if size <= MAX_FILTER_BYTES && size.saturating_mul(receivers.max(1)) <= MAX_LIST_TRAFFIC {
            return Ok(published);
        }
    }
    let published = publish(&relaxed)?;
    if prost::Message::encoded_len(&published) > MAX_FILTER_BYTES {
        return Ok(PublishedFilter::none(query_id, expression_id, (task, tasks)));
    }
    Ok(published)
}

/// Sends the filter of the hash join above it to the statement's workers once the join's
/// build side is done; passes its input's rows through. It is the join's probe child, so
/// the join finds a consumer of its filter in its probe side and computes it.
#[derive(Debug)]
pub struct JoinFilterExportExec {
    input: Arc<dyn ExecutionPlan>,
    filter: Arc<dyn PhysicalExpr>,
    targets: Vec<String>,
    /// The join is partitioned: each task sends its part of the filter.
    partitioned: bool,
    publishing: Mutex<Weak<SpawnedTask<()>>>,
}

impl JoinFilterExportExec {
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        filter: Arc<dyn PhysicalExpr>,
        targets: Vec<String>,
        partitioned: bool,
    ) -> Result<Self> {
        if !filter.is::<DynamicFilterPhysicalExpr>() || filter.expression_id().is_none() {
            return Err(DataFusionError::Internal("a join filter export needs the join's dynamic filter".into()));
        }
        Ok(Self { input, filter, targets, partitioned, publishing: Mutex::new(Weak::new()) })
    }

    pub fn partitioned(&self) -> bool {
        self.partitioned
    }

    pub fn filter(&self) -> &Arc<dyn PhysicalExpr> {
        &self.filter
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The task that publishes the filter, started by the first partition; it ends (or is
    /// aborted) with the last partition's stream.
    fn publishing(&self, exchange: &FilterExchange, context: &Arc<TaskContext>) -> Arc<SpawnedTask<()>> {
        let mut publishing = self.publishing.lock();
        if let Some(task) = publishing.upgrade() {
            return task;
        }
        let part = match self.partitioned {
            true => {
                let task = datafusion_distributed::DistributedTaskContext::from_ctx(context);
                (task.task_index as u32, task.task_count as u32)
            }
            false => (0, 1),
        };
        let filter = self.filter.clone();
        let schema = self.input.schema();
        let targets = self.targets.clone();
        let exchange = exchange.clone();
        let task = Arc::new(SpawnedTask::spawn(async move {
            let Some(dynamic) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() else { return };
            let Some(id) = filter.expression_id() else { return };
            dynamic.wait_complete().await;
            let collected = exchange.build_keys(id).values();
            let published = snapshot(dynamic, &schema, &exchange.query_id, id, part, targets.len(), collected)
                .unwrap_or_else(|error| {
                    tracing::debug!(%error, "a join filter could not be encoded; its scans start unfiltered");
                    PublishedFilter::none(&exchange.query_id, id, part)
                });
            let sends = targets.iter().map(|url| {
                let send = exchange.publisher.publish(url, published.clone());
                async move {
                    match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::warn!(%error, url, "a join filter did not reach a worker"),
                        Err(_) => tracing::warn!(url, "sending a join filter to a worker timed out"),
                    }
                }
            });
            futures::future::join_all(sends).await;
        }));
        *publishing = Arc::downgrade(&task);
        task
    }
}

impl DisplayAs for JoinFilterExportExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = if self.partitioned { ", per task" } else { "" };
        write!(f, "JoinFilterExportExec: workers={}{parts}", self.targets.len())
    }
}

impl ExecutionPlan for JoinFilterExportExec {
    fn name(&self) -> &str {
        "JoinFilterExportExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.filter)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(children, self.name())?;
        Ok(Arc::new(Self::try_new(input, self.filter.clone(), self.targets.clone(), self.partitioned)?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let exchange = context.session_config().get_extension::<FilterExchange>();
        let publishing = exchange.map(|exchange| self.publishing(&exchange, &context));
        let stream = self.input.execute(partition, context)?;
        let Some(publishing) = publishing else { return Ok(stream) };
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map(move |batch| {
                let _publishing = &publishing;
                batch
            }),
        )))
    }
}

/// Lists the keys of the rows a hash join reads on its build side (its `keys`, over its
/// input), for the filter the join publishes to other stages ([`BuildKeys`]); passes the rows
/// through. It is the join's build child, in a task whose session has a [`FilterExchange`].
#[derive(Debug)]
pub struct JoinKeysExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The join's dynamic filter's expression id.
    id: u64,
}

impl JoinKeysExec {
    /// Fails for a key that its input cannot evaluate (a column it does not have).
    pub fn try_new(input: Arc<dyn ExecutionPlan>, keys: Vec<Arc<dyn PhysicalExpr>>, id: u64) -> Result<Self> {
        let schema = input.schema();
        for key in &keys {
            key.data_type(&schema)?;
        }
        Ok(Self { input, keys, id })
    }

    pub fn keys(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.keys
    }

    pub fn id(&self) -> u64 {
        self.id
    }
}

impl DisplayAs for JoinKeysExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|key| key.to_string()).collect();
        write!(f, "JoinKeysExec: keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for JoinKeysExec {
    fn name(&self) -> &str {
        "JoinKeysExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for key in &self.keys {
            if f(key)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(children, self.name())?;
        Ok(Arc::new(Self::try_new(input, self.keys.clone(), self.id)?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let exchange = context.session_config().get_extension::<FilterExchange>();
        let stream = self.input.execute(partition, context)?;
        let Some(exchange) = exchange else { return Ok(stream) };
        let collected = exchange.build_keys(self.id);
        let keys = self.keys.clone();
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map(move |batch| {
                // Once there are too many, the build side's further rows cost nothing here.
                if let (Ok(batch), false) = (&batch, collected.too_many()) {
                    let rows = batch.num_rows();
                    collected.add(keys.iter().map(|key| key.evaluate(batch)?.into_array(rows)).collect());
                }
                batch
            }),
        )))
    }
}

/// Starts the scan below it once the join filters it was promised from other stages have
/// arrived (or after [`WAIT_FOR_FILTERS`]).
#[derive(Debug)]
pub struct JoinFilterWaitExec {
    input: Arc<dyn ExecutionPlan>,
    ids: Vec<u64>,
    /// [`WAIT_FOR_FILTERS`] unless a test says otherwise.
    wait: Duration,
    /// The scan's copies of the awaited filters, registered in the inbox by the first
    /// partition that runs.
    registered: Mutex<Option<Vec<Arc<dyn PhysicalExpr>>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl JoinFilterWaitExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, ids: Vec<u64>) -> Self {
        let metrics = ExecutionPlanMetricsSet::new();
        Self { input, ids, wait: WAIT_FOR_FILTERS, registered: Mutex::new(None), metrics }
    }

    /// Waits at most `wait` for the filters.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The scan's copies of the awaited filters, registered in the inbox (once per task: a
    /// scan's partitions share them).
    fn registered(&self, exchange: &FilterExchange, context: &Arc<TaskContext>) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        let mut registered = self.registered.lock();
        if let Some(filters) = registered.as_ref() {
            return Ok(filters.clone());
        }
        let mut found: HashMap<u64, Arc<dyn PhysicalExpr>> = HashMap::new();
        for (id, filter) in dynamic_filters(&self.input)? {
            if self.ids.contains(&id) {
                found.entry(id).or_insert(filter);
            }
        }
        for (id, filter) in &found {
            if let Err(error) = exchange.inbox.register(&exchange.query_id, *id, filter, context) {
                tracing::warn!(%error, "a scan reads without its join filter");
                if let Some(dynamic) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() {
                    dynamic.mark_complete();
                }
            }
        }
        let filters: Vec<_> = found.into_values().collect();
        *registered = Some(filters.clone());
        Ok(filters)
    }
}

impl DisplayAs for JoinFilterWaitExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinFilterWaitExec: filters={}", self.ids.len())
    }
}

impl ExecutionPlan for JoinFilterWaitExec {
    fn name(&self) -> &str {
        "JoinFilterWaitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(children, self.name())?;
        Ok(Arc::new(Self::new(input, self.ids.clone()).with_wait(self.wait)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let Some(exchange) = context.session_config().get_extension::<FilterExchange>() else {
            return self.input.execute(partition, context);
        };
        let filters = self.registered(&exchange, &context)?;
        let waited = MetricBuilder::new(&self.metrics).subset_time("filter_wait_time", partition);
        let input = self.input.clone();
        let schema = input.schema();
        let wait = self.wait;
        let start = futures::stream::once(async move {
            let timer = waited.timer();
            let waits =
                filters.iter().filter_map(|f| f.downcast_ref::<DynamicFilterPhysicalExpr>()).map(|f| f.wait_complete());
            let _ = tokio::time::timeout(wait, futures::future::join_all(waits)).await;
            timer.done();
            input.execute(partition, context)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, start.try_flatten())))
    }
}

/// Where the planning walk found the producers and consumers of join filters.
#[derive(Default)]
struct Survey {
    /// Filters of hash joins in a stage on the workers: their stage.
    producers: HashMap<u64, usize>,
    /// Scans (by address) with the filters in their predicate, and their stage.
    scans: HashMap<usize, (usize, Vec<u64>)>,
    stages: usize,
}

/// A node's identity while the planning walk's plan is alive (the rewrite keeps it alive,
/// and leaves are not rebuilt before they are looked up).
fn address(node: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(node) as *const () as usize
}

/// The dynamic filters in a scan's predicate.
fn dynamic_filters(scan: &Arc<dyn ExecutionPlan>) -> Result<Vec<(u64, Arc<dyn PhysicalExpr>)>> {
    let scan = scan.downcast_ref::<DistributedLeafExec>().map_or(scan, |leaf| leaf.original());
    let mut filters = Vec::new();
    scan.apply_expressions(&mut |root| {
        root.apply(|expr| {
            if let (Some(id), true) = (expr.expression_id(), expr.is::<DynamicFilterPhysicalExpr>()) {
                filters.push((id, expr.clone()));
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })?;
    Ok(filters)
}

impl Survey {
    fn visit(&mut self, node: &Arc<dyn ExecutionPlan>, stage: usize, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        if node.children().is_empty() {
            let ids: Vec<u64> = dynamic_filters(node)?.into_iter().map(|(id, _)| id).collect();
            if !ids.is_empty() {
                self.scans.insert(address(node), (stage, ids));
            }
            return Ok(());
        }
        if let Some(id) = join_filter(node.as_ref()).and_then(|(filter, _)| filter.expression_id()) {
            if stage != 0 {
                self.producers.insert(id, stage);
            }
        }
        let boundary = node.as_ref().is_network_boundary();
        for child in node.children() {
            let stage = if boundary {
                self.stages += 1;
                self.stages
            } else {
                stage
            };
            self.visit(child, stage, depth + 1)?;
        }
        Ok(())
    }
}

/// The dynamic filter of a hash join, and whether the join is partitioned (each task builds
/// a part of its table).
fn join_filter(node: &dyn ExecutionPlan) -> Option<(Arc<dyn PhysicalExpr>, bool)> {
    let join = node.downcast_ref::<HashJoinExec>()?;
    let partitioned = match join.partition_mode() {
        PartitionMode::CollectLeft => false,
        PartitionMode::Partitioned => true,
        PartitionMode::Auto => return None,
    };
    let filter = join.dynamic_expressions_produced().into_iter().find(|expr| expr.is::<DynamicFilterPhysicalExpr>())?;
    Some((filter, partitioned))
}

/// Connects the hash joins of a distributed plan's worker stages to the scans their filters
/// reach in other stages (see the [module](self)); `targets` are the statement's workers.
pub fn share_join_filters_across_stages(
    plan: Arc<dyn ExecutionPlan>,
    targets: &[String],
) -> Result<Arc<dyn ExecutionPlan>> {
    if targets.is_empty() {
        return Ok(plan);
    }
    let mut survey = Survey::default();
    survey.visit(&plan, 0, 0)?;
    let mut exported: HashSet<u64> = HashSet::new();
    let mut waits: HashMap<usize, Vec<u64>> = HashMap::new();
    for (scan, (stage, ids)) in &survey.scans {
        let awaited: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| survey.producers.get(id).is_some_and(|producer| producer != stage))
            .collect();
        if !awaited.is_empty() {
            exported.extend(awaited.iter().copied());
            waits.insert(*scan, awaited);
        }
    }
    if exported.is_empty() {
        return Ok(plan);
    }
    let rewritten = plan.transform_up(|node| {
        if let Some(ids) = waits.get(&address(&node)) {
            let wait = JoinFilterWaitExec::new(filtering_rows(node)?, ids.clone());
            return Ok(Transformed::yes(Arc::new(wait) as Arc<dyn ExecutionPlan>));
        }
        // A scan with static conjuncts too: the filter above it evaluates the awaited ones.
        if let Some(filter) = node.downcast_ref::<datafusion::physical_plan::filter::FilterExec>() {
            if let Some(wait) = filter.input().downcast_ref::<JoinFilterWaitExec>() {
                let awaited = |id| wait.ids().contains(&id);
                if let Some(filter) = crate::join_filters::with_join_filters(filter, &awaited)? {
                    return Ok(Transformed::yes(filter));
                }
            }
        }
        let Some((filter, partitioned)) = join_filter(node.as_ref()) else { return Ok(Transformed::no(node)) };
        if !filter.expression_id().is_some_and(|id| exported.contains(&id)) {
            return Ok(Transformed::no(node));
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
        let [build, probe] =
            <[_; 2]>::try_from(children).map_err(|_| DataFusionError::Internal("a hash join has two inputs".into()))?;
        let id = filter.expression_id().unwrap_or_default();
        let build_keys = node.downcast_ref::<HashJoinExec>().map(|join| join.on().iter().map(|(key, _)| key.clone()));
        let build = match build_keys {
            Some(keys) => Arc::new(JoinKeysExec::try_new(build, keys.collect(), id)?) as Arc<dyn ExecutionPlan>,
            None => build,
        };
        let probe = Arc::new(JoinFilterExportExec::try_new(probe, filter, targets.to_vec(), partitioned)?);
        Ok(Transformed::yes(replace_children_if_necessary(node, vec![build, probe])?))
    })?;
    Ok(rewritten.data)
}

/// A scan that waits for filters from other stages filters rows with them in the Parquet
/// reader (where its predicate is made of dynamic filters alone; else the `FilterExec` above
/// it does: [`crate::join_filters::with_join_filters`]): the rows they drop would
/// otherwise be decoded and sent to another stage, and a filter that crossed stages holds key
/// ranges and short key lists only, cheap to evaluate per row (unlike a hash-table lookup).
fn filtering_rows(scan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use crate::join_filters::filtering_rows as with_row_filters;
    let Some(leaf) = scan.downcast_ref::<DistributedLeafExec>() else {
        return Ok(with_row_filters(&scan).unwrap_or(scan));
    };
    let Some(original) = with_row_filters(leaf.original()) else { return Ok(scan) };
    let variants: Vec<_> =
        leaf.variants().iter().map(|variant| with_row_filters(variant).unwrap_or_else(|| variant.clone())).collect();
    Ok(Arc::new(DistributedLeafExec::try_new(original, variants)?))
}

/// How the two nodes travel in a stage's plan (see `distributed::FlotillaCodec`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportSpec {
    #[prost(message, optional, tag = "1")]
    pub filter: Option<protobuf::PhysicalExprNode>,
    #[prost(string, repeated, tag = "2")]
    pub targets: Vec<String>,
    #[prost(bool, tag = "3")]
    pub partitioned: bool,
}

/// See [`ExportSpec`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeysSpec {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "2")]
    pub keys: Vec<protobuf::PhysicalExprNode>,
}

/// See [`ExportSpec`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct WaitSpec {
    #[prost(uint64, repeated, tag = "1")]
    pub ids: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Int64Array};
    use datafusion::arrow::datatypes::Field;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{in_list, BinaryExpr, CaseExpr, Column};

    /// The join's probe side has the key at position 2, the scan's file at position 1, and
    /// the batches the Parquet reader filters rows of (the filter's columns only) at 0.
    fn probe_schema() -> Schema {
        let field = |name| Field::new(name, DataType::Int64, false);
        Schema::new(vec![field("x"), field("y"), field("k")])
    }

    fn scan_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false), Field::new("k", DataType::Int64, false)]))
    }

    fn key() -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new("k", 2))
    }

    fn binary(left: Arc<dyn PhysicalExpr>, op: Operator, right: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(left, op, right))
    }

    /// A join's filter, and its id.
    fn producer() -> (Arc<DynamicFilterPhysicalExpr>, u64) {
        let producer = Arc::new(DynamicFilterPhysicalExpr::new(vec![key()], lit(true)));
        let id = producer.expression_id().unwrap();
        (producer, id)
    }

    /// The join's build side is done: its filter is `expr`.
    fn finish(producer: &DynamicFilterPhysicalExpr, expr: Arc<dyn PhysicalExpr>) {
        producer.update(expr).unwrap();
        producer.mark_complete();
    }

    /// What a join that built keys `keys` publishes: their range and list.
    fn keys_filter(keys: &[i64]) -> Arc<dyn PhysicalExpr> {
        let (min, max) = (*keys.iter().min().unwrap(), *keys.iter().max().unwrap());
        let bounds =
            binary(binary(key(), Operator::GtEq, lit(min)), Operator::And, binary(key(), Operator::LtEq, lit(max)));
        let list = in_list(key(), keys.iter().map(|k| lit(*k)).collect(), &false, &probe_schema()).unwrap();
        binary(bounds, Operator::And, list)
    }

    /// The scan's copy of the producer's filter as a worker decodes it from the stage's plan
    /// (sent before the build side is done): same id, its own state, the key mapped to the
    /// scan's column.
    fn scan_copy(producer: &Arc<DynamicFilterPhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        let pushed = (producer.clone() as Arc<dyn PhysicalExpr>)
            .with_new_children(vec![Arc::new(Column::new("k", 1)) as Arc<dyn PhysicalExpr>])
            .unwrap();
        let codec = DefaultPhysicalExtensionCodec {};
        let proto = serialize_physical_expr(&pushed, &codec).unwrap();
        let decoded = parse_physical_expr(&proto, &TaskContext::default(), &scan_schema(), &codec).unwrap();
        assert_eq!(decoded.expression_id(), producer.expression_id());
        decoded
    }

    fn keys_batch(schema: Arc<Schema>) -> RecordBatch {
        let mut columns: Vec<datafusion::arrow::array::ArrayRef> = (1..schema.fields().len())
            .map(|_| Arc::new(Int64Array::from(vec![0; 4])) as datafusion::arrow::array::ArrayRef)
            .collect();
        columns.push(Arc::new(Int64Array::from(vec![1, 3, 5, 7])));
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// Which of keys 1, 3, 5, 7 the scan's copy keeps, on the scan's rows and on the rows
    /// the Parquet reader filters (its row filter reads a copy derived from the scan's).
    fn kept(copy: &Arc<dyn PhysicalExpr>) -> Vec<bool> {
        let evaluate = |expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch| -> Vec<bool> {
            let kept = expr.evaluate(batch).unwrap().into_array(4).unwrap();
            kept.as_any().downcast_ref::<BooleanArray>().unwrap().iter().map(|b| b.unwrap()).collect()
        };
        let scanned = evaluate(copy, &keys_batch(scan_schema()));
        let row_filter = copy.clone().with_new_children(vec![Arc::new(Column::new("k", 0))]).unwrap();
        let only_key = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        assert_eq!(evaluate(&row_filter, &keys_batch(only_key)), scanned);
        scanned
    }

    fn complete(copy: &Arc<dyn PhysicalExpr>) -> bool {
        let dynamic = copy.downcast_ref::<DynamicFilterPhysicalExpr>().unwrap();
        futures::FutureExt::now_or_never(dynamic.wait_complete()).is_some()
    }

    #[test]
    fn a_filter_reaches_the_scans_waiting_for_it_and_those_that_come_later() {
        let (producer, id) = producer();
        let early = scan_copy(&producer);
        let (late, other) = (scan_copy(&producer), scan_copy(&producer));
        finish(&producer, keys_filter(&[3, 7]));
        let published = snapshot(&producer, &probe_schema(), "q1", id, (0, 1), 2, None).unwrap();
        let ctx = Arc::new(TaskContext::default());
        let inbox = FilterInbox::default();
        // A scan that registered first is updated when the filter arrives.
        inbox.register("q1", id, &early, &ctx).unwrap();
        assert!(!complete(&early));
        assert_eq!(kept(&early), vec![true; 4]);
        inbox.deliver(published.clone()).unwrap();
        assert!(complete(&early));
        assert_eq!(kept(&early), vec![false, true, false, true]);
        // Another task's copy registered after the filter arrived gets it at once.
        inbox.register("q1", id, &late, &ctx).unwrap();
        assert!(complete(&late));
        assert_eq!(kept(&late), vec![false, true, false, true]);
        // The same filter from the join's other tasks is ignored; another query's scans are
        // not touched.
        inbox.deliver(published.clone()).unwrap();
        inbox.register("q2", id, &other, &ctx).unwrap();
        assert!(!complete(&other));
        assert_eq!(inbox.len(), 2);
    }

    /// A partitioned join's tasks each know their partitions' keys, routed by partition
    /// numbers that mean nothing elsewhere: each sends its partitions' filters as one
    /// disjunction, and the scan uses them once every task's has come.
    #[test]
    fn a_partitioned_joins_filter_is_whole_when_every_task_has_sent_its_part() {
        let routed = |filters: Vec<Arc<dyn PhysicalExpr>>| -> Arc<dyn PhysicalExpr> {
            let routing = binary(key(), Operator::Modulo, lit(filters.len() as i64));
            let branches = filters.into_iter().enumerate().map(|(p, filter)| (lit(p as i64), filter)).collect();
            Arc::new(CaseExpr::try_new(Some(routing), branches, Some(lit(false))).unwrap())
        };
        let inbox = FilterInbox::default();
        let ctx = Arc::new(TaskContext::default());
        let (task_0, id) = producer();
        let (task_1, _) = producer();
        let copy = scan_copy(&task_0);
        inbox.register("q", id, &copy, &ctx).unwrap();
        // Task 0 built key 3 (partition 1 of its 2); task 1 built key 7 and nothing else.
        finish(&task_0, routed(vec![lit(false), keys_filter(&[3])]));
        finish(&task_1, routed(vec![keys_filter(&[7]), lit(false)]));
        let part_0 = snapshot(&task_0, &probe_schema(), "q", id, (0, 2), 2, None).unwrap();
        let part_1 = snapshot(&task_1, &probe_schema(), "q", id, (1, 2), 2, None).unwrap();
        inbox.deliver(part_1.clone()).unwrap();
        inbox.deliver(part_1).unwrap();
        assert!(!complete(&copy), "one part of two");
        inbox.deliver(part_0).unwrap();
        assert!(complete(&copy));
        assert_eq!(kept(&copy), vec![false, true, false, true]);
        // With a part for each of 256 partitions, through the wire format.
        let (wide, id) = producer();
        let copy = scan_copy(&wide);
        inbox.register("q", id, &copy, &ctx).unwrap();
        let mut partitions: Vec<_> = (0..256).map(|p| keys_filter(&[1000 + p])).collect();
        partitions[100] = keys_filter(&[3]);
        partitions[200] = keys_filter(&[7]);
        finish(&wide, routed(partitions));
        let sent = prost::Message::encode_to_vec(&snapshot(&wide, &probe_schema(), "q", id, (0, 1), 2, None).unwrap());
        inbox.deliver(prost::Message::decode(sent.as_slice()).expect("decodes as the service would")).unwrap();
        assert_eq!(kept(&copy), vec![false, true, false, true]);
        // A part that claims another task count than the first is ignored; a task number out
        // of range is refused.
        let (task_0, id) = producer();
        let copy = scan_copy(&task_0);
        inbox.register("q", id, &copy, &ctx).unwrap();
        finish(&task_0, keys_filter(&[3]));
        let part = snapshot(&task_0, &probe_schema(), "q", id, (0, 2), 2, None).unwrap();
        inbox.deliver(part.clone()).unwrap();
        inbox.deliver(PublishedFilter { task: 1, tasks: 3, ..part.clone() }).unwrap();
        assert!(!complete(&copy));
        assert_eq!(inbox.deliver(PublishedFilter { task: 2, ..part.clone() }), Err(InboxError::BadTask));
        assert_eq!(inbox.deliver(PublishedFilter { tasks: MAX_TASKS + 1, ..part }), Err(InboxError::BadTask));
    }

    #[test]
    fn what_cannot_travel_is_dropped_and_a_filter_that_cannot_be_used_only_ends_the_wait() {
        let ctx = Arc::new(TaskContext::default());
        let inbox = FilterInbox::default();
        // A filter that reads another column than the join's key, one that is not a predicate,
        // one without a schema: the scan stops waiting and reads everything.
        let (other_column, id) = producer();
        let copy = scan_copy(&other_column);
        finish(&other_column, binary(Arc::new(Column::new("x", 0)), Operator::Gt, lit(1i64)));
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(snapshot(&other_column, &probe_schema(), "q", id, (0, 1), 2, None).unwrap()).unwrap();
        assert!(complete(&copy));
        assert_eq!(kept(&copy), vec![true; 4]);

        let (producer_, id) = producer();
        let copy = scan_copy(&producer_);
        finish(&producer_, keys_filter(&[3, 7]));
        let mut not_a_predicate = snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, None).unwrap();
        not_a_predicate.expr = Some(serialize_physical_expr(&key(), &DefaultPhysicalExtensionCodec {}).unwrap());
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(not_a_predicate).unwrap();
        assert!(complete(&copy));
        assert_eq!(kept(&copy), vec![true; 4]);

        let (producer_, id) = producer();
        let copy = scan_copy(&producer_);
        finish(&producer_, keys_filter(&[3, 7]));
        let mut no_schema = snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, None).unwrap();
        no_schema.schema = None;
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(no_schema).unwrap();
        assert!(complete(&copy));
        assert_eq!(kept(&copy), vec![true; 4]);

        // A conjunct DataFusion cannot encode (the join's hash-table lookup) is dropped; the
        // key range still travels.
        let (producer_, id) = producer();
        let copy = scan_copy(&producer_);
        let bounds = binary(key(), Operator::GtEq, lit(3i64));
        finish(&producer_, binary(bounds, Operator::And, Arc::new(Opaque)));
        assert!(serialize_physical_expr(&producer_.current().unwrap(), &DefaultPhysicalExtensionCodec {}).is_err());
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, None).unwrap()).unwrap();
        assert_eq!(kept(&copy), vec![false, true, true, true]);
    }

    #[test]
    fn the_inbox_refuses_bad_query_ids_and_stays_bounded() {
        let (producer_, id) = producer();
        let copy = scan_copy(&producer_);
        finish(&producer_, keys_filter(&[3, 7]));
        let published = snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, None).unwrap();
        let inbox = FilterInbox::default();
        for bad in [String::new(), "q".repeat(MAX_QUERY_ID + 1)] {
            let filter = PublishedFilter { query_id: bad, ..published.clone() };
            assert_eq!(inbox.deliver(filter), Err(InboxError::BadQueryId));
        }
        for i in 0..MAX_INBOX_ENTRIES as u64 {
            inbox.deliver(PublishedFilter { expression_id: i, ..published.clone() }).unwrap();
        }
        let one_more = PublishedFilter { expression_id: u64::MAX, ..published.clone() };
        assert_eq!(inbox.deliver(one_more), Err(InboxError::Full));
        let ctx = Arc::new(TaskContext::default());
        assert_eq!(inbox.register("another", id, &copy, &ctx), Err(InboxError::Full));
        assert_eq!(inbox.len(), MAX_INBOX_ENTRIES);
    }

    /// The key lists in a filter (`InListExpr`s) and their lengths.
    fn lists(expr: &Arc<dyn PhysicalExpr>) -> Vec<usize> {
        use datafusion::physical_expr::expressions::InListExpr;
        let mut lists = Vec::new();
        expr.apply(|e| {
            if let Some(list) = e.downcast_ref::<InListExpr>() {
                lists.push(list.len());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        lists
    }

    fn decoded(published: &PublishedFilter) -> Arc<dyn PhysicalExpr> {
        decode(published, &TaskContext::default()).unwrap().0
    }

    /// A partitioned join's filter routes each row to its partition's range and list; what
    /// travels is one range and one list of every partition's keys (each once), and the
    /// parts of the join's tasks become one list again where the scan uses them.
    #[test]
    fn the_key_lists_of_partitions_and_tasks_merge_into_one() {
        let routed = |filters: Vec<Arc<dyn PhysicalExpr>>| -> Arc<dyn PhysicalExpr> {
            let routing = binary(key(), Operator::Modulo, lit(filters.len() as i64));
            let branches = filters.into_iter().enumerate().map(|(p, filter)| (lit(p as i64), filter)).collect();
            Arc::new(CaseExpr::try_new(Some(routing), branches, Some(lit(false))).unwrap())
        };
        let (task_0, id) = producer();
        let (task_1, _) = producer();
        let copy = scan_copy(&task_0);
        // Routed by `k % partitions`, as the rows are.
        finish(&task_0, routed(vec![keys_filter(&[3, 21, 3]), lit(false), keys_filter(&[11, 5])]));
        finish(&task_1, routed(vec![lit(false), keys_filter(&[3, 7])]));
        let part_0 = snapshot(&task_0, &probe_schema(), "q", id, (0, 2), 2, None).unwrap();
        let part_1 = snapshot(&task_1, &probe_schema(), "q", id, (1, 2), 2, None).unwrap();
        // Keys 3, 5, 11, 21 in one list, within [3, 21].
        let travels = decoded(&part_0);
        assert_eq!(lists(&travels), vec![4]);
        let rows = |expr: &Arc<dyn PhysicalExpr>, keys: Vec<i64>| -> Vec<bool> {
            let batch = RecordBatch::try_new(
                Arc::new(probe_schema()),
                vec![
                    Arc::new(Int64Array::from(vec![0; keys.len()])),
                    Arc::new(Int64Array::from(vec![0; keys.len()])),
                    Arc::new(Int64Array::from(keys.clone())),
                ],
            )
            .unwrap();
            let kept = expr.evaluate(&batch).unwrap().into_array(keys.len()).unwrap();
            kept.as_any().downcast_ref::<BooleanArray>().unwrap().iter().map(|b| b == Some(true)).collect()
        };
        let keys = vec![2, 3, 4, 5, 11, 20, 21, 22];
        assert_eq!(rows(&travels, keys.clone()), rows(&task_0.current().unwrap(), keys.clone()));
        assert_eq!(rows(&travels, keys.clone()), vec![false, true, false, true, true, false, true, false]);
        // Where the scan applies both parts: one list of 3, 5, 7, 11, 21.
        let ctx = Arc::new(TaskContext::default());
        let inbox = FilterInbox::default();
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(part_0).unwrap();
        inbox.deliver(part_1).unwrap();
        let applied = copy.downcast_ref::<DynamicFilterPhysicalExpr>().unwrap().current().unwrap();
        assert_eq!(lists(&applied), vec![5]);
        assert_eq!(kept(&copy), vec![false, true, true, true]);
        // Parts that are not all lists (a range alone, as a join too large to list sends) stay
        // a disjunction.
        let (only_range, id) = producer();
        let (listed, _) = producer();
        let copy = scan_copy(&only_range);
        finish(&only_range, binary(key(), Operator::GtEq, lit(7i64)));
        finish(&listed, keys_filter(&[1]));
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(snapshot(&only_range, &probe_schema(), "q", id, (0, 2), 2, None).unwrap()).unwrap();
        inbox.deliver(snapshot(&listed, &probe_schema(), "q", id, (1, 2), 2, None).unwrap()).unwrap();
        assert_eq!(kept(&copy), vec![true, false, false, true]);
    }

    /// Lists that would make a filter too large, or its traffic to every worker too large,
    /// stay home: the range travels.
    #[test]
    fn long_lists_too_large_to_send_travel_as_their_range() {
        let (producer_, id) = producer();
        let copy = scan_copy(&producer_);
        // Keys none of which the scan has: had the list travelled, the scan would keep no row.
        let many: Vec<i64> = (1..600_000).map(|k| k * 1_000_000_007).collect();
        let bounds = binary(key(), Operator::GtEq, lit(1_000_000_007i64));
        finish(&producer_, binary(bounds, Operator::And, Arc::new(Opaque)));
        let collected = Some(vec![Arc::new(Int64Array::from(many)) as ArrayRef]);
        let published = snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, collected).unwrap();
        assert!(prost::Message::encoded_len(&published) < 1024);
        assert!(lists(&decoded(&published)).is_empty());
        let inbox = FilterInbox::default();
        let ctx = Arc::new(TaskContext::default());
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(published).unwrap();
        assert!(complete(&copy));
        assert_eq!(kept(&copy), vec![false; 4]);
        // A join that read 50,000 keys on its build side (too many for DataFusion to list: it
        // publishes a lookup into its hash table) sends them, to two workers; not to a hundred.
        let (producer_, id) = producer();
        let copy = scan_copy(&producer_);
        let read: Vec<i64> = (0..50_000).map(|k| k * 2 + 1).chain([3, 3]).collect();
        let bounds = binary(key(), Operator::GtEq, lit(1i64));
        finish(&producer_, binary(bounds, Operator::And, Arc::new(Opaque)));
        let collected = || Some(vec![Arc::new(Int64Array::from(read.clone())) as ArrayRef]);
        let to_two = snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, collected()).unwrap();
        assert_eq!(lists(&decoded(&to_two)), vec![50_000], "each key once");
        assert!(prost::Message::encoded_len(&to_two) * 100 > MAX_LIST_TRAFFIC);
        let to_hundred = snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 100, collected()).unwrap();
        assert!(lists(&decoded(&to_hundred)).is_empty());
        // The scan evaluates the long list as a key set, outside the expression's tree.
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(to_two).unwrap();
        let applied = copy.downcast_ref::<DynamicFilterPhysicalExpr>().unwrap().current().unwrap();
        assert!(lists(&applied).is_empty(), "{applied}");
        assert!(applied.to_string().contains("IN (50000 keys)"), "{applied}");
        assert_eq!(kept(&copy), vec![true, true, true, true]);
        let (producer_, id) = producer();
        let copy = scan_copy(&producer_);
        finish(&producer_, binary(key(), Operator::GtEq, lit(1i64)));
        let few_odd: Vec<i64> = (0..1_000).map(|k| k * 4 + 3).collect();
        let collected = Some(vec![Arc::new(Int64Array::from(few_odd)) as ArrayRef]);
        inbox.register("q", id, &copy, &ctx).unwrap();
        inbox.deliver(snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, collected).unwrap()).unwrap();
        assert_eq!(kept(&copy), vec![false, true, false, true]);
    }

    /// A filter that keeps probe rows with a NULL key (a null-aware anti join's), or says
    /// nothing (a partition's build side is unknown), gets no list of the keys read: the list
    /// would drop those rows.
    #[test]
    fn no_key_list_where_the_filter_keeps_null_keys_or_knows_nothing() {
        use datafusion::physical_expr::expressions::IsNullExpr;
        let collected = || Some(vec![Arc::new(Int64Array::from((0..1_000).collect::<Vec<i64>>())) as ArrayRef]);
        let bounded = binary(binary(key(), Operator::GtEq, lit(0i64)), Operator::And, Arc::new(Opaque));
        let null_aware = binary(Arc::new(IsNullExpr::new(key())), Operator::Or, bounded.clone());
        for (filter, listed) in [(bounded, true), (null_aware, false), (lit(true), false)] {
            let (producer_, id) = producer();
            finish(&producer_, filter.clone());
            let published = snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, collected()).unwrap();
            assert_eq!(!lists(&decoded(&published)).is_empty(), listed, "{filter}");
        }
    }

    /// A task lists the keys its join read on its build side, up to a bound.
    #[test]
    fn build_keys_are_listed_up_to_a_bound() {
        let keys = |values: Vec<i64>| Ok(vec![Arc::new(Int64Array::from(values)) as ArrayRef]);
        let listed = BuildKeys::default();
        assert!(listed.values().is_none(), "nothing read");
        listed.add(keys(vec![1, 2]));
        listed.add(keys(vec![2, 3]));
        let values = listed.values().unwrap();
        assert_eq!(values[0].as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec(), vec![1, 2, 2, 3]);
        listed.add(keys(vec![0; MAX_COLLECTED_KEYS]));
        assert!(listed.values().is_none(), "too many");
        assert!(listed.too_many(), "the node stops evaluating keys");
        listed.add(keys(vec![1]));
        assert!(listed.values().is_none(), "stays too many");
        let failed = BuildKeys::default();
        failed.add(Err(DataFusionError::Execution("a key that cannot be evaluated".into())));
        failed.add(keys(vec![1]));
        assert!(failed.values().is_none());
    }

    /// A predicate DataFusion's codec cannot write (as the join's hash-table lookup).
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Opaque;

    impl fmt::Display for Opaque {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "opaque")
        }
    }

    impl PhysicalExpr for Opaque {
        fn data_type(&self, _: &Schema) -> Result<DataType> {
            Ok(DataType::Boolean)
        }

        fn nullable(&self, _: &Schema) -> Result<bool> {
            Ok(false)
        }

        fn evaluate(&self, _: &RecordBatch) -> Result<datafusion::logical_expr::ColumnarValue> {
            Ok(datafusion::logical_expr::ColumnarValue::Scalar(true.into()))
        }

        fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
            Vec::new()
        }

        fn with_new_children(self: Arc<Self>, _: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
            Ok(self)
        }

        fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "opaque")
        }
    }

    #[derive(Debug)]
    struct Nowhere;

    impl FilterPublisher for Nowhere {
        fn publish(&self, _: &str, _: PublishedFilter) -> BoxFuture<'static, Result<()>> {
            Box::pin(async { Err(DataFusionError::Execution("nowhere".into())) })
        }
    }

    #[tokio::test]
    async fn a_scan_starts_when_its_filter_comes_or_without_one_that_never_does() {
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::physical_plan::filter::FilterExec;
        use datafusion::prelude::SessionConfig;
        let inbox = Arc::new(FilterInbox::default());
        let exchange = FilterExchange::new("q".into(), inbox.clone(), Arc::new(Nowhere));
        let ctx = Arc::new(
            TaskContext::default().with_session_config(SessionConfig::new().with_extension(Arc::new(exchange))),
        );
        let scan = |copy: Arc<dyn PhysicalExpr>| {
            let rows =
                MemorySourceConfig::try_new_exec(&[vec![keys_batch(scan_schema())]], scan_schema(), None).unwrap();
            Arc::new(FilterExec::try_new(copy, rows).unwrap()) as Arc<dyn ExecutionPlan>
        };
        let keys = |batches: Vec<RecordBatch>| -> Vec<i64> {
            batches
                .iter()
                .flat_map(|b| b.column(1).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
                .collect()
        };
        // The filter comes while the scan waits: the scan reads with it.
        let (producer_, id) = producer();
        let wait = JoinFilterWaitExec::new(scan(scan_copy(&producer_)), vec![id]).with_wait(Duration::from_secs(60));
        let stream = wait.execute(0, ctx.clone()).unwrap();
        let reading = tokio::spawn(async move { stream.try_collect::<Vec<_>>().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!reading.is_finished());
        finish(&producer_, keys_filter(&[3, 7]));
        inbox.deliver(snapshot(&producer_, &probe_schema(), "q", id, (0, 1), 2, None).unwrap()).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), reading).await.unwrap().unwrap().unwrap();
        assert_eq!(keys(read), vec![3, 7]);
        // It never comes (its producer's worker died, say): the scan reads everything after
        // the wait.
        let (producer_, id) = producer();
        let wait = JoinFilterWaitExec::new(scan(scan_copy(&producer_)), vec![id]).with_wait(Duration::from_millis(200));
        let read = wait.execute(0, ctx.clone()).unwrap().try_collect::<Vec<_>>().await.unwrap();
        assert_eq!(keys(read), vec![1, 3, 5, 7]);
    }
}
