//! Plain HTTP next to gRPC: probes, JSON sign-up and sign-in for scripts, and the web client.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use std::path::Path;

use axum::{
    extract::rejection::JsonRejection,
    http::{HeaderValue, header},
};
use tonic::transport::server::TcpConnectInfo;
use tower::{ServiceBuilder, util::MapResponseLayer};
use tower_http::{
    compression::CompressionLayer,
    services::{ServeDir, ServeFile},
};

use crate::{
    domain::InvalidField, domain::Registration, error::ApiError, service::Natter, views::Grant,
    web_headers,
};

/// `/healthz`, `/readyz`, the `/api/v1` JSON endpoints, and `/metrics` unless it has a
/// listener of its own (no fallback: see `server`).
pub(crate) fn routes(natter: Arc<Natter>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/register", post(register))
        .route("/api/v1/login", post(login));
    let router = if natter.config().admin_listen.is_none() {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router
        .layer(MapResponseLayer::new(web_headers::secure))
        .with_state(natter)
}

/// What the admin listener (`--admin-listen`) serves: metrics and the probes.
pub(crate) fn admin_routes(natter: Arc<Natter>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(natter)
}

/// The web client's hashed assets (`/assets/*`): their names change with their content, so
/// browsers may keep them for a year. Compressed when the browser accepts it: from the
/// `.gz` file the build wrote next to an asset (no work per request), else on the fly.
pub(crate) fn assets(dir: &Path) -> Router {
    Router::new().fallback_service(
        ServiceBuilder::new()
            .layer(MapResponseLayer::new(|response| {
                web_headers::secure(cache(response, "public, max-age=31536000, immutable"))
            }))
            .layer(CompressionLayer::new())
            .service(ServeDir::new(dir).precompressed_gzip()),
    )
}

/// The web client's pages: `index.html` for `/` and for any path the app routes itself
/// (SPA fallback), revalidated on every load so a new build is picked up at once.
///
/// A gRPC call to a service this server does not have (say, reflection turned off) also
/// ends up here: it is answered as gRPC, `UNIMPLEMENTED`, not with a web page.
pub(crate) fn pages(dir: &Path) -> Router {
    let static_dir = dir.to_path_buf();
    Router::new()
        .fallback_service(
            ServiceBuilder::new()
                .layer(MapResponseLayer::new(move |response| {
                    web_headers::secure_page(cache(response, "no-cache"), &static_dir)
                }))
                .layer(CompressionLayer::new())
                .service(ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")))),
        )
        .layer(axum::middleware::from_fn(unknown_grpc_service))
}

/// Answers gRPC calls that reached the web client's pages: no such service here.
async fn unknown_grpc_service(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/grpc") {
        return next.run(request).await;
    }
    let answer_type =
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/grpc"));
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, answer_type);
    headers.insert("grpc-status", HeaderValue::from_static("12"));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("no%20such%20service%20on%20this%20server"),
    );
    response
}

/// Sets `Cache-Control` on successful responses (an error must not be cached for a year),
/// and `Vary: Accept-Encoding`, since the same URL is sent compressed or not (a shared cache
/// must not hand gzip to a client that did not ask for it).
fn cache<B>(
    mut response: axum::http::Response<B>,
    policy: &'static str,
) -> axum::http::Response<B> {
    if response.status().is_success() {
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
        if !headers.contains_key(header::VARY) {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
    }
    response
}

/// Liveness: the process serves requests.
async fn healthz() -> &'static str {
    "ok"
}

/// Counters in the Prometheus text format.
async fn metrics(State(natter): State<Arc<Natter>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        natter.render_metrics(),
    )
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    store: bool,
    bus: bool,
    draining: bool,
}

/// Readiness: the store and the bus both answer, so requests can succeed, and the instance
/// is not draining (from the first moment of a shutdown it is not ready).
async fn readyz(State(natter): State<Arc<Natter>>) -> impl IntoResponse {
    let (store, bus, draining) = natter.readiness().await;
    let ready = store && bus && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            store,
            bus,
            draining,
        }),
    )
}

#[derive(Deserialize)]
struct RegisterBody {
    username: String,
    password: String,
    #[serde(default)]
    display_name: String,
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct UserJson {
    id: String,
    username: String,
    display_name: String,
}

#[derive(Serialize)]
struct AuthJson {
    access_token: String,
    expires_at: i64,
    expires_in_ms: i64,
    role: String,
    user: Option<UserJson>,
}

impl From<Grant> for AuthJson {
    fn from(g: Grant) -> Self {
        Self {
            access_token: g.token,
            expires_at: g.expires_at,
            expires_in_ms: g.expires_in_ms,
            role: g.role.as_str().to_owned(),
            user: Some(UserJson {
                id: g.user.id.into_string(),
                username: g.user.username,
                display_name: g.user.display_name,
            }),
        }
    }
}

#[derive(Serialize)]
struct ErrorJson {
    /// The gRPC code name, same as the gRPC API would answer (e.g. `ALREADY_EXISTS`).
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = tonic::Status::from(self);
        let (http, code) = match status.code() {
            tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            tonic::Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            tonic::Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            tonic::Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            tonic::Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            tonic::Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        let message = status.message().to_owned();
        (http, Json(ErrorJson { code, message })).into_response()
    }
}

/// The body as JSON, or `INVALID_ARGUMENT` (as JSON) saying what is wrong with it.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|rejection| InvalidField::new("body", rejection.body_text()).into())
}

async fn register(
    State(natter): State<Arc<Natter>>,
    client: Option<Extension<TcpConnectInfo>>,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<Json<AuthJson>, ApiError> {
    let body = json_body(body)?;
    let registration = Registration::parse(&body.username, &body.password, &body.display_name)?;
    Ok(Json(
        natter
            .register(registration, client_ip(client.as_ref()))
            .await?
            .into(),
    ))
}

/// The client's address as the listener established it (from a trusted PROXY header, or
/// the socket's peer).
fn client_ip(info: Option<&Extension<TcpConnectInfo>>) -> Option<std::net::IpAddr> {
    info.and_then(|Extension(info)| info.remote_addr())
        .map(|addr| addr.ip())
}

async fn login(
    State(natter): State<Arc<Natter>>,
    client: Option<Extension<TcpConnectInfo>>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Json<AuthJson>, ApiError> {
    let body = json_body(body)?;
    Ok(Json(
        natter
            .login(&body.username, &body.password, client_ip(client.as_ref()))
            .await?
            .into(),
    ))
}
