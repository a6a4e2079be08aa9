//! Composition: the gRPC services (native and gRPC-Web), health, reflection, HTTP routes and
//! the web client on ONE listener, with graceful shutdown.

use std::{future::Future, sync::Arc};

use anyhow::Context;
use natter_proto::v1::server::{
    auth_service_server::AuthServiceServer, chat_service_server::ChatServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::service::{LayerExt, Routes};
use tonic_web::GrpcWebLayer;

use crate::{
    api::{answer_body::AnswerBodyLayer, auth::AuthApi, chat::ChatApi},
    auth::{self, TokenKeys, load_or_create_secret},
    config::{AdminAction, Config},
    connections,
    embedded::{EmbeddedStore, LocalPresence},
    http,
    listener::{self, TrustedProxies},
    metrics::Metrics,
    passwords::Passwords,
    redis::{RedisBus, RedisConn, RedisStore, schema::Schema},
    service::{Natter, Seams},
    stream::SendWatch,
};

/// Opens the seams the configuration asks for (embedded, or Redis) and loads the token keys.
pub async fn build(config: Config) -> anyhow::Result<Arc<Natter>> {
    if !config.admins.is_empty() {
        anyhow::bail!(
            "--admins (NATTER_ADMINS) was removed: whoever registered a listed name first \
             became admin. Grant the role to an existing account instead: \
             natter-server admin grant USERNAME (with this server's data dir or Redis flags)"
        );
    }
    create_private_dir(&config.data_dir)?;
    let metrics = Metrics::default();
    let passwords = Passwords::new(metrics.rejections.clone()).await?;
    let configured = match (&config.jwt_secret, &config.jwt_secret_file) {
        (Some(secret), _) => Some(secret.expose().to_owned()),
        (None, Some(file)) => Some(auth::read_secret_file(file)?),
        (None, None) => None,
    };
    let redis = config.redis_target()?;
    if redis.is_some() && configured.is_none() {
        anyhow::bail!(
            "Redis mode needs an explicit --jwt-secret-file or --jwt-secret (or \
             NATTER_JWT_SECRET_FILE, NATTER_JWT_SECRET) of at least {} bytes, the same on every \
             instance, so that a token issued by one instance is valid on all",
            auth::MIN_SECRET_BYTES
        );
    }
    let secret = load_or_create_secret(configured.as_deref(), &config.data_dir)?;
    let keys = TokenKeys::new(&secret, config.token_ttl)?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let seams = match redis {
        Some(target) => {
            let schema = if target.is_cluster() {
                Schema::clustered(&config.redis_prefix)
            } else {
                Schema::new(&config.redis_prefix)
            };
            let conn = RedisConn::open(&target)?;
            let bus = RedisBus::start(
                &target,
                conn.clone(),
                schema.clone(),
                config.presence_ttl,
                shutdown.clone(),
                &tasks,
            )?;
            tracing::info!(
                prefix = %config.redis_prefix,
                cluster = target.is_cluster(),
                "Redis directory, log and presence"
            );
            let store = Arc::new(
                RedisStore::new(conn, schema, config.history_retention, bus.clone())
                    .waiting_for_replicas(config.redis_wait_replicas, &target)?,
            );
            Seams {
                directory: store.clone(),
                log: store,
                presence: Arc::new(bus),
            }
        }
        None => {
            let store = Arc::new(EmbeddedStore::open(&config.data_dir).with_context(|| {
                format!(
                    "opening the embedded store in {} (one process at a time: is a server \
                     running on it?)",
                    config.data_dir.display()
                )
            })?);
            tracing::info!(data_dir = %config.data_dir.display(), "embedded directory and log");
            Seams {
                directory: store.clone(),
                log: store,
                presence: Arc::new(LocalPresence::default()),
            }
        }
    };
    Ok(Arc::new(Natter::new(
        seams, keys, passwords, metrics, config, shutdown, tasks,
    )))
}

/// Creates the data directory readable by its owner only: it holds password hashes,
/// messages and the token secret. The mode is set again on every start, so a directory
/// made or loosened by hand (or restored from a backup) is private again.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making the data directory {} private", dir.display()))?;
    }
    Ok(())
}

/// The whole HTTP surface as one router. gRPC-Web is enabled per gRPC service: a
/// `GrpcWebLayer` around everything would answer 400 to plain HTTP/1.1 requests.
pub(crate) async fn router(natter: Arc<Natter>) -> anyhow::Result<axum::Router> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthServiceServer<AuthApi>>()
        .await;
    health_reporter
        .set_serving::<ChatServiceServer<ChatApi>>()
        .await;
    let with_reflection = natter.config().reflection;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(natter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(natter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let max_request = natter.config().max_request_bytes;
    let keys = natter.keys().clone();
    // Without a send deadline, streams are not watched at all (nothing would sweep them).
    let send_timeout = natter.config().send_timeout;
    let watch = (!send_timeout.is_zero()).then(|| {
        let watch = Arc::new(SendWatch::default());
        // A healthy stream is polled at least once per heartbeat (see `stream::watch`).
        natter.tasks().spawn(watch.clone().sweep(
            natter.config().heartbeat_interval + send_timeout,
            natter.metrics().rejections.clone(),
            natter.shutdown().clone(),
        ));
        watch
    });
    let chat = tonic::service::interceptor::InterceptedService::new(
        AnswerBodyLayer.named_layer(
            ChatServiceServer::new(ChatApi::new(natter.clone(), watch))
                .max_decoding_message_size(max_request),
        ),
        move |mut request: tonic::Request<()>| {
            let caller = keys.verify_metadata(request.metadata())?;
            request.extensions_mut().insert(caller);
            Ok(request)
        },
    );
    // Draining: health checks answer NOT_SERVING from the first moment (as /readyz does).
    let draining = natter.shutdown().clone();
    tokio::spawn(async move {
        draining.cancelled().await;
        health_reporter
            .set_not_serving::<AuthServiceServer<AuthApi>>()
            .await;
        health_reporter
            .set_not_serving::<ChatServiceServer<ChatApi>>()
            .await;
    });
    let mut grpc = Routes::new(GrpcWebLayer::new().named_layer(
        AuthServiceServer::new(AuthApi::new(natter.clone())).max_decoding_message_size(max_request),
    ))
    .add_service(GrpcWebLayer::new().named_layer(chat))
    .add_service(GrpcWebLayer::new().named_layer(health));
    if with_reflection {
        grpc = grpc
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
    }
    let mut grpc = grpc
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            crate::web_calls::body_bound(max_request),
            crate::web_calls::read_whole,
        ));
    if let Some(cors) = cross_origin(&natter.config().cors_origins)? {
        grpc = grpc.layer(cors);
    }

    let static_dir = natter.config().static_dir.clone();
    // Merge first, then set the fallback: merging two routers that both have one panics.
    Ok(grpc
        .merge(http::routes(natter))
        .nest_service("/assets", http::assets(&static_dir.join("assets")))
        .fallback_service(http::pages(&static_dir)))
}

/// gRPC-Web from the listed other origins (a web client served elsewhere): preflights
/// answered, and the gRPC status headers exposed to the page. None: same origin only.
fn cross_origin(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use ::http::{HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return Ok(None);
    }
    let allowed = origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin.trim())
                .with_context(|| format!("--cors-origins: '{origin}' is not a header value"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let header = HeaderName::from_static;
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers([
                ::http::header::AUTHORIZATION,
                ::http::header::CONTENT_TYPE,
                header("x-grpc-web"),
                header("x-user-agent"),
                header("grpc-timeout"),
                header("x-request-id"),
            ])
            .expose_headers([
                header("grpc-status"),
                header("grpc-message"),
                header("grpc-status-details-bin"),
                header("retry-after"),
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    ))
}

/// Serves until `shutdown` completes, then drains: the instance reports not-ready, closes its
/// listening socket (a load balancer moves on to the other instances), tells every open
/// stream to reconnect elsewhere (`GoAway`), lets in-flight calls finish, and returns within
/// `--drain-timeout` (10 s by default).
pub async fn run(
    listener: TcpListener,
    natter: Arc<Natter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(natter.clone()).await?;
    natter.tasks().spawn(natter.clone().presence_janitor());
    if let Some(address) = natter.config().admin_listen {
        serve_admin(address, natter.clone()).await?;
    }
    let token = natter.shutdown().clone();
    let signal = {
        let token = token.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = token.cancelled() => {}
            }
            tracing::info!("draining: not ready, not accepting, streams told to reconnect");
            token.cancel();
        }
    };
    let drain_timeout = natter.config().drain_timeout;
    tracing::info!(address = %listener.local_addr()?, "listening (gRPC, gRPC-Web and HTTP)");
    let incoming = listener::incoming(
        listener,
        TrustedProxies::new(natter.config().trusted_proxies.clone()),
        token.clone(),
        natter.metrics().socket_writes.clone(),
        natter.config().max_connections,
        natter.metrics().rejections.clone(),
        natter.metrics().connections_open.clone(),
    );
    let settings = connections::Settings {
        max_streams_per_connection: natter.config().max_streams_per_connection,
        http1_header_timeout: natter.config().http1_header_timeout,
        request_timeout: natter.config().request_timeout,
    };
    tokio::spawn(signal);
    let server = connections::serve(
        incoming,
        app,
        settings,
        token.clone(),
        natter.tasks().clone(),
    );
    // Once draining starts, connections (with their streams) and tracked tasks together get
    // the drain timeout; a client that never reads cannot hold the process.
    let tasks = natter.tasks().clone();
    let drained = async {
        server.await;
        tasks.close();
        tasks.wait().await;
    };
    let deadline = async {
        token.cancelled().await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        () = drained => {}
        () = deadline => {
            tracing::warn!("calls still open after the drain timeout; stopping anyway");
        }
    }
    Ok(())
}

/// Runs an operator task (`natter-server admin ...`) on the store `config` names, and
/// says what it did.
pub async fn administer(config: Config, action: AdminAction) -> anyhow::Result<String> {
    let natter = build(config).await?;
    let (username, admin) = match &action {
        AdminAction::Grant { username } => (username, true),
        AdminAction::Revoke { username } => (username, false),
    };
    let user = natter.set_admin(username, admin).await?;
    Ok(if admin {
        format!("{} ({}) is an admin", user.username, user.id)
    } else {
        format!("{} ({}) is no longer an admin", user.username, user.id)
    })
}

/// Serves `/metrics` and the probes on `--admin-listen`, until the server drains.
async fn serve_admin(address: std::net::SocketAddr, natter: Arc<Natter>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the admin listener {address}"))?;
    let bound = listener.local_addr()?;
    natter.admin_bound(bound);
    tracing::info!(address = %bound, "admin listener (metrics, probes)");
    let draining = natter.shutdown().clone();
    let admin = http::admin_routes(natter.clone());
    natter.tasks().spawn(async move {
        let served = axum::serve(listener, admin)
            .with_graceful_shutdown(async move { draining.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the admin listener failed");
        }
    });
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_data_directory_is_made_private_on_every_start() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        create_private_dir(&dir).unwrap();
        let mode = || std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(), 0o700);
    }
}
