//! agentward-vault: the companion service of the agentward gateway plugins.
//! A token vault: users link upstream accounts (OAuth 2.0 code flow with
//! PKCE), refresh tokens are sealed at rest (AES-256-GCM), and the gateway
//! swaps a user's token for an upstream access token (RFC 8693, or the Auth0
//! Token Vault dialect). It also serves an OpenFGA-compatible authorization
//! API ([`fga`]).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod access_cache;
pub mod app;
pub mod audit;
pub mod audit_api;
pub mod ciba;
pub mod cli;
pub mod config;
pub mod consent;
pub mod fga;
pub mod link_events;
pub mod linking;
pub mod logging;
pub mod metrics;
pub mod oauth_error;
pub mod playground;
pub mod rekey;
pub mod request_body;
pub mod seal;
pub mod secret;
pub mod serve;
pub mod single_flight;
pub mod store;
pub mod subject;
pub mod task;
pub mod ticket;
pub mod token_exchange;
pub mod upstream;
