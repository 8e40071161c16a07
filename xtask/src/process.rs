//! What every harness shares: whether a loopback port is taken, and how long a server may take
//! to start.

use std::net::TcpStream;
use std::time::Duration;

pub fn port_in_use(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// How long servers may take to start. A loaded 2-core machine once needed more than 180 s to
/// start four JVMs; `SITE_SYNC_START_TIMEOUT` (seconds) raises it further.
pub fn start_timeout() -> Duration {
    let seconds = std::env::var("SITE_SYNC_START_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(360);
    Duration::from_secs(seconds)
}
