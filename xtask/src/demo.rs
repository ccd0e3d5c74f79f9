//! `cargo xtask demo`: the stock-trade agent calls the API through Envoy and
//! the jwt-identity plugin, with the IdP stand-in serving the keys. Logs and
//! the rendered config go to `.demo/`; everything started here stops when the
//! demo ends. The steps themselves are in examples/stock-trade/agent.py.

use crate::stack::{self, Service};
use crate::{build, root, setup, Result};
use std::collections::HashMap;
use std::time::Duration;

pub fn run() -> Result {
    setup::run(setup::Extras::default())?;
    build::plugins()?; // the demo does not use the vault yet
    let dir = root().join(".demo");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    let listener = stack::port_or_free(stack::LISTENER)?;
    let admin = stack::port_or_free(stack::ADMIN)?;
    let upstream_port = stack::port_or_free(stack::UPSTREAM)?;
    let idp_port = stack::port_or_free(stack::IDP)?;
    let ready = Duration::from_secs(30);

    let mut idp = Service::spawn(
        "idp",
        stack::python("examples/stock-trade/idp.py").args([
            "serve",
            "--port",
            &idp_port.to_string(),
        ]),
        &dir,
    )?;
    idp.wait_ready(idp_port, "/healthz", ready)?;
    let mut upstream = Service::spawn(
        "upstream",
        stack::python("examples/stock-trade/upstream.py")
            .args(["--port", &upstream_port.to_string()]),
        &dir,
    )?;
    upstream.wait_ready(upstream_port, "/healthz", ready)?;

    let ports = HashMap::from([
        (stack::LISTENER, listener),
        (stack::ADMIN, admin),
        (stack::UPSTREAM, upstream_port),
        (stack::IDP, idp_port),
    ]);
    let shipped = root().join("envoy/jwt-identity.yaml");
    let template =
        std::fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, stack::render(&template, &ports, None)).map_err(|e| e.to_string())?;
    let mut envoy = Service::spawn("envoy", &mut stack::envoy(&config, admin, 1), &dir)?;
    envoy.wait_ready(admin, "/ready", ready)?;

    println!(
        "\n[demo] gateway   http://localhost:{listener}  (Envoy {}, jwt_identity.wasm)",
        setup::envoy_version()?
    );
    println!(
        "[demo] upstream  http://127.0.0.1:{upstream_port}  (examples/stock-trade/upstream.py)"
    );
    println!("[demo] idp       http://127.0.0.1:{idp_port}  (examples/stock-trade/idp.py)");
    println!("[demo] logs and config in .demo/\n");
    let agent = crate::run_visible(stack::python("examples/stock-trade/agent.py").args([
        "--gateway",
        &format!("http://localhost:{listener}"),
        "--idp",
        &format!("http://127.0.0.1:{idp_port}"),
    ]));
    drop((envoy, upstream, idp));
    agent.map_err(|_| "the demo did not go as expected; see above and .demo/*.log".to_string())
}
