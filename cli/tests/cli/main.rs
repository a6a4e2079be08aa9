//! The `natter` binary driven end to end against a server spawned in this process.

use std::{path::Path, process::Stdio, time::Duration};

use natter_server::Config;
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

const WAIT: Duration = Duration::from_secs(30);

struct Server {
    url: String,
    _data: TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_server() -> Server {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.data_dir = data.path().to_path_buf();
    config.static_dir = data.path().join("no-web-client");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let natter = natter_server::build(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(natter_server::run(listener, natter, async {
        let _ = stopped.await;
    }));
    Server {
        url,
        _data: data,
        _stop: stop,
    }
}

/// One person at a terminal: their own config directory, hence their own saved session.
struct Person {
    home: TempDir,
    server: String,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Person {
    fn new(server: &Server) -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
            server: server.url.clone(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
        command
            .args(args)
            .env("NATTER_CONFIG_DIR", self.home.path())
            .env("NATTER_SERVER", &self.server)
            .env("NATTER_PASSWORD", "correct-horse")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        let output = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .expect("natter finishes")
            .unwrap();
        Output {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.ok, "natter {args:?} failed: {}", out.stderr);
        out.stdout
    }
}

fn session_file(home: &Path) -> std::path::PathBuf {
    home.join("session.json")
}

/// Reads lines until one contains `needle`.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("output continues");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?}"))
}

#[tokio::test]
async fn the_cli_covers_a_whole_conversation() {
    let server = spawn_server().await;
    let alice = Person::new(&server);
    let bob = Person::new(&server);

    assert!(
        alice
            .ok(&["register", "alice", "--display-name", "Alice"])
            .await
            .contains("signed in as alice")
    );
    assert!(
        bob.ok(&["register", "bob"])
            .await
            .contains("signed in as bob")
    );
    assert!(
        session_file(alice.home.path()).exists(),
        "the token is saved"
    );

    let created = alice.ok(&["create-room", "General"]).await;
    let code = created
        .split("join code ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(bob.ok(&["join", &code]).await.contains("joined [General]"));

    // bob follows everything with `tail` while alice talks.
    let mut tail = bob
        .command(&["tail"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tail_lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    read_until(&mut tail_lines, "connected").await;

    assert!(
        alice
            .ok(&["send", "General", "hello from the cli"])
            .await
            .contains("sent #1")
    );
    let line = read_until(&mut tail_lines, "hello from the cli").await;
    assert_eq!(line, "[General] #1 Alice: hello from the cli");

    let history = bob.ok(&["history", "general"]).await;
    assert!(
        history.contains("[General] #1 Alice: hello from the cli"),
        "{history}"
    );

    let users = alice.ok(&["users"]).await;
    assert!(users.contains("bob") && users.contains("alice"), "{users}");
    assert!(
        users
            .lines()
            .any(|l| l.starts_with('●') && l.contains("bob")),
        "bob is online while tailing: {users}"
    );
    assert!(
        alice
            .ok(&["dm", "bob"])
            .await
            .contains("direct conversation with @bob")
    );
    alice.ok(&["send", "@bob", "psst"]).await;
    read_until(&mut tail_lines, "psst").await;
    let rooms = bob.ok(&["rooms"]).await;
    assert!(
        rooms.contains("General") && rooms.contains("@alice"),
        "{rooms}"
    );

    // Interactive chat: lines in, acknowledged, and visible to the others.
    let mut chat = bob
        .command(&["chat", "General"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(b"line one\nline two\n").await.unwrap();
    drop(stdin);
    let finished = tokio::time::timeout(WAIT, chat.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let printed = String::from_utf8_lossy(&finished.stdout);
    assert!(
        printed.contains("* sent #2") && printed.contains("* sent #3"),
        "{printed}"
    );
    read_until(&mut tail_lines, "line two").await;
    let history = alice.ok(&["history", &code]).await;
    assert!(
        history.contains("#2 bob: line one") && history.contains("#3 bob: line two"),
        "{history}"
    );
    tail.kill().await.unwrap();
}

#[tokio::test]
async fn the_cli_reports_errors_clearly() {
    let server = spawn_server().await;
    let alice = Person::new(&server);
    let carol = Person::new(&server);
    alice.ok(&["register", "alice"]).await;

    let not_signed_in = carol.run(&["rooms"]).await;
    assert!(
        !not_signed_in.ok && not_signed_in.stderr.contains("natter login"),
        "{}",
        not_signed_in.stderr
    );

    let mut wrong = carol.command(&["login", "alice"]);
    wrong.env("NATTER_PASSWORD", "not-her-password");
    let wrong = wrong.output().await.unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("unknown username or wrong password"));

    let taken = carol.run(&["register", "ALICE"]).await;
    assert!(
        !taken.ok && taken.stderr.contains("already taken"),
        "{}",
        taken.stderr
    );

    carol.ok(&["register", "carol"]).await;
    let created = alice
        .ok(&["create-room", "Private", "--password", "letmein"])
        .await;
    let code = created
        .split("join code ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let denied = carol.run(&["join", &code]).await;
    assert!(
        !denied.ok
            && denied.stderr.contains("wrong room password")
            && denied.stderr.contains("PermissionDenied"),
        "{}",
        denied.stderr
    );
    let no_room = carol.run(&["send", "Private", "hi"]).await;
    assert!(
        !no_room.ok && no_room.stderr.contains("no room matching"),
        "{}",
        no_room.stderr
    );
    let empty = alice.run(&["send", "Private", "   "]).await;
    assert!(
        !empty.ok && empty.stderr.contains("text"),
        "{}",
        empty.stderr
    );
}
