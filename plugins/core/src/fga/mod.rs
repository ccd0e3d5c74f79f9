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
pub mod gate;
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

#[cfg(test)]
mod tests {
    use crate::placeholder::Facts;
    use crate::Policy;
    use serde_json::{json, Value};

    fn policy(routes: Value, fga: Option<Value>) -> Result<Policy, crate::policy::PolicyError> {
        let mut v = json!({
            "resource": "https://api.example.com",
            "issuers": [{"issuer": "https://idp.example.com/", "audiences": ["https://api.example.com"],
                         "jwks_uri": "https://idp.example.com/jwks.json", "jwks_cluster": "idp"}],
            "routes": routes,
        });
        if let Some(fga) = fga {
            v["fga"] = fga;
        }
        Policy::parse(v.to_string().as_bytes())
    }

    fn service() -> Value {
        json!({"cluster": "vault", "store_id": "01STORE", "preshared_key_env": "FGA_KEY"})
    }

    #[test]
    fn routes_and_mcp_tools_carry_fga_rules() {
        let p = policy(
            json!([
                {"match": {"methods": ["GET"], "path": "/documents/{id}"},
                 "fga": {"scopes": {"all": ["docs:read"]},
                         "checks": [{"relation": "viewer", "object": "document:{path.id}"}]}},
                {"match": {"methods": ["POST"], "path": "/mcp"},
                 "mcp": {"tools": {"place_order": {"scopes": ["trade"],
                     "fga": {"principal": "both", "checks": [{"relation": "can_use", "object": "tool:{tool}"}]}}}}},
            ]),
            Some(service()),
        )
        .unwrap();
        let fga = p.fga.as_ref().unwrap();
        assert_eq!(fga.store_id, "01STORE");
        let m = p.matched("GET", "/documents/42").unwrap();
        let rule = p.routes[m.index].fga.as_ref().unwrap();
        let params: Vec<(&str, &str)> = m.params.iter().collect();
        let facts = Facts {
            params: &params,
            ..Facts::for_tests()
        };
        let mut a = rule
            .authorize(fga, &p.resource, &facts, "docs:read")
            .unwrap();
        let crate::step::Step::Call(call) = a.step(fga, &super::NoCache, 0) else {
            panic!("a call")
        };
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["tuple_key"]["object"], "document:42");
        let tool = &p.routes[1].mcp.as_ref().unwrap().tools.0["place_order"];
        assert_eq!(tool.fga.as_ref().unwrap().principal, super::Principal::Both);
    }

    #[test]
    fn fga_rules_are_checked_in_the_policy_with_the_field_named() {
        let doc_route = |fga: Value| json!([{"match": {"path": "/documents/{id}"}, "fga": fga}]);
        let check = json!({"checks": [{"relation": "viewer", "object": "document:{path.id}"}]});
        for (routes, fga, field) in [
            (doc_route(check.clone()), None, "routes[0].fga"),
            (
                json!([{"match": {"path": "/d/{id}"}, "public": true, "fga": check.clone()}]),
                Some(service()),
                "routes[0].fga",
            ),
            (
                doc_route(
                    json!({"checks": [{"relation": "viewer", "object": "document:{path.doc}"}]}),
                ),
                Some(service()),
                "routes[0].fga.checks[0]",
            ),
            (
                doc_route(json!({"checks": [{"relation": "viewer", "object": "document:{nope}"}]})),
                Some(service()),
                "routes[0].fga.checks[0].object",
            ),
            (
                json!([{"match": {"path": "/mcp"}, "mcp": {"tools": {"t": {"fga": {}}}}}]),
                None,
                "routes[0].mcp.tools.t.fga",
            ),
            (
                json!([{"match": {"path": "/mcp"}, "mcp": {"tools": {"t": {"fga":
                    {"checks": [{"relation": "r", "object": "account:{path.a}"}]}}}}}]),
                Some(service()),
                "routes[0].mcp.tools.t.fga.checks[0]",
            ),
            (json!([]), Some(json!({"cluster": "vault"})), "fga"),
            (
                json!([]),
                Some(json!({"cluster": "vault", "store_id": "01S", "batch_limit": 0})),
                "fga.batch_limit",
            ),
        ] {
            let e = policy(routes.clone(), fga).unwrap_err();
            assert_eq!(e.field, field, "{routes}: {e}");
        }
    }
}
