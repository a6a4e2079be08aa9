use natter_proto::v1 as pb;
use natter_server::config::AdminAction;
use tonic::Code;

use crate::helpers::*;

fn register(username: &str, password: &str, display_name: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        username: username.into(),
        password: password.into(),
        display_name: display_name.into(),
    }
}

#[tokio::test]
async fn register_login_and_refresh() {
    let app = spawn_app().await;
    let mut auth = app.auth();
    let registered = auth
        .register(register("Alice", "correct-horse", "Alice A."))
        .await
        .unwrap()
        .into_inner();
    let user = registered.user.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.display_name, "Alice A.");
    assert_eq!(registered.role, "user");
    // The default 12 h lifetime, also given relative to now for clients with a wrong clock.
    assert_eq!(registered.expires_in_ms, 12 * 3600 * 1000);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((registered.expires_at - now_ms - registered.expires_in_ms).abs() < 5_000);

    let login = auth
        .login(pb::LoginRequest {
            username: "ALICE".into(),
            password: "correct-horse".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.user.unwrap().id, user.id);

    let mut request = tonic::Request::new(pb::RefreshTokenRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", login.access_token).parse().unwrap(),
    );
    let refreshed = auth.refresh_token(request).await.unwrap().into_inner();
    assert_eq!(refreshed.user.unwrap().id, user.id);
    app.chat_with_token(&refreshed.access_token)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_registrations_name_the_field() {
    let app = spawn_app().await;
    let mut auth = app.auth();
    let cases = [
        (register("ab", "correct-horse", ""), "username"),
        (register("has space", "correct-horse", ""), "username"),
        (register(&"x".repeat(33), "correct-horse", ""), "username"),
        (register("bob", "short", ""), "password"),
        (
            register("bob", "correct-horse", &"d".repeat(65)),
            "display_name",
        ),
        (
            register("bob", "correct-horse", "bell\u{7}"),
            "display_name",
        ),
    ];
    for (request, field) in cases {
        assert_status(auth.register(request).await, Code::InvalidArgument, field);
    }
}

#[tokio::test]
async fn taken_usernames_are_case_insensitive() {
    let app = spawn_app().await;
    app.register("carol").await;
    assert_status(
        app.auth()
            .register(register("CAROL", "correct-horse", ""))
            .await,
        Code::AlreadyExists,
        "taken",
    );
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same() {
    let app = spawn_app().await;
    app.register("dave").await;
    let mut auth = app.auth();
    let wrong = auth
        .login(pb::LoginRequest {
            username: "dave".into(),
            password: "wrong-password".into(),
        })
        .await;
    let unknown = auth
        .login(pb::LoginRequest {
            username: "nobody".into(),
            password: "wrong-password".into(),
        })
        .await;
    let (wrong, unknown) = (wrong.unwrap_err(), unknown.unwrap_err());
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let user = app.register("erin").await;
    let mut no_token =
        natter_proto::v1::chat_service_client::ChatServiceClient::new(app.channel.clone());
    assert_status(
        no_token.list_rooms(pb::ListRoomsRequest {}).await,
        Code::Unauthenticated,
        "authorization",
    );

    let mut malformed = no_token.clone();
    let mut request = tonic::Request::new(pb::ListRoomsRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_status(
        malformed.list_rooms(request).await,
        Code::Unauthenticated,
        "Bearer",
    );

    assert_status(
        app.chat_with_token("not.a.jwt")
            .list_rooms(pb::ListRoomsRequest {})
            .await,
        Code::Unauthenticated,
        "token",
    );

    // Same claims, signed with another key.
    let mut parts: Vec<&str> = user.token.split('.').collect();
    let forged_signature = "A".repeat(parts[2].len());
    parts[2] = &forged_signature;
    let forged = parts.join(".");
    assert_status(
        app.chat_with_token(&forged)
            .list_rooms(pb::ListRoomsRequest {})
            .await,
        Code::Unauthenticated,
        "token",
    );
}

#[tokio::test]
async fn expired_tokens_are_unauthenticated() {
    const SECRET: &str = "an-explicit-test-secret-of-32-bytes-or-more";
    let app = spawn_app_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    let user = app.register("frank").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": user.user.id, "role": "user", "iat": now - 7200, "exp": now - 3600,
        "iss": "natter", "aud": "natter-api",
    });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let expired = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    assert_status(
        app.chat_with_token(&expired)
            .list_rooms(pb::ListRoomsRequest {})
            .await,
        Code::Unauthenticated,
        "expired",
    );

    // The same claims with a future expiry pass: the rejection above is about expiry.
    let fresh = serde_json::json!({
        "sub": user.user.id, "role": "user", "iat": now, "exp": now + 3600,
        "iss": "natter", "aud": "natter-api",
    });
    let fresh = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &fresh, &key).unwrap();
    app.chat_with_token(&fresh)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
}

/// Admin is granted to an existing account by an operator, on the stopped server's data;
/// registering a name never makes anyone admin.
#[tokio::test]
async fn admin_is_granted_by_an_operator_to_an_existing_account() {
    let app = spawn_app().await;
    let response = app
        .auth()
        .register(register("Root", "correct-horse", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.role, "user");
    let data_dir = app.stop().await;

    let mut config = test_config(&data_dir);
    let unknown = natter_server::administer(
        config.clone(),
        AdminAction::Grant {
            username: "nobody".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{unknown:#}").contains("no account is named 'nobody'"));
    let said = natter_server::administer(
        config.clone(),
        AdminAction::Grant {
            username: "ROOT".into(),
        },
    )
    .await
    .unwrap();
    assert!(
        said.starts_with("root (") && said.ends_with("is an admin"),
        "{said}"
    );

    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = spawn_app_in(data_dir, config).await;
    let signed_in = app
        .auth()
        .login(pb::LoginRequest {
            username: "root".into(),
            password: "correct-horse".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed_in.role, "admin");
}

/// The flag that handed admin to whoever registered a listed name first is refused, with
/// what to use instead.
#[tokio::test]
async fn the_removed_admins_flag_stops_the_server_with_advice() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.admins = vec!["root".into()];
    let Err(refused) = natter_server::build(config).await else {
        panic!("a server started with --admins");
    };
    assert!(
        format!("{refused:#}").contains("natter-server admin grant USERNAME"),
        "{refused:#}"
    );
}

/// The operator command as an operator runs it: the server's binary, its data dir.
#[tokio::test]
async fn the_admin_command_runs_on_the_data_dir() {
    let app = spawn_app().await;
    app.register("keeper").await;
    let data_dir = app.stop().await;
    let run = |action: &str, name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_natter-server"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["admin", action, name])
            .output()
            .unwrap()
    };
    let granted = run("grant", "keeper");
    assert!(granted.status.success(), "{granted:?}");
    assert!(String::from_utf8_lossy(&granted.stdout).contains("keeper ("));
    let revoked = run("revoke", "keeper");
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("is no longer an admin"));
    let missing = run("grant", "ghost");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no account is named 'ghost'"));
}

#[tokio::test]
async fn directory_search_and_pagination() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    for name in ["bob", "bobby", "carol", "dan"] {
        app.register(name).await;
    }
    let page = |query: &str, size: u32, token: &str| pb::ListUsersRequest {
        query: query.into(),
        page_size: size,
        page_token: token.into(),
    };
    let first = alice
        .chat
        .list_users(page("", 2, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    let second = alice
        .chat
        .list_users(page("", 2, &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["bobby", "carol"]
    );
    let third = alice
        .chat
        .list_users(page("", 2, &second.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        third
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["dan"]
    );
    assert!(third.next_page_token.is_empty());

    let bobs = alice
        .chat
        .list_users(page("BOB", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs.users.len(), 2);
    let by_display = alice
        .chat
        .list_users(page("carol disp", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_display.users[0].username, "carol");
    assert!(by_display.users.iter().all(|u| !u.online));
}
