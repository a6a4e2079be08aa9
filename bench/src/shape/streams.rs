//! One stream per user, half native gRPC, half gRPC-Web over HTTP/1.1, recording when each
//! message arrives against when the schedule sent it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use natter_cli::client::{self, Bearer};
use natter_proto::v1::{self as pb, chat_service_client::ChatServiceClient, event::Event as Ev};
use tonic::service::interceptor::InterceptedService;
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};

use super::{latencies::Latencies, population::Population};
use crate::{
    deployment::Deployment,
    scenarios::{STREAMS_PER_CONNECTION, wait_until_ready},
};

/// gRPC-Web calls over an HTTP/1.1-only client: each open stream holds a connection.
type WebService = GrpcWebClientService<Client<HttpConnector, GrpcWebCall<tonic::body::Body>>>;

fn web_service() -> WebService {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http1_only = Client::builder(TokioExecutor::new()).build(connector);
    tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http1_only)
}

/// What the streams saw, per measured phase.
#[derive(Default)]
pub(super) struct Phases {
    /// Start and period of each phase's schedule.
    pub(super) schedules: Vec<(Instant, Duration)>,
    /// End-to-end latency per phase, microseconds.
    pub(super) latencies: Vec<Latencies>,
    /// Deliveries per phase (a late one counts for its own phase, not the next).
    pub(super) delivered: Vec<Arc<AtomicU64>>,
    /// Per phase, per [`WINDOW`] of the schedule: deliveries later than [`LATE`]. Tells a
    /// tail made of a few stalls (late deliveries bunched in a few windows) from one spread
    /// over the whole phase (contention).
    pub(super) late: Vec<Vec<u32>>,
}

/// A delivery later than this is late: the shape's p99 goal.
pub(super) const LATE: Duration = Duration::from_millis(5);
/// The width of the windows late deliveries are counted in.
pub(super) const WINDOW: Duration = Duration::from_millis(100);

impl Phases {
    /// Records a message's arrival; its text starts with "<phase> <index>".
    fn record(&mut self, text: &str, now: Instant) {
        let mut words = text.split(' ');
        let (Some(Ok(phase)), Some(Ok(index))) = (
            words.next().map(str::parse::<usize>),
            words.next().map(str::parse::<u32>),
        ) else {
            return;
        };
        let Some(&(start, period)) = self.schedules.get(phase) else {
            return;
        };
        let late_by = now.saturating_duration_since(start + period * index);
        self.latencies[phase].record(late_by);
        self.delivered[phase].fetch_add(1, Ordering::Relaxed);
        if late_by > LATE {
            let window = (period * index).as_millis() / WINDOW.as_millis();
            let late = &mut self.late[phase];
            let window = usize::try_from(window)
                .unwrap_or(usize::MAX)
                .min(late.len() - 1);
            late[window] += 1;
        }
    }
}

/// The streams of every user, open and counting.
pub(super) struct Streams {
    pub(super) phases: Arc<Mutex<Phases>>,
    /// Connections the senders' calls go over (4 per instance), made once, on `sending`.
    pub(super) senders: Vec<tonic::transport::Channel>,
    /// The senders' own runtime (one thread): their schedule, calls and connections do not
    /// queue behind the 10,000 streams' tasks on the main runtime. Many users send from
    /// many machines in a real deployment; one shared queue in the bench would add its
    /// own wait to every send's latency.
    pub(super) sending: SendingRuntime,
}

/// A runtime dropped without waiting (a runtime may not be dropped inside another's task).
pub(super) struct SendingRuntime(Option<tokio::runtime::Runtime>);

impl SendingRuntime {
    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("kept until dropped").handle()
    }
}

impl Drop for SendingRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Opens one stream per user: even users native gRPC (`STREAMS_PER_CONNECTION` to a
/// connection), odd users gRPC-Web over HTTP/1.1. Returns once all are Ready.
pub(super) async fn open_streams(
    deployment: &Deployment,
    population: &Population,
) -> anyhow::Result<Streams> {
    let phases = Arc::new(Mutex::new(Phases::default()));
    let ready = Arc::new(AtomicU64::new(0));
    let web = web_service();
    let mut native: Vec<tonic::transport::Channel> = Vec::new();
    for (u, user) in population.users.iter().enumerate() {
        let url = deployment.url(u);
        let request = pb::SubscribeRequest::default();
        let events = if u % 2 == 0 {
            let connection = u / 2 / STREAMS_PER_CONNECTION;
            if native.len() <= connection {
                native.push(client::channel(&deployment.url(connection))?);
            }
            let mut chat = client::chat_client(native[connection].clone(), &user.token)?;
            chat.subscribe(request).await?.into_inner()
        } else {
            let origin: http::Uri = url.parse().context("a server URL")?;
            let service = InterceptedService::new(web.clone(), Bearer::new(&user.token)?);
            let mut chat = ChatServiceClient::with_origin(service, origin);
            chat.subscribe(request).await?.into_inner()
        };
        let (phases, ready) = (phases.clone(), ready.clone());
        tokio::spawn(async move {
            let mut events = events;
            while let Ok(Some(event)) = events.message().await {
                match event.event {
                    Some(Ev::Ready(_)) => {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ev::Message(m)) => {
                        let now = Instant::now();
                        phases.lock().expect("phases").record(&m.text, now);
                    }
                    _ => {}
                }
            }
        });
    }
    wait_until_ready(&ready, population.users.len(), Duration::from_secs(300)).await?;
    let sending = SendingRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("senders")
            .enable_all()
            .build()?,
    ));
    // Made inside the senders' runtime, so that their connections' tasks run on it.
    let senders = {
        let _inside = sending.handle().enter();
        (0..deployment.servers.len() * 4)
            .map(|i| client::channel(&deployment.url(i)))
            .collect::<anyhow::Result<_>>()?
    };
    Ok(Streams {
        phases,
        senders,
        sending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_delivery_is_counted_in_its_window_of_the_schedule() {
        let start = Instant::now();
        let mut phases = Phases {
            schedules: vec![(start, Duration::from_millis(1))],
            latencies: vec![Latencies::new()],
            delivered: vec![Arc::default()],
            late: vec![vec![0; 3]],
        };
        // Message 150 was due at 150 ms: window 1.
        let due = start + Duration::from_millis(150);
        phases.record("0 150 text", due + Duration::from_millis(6));
        phases.record("0 151 text", due + Duration::from_millis(2));
        phases.record("not a bench message", due);
        assert_eq!(phases.late[0], [0, 1, 0]);
        assert_eq!(phases.delivered[0].load(Ordering::Relaxed), 2);
        assert_eq!(phases.latencies[0].len(), 2);
    }
}
