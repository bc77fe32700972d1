//! The node's Prometheus metrics, under etcd's names where etcd has one (so
//! existing etcd dashboards work) and `raftkv_*` for the rest.
//!
//! One `Metrics` per node, created at startup and handed to whoever records:
//! the log store (fsync latency, commit index), the state machine (snapshots),
//! the gRPC layer (requests), the node (leader changes, failed proposals).
//! Values that are cheaper to read than to track (leader, term, sizes) are
//! set from the node's state when `/metrics` is scraped.

use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric a node exports.
pub struct Metrics {
    registry: Registry,
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes: IntCounter,
    pub term: IntGauge,
    pub committed_index: IntGauge,
    pub applied_index: IntGauge,
    pub proposals_failed: IntCounter,
    pub grpc_handled: IntCounterVec,
    pub grpc_latency: HistogramVec,
    pub wal_fsync: Histogram,
    pub proposal_duration: Histogram,
    pub peer_rtt: HistogramVec,
    pub peer_append: HistogramVec,
    pub peer_append_handling: Histogram,
    pub snapshot_save: Histogram,
    pub snapshots_installed: IntCounter,
    pub db_size: IntGauge,
    pub data_dir_size: IntGauge,
    pub keys: IntGauge,
    pub versions: IntGauge,
    pub current_revision: IntGauge,
    pub compact_revision: IntGauge,
    pub peer_refused: IntCounterVec,
    pub watch_streams: IntGauge,
    pub watchers: IntGauge,
    pub watch_wakeups: IntCounter,
}

/// Labels of the gRPC metrics, as go-grpc-prometheus (and so etcd) has them.
pub const GRPC_LABELS: [&str; 4] = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"];

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("invariant: each metric is registered once, under a unique name");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("invariant: valid metric name"),
    )
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("invariant: valid metric name"),
    )
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(
        registry,
        Histogram::with_opts(opts).expect("invariant: valid metric name"),
    )
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    buckets: Vec<f64>,
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(
        registry,
        HistogramVec::new(opts, &[label]).expect("invariant: valid metric name"),
    )
}

/// 0.1 ms to ~3 s: the steps of one write or read on the way through the
/// cluster (etcd's peer round-trip histogram starts at 0.1 ms too).
fn step_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 16).expect("invariant: valid buckets")
}

/// 1 ms to ~8 s, as etcd's disk histograms.
fn disk_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 14).expect("invariant: valid buckets")
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        // process_resident_memory_bytes, process_cpu_seconds_total, open
        // fds...: what etcd exports too (etcdctl check datascale reads them).
        let process = prometheus::process_collector::ProcessCollector::for_self();
        r.register(Box::new(process))
            .expect("invariant: the process collector registers once");
        let grpc_handled = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "grpc_server_handled_total",
                    "RPCs completed on the server, by method and code.",
                ),
                &GRPC_LABELS,
            )
            .expect("invariant: valid metric"),
        );
        let grpc_latency = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "RPC handling time, by method and code.",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 18).expect("invariant: valid buckets")),
                &GRPC_LABELS,
            )
            .expect("invariant: valid metric"),
        );
        Metrics {
            has_leader: gauge(
                &r,
                "etcd_server_has_leader",
                "Whether a leader exists: 1 yes, 0 no.",
            ),
            is_leader: gauge(
                &r,
                "etcd_server_is_leader",
                "Whether this member is the leader: 1 yes, 0 no.",
            ),
            leader_changes: counter(
                &r,
                "etcd_server_leader_changes_seen_total",
                "Leader changes this member has seen.",
            ),
            term: gauge(&r, "raftkv_raft_term", "The Raft term this member is in."),
            committed_index: gauge(
                &r,
                "etcd_server_proposals_committed_total",
                "The committed Raft log index (committed proposals).",
            ),
            applied_index: gauge(
                &r,
                "etcd_server_proposals_applied_total",
                "The applied Raft log index (applied proposals).",
            ),
            proposals_failed: counter(
                &r,
                "etcd_server_proposals_failed_total",
                "Client writes that failed (no leader, timeout, leader lost).",
            ),
            grpc_handled,
            grpc_latency,
            wal_fsync: histogram(
                &r,
                "etcd_disk_wal_fsync_duration_seconds",
                "Latency of flushing Raft log appends and votes to disk.",
                disk_buckets(),
            ),
            proposal_duration: histogram(
                &r,
                "raftkv_proposal_duration_seconds",
                "On the leader, from handing a proposal (one entry, often many writes) \
                 to Raft until it is committed and applied: the leader's append and \
                 fsync, replication to a quorum, and applying it.",
                step_buckets(),
            ),
            peer_rtt: histogram_vec(
                &r,
                "etcd_network_peer_round_trip_time_seconds",
                "Round-trip time of the leader's heartbeats (AppendEntries without \
                 entries) to each follower, by member id (hex).",
                "To",
                step_buckets(),
            ),
            peer_append: histogram_vec(
                &r,
                "raftkv_peer_append_duration_seconds",
                "On the leader, time until a follower answered an AppendEntries \
                 carrying entries (its append and fsync included), by member id (hex).",
                "To",
                step_buckets(),
            ),
            peer_append_handling: histogram(
                &r,
                "raftkv_peer_append_handling_seconds",
                "On a follower, time to handle an AppendEntries carrying entries, \
                 from decoding it to encoding the answer (its append and fsync included).",
                step_buckets(),
            ),
            snapshot_save: histogram(
                &r,
                "etcd_debugging_snap_save_total_duration_seconds",
                "Time to build and save a snapshot; _count is the number built.",
                disk_buckets(),
            ),
            watch_streams: gauge(
                &r,
                "etcd_debugging_mvcc_watch_stream_total",
                "Open watch streams.",
            ),
            watchers: gauge(
                &r,
                "etcd_debugging_mvcc_watcher_total",
                "Watchers on all watch streams.",
            ),
            watch_wakeups: counter(
                &r,
                "raftkv_watch_stream_wakeups_total",
                "Times a watch stream was woken because a key one of its watchers watches changed.",
            ),
            snapshots_installed: counter(
                &r,
                "raftkv_snapshots_installed_total",
                "Snapshots received from the leader and installed.",
            ),
            db_size: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Size of the state the store holds: every kept version's key and value, plus a fixed overhead each.",
            ),
            data_dir_size: gauge(
                &r,
                "raftkv_data_dir_size_bytes",
                "Total size of the files in --data-dir.",
            ),
            keys: gauge(
                &r,
                "etcd_debugging_mvcc_keys_total",
                "Number of keys in the store.",
            ),
            versions: gauge(
                &r,
                "raftkv_mvcc_versions",
                "Key versions kept in the history (bounded by compaction).",
            ),
            current_revision: gauge(
                &r,
                "etcd_debugging_mvcc_current_revision",
                "The current store revision.",
            ),
            compact_revision: gauge(
                &r,
                "etcd_debugging_mvcc_compact_revision",
                "The revision history was compacted at.",
            ),
            peer_refused: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "raftkv_peer_messages_refused_total",
                        "Peer messages refused before Raft saw them, by RPC.",
                    ),
                    &["rpc"],
                )
                .expect("invariant: valid metric"),
            ),
            registry: r,
        }
    }

    /// Counts one finished RPC.
    pub fn observe_grpc(
        &self,
        kind: &str,
        service: &str,
        method: &str,
        code: &str,
        took: Duration,
    ) {
        let labels = [kind, service, method, code];
        self.grpc_handled.with_label_values(&labels).inc();
        self.grpc_latency
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    /// Every metric in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_etcd_names() {
        let m = Metrics::new();
        m.leader_changes.inc();
        m.observe_grpc(
            "unary",
            "etcdserverpb.KV",
            "Put",
            "OK",
            Duration::from_millis(3),
        );
        let text = m.render();
        assert!(text.contains("etcd_server_leader_changes_seen_total 1"));
        assert!(text.contains(
            r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1"#
        ));
        assert!(text.contains("grpc_server_handling_seconds_bucket"));
        assert!(text.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram"));
    }
}
