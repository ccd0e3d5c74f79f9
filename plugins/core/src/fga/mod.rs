//! Fine-grained authorization (the scope-fga plugin's core): required
//! scopes and OpenFGA relationship checks for the user and the agent
//! ([`rule`], tuples with placeholders in [`tuple`]), made against an
//! OpenFGA-compatible API ([`service`], [`check`]: `check` and
//! `batch-check` callouts, a decision cache), RAG responses cut to what
//! the principal may see ([`filter`]) and MCP lists cut to the tools,
//! prompts and resources they may use ([`mcp`], in JSON or
//! `text/event-stream` framing, [`sse`]). All pure: the plugin glue
//! performs the calls.

pub mod check;
pub mod filter;
pub mod mcp;
pub mod rule;
pub mod service;
pub mod sse;
pub mod tuple;

pub use check::{Check, CheckRun, DecisionCache, Failure, NoCache};
pub use filter::{FilterPlan, FilterRun, ResultFilter, Unfilterable};
pub use rule::{Authorization, FgaRule, Principal, Refusal, ScopeRule};
pub use service::FgaService;
pub use tuple::{TupleKey, TupleTemplate};
