//! agentward-core: the host-agnostic decisions of the agentward gateway
//! plugins. Pure functions and state machines; the hosts (Envoy proxy-wasm,
//! Spin, the test harness) perform the I/O they ask for.

pub mod approval;
pub mod authn;
pub mod bearer;
pub mod bytes;
pub mod cache;
pub mod clock;
pub mod der;
pub mod exchange;
pub mod fga;
pub mod held;
pub mod identity;
pub mod identity_value;
pub mod jwks;
pub mod jwt;
pub mod mcp;
pub mod metadata;
pub mod path;
pub mod placeholder;
pub mod policy;
pub mod proof;
pub mod response;
pub mod scenario;
pub mod scopes;
pub mod secret;
pub mod shared_cache;
pub mod signature;
pub mod step;

pub use policy::Policy;
