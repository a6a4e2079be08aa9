//! The fleet as operators run it: redis-server, three natter-server processes and nginx with
//! the shipped configuration (the code path of scripts/fleet), every client through nginx's
//! one public port. Logs of every process land in test-artifacts/fleet/<test>/.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, ensure};
use natter_cli::follow::{Backoff, Follower};
use natter_e2e::{Driver, WAIT, artifacts_dir, traffic::Traffic};
use natter_fleet::{Fleet, FleetConfig, NginxConfig, check_config, http::get, workspace_binary};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    time::Instant,
};

use crate::{PASSWORD, register, settled_message};

fn logs(test: &str) -> PathBuf {
    let dir = artifacts_dir().join("fleet").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn fleet(test: &str, adjust: impl FnOnce(&mut FleetConfig)) -> anyhow::Result<Fleet> {
    let mut config = FleetConfig::local(&logs(test))?;
    adjust(&mut config);
    Fleet::start(config).await
}

/// Open event streams per instance, in the fleet's order (0 for a stopped one).
async fn streams_per_instance(fleet: &Fleet) -> anyhow::Result<Vec<i64>> {
    let mut counts = Vec::new();
    for instance in &fleet.instances {
        counts.push(match instance.is_running() {
            true => instance.metric("natter_streams_open").await?,
            false => 0,
        });
    }
    Ok(counts)
}

#[tokio::test]
async fn the_shipped_nginx_config_passes_nginx_t_plain_and_with_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cert = natter_fleet::SelfSigned::create(dir.path())?;
    let mut config = NginxConfig {
        listen: "127.0.0.1:8080".parse()?,
        tls: None,
        upstreams: vec!["127.0.0.1:9001".parse()?, "127.0.0.1:9002".parse()?],
    };
    check_config(&config).await?;
    config.tls = Some((cert.cert, cert.key));
    check_config(&config).await
}

/// The `natter` CLI as a person at a terminal, talking to the fleet.
struct Cli {
    home: tempfile::TempDir,
    url: String,
    ca: Option<PathBuf>,
}

impl Cli {
    fn command(&self, args: &[&str]) -> anyhow::Result<tokio::process::Command> {
        let mut command = tokio::process::Command::new(workspace_binary("natter")?);
        command
            .args(args)
            .env("NATTER_CONFIG_DIR", self.home.path())
            .env("NATTER_SERVER", &self.url)
            .env("NATTER_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(ca) = &self.ca {
            command.env("NATTER_CA_CERT", ca);
        }
        Ok(command)
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::time::timeout(WAIT, self.command(args)?.output()).await??;
        ensure!(
            output.status.success(),
            "natter {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A CLI user and a gRPC-Web user (over HTTP/1.1, as browsers without TLS speak it) chat.
async fn cli_and_grpc_web_chat(fleet: &Fleet, ca: Option<PathBuf>) -> anyhow::Result<()> {
    let ca_der = fleet.tls.as_ref().map(|tls| tls.cert_der.clone());
    let url = fleet.url();
    let alice = Cli {
        home: tempfile::tempdir()?,
        url: url.clone(),
        ca,
    };
    alice.run(&["register", "alice"]).await?;
    let created = alice.run(&["create-room", "Lobby"]).await?;
    let code = created
        .split("join code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("a join code")?
        .to_owned();
    let mut tail = alice.command(&["tail"])?.stdout(Stdio::piped()).spawn()?;
    let mut lines = BufReader::new(tail.stdout.take().context("stdout")?).lines();
    let wait_line = async |lines: &mut tokio::io::Lines<_>, needle: &str| {
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains(needle) {
                    return Ok(line);
                }
            }
            anyhow::bail!("natter tail ended")
        })
        .await?
    };
    wait_line(&mut lines, "connected").await?;

    let mut bob = natter_e2e::grpc_web::sign_up(&url, "bob", ca_der.as_deref()).await?;
    let room = bob
        .join_room(pb::JoinRoomRequest {
            code,
            password: String::new(),
        })
        .await?
        .into_inner();
    let mut events = bob
        .subscribe(pb::SubscribeRequest::default())
        .await?
        .into_inner();
    bob.send_message(pb::SendMessageRequest {
        room_id: room.id.clone(),
        text: "hello from gRPC-Web".into(),
        client_id: String::new(),
    })
    .await?;
    wait_line(&mut lines, "hello from gRPC-Web").await?;

    alice.run(&["send", "Lobby", "hello from the CLI"]).await?;
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.message().await? {
            if let Some(Ev::Message(m)) = event.event
                && m.text == "hello from the CLI"
            {
                return Ok(());
            }
        }
        anyhow::bail!("the gRPC-Web stream ended")
    })
    .await?
}

#[tokio::test]
async fn the_cli_and_a_grpc_web_client_chat_through_nginx() -> anyhow::Result<()> {
    let fleet = fleet("cli-and-grpc-web", |_| {}).await?;
    cli_and_grpc_web_chat(&fleet, None).await
}

#[tokio::test]
async fn the_cli_and_a_grpc_web_client_chat_through_nginx_over_tls() -> anyhow::Result<()> {
    let fleet = fleet("cli-and-grpc-web-tls", |c| c.tls = true).await?;
    let ca = tempfile::NamedTempFile::new()?;
    std::fs::write(ca.path(), &fleet.tls.as_ref().context("tls")?.cert_pem)?;
    cli_and_grpc_web_chat(&fleet, Some(ca.path().to_owned())).await
}

#[tokio::test]
async fn instances_see_the_real_client_address_and_refuse_forged_ones() -> anyhow::Result<()> {
    let fleet = fleet("client-address", |c| c.instances = 1).await?;
    let instance = &fleet.instances[0];
    // A client on another loopback address, through nginx: the instance logs that address,
    // not nginx's (127.0.0.1), which it trusts to tell it.
    let elsewhere = Some("127.0.0.2".parse()?);
    let through_nginx = get(fleet.nginx.addr, "/healthz", elsewhere, "").await?;
    ensure!(through_nginx.status == 200);
    instance
        .wait_for_log("connection via proxy client=127.0.0.2:")
        .await?;
    // The same client straight to the instance, claiming to be someone else: refused.
    let forged = "PROXY TCP4 10.1.2.3 127.0.0.1 5555 80\r\n";
    let refused = get(instance.addr, "/healthz", elsewhere, forged).await;
    ensure!(refused.is_err(), "a forged PROXY header was answered");
    instance.wait_for_log("not in --trusted-proxies").await?;
    ensure!(!instance.logged("client=10.1.2.3"));
    // Without a header it is served, as itself.
    ensure!(get(instance.addr, "/healthz", elsewhere, "").await?.status == 200);
    Ok(())
}

#[tokio::test]
async fn a_draining_instance_sends_its_streams_elsewhere_at_once() -> anyhow::Result<()> {
    let mut fleet = fleet("drain", |_| {}).await?;
    let chat = natter_e2e::traffic::sign_up(&fleet.url(), "dora").await?;
    // A backoff far longer than the test: only a reconnection without one can pass.
    let mut follower = Follower::new(chat).with_backoff(Backoff {
        first: Duration::from_secs(60),
        max: Duration::from_secs(60),
    });
    ensure!(matches!(follower.next().await?, Ev::Ready(_)));
    let counts = streams_per_instance(&fleet).await?;
    let holder = counts
        .iter()
        .position(|c| *c == 1)
        .context("the stream's instance")?;
    let drained_at = Instant::now();
    fleet.instances[holder].begin_drain()?;
    let mut saw_go_away = false;
    let ready = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match follower.next().await? {
                Ev::GoAway(_) => saw_go_away = true,
                Ev::Ready(_) => return anyhow::Ok(()),
                _ => {}
            }
        }
    })
    .await;
    ensure!(ready.is_ok(), "no new stream within 3 s of the drain");
    ensure!(saw_go_away, "the stream was not told to go away");
    fleet.instances[holder].wait_exit().await?;
    ensure!(drained_at.elapsed() < Duration::from_secs(10));
    let after = streams_per_instance(&fleet).await?;
    ensure!(
        after.iter().sum::<i64>() == 1,
        "one stream, elsewhere: {after:?}"
    );
    ensure!(follower.streams_opened() == 2);
    Ok(())
}

/// 200 streams of 20 users (10 each, every one on its own connection) in 4 rooms, and one
/// sender per room at 5 messages a second.
async fn steady_traffic(fleet: &Fleet) -> anyhow::Result<Traffic> {
    let mut traffic = Traffic::start(&fleet.url(), 20, 4, 10).await?;
    let counts = streams_per_instance(fleet).await?;
    ensure!(
        counts.iter().all(|c| *c > 20),
        "nginx should spread 200 streams over the instances: {counts:?}"
    );
    traffic.send_steadily(Duration::from_millis(200))?;
    Ok(traffic)
}

#[tokio::test]
async fn killing_an_instance_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let mut fleet = fleet("kill-instance", |_| {}).await?;
    let traffic = steady_traffic(&fleet).await?;
    traffic.wait_for_acks(20).await?;
    let killed_at = Instant::now();
    fleet.instances[0].kill().await?;
    traffic.wait_for_acks(60).await?;
    let report = traffic.stop_and_check().await?;
    let (reconnected, slowest) = report
        .slowest_reconnect_after(killed_at)
        .context("no stream reconnected")?;
    ensure!(reconnected > 20, "only {reconnected} streams reconnected");
    ensure!(
        slowest <= Duration::from_secs(5),
        "a stream took {slowest:?} to reconnect"
    );
    Ok(())
}

/// `scripts/fleet --redis-cluster`: the same fleet on a Redis Cluster of three shards, where
/// the traffic's rooms spread over the shards.
#[tokio::test]
async fn a_fleet_on_a_redis_cluster_chats_and_survives_an_instance_kill() -> anyhow::Result<()> {
    let mut fleet = fleet("redis-cluster", |c| c.redis_cluster = true).await?;
    ensure!(matches!(fleet.redis, natter_fleet::FleetRedis::Cluster(_)));
    cli_and_grpc_web_chat(&fleet, None).await?;
    let traffic = steady_traffic(&fleet).await?;
    traffic.wait_for_acks(20).await?;
    fleet.instances[1].kill().await?;
    traffic.wait_for_acks(60).await?;
    traffic.stop_and_check().await?;
    Ok(())
}

#[tokio::test]
async fn a_rolling_restart_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let mut fleet = fleet("rolling-restart", |_| {}).await?;
    let traffic = steady_traffic(&fleet).await?;
    for n in 0..fleet.instances.len() {
        traffic.wait_for_acks(10).await?;
        fleet.instances[n].terminate().await?;
        fleet.instances[n].start_again().await?;
    }
    traffic.wait_for_acks(10).await?;
    traffic.stop_and_check().await?;
    Ok(())
}

#[tokio::test]
async fn a_redis_restart_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let mut fleet = fleet("redis-restart", |_| {}).await?;
    let traffic = steady_traffic(&fleet).await?;
    traffic.wait_for_acks(20).await?;
    let natter_fleet::FleetRedis::Server(redis) = &mut fleet.redis else {
        anyhow::bail!("this fleet runs on one redis-server");
    };
    redis.restart().await?;
    traffic.wait_for_acks(40).await?;
    traffic.stop_and_check().await?;
    Ok(())
}

#[tokio::test]
async fn browsers_on_different_instances_chat_through_nginx() -> anyhow::Result<()> {
    browsers_chat(false).await
}

#[tokio::test]
async fn browsers_chat_through_nginx_over_tls_with_http2() -> anyhow::Result<()> {
    browsers_chat(true).await
}

async fn browsers_chat(tls: bool) -> anyhow::Result<()> {
    let name = if tls { "browsers-tls" } else { "browsers" };
    let fleet = fleet(name, |c| {
        c.tls = tls;
        c.static_dir = Some(natter_e2e::web_client_dir().expect("built web client"));
    })
    .await?;
    let url = fleet.url();
    let driver = Driver::start().await?;
    let open = async || match tls {
        true => driver.desktop_trusting_any_certificate().await,
        false => driver.desktop().await,
    };
    let hana = open().await?;
    register(&hana, &url, "hana", "Hana").await?;
    let hana_at = holder(&fleet, &[0, 0, 0]).await?;
    // Least connections sends the next browser elsewhere, but a browser may hold idle
    // connections besides its stream's (HTTP/1.1 keeps several), and a reload reuses them
    // (over HTTP/2 always). So while the newcomer's stream shares Hana's instance, keep it
    // open (it counts for least connections) and bring another browser.
    let mut before = vec![0; fleet.instances.len()];
    before[hana_at] = 1;
    let mut sharing = Vec::new();
    let mut ivan = open().await?;
    register(&ivan, &url, "ivan", "Ivan").await?;
    let mut ivan_at = holder(&fleet, &before).await?;
    for attempt in 0..5 {
        if ivan_at != hana_at {
            break;
        }
        before[ivan_at] += 1;
        sharing.push(ivan);
        ivan = open().await?;
        register(&ivan, &url, &format!("ivan{attempt}"), "Ivan").await?;
        ivan_at = holder(&fleet, &before).await?;
    }
    ensure!(ivan_at != hana_at, "both browsers stayed on one instance");

    let code = crate::create_room(&hana, "Fleet", "").await?;
    hana.click("[data-testid=dialog-done]").await?;
    ivan.click("[data-testid=join-room-open]").await?;
    ivan.fill("[data-testid=join-code]", &code).await?;
    ivan.click("[data-testid=join-submit]").await?;
    ivan.text_contains("conversation-title", "Fleet").await?;
    ivan.fill(
        "[data-testid=composer-input]",
        &format!("across instances{}", crate::ENTER),
    )
    .await?;
    settled_message(&hana, "across instances").await?;

    let protocol = hana
        .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        .await?;
    let expected = if tls { "h2" } else { "http/1.1" };
    ensure!(protocol == expected, "the page came over {protocol}");
    hana.screenshot(name).await?;
    Ok(())
}

/// The instance whose open streams grew past `before` (a browser's stream just opened).
async fn holder(fleet: &Fleet, before: &[i64]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = streams_per_instance(fleet).await?;
        let grown: Vec<usize> = (0..counts.len())
            .filter(|n| counts[*n] > before.get(*n).copied().unwrap_or(0))
            .collect();
        if let [one] = grown.as_slice() {
            return Ok(*one);
        }
        ensure!(
            Instant::now() < deadline,
            "streams per instance: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The instance holding a lone stream's, waiting until exactly one has it.
async fn lone_stream_holder(fleet: &Fleet) -> anyhow::Result<usize> {
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = streams_per_instance(fleet).await?;
        if counts.iter().sum::<i64>() == 1 {
            return Ok(counts.iter().position(|c| *c == 1).unwrap_or_default());
        }
        ensure!(
            Instant::now() < deadline,
            "streams per instance: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drains the instance holding the lone stream and starts it again; returns how long until
/// the stream was open on another instance.
async fn drain_holder(fleet: &mut Fleet) -> anyhow::Result<Duration> {
    let holder = lone_stream_holder(fleet).await?;
    let started = Instant::now();
    fleet.instances[holder].terminate().await?;
    let moved_to = lone_stream_holder(fleet).await?;
    let moved = started.elapsed();
    ensure!(moved_to != holder);
    fleet.instances[holder].start_again().await?;
    Ok(moved)
}

/// Five drains in a row under one tab: each time the stream is open elsewhere within 1.5 s.
/// A client that treated them as failures would wait its growing backoff (0.5, 1, 2, 4 s...).
#[tokio::test]
async fn a_browser_follows_drains_at_once_and_misses_nothing() -> anyhow::Result<()> {
    let mut fleet = fleet("browser-drains", |c| {
        c.static_dir = Some(natter_e2e::web_client_dir().expect("built web client"));
    })
    .await?;
    let url = fleet.url();
    let driver = Driver::start().await?;
    let jana = driver.desktop().await?;
    register(&jana, &url, "jana", "Jana").await?;
    let code = crate::create_room(&jana, "Drains", "").await?;
    jana.click("[data-testid=dialog-done]").await?;
    let mut kim = crate::native_user(&url, "kim").await?;
    let room = crate::join(&mut kim, &code).await?;
    for n in 1..=5 {
        let moved = drain_holder(&mut fleet).await?;
        ensure!(
            moved < Duration::from_millis(1500),
            "drain {n}: the tab took {moved:?} to reconnect"
        );
        crate::say(&mut kim, &room, &format!("after drain {n}")).await?;
        settled_message(&jana, &format!("after drain {n}")).await?;
    }
    crate::assert_contiguous(&jana).await?;
    Ok(())
}

#[tokio::test]
async fn the_cli_chat_follows_a_drain_and_keeps_sending() -> anyhow::Result<()> {
    let mut fleet = fleet("cli-drain", |_| {}).await?;
    let lena = Cli {
        home: tempfile::tempdir()?,
        url: fleet.url(),
        ca: None,
    };
    lena.run(&["register", "lena"]).await?;
    lena.run(&["create-room", "Porch"]).await?;
    let mut chat = lena
        .command(&["chat", "Porch"])?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = chat.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(chat.stdout.take().context("stdout")?).lines();
    // Waits until every needle has shown up in some line, in any order.
    let mut wait_lines = async |needles: &[&str]| {
        let mut missing: Vec<&str> = needles.to_vec();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                missing.retain(|needle| !line.contains(needle));
                if missing.is_empty() {
                    return Ok(());
                }
            }
            anyhow::bail!("natter chat ended")
        })
        .await?
    };
    wait_lines(&["connected"]).await?;
    stdin.write_all(b"before the drain\n").await?;
    wait_lines(&["* sent #1"]).await?;
    drain_holder(&mut fleet).await?;
    wait_lines(&["shutting down; reconnecting"]).await?;
    stdin.write_all(b"after the drain\n").await?;
    wait_lines(&["* sent #2", "after the drain"]).await?;
    drop(stdin);
    ensure!(tokio::time::timeout(WAIT, chat.wait()).await??.success());
    Ok(())
}
