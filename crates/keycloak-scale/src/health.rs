//! Keycloak's own word on whether it serves: `GET /lb-check` on its HTTP port (with the
//! multi-site feature: 200 while it can use its external Infinispan; what the load balancer asks)
//! and `GET /health/ready` on its management port (`--health-enabled`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sync_core::ports::{KeycloakHealth, Probed};

/// How long one health request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Where a site's Keycloak answers about its health.
#[derive(Clone)]
pub struct HealthProbe {
    url: Option<String>,
    management_url: Option<String>,
    client: Client<Https, Empty<Bytes>>,
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbe").field("url", &self.url).field("management_url", &self.management_url).finish()
    }
}

/// Why a probe could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot load the system's trusted certificates for Keycloak's health checks: {0}")]
pub struct ProbeError(String);

impl HealthProbe {
    /// A probe of `url` (`/lb-check`) and `management_url` (`/health/ready`); either may be
    /// absent. HTTPS is checked against the system's trusted certificates.
    pub fn new(url: Option<String>, management_url: Option<String>) -> Result<Self, ProbeError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| ProbeError(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self { url, management_url, client })
    }

    /// Asks both endpoints (at once); nothing is asked of an endpoint that is not configured.
    pub async fn check(&self) -> KeycloakHealth {
        let lb_check = self.url.as_deref().map(|url| self.get(join(url, "lb-check")));
        let ready = self.management_url.as_deref().map(|url| self.get(join(url, "health/ready")));
        let (lb_check, ready) = futures::join!(optional(lb_check), optional(ready));
        KeycloakHealth { lb_check, ready }
    }

    /// Whether `/health/ready` answers 200; `None` without a management URL.
    pub async fn ready(&self) -> Option<bool> {
        match &self.management_url {
            Some(url) => Some(self.get(join(url, "health/ready")).await.ok()),
            None => None,
        }
    }

    async fn get(&self, url: String) -> Probed {
        let uri = match url.parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(e) => return Probed { url, status: None, error: Some(format!("not a URL: {e}")) },
        };
        match tokio::time::timeout(PROBE_TIMEOUT, self.client.get(uri)).await {
            Ok(Ok(response)) => Probed { url, status: Some(response.status().as_u16()), error: None },
            Ok(Err(e)) => {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    detail = format!("{detail}: {cause}");
                    source = cause.source();
                }
                Probed { url, status: None, error: Some(detail) }
            }
            Err(_) => Probed { url, status: None, error: Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())) },
        }
    }
}

async fn optional(probe: Option<impl Future<Output = Probed>>) -> Option<Probed> {
    match probe {
        Some(probe) => Some(probe.await),
        None => None,
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}
