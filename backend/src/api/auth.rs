//! `natter.v1.AuthService`.

use std::sync::Arc;

use natter_proto::v1::{self as pb, server::auth_service_server::AuthService};
use tonic::{Request, Response, Status};

use crate::{convert, domain::Registration, service::Natter};

/// Registration and sign-in over gRPC.
#[derive(Debug, Clone)]
pub(crate) struct AuthApi {
    natter: Arc<Natter>,
}

impl AuthApi {
    /// The service over shared state.
    pub(crate) fn new(natter: Arc<Natter>) -> Self {
        Self { natter }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let client = request.remote_addr().map(|addr| addr.ip());
        let registration =
            Registration::try_from(request.get_ref()).map_err(crate::error::ApiError::from)?;
        Ok(Response::new(convert::grant(
            &self.natter.register(registration, client).await?,
        )))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let client = request.remote_addr().map(|addr| addr.ip());
        let r = request.into_inner();
        Ok(Response::new(convert::grant(
            &self.natter.login(&r.username, &r.password, client).await?,
        )))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = self.natter.keys().verify_metadata(request.metadata())?;
        self.natter
            .logout(&caller, request.get_ref().all_sessions)
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let caller = self.natter.keys().verify_metadata(request.metadata())?;
        Ok(Response::new(convert::grant(
            &self.natter.refresh(&caller).await?,
        )))
    }
}
