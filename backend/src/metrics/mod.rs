//! A few process-wide counters, exposed at `GET /metrics` in the Prometheus text format.
//! Hand-rolled atomics: the set is small and fixed, and a metrics framework would cost more
//! than it brings here.

mod histogram;
mod rejections;
mod striped;

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64, Ordering},
};

pub(crate) use histogram::Histogram;
pub(crate) use rejections::{Limit, Rejections};

/// Counters of one server instance.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Messages appended to a log (retries with a known client_id excluded).
    pub messages_stored: AtomicU64,
    /// Sends whose client_id matched a stored message: retries after a lost answer.
    pub send_retries: AtomicU64,
    /// Messages written to event streams (replays included), native gRPC and gRPC-Web
    /// apart: one add per message, and the total is their sum, so no series can seem to go
    /// down between two adds.
    pub messages_delivered: ByProtocol,
    /// Sends accepted (unary or on a Chat stream, retries included), likewise.
    pub messages_received: ByProtocol,
    /// From a message's append to its queueing on each live stream, per stream.
    pub fanout_latency: Histogram,
    /// From a send reaching the service to its message stored (the checks and the append),
    /// per send answered with its message (retries included): the server's part of a
    /// sender's wait.
    pub send_duration: Histogram,
    /// The log's append alone (embedded: the group commit and its fsync; Redis: the append
    /// script), likewise.
    pub append_duration: Histogram,
    /// Times a stream found a hole in its live feed and filled it from the log.
    pub stream_repairs: AtomicU64,
    /// Times a stream missed changes to its user's room list and read the list again.
    pub room_list_resyncs: AtomicU64,
    /// Writes to client sockets (gathered per flush; see `coalesce`), shared with the
    /// listener that wraps each connection.
    pub socket_writes: Arc<AtomicU64>,
    /// Event streams (Subscribe and Chat) open now.
    pub streams_open: AtomicI64,
    /// Of those, the ones over gRPC-Web (the rest are native gRPC).
    pub web_streams_open: AtomicI64,
    /// Calls and connections refused by a limit, per limit.
    pub rejections: Arc<Rejections>,
    /// Client connections open now, per protocol.
    pub connections_open: Arc<ConnectionsOpen>,
}

/// A counter per API protocol, striped per thread (it counts every delivery).
#[derive(Debug, Default)]
pub(crate) struct ByProtocol {
    /// Per stripe: (native gRPC, gRPC-Web).
    stripes: [striped::Stripe<[AtomicU64; 2]>; striped::STRIPES],
}

impl ByProtocol {
    /// Counts one (over gRPC-Web when `web`).
    pub(crate) fn inc(&self, web: bool) {
        self.stripes[striped::mine()].0[usize::from(web)].fetch_add(1, Ordering::Relaxed);
    }

    /// (native gRPC, gRPC-Web).
    fn read(&self) -> (u64, u64) {
        self.stripes.iter().fold((0, 0), |(grpc, web), stripe| {
            (
                grpc + stripe.0[0].load(Ordering::Relaxed),
                web + stripe.0[1].load(Ordering::Relaxed),
            )
        })
    }
}

/// Failures of the store and of the bus that reached a call (each answered UNAVAILABLE or
/// INTERNAL). Process-wide: the conversions that count them know no instance, and a
/// production process serves one instance.
pub(crate) static DEPENDENCY_ERRORS: DependencyErrors = DependencyErrors {
    store: AtomicU64::new(0),
    bus: AtomicU64::new(0),
};

#[derive(Debug)]
pub(crate) struct DependencyErrors {
    pub store: AtomicU64,
    pub bus: AtomicU64,
}

/// The protocol a connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    /// The `protocol` label of the connection series.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "h2",
        }
    }
}

/// Connections open now, per protocol; shared with the listener, whose connections count
/// themselves in and out.
#[derive(Debug, Default)]
pub(crate) struct ConnectionsOpen {
    http1: AtomicI64,
    http2: AtomicI64,
}

impl ConnectionsOpen {
    fn gauge(&self, protocol: Protocol) -> &AtomicI64 {
        match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
        }
    }

    pub(crate) fn opened(&self, protocol: Protocol) {
        self.gauge(protocol).fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, protocol: Protocol) {
        self.gauge(protocol).fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections speaking `protocol`.
    pub(crate) fn of(&self, protocol: Protocol) -> i64 {
        self.gauge(protocol).load(Ordering::Relaxed)
    }
}

impl Metrics {
    /// Adds one to a counter.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of all counters.
    pub(crate) fn render(&self, bus_reconnects: u64, presence_rewrites: u64) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        line(
            "natter_messages_stored_total",
            "counter",
            "Messages appended to a room log.",
            self.messages_stored.load(Ordering::Relaxed).to_string(),
        );
        line(
            "natter_send_retries_total",
            "counter",
            "Sends answered with the message their client_id stored before (a lost answer retried).",
            self.send_retries.load(Ordering::Relaxed).to_string(),
        );
        let (grpc_delivered, web_delivered) = self.messages_delivered.read();
        line(
            "natter_messages_delivered_total",
            "counter",
            "Messages written to event streams, replays included.",
            (grpc_delivered + web_delivered).to_string(),
        );
        line(
            "natter_stream_repairs_total",
            "counter",
            "Holes in a stream's live feed filled from the log.",
            self.stream_repairs.load(Ordering::Relaxed).to_string(),
        );
        line(
            "natter_room_list_resyncs_total",
            "counter",
            "Times a stream missed changes to its user's room list and read the list again.",
            self.room_list_resyncs.load(Ordering::Relaxed).to_string(),
        );
        line(
            "natter_socket_writes_total",
            "counter",
            "Writes to client sockets (each carries whatever the connection gathered).",
            self.socket_writes.load(Ordering::Relaxed).to_string(),
        );
        line(
            "natter_bus_reconnects_total",
            "counter",
            "Times the pub/sub connection to Redis was re-established.",
            bus_reconnects.to_string(),
        );
        line(
            "natter_presence_rewrites_total",
            "counter",
            "Times this instance rewrote its users' stream counts in Redis from its own (the first round, after an update failed or was abandoned, when Redis differed).",
            presence_rewrites.to_string(),
        );
        line(
            "natter_streams_open",
            "gauge",
            "Event streams open now.",
            self.streams_open.load(Ordering::Relaxed).to_string(),
        );
        let by_protocol = |out: &mut String, name: &str, kind: &str, help: &str, grpc, web| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n\
                 {name}{{protocol=\"grpc\"}} {grpc}\n{name}{{protocol=\"grpc_web\"}} {web}\n"
            ));
        };
        // A gauge read in two loads may be off by a stream opening between them; never
        // below zero.
        let web_streams = self.web_streams_open.load(Ordering::Relaxed);
        let grpc_streams = (self.streams_open.load(Ordering::Relaxed) - web_streams).max(0);
        by_protocol(
            &mut out,
            "natter_streams_open_by_protocol",
            "gauge",
            "Event streams open now, by protocol.",
            grpc_streams.to_string(),
            web_streams.max(0).to_string(),
        );
        let (grpc, web) = self.messages_received.read();
        by_protocol(
            &mut out,
            "natter_messages_received_total",
            "counter",
            "Sends accepted, by the protocol they came over.",
            grpc.to_string(),
            web.to_string(),
        );
        by_protocol(
            &mut out,
            "natter_messages_delivered_by_protocol_total",
            "counter",
            "Messages written to event streams, by the stream's protocol.",
            grpc_delivered.to_string(),
            web_delivered.to_string(),
        );
        self.fanout_latency.render(
            "natter_fanout_latency_seconds",
            "From a message's append to its queueing on a live stream, per stream.",
            &mut out,
        );
        self.send_duration.render(
            "natter_send_duration_seconds",
            "From a send reaching the service to its message stored (checks and append).",
            &mut out,
        );
        self.append_duration.render(
            "natter_append_duration_seconds",
            "The log's append alone: the embedded commit, or the Redis append script.",
            &mut out,
        );
        for (name, help, counter) in [
            (
                "natter_store_errors_total",
                "Store failures that reached a call.",
                &DEPENDENCY_ERRORS.store,
            ),
            (
                "natter_bus_errors_total",
                "Bus failures that reached a call.",
                &DEPENDENCY_ERRORS.bus,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
        out.push_str(
            "# HELP natter_connections_open Client connections open now, by protocol.\n\
             # TYPE natter_connections_open gauge\n",
        );
        for protocol in [Protocol::Http1, Protocol::Http2] {
            out.push_str(&format!(
                "natter_connections_open{{protocol=\"{}\"}} {}\n",
                protocol.label(),
                self.connections_open.of(protocol)
            ));
        }
        out.push_str(
            "# HELP natter_rejections_total Calls and connections refused by a limit.\n\
             # TYPE natter_rejections_total counter\n",
        );
        for limit in Limit::ALL {
            out.push_str(&format!(
                "natter_rejections_total{{limit=\"{}\"}} {}\n",
                limit.label(),
                self.rejections.of(limit)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_rendered_per_limit() {
        let metrics = Metrics::default();
        metrics.rejections.count(Limit::Send);
        metrics.rejections.count(Limit::Send);
        metrics.rejections.count(Limit::Connections);
        let text = metrics.render(0, 0);
        assert!(
            text.contains("natter_rejections_total{limit=\"send\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("natter_rejections_total{limit=\"connections\"} 1\n"));
        assert!(text.contains("natter_rejections_total{limit=\"sign_in\"} 0\n"));
    }

    #[test]
    fn deliveries_counted_on_several_threads_add_up_per_protocol() {
        let metrics = Metrics::default();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    metrics.messages_delivered.inc(false);
                    metrics.messages_delivered.inc(true);
                    metrics.messages_delivered.inc(false);
                });
            }
        });
        assert_eq!(metrics.messages_delivered.read(), (6, 3));
        let text = metrics.render(0, 0);
        assert!(
            text.contains("natter_messages_delivered_total 9\n"),
            "{text}"
        );
    }
}
