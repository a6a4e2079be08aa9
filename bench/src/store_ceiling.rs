//! The Redis side alone: how many messages per second natter's Redis store appends and
//! publishes (the append script, `WAIT` when asked) while one bus follows every room, on one
//! Redis server and on clusters of three shards.
//!
//! The store runs inside this process, as in a natter-server instance, but without gRPC,
//! streams or clients: those are what bound the realistic shape on this machine, and they
//! hide whether Redis itself grows with shards. Appenders send as fast as each append is
//! answered, many at once, so the figure is the ceiling of Redis plus one instance's store.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use natter_fleet::{Fsync, Redis, RedisCluster};
use natter_server::{
    ids::{RoomId, UserId},
    records::{RoomKind, RoomRecord, UserRecord},
    redis::{RedisBus, RedisConn, RedisStore, RedisTarget, schema::Schema},
    seams::{BusMessage, Directory, Log, NewMessage, Topic},
};
use tokio::sync::{Mutex, broadcast::error::RecvError};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::procs::cpu_seconds_of;

/// Appends in flight at any time (each appender waits for its answer before the next).
const APPENDERS: usize = 128;
/// Rooms, each followed by the bus and written by one appender.
const ROOMS: usize = 768;
/// Before measuring: scripts loaded, connections and subscriptions made, caches warm.
const WARM_UP: Duration = Duration::from_secs(2);

/// The Redis deployments compared.
#[derive(Debug, Clone, Copy)]
enum Setup {
    /// One redis-server, no replica.
    Server,
    /// Three primaries with this many replicas each; sends wait for `wait` replicas.
    Cluster { replicas: usize, wait: u32 },
}

impl Setup {
    fn label(self) -> String {
        match self {
            Self::Server => "one Redis server".into(),
            Self::Cluster { replicas, wait: 0 } => {
                format!("cluster, 3 shards, {replicas} replica(s) each")
            }
            Self::Cluster { replicas, wait } => {
                format!(
                    "cluster, 3 shards, {replicas} replica(s) each, --redis-wait-replicas {wait}"
                )
            }
        }
    }
}

/// What one deployment sustained over the window.
struct Row {
    label: String,
    appended: u64,
    failed: u64,
    seconds: f64,
    latency: Histogram<u64>,
    redis_cpu: Vec<f64>,
    own_cpu: f64,
    delivered: u64,
    expected: u64,
}

/// Measures each setup for `seconds` and prints a table.
pub(crate) async fn report(seconds: u64) -> anyhow::Result<()> {
    let setups = [
        Setup::Server,
        Setup::Cluster {
            replicas: 0,
            wait: 0,
        },
        Setup::Cluster {
            replicas: 1,
            wait: 0,
        },
        Setup::Cluster {
            replicas: 1,
            wait: 1,
        },
    ];
    let mut rows = Vec::new();
    for setup in setups {
        eprintln!("== store ceiling: {}", setup.label());
        rows.push(measure(setup, Duration::from_secs(seconds)).await?);
    }
    println!(
        "| Redis | appends/s | append latency p50 / p99 / p99.9 | Redis CPU per append: all processes / busiest | this process's CPU per append | cores busy: Redis all / busiest / this process | failed | delivered to the bus of appended |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        let per_append = |cpu: f64| cpu * 1e6 / row.appended.max(1) as f64;
        let cores = |cpu: f64| cpu / row.seconds;
        let ms = |q: f64| row.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {} | {:.0} | {:.2} / {:.2} / {:.2} ms | {:.1} / {:.1} µs | {:.1} µs | {:.2} / {:.2} / {:.2} | {} | {} of {} |",
            row.label,
            row.appended as f64 / row.seconds,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            per_append(row.redis_cpu.iter().sum()),
            per_append(row.redis_cpu.iter().copied().fold(0.0, f64::max)),
            per_append(row.own_cpu),
            cores(row.redis_cpu.iter().sum()),
            cores(row.redis_cpu.iter().copied().fold(0.0, f64::max)),
            cores(row.own_cpu),
            row.failed,
            row.delivered,
            row.expected,
        );
    }
    Ok(())
}

/// Starts the setup's Redis, the store and bus over it, the rooms and their followers, then
/// appends flat out and measures a window of `window`.
async fn measure(setup: Setup, window: Duration) -> anyhow::Result<Row> {
    let logs = tempfile::tempdir()?;
    let (target, schema, wait, pids, redis): (_, _, _, _, Box<dyn std::any::Any>) = match setup {
        Setup::Server => {
            let redis = Redis::start(logs.path()).await?;
            let pids = redis.pid().into_iter().collect();
            let target = RedisTarget::Server(redis.url());
            (target, Schema::new("ceiling"), 0, pids, Box::new(redis))
        }
        Setup::Cluster { replicas, wait } => {
            let cluster =
                RedisCluster::start_with_replicas(Some(logs.path()), Fsync::EverySecond, replicas)
                    .await?;
            let seeds = cluster.seeds().split(',').map(String::from).collect();
            let pids = cluster.pids();
            let target = RedisTarget::Cluster(seeds);
            let schema = Schema::clustered("ceiling");
            (target, schema, wait, pids, Box::new(cluster))
        }
    };
    let shutdown = CancellationToken::new();
    let _stop_bus = shutdown.clone().drop_guard();
    let tasks = TaskTracker::new();
    let conn = RedisConn::open(&target)?;
    let bus = RedisBus::start(
        &target,
        conn.clone(),
        schema.clone(),
        Duration::from_secs(10),
        shutdown.clone(),
        &tasks,
    )?;
    let store =
        Arc::new(RedisStore::new(conn, schema, 0, bus).waiting_for_replicas(wait, &target)?);

    let senders: Vec<UserId> = (0..APPENDERS)
        .map(|i| UserId::from_trusted(format!("u{i}")))
        .collect();
    for id in &senders {
        store.create_user(user(id)).await?;
    }
    let mut rooms = Vec::new();
    let delivered = Arc::new(AtomicU64::new(0));
    for r in 0..ROOMS {
        let room = RoomId::from_trusted(format!("room{r}"));
        let owner = &senders[r % APPENDERS];
        store.create_room(group(&room, owner, r)).await?;
        store.add_member(&room, owner).await?;
        let mut events = store.follow(&Topic::Room(room.clone())).await?;
        let delivered = delivered.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(message) if matches!(*message, BusMessage::Event { .. }) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        rooms.push(room);
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let (appended, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let mut appenders = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let own: Vec<RoomId> = rooms.iter().skip(i).step_by(APPENDERS).cloned().collect();
        let (store, measuring, stop) = (store.clone(), measuring.clone(), stop.clone());
        let (appended, failed, latency) = (appended.clone(), failed.clone(), latency.clone());
        appenders.push(tokio::spawn(async move {
            let mut mine = Histogram::<u64>::new(3).expect("histogram");
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let room = own[n as usize % own.len()].clone();
                n += 1;
                let started = Instant::now();
                let outcome = store.append(message(room, &sender, i, n)).await;
                let counted = measuring.load(Ordering::Relaxed);
                match outcome {
                    Ok(_) => {
                        appended.fetch_add(1, Ordering::Relaxed);
                        if counted {
                            let _ = mine.record(started.elapsed().as_micros() as u64);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latency
                .lock()
                .await
                .add(&mine)
                .expect("histograms of one shape");
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let cpu = |pids: &[u32]| -> anyhow::Result<Vec<f64>> {
        pids.iter().map(|&pid| cpu_seconds_of(pid)).collect()
    };
    let (redis_before, own_before) = (cpu(&pids)?, cpu_seconds_of(std::process::id())?);
    let (appended_before, failed_before) = (
        appended.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let appended_in_window = appended.load(Ordering::Relaxed) - appended_before;
    let failed_in_window = failed.load(Ordering::Relaxed) - failed_before;
    let redis_cpu = cpu(&pids)?
        .iter()
        .zip(redis_before)
        .map(|(a, b)| a - b)
        .collect();
    let own_cpu = cpu_seconds_of(std::process::id())? - own_before;
    stop.cancel();
    for appender in appenders {
        appender.await?;
    }
    let expected = appended.load(Ordering::Relaxed);
    crate::scenarios::wait_for_count(&delivered, expected, Duration::from_secs(5)).await;
    let latency = std::mem::replace(&mut *latency.lock().await, Histogram::new(3)?);
    drop(redis);
    Ok(Row {
        label: setup.label(),
        appended: appended_in_window,
        failed: failed_in_window,
        seconds,
        latency,
        redis_cpu,
        own_cpu,
        delivered: delivered.load(Ordering::Relaxed),
        expected,
    })
}

fn user(id: &UserId) -> UserRecord {
    UserRecord {
        id: id.clone(),
        username: id.as_str().into(),
        display_name: id.as_str().into(),
        password_hash: "not used".into(),
        created_at: 0,
        admin: false,
        disabled: false,
        sessions_after_ms: 0,
        ended_sessions: Vec::new(),
        blocked: Vec::new(),
    }
}

fn group(id: &RoomId, owner: &UserId, r: usize) -> RoomRecord {
    RoomRecord {
        id: id.clone(),
        name: format!("room {r}"),
        owner_id: owner.clone(),
        kind: RoomKind::Group {
            code: format!("code{r}"),
            password_hash: None,
        },
        created_at: 0,
        last_seq: 0,
        first_seq: 1,
    }
}

/// A chat-sized message (about the size the shape sends), with an idempotency key as the
/// clients send.
fn message(room_id: RoomId, sender: &UserId, appender: usize, n: u64) -> NewMessage {
    NewMessage {
        id: format!("{appender}-{n}"),
        room_id,
        sender_id: sender.clone(),
        sender_name: sender.as_str().into(),
        text: format!("message {n} from appender {appender}, about as long as a chat line"),
        sent_at: 0,
        client_id: format!("c{n}"),
    }
}
