//! A typed async client for the Infinispan REST v2 cross-site API (Infinispan 14, 15 and 16).
//!
//! # Layout
//! - [`names`]: validated site and cache names, and path-segment encoding.
//! - [`model`]: what the server answers (statuses, container info, per-cache result maps).
//! - [`requests`]: one builder per REST call, returning a plain `http::Request`; never sends.
//! - [`api`]: [`SiteApi`], the operations of one site; implemented here over HTTP and in
//!   `fake-ispn` over an in-memory model.
//! - `client` (feature `client`): the transport: authentication, version detection, error mapping.
//! - [`redact`]: credentials embedded in URLs, kept out of every message.
//! - [`json_stream`]: splitting a streamed JSON array, for key listings of millions of entries.

pub mod api;
#[cfg(feature = "client")]
mod auth;
#[cfg(feature = "client")]
mod client;
pub mod error;
pub mod json_stream;
pub mod model;
pub mod names;
pub mod redact;
pub mod requests;

pub use api::{Entry, ItemStream, SiteApi};
#[cfg(feature = "client")]
pub use auth::{Credentials, Mechanism};
#[cfg(feature = "client")]
pub use client::{Client, ClientConfig, TlsMode};
pub use error::{Error, Result, Subject};
pub use model::*;
pub use names::{CacheName, NameError, SiteName};
pub use requests::{ClearScope, Requests};
