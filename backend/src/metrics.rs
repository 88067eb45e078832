//! The node's Prometheus metrics (`GET /metrics`). One registry per node,
//! so several nodes in one process (the dev cluster) do not mix counts.
//! Every series carries the `worker_id` label.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric a node exports.
pub struct Metrics {
    registry: Registry,
    /// WebSocket clients connected to this node.
    pub connections: IntGauge,
    /// WebSocket connections accepted since start.
    pub connections_total: IntCounter,
    /// Frames received from clients.
    pub messages_in: IntCounter,
    /// Frames sent to clients (room messages, replies, errors).
    pub messages_out: IntCounter,
    /// Time from a publisher handing a message to the broker to this node
    /// queueing it for its local members (cross-node when published elsewhere).
    pub publish_to_deliver: Histogram,
    /// Failed calls to Redis (store or broker).
    pub redis_errors: IntCounter,
    /// Sessions connected cluster-wide (from the last heartbeat).
    pub sessions: IntGauge,
    /// Live workers (from the last heartbeat).
    pub workers: IntGauge,
    /// Connections closed with 1013 because they read too slowly.
    pub slow_consumers: IntCounter,
    /// Frames refused by the per-connection rate limit.
    pub rate_limited: IntCounter,
    /// `join … since` outcomes, by `result` = `recovered` | `lost`.
    pub recoveries: IntCounterVec,
    /// Dead workers this node cleaned up (it won the claim).
    pub dead_workers_cleaned: IntCounter,
    /// Gaps in live delivery that were filled from history.
    pub gaps_filled: IntCounter,
    /// Publishes answered from their idempotency key: a retry, stored once.
    pub publishes_repeated: IntCounter,
}

impl Metrics {
    /// Fresh metrics for worker `worker_id`.
    pub fn new(worker_id: &str) -> Metrics {
        let registry = Registry::new_custom(
            Some("ringway_backend".into()),
            Some([("worker_id".to_owned(), worker_id.to_owned())].into()),
        )
        .expect("valid registry");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("unique gauge");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("unique counter");
            c
        };
        let publish_to_deliver = Histogram::with_opts(
            HistogramOpts::new(
                "publish_to_deliver_seconds",
                "Time from publish to fan-out on this node",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(publish_to_deliver.clone()))
            .expect("unique histogram");
        let recoveries = IntCounterVec::new(
            Opts::new("recoveries_total", "join-since outcomes"),
            &["result"],
        )
        .expect("valid counter vec");
        registry
            .register(Box::new(recoveries.clone()))
            .expect("unique counter vec");
        Metrics {
            connections: gauge("connections", "WebSocket clients connected to this node"),
            connections_total: counter("connections_total", "WebSocket connections accepted"),
            messages_in: counter("messages_in_total", "Frames received from clients"),
            messages_out: counter("messages_out_total", "Frames sent to clients"),
            publish_to_deliver,
            redis_errors: counter("redis_errors_total", "Failed Redis calls"),
            sessions: gauge("sessions", "Sessions connected cluster-wide"),
            workers: gauge("workers", "Live workers in the cluster"),
            slow_consumers: counter("slow_consumer_closes_total", "Connections closed with 1013"),
            rate_limited: counter("rate_limited_total", "Frames refused by the rate limit"),
            recoveries,
            dead_workers_cleaned: counter(
                "dead_workers_cleaned_total",
                "Dead workers cleaned up by this node",
            ),
            gaps_filled: counter("gaps_filled_total", "Live gaps filled from history"),
            publishes_repeated: counter(
                "publishes_repeated_total",
                "Publishes answered from their idempotency key (stored once)",
            ),
            registry,
        }
    }

    /// Record one publish-to-deliver time.
    pub fn observe_delivery(&self, age: Duration) {
        self.publish_to_deliver.observe(age.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8 exposition")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::new("w1");
        m.connections.set(3);
        m.recoveries.with_label_values(&["lost"]).inc();
        m.observe_delivery(Duration::from_micros(300));
        let text = m.render();
        assert!(
            text.contains(r#"ringway_backend_connections{worker_id="w1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ringway_backend_recoveries_total{result="lost",worker_id="w1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("ringway_backend_publish_to_deliver_seconds_bucket"),
            "{text}"
        );
    }
}
