//! The plugins of a Spin deployment: the components of a `spin.toml`,
//! from the one with a public HTTP route along their `next` variables
//! (Spin's local service chaining, `http://<component>.spin.internal`).

use std::path::Path;

/// The plugin names of `manifest`'s chain, in order.
pub fn plugins(manifest: &Path) -> Result<Vec<String>, Vec<String>> {
    let shown = manifest.display().to_string();
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| vec![format!("cannot read the Spin manifest {shown}: {e}")])?;
    chain(&text).map_err(|e| vec![format!("{shown}: {e}")])
}

fn chain(text: &str) -> Result<Vec<String>, String> {
    let doc: toml::Value = text.parse().map_err(|e| format!("not TOML: {e}"))?;
    let triggers = doc
        .get("trigger")
        .and_then(|t| t.get("http"))
        .and_then(toml::Value::as_array)
        .ok_or("no [[trigger.http]]")?;
    let public: Vec<&str> = triggers
        .iter()
        .filter(|t| t.get("route").is_some_and(toml::Value::is_str))
        .filter_map(|t| t.get("component").and_then(toml::Value::as_str))
        .collect();
    let [entry] = public[..] else {
        return Err(format!(
            "expected one component with a public route, found {}",
            public.len()
        ));
    };
    let components = doc.get("component").ok_or("no [component.…]")?;
    let mut plugins = Vec::new();
    let mut seen = Vec::new();
    let mut name = entry.to_string();
    loop {
        if seen.contains(&name) {
            return Err(format!("the chain comes back to {name}"));
        }
        let component = components
            .get(&name)
            .ok_or_else(|| format!("no [component.{name}]"))?;
        plugins.push(plugin_of(&name, component));
        seen.push(name.clone());
        let next = component
            .get("variables")
            .and_then(|v| v.get("next"))
            .and_then(toml::Value::as_str)
            .unwrap_or_default();
        match next
            .strip_prefix("http://")
            .and_then(|host| host.trim_end_matches('/').strip_suffix(".spin.internal"))
        {
            Some(chained) => name = chained.to_string(),
            None => return Ok(plugins),
        }
    }
}

/// The plugin a component runs: its `source` file (`spin_scope_fga.wasm`
/// is scope-fga), else its name.
fn plugin_of(name: &str, component: &toml::Value) -> String {
    component
        .get("source")
        .and_then(toml::Value::as_str)
        .and_then(|s| Path::new(s).file_stem()?.to_str())
        .map(|stem| stem.trim_start_matches("spin_").replace('_', "-"))
        .unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_follows_next_from_the_public_route() {
        let manifest = r#"
            [[trigger.http]]
            route = { private = true }
            component = "b"
            [[trigger.http]]
            route = "/..."
            component = "a"
            [component.a]
            source = "target/spin/spin_jwt_identity.wasm"
            [component.a.variables]
            next = "http://b.spin.internal"
            [component.b]
            source = "target/spin/spin_ciba_hold.wasm"
            [component.b.variables]
            next = "http://127.0.0.1:8080"
        "#;
        assert_eq!(chain(manifest).unwrap(), ["jwt-identity", "ciba-hold"]);
        let looped = manifest.replace("http://127.0.0.1:8080", "http://a.spin.internal");
        assert!(chain(&looped).unwrap_err().contains("comes back to a"));
        let two = manifest.replace("route = { private = true }", "route = \"/b\"");
        assert!(chain(&two).unwrap_err().contains("found 2"));
    }
}
