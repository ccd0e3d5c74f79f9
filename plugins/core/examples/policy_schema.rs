//! Prints the policy document's JSON Schema; `cargo xtask schema` writes it
//! to `policies/agentward.schema.json`.

fn main() {
    print!("{}", agentward_core::policy::json_schema_text());
}
