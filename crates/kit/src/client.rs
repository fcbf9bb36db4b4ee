//! Calling other services: channels, bearer tokens and trace-context propagation.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Adds `authorization: Bearer …` (when set) and the current W3C trace context to every call.
#[derive(Clone, Debug, Default)]
pub struct CallInterceptor {
    token: Arc<RwLock<Option<String>>>,
}

impl CallInterceptor {
    /// An interceptor sending `token`.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: Arc::new(RwLock::new(token)),
        }
    }

    /// Replaces the token (e.g. after refreshing it).
    pub fn set_token(&self, token: Option<String>) {
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
    }
}

impl Interceptor for CallInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Ok(t) = self.token.read()
            && let Some(token) = t.as_deref()
        {
            let v: MetadataValue<_> = format!("Bearer {token}")
                .parse()
                .map_err(|_| tonic::Status::internal("token is not a valid header value"))?;
            req.metadata_mut().insert("authorization", v);
        }
        crate::telemetry::inject_current(req.metadata_mut());
        Ok(req)
    }
}

/// A lazily connecting channel to `uri` (e.g. `http://router:50051`), with TLS when given.
pub fn channel(
    uri: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let mut ep = Endpoint::from_shared(uri.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls)?;
    }
    Ok(ep.connect_lazy())
}
