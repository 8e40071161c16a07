//! Keycloak outside Kubernetes: stopped and started by commands the operator gives; or already
//! stopped by the operator, in which case the tool does not touch it at all.

use std::time::Duration;

use sync_core::ports::{Keycloak, KeycloakError, KeycloakState, Scaling};

use crate::health::HealthProbe;
use tokio::process::Command;

/// Keycloak managed by shell commands. `is_stopped` exits 0 when Keycloak is stopped.
#[derive(Debug, Clone)]
pub struct CommandKeycloak {
    /// Stops Keycloak on the offline site.
    pub stop: String,
    /// Starts it.
    pub start: String,
    /// Exits 0 when it is stopped, non-zero while it runs.
    pub is_stopped: String,
    /// How long stopping or starting may take.
    pub timeout: Duration,
    /// Pause between two `is_stopped` checks.
    pub poll: Duration,
    /// Where it says it is ready (`/health/ready`): a start is done once it does.
    pub ready: Option<HealthProbe>,
}

impl CommandKeycloak {
    async fn run(&self, command: &str) -> Result<bool, KeycloakError> {
        let status = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| KeycloakError::Other(format!("cannot run `{command}`: {e}")))?;
        Ok(status.success())
    }

    async fn stopped(&self) -> Result<bool, KeycloakError> {
        self.run(&self.is_stopped).await
    }

    /// Running and, when it can tell, ready.
    async fn serving(&self) -> Result<bool, KeycloakError> {
        if self.stopped().await? {
            return Ok(false);
        }
        Ok(match &self.ready {
            Some(probe) => probe.ready().await.unwrap_or(true),
            None => true,
        })
    }

    async fn wait_for(&self, stopped: bool, what: &str) -> Result<(), KeycloakError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let done = if stopped { self.stopped().await? } else { self.serving().await? };
            if done {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(KeycloakError::Timeout { what: what.to_owned(), after: self.timeout, stuck: Vec::new() });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

impl Keycloak for CommandKeycloak {
    fn describe(&self) -> String {
        format!("Keycloak via commands (stop: `{}`)", self.stop)
    }

    async fn observe(&self) -> Result<Option<KeycloakState>, KeycloakError> {
        let running = u32::from(!self.stopped().await?);
        let ready = if running == 1 { u32::from(self.serving().await?) } else { 0 };
        Ok(Some(KeycloakState {
            spec_instances: running,
            ready_instances: ready,
            pods: running,
            rolling_update: false,
            recorded_original: None,
        }))
    }

    async fn scale_down(&self) -> Result<u32, KeycloakError> {
        if self.stopped().await? {
            return Ok(0);
        }
        if !self.run(&self.stop).await? {
            return Err(KeycloakError::Other(format!("the stop command `{}` failed", self.stop)));
        }
        self.wait_for(true, "Keycloak to stop (the is-stopped command to succeed)").await?;
        Ok(1)
    }

    async fn scale_up(&self, instances: u32) -> Result<(), KeycloakError> {
        if instances == 0 {
            return Ok(());
        }
        if !self.run(&self.start).await? {
            return Err(KeycloakError::Other(format!("the start command `{}` failed", self.start)));
        }
        let what = if self.ready.is_some() {
            "Keycloak to start (the is-stopped command to fail) and /health/ready to answer 200"
        } else {
            "Keycloak to start (the is-stopped command to fail)"
        };
        self.wait_for(false, what).await
    }

    fn timeout(&self, _scaling: Scaling) -> Duration {
        self.timeout
    }
}

/// Keycloak that the operator stopped before the run (and starts after it): the tool neither
/// reads nor changes it. Choosing this mode is confirmed by the CLI.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoppedKeycloak;

impl Keycloak for StoppedKeycloak {
    fn describe(&self) -> String {
        "Keycloak (stopped by the operator; not managed by site-sync)".to_owned()
    }

    async fn observe(&self) -> Result<Option<KeycloakState>, KeycloakError> {
        Ok(None)
    }

    async fn scale_down(&self) -> Result<u32, KeycloakError> {
        Ok(0)
    }

    async fn scale_up(&self, _instances: u32) -> Result<(), KeycloakError> {
        Ok(())
    }

    fn timeout(&self, _scaling: Scaling) -> Duration {
        Duration::ZERO
    }
}
