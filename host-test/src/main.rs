//! `host-test run`: one request through a plugin, printed as JSON.
//! `host-test serve`: wasi:http components (the Spin build) on a local port.
//! `host-test validate`: a policy against its schema and the real plugins.
//! `host-test test`: policy test files run through the real plugins.

use std::net::SocketAddr;
use std::process::ExitCode;

use host_test::{
    Action, CallState, Cluster, HeaderEdit, HeaderMap, Host, HostOptions, HttpCall, HttpRecord,
    LogEntry,
};
use serde_json::{json, Value};

const USAGE: &str = "usage: host-test run --wasm FILE [--config FILE] [--vm-config FILE]
                     [--method GET] [--path /] [--authority localhost]
                     [--header 'name: value']... [--body TEXT]
                     [--cluster NAME=127.0.0.1:PORT]... [--property PATH=VALUE]...
                     [--no-verify-signature]

Loads the plugin, configures it, sends one request through it (callouts to
--cluster names go to that local server) and prints what the plugin did.

       host-test serve --component [NAME=]FILE... [--policy FILE] [--var NAME=VALUE]...
                       [--upstream URL] [--listen 127.0.0.1:3000]
                       [--allow-outbound NAME=scheme://host[:port]]...

Serves the first wasi:http component on --listen, a fresh instance per request.
Each component gets the variables (--policy is the `policy` variable; a random
`proof_key` unless one is given) and `next`: http://NAME.spin.internal of the
component after it (served in process), or --upstream for the last one.
With any --allow-outbound, each component may call only what its own
--allow-outbound patterns allow (Spin's allowed_outbound_hosts; none:
nowhere); without, anywhere.

       host-test validate --policy FILE [--wasm FILE]... [--env NAME=VALUE]...

Checks the policy against its JSON Schema, then configures each plugin
(--wasm, in chain order) with it as Envoy does at start-up; prints every
problem with its field. Exit status 0: valid; 1: not valid; 2: usage.

       host-test test FILE... [--wasm-dir DIR] [--junit FILE] [--show]

Runs each policy test file (YAML, or JSON by its .json name; the schema is
policies/agentward.tests.schema.json) through the real plugins in --wasm-dir
($AGENTWARD_WASM_DIR, else target/wasm32-wasip1/release): a line per case, a
diff on failure (--show: what came out of every case), JUnit XML to
--junit. Exit status 0: every case passed;
1: one failed or a file did not load; 2: usage.";

#[derive(Default)]
struct Run {
    wasm: String,
    config: Vec<u8>,
    headers: Vec<(String, String)>,
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    body: Option<Vec<u8>>,
    options: HostOptions,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("validate") {
        return validate(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("test") {
        return policy_tests(&args[1..]);
    }
    let run = match parse(&args) {
        Ok(run) => run,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (report, ok) = execute(run);
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse(args: &[String]) -> Result<Run, String> {
    let (command, mut rest) = args.split_first().ok_or("no command")?;
    if command != "run" {
        return Err(format!("unknown command {command}"));
    }
    let mut run = Run::default();
    while let Some((flag, tail)) = rest.split_first() {
        if flag == "--no-verify-signature" {
            run.options.verify_signature = false;
            rest = tail;
            continue;
        }
        let (value, tail) = tail
            .split_first()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        rest = tail;
        let read = |path: &str| std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
        match flag.as_str() {
            "--wasm" => run.wasm = value.clone(),
            "--config" => run.config = read(value)?,
            "--vm-config" => run.options.vm_config = read(value)?,
            "--method" => run.method = Some(value.clone()),
            "--path" => run.path = Some(value.clone()),
            "--authority" => run.authority = Some(value.clone()),
            "--body" => run.body = Some(value.clone().into_bytes()),
            "--header" => {
                let (name, value) = value
                    .split_once(':')
                    .ok_or_else(|| format!("--header {value}: expected 'name: value'"))?;
                run.headers
                    .push((name.trim().to_string(), value.trim().to_string()));
            }
            "--cluster" => {
                let (name, address) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--cluster {value}: expected NAME=HOST:PORT"))?;
                let address: SocketAddr = address
                    .parse()
                    .map_err(|e| format!("--cluster {value}: {e}"))?;
                run.options
                    .clusters
                    .insert(name.to_string(), Cluster::Forward(address));
            }
            "--property" => {
                let (path, value) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--property {value}: expected PATH=VALUE"))?;
                run.options
                    .properties
                    .insert(path.to_string(), value.as_bytes().to_vec());
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if run.wasm.is_empty() {
        return Err("--wasm is required".into());
    }
    Ok(run)
}

/// Runs the request; the report, and whether everything ran without error.
fn execute(mut run: Run) -> (Value, bool) {
    let options = std::mem::take(&mut run.options);
    let host = match Host::load(&run.wasm, options) {
        Ok(host) => host,
        Err(error) => return (json!({ "error": error.to_string() }), false),
    };
    let mut report = json!({});
    let outcome = drive(
        &host,
        &run.config,
        request(&run),
        run.body.as_deref(),
        &mut report,
    );
    report["tick_period_ms"] = json!(host.tick_period().map(|period| period.as_millis()));
    report["http_calls"] = host.http_calls().iter().map(call_json).collect();
    report["logs"] = host.logs().iter().map(log_json).collect();
    report["metrics"] = host
        .metrics()
        .iter()
        .map(|metric| json!({ "name": metric.name, "value": metric.value, "samples": metric.samples }))
        .collect();
    if let Err(error) = &outcome {
        report["error"] = json!(error.to_string());
    }
    (report, outcome.is_ok())
}

fn request(run: &Run) -> Vec<(String, String)> {
    let pseudo = [
        (":method", run.method.as_deref().unwrap_or("GET")),
        (":path", run.path.as_deref().unwrap_or("/")),
        (
            ":authority",
            run.authority.as_deref().unwrap_or("localhost"),
        ),
        (":scheme", "http"),
    ];
    let mut headers: Vec<(String, String)> = pseudo
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    headers.extend(run.headers.iter().cloned());
    headers
}

fn drive(
    host: &Host,
    config: &[u8],
    headers: Vec<(String, String)>,
    body: Option<&[u8]>,
    report: &mut Value,
) -> host_test::Result<()> {
    let configured = host.configure(config)?;
    report["configured"] = json!(configured);
    if !configured {
        return Ok(());
    }
    let req = host.http_context()?;
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let action = req.request_headers(&pairs, body.is_none())?;
    report["request_headers_action"] = action_json(action);
    if let Some(body) = body {
        report["request_body_action"] = action_json(req.request_body(body, true)?);
    }
    report["request"] = record_json(&req.record());
    req.finish()
}

fn action_json(action: Action) -> Value {
    json!(match action {
        Action::Continue => "continue",
        Action::Pause => "pause",
    })
}

fn map_json(map: &HeaderMap) -> Value {
    map.pairs()
        .iter()
        .map(|(name, value)| json!([name, value]))
        .collect()
}

fn record_json(record: &HttpRecord) -> Value {
    let edits: Vec<Value> = record
        .edits
        .iter()
        .map(|edit| match edit {
            HeaderEdit::Add(map, name, value) => json!(["add", format!("{map:?}"), name, value]),
            HeaderEdit::Replace(map, name, value) => {
                json!(["replace", format!("{map:?}"), name, value])
            }
            HeaderEdit::Remove(map, name) => json!(["remove", format!("{map:?}"), name]),
            HeaderEdit::SetAll(map, pairs) => {
                json!(["set_all", format!("{map:?}"), map_json(pairs)])
            }
        })
        .collect();
    json!({
        "sent_upstream": record.sent_upstream(),
        "paused": record.is_paused(),
        "local_response": record.local_response.as_ref().map(|response| json!({
            "status": response.status,
            "headers": map_json(&response.headers),
            "body": response.body_text(),
            "details": response.details,
        })),
        "headers": map_json(&record.request_headers),
        "body": String::from_utf8_lossy(&record.request_body),
        "edits": edits,
        "resumed": record.resumed.iter().map(|stream| format!("{stream:?}")).collect::<Vec<_>>(),
    })
}

fn call_json(call: &HttpCall) -> Value {
    let state = match call.state {
        CallState::Pending => json!("pending"),
        CallState::Answered(status) => json!(status),
        CallState::Failed => json!("failed"),
        CallState::Cancelled => json!("cancelled"),
    };
    json!({
        "token": call.token,
        "cluster": call.cluster,
        "headers": map_json(&call.headers),
        "body": String::from_utf8_lossy(&call.body),
        "timeout_ms": call.timeout.as_millis(),
        "state": state,
    })
}

fn log_json(entry: &LogEntry) -> Value {
    json!({
        "level": entry.level.name(),
        "context": entry.context_id,
        "source": format!("{:?}", entry.source),
        "message": entry.message,
    })
}

/// `host-test serve`.
fn serve(args: &[String]) -> ExitCode {
    let (options, listen) = match parse_serve(args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("host-test serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let runner = host_test::serve::Runner::load(&options)?;
        host_test::serve::serve(runner, listen, |address| {
            use std::io::Write;
            println!("host-test serve: listening on http://{address}");
            let _ = std::io::stdout().flush();
        })
        .await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host-test serve: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn parse_serve(args: &[String]) -> Result<(host_test::serve::ServeOptions, SocketAddr), String> {
    let mut options = host_test::serve::ServeOptions::default();
    let mut listen: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut rest = args;
    while let Some((flag, tail)) = rest.split_first() {
        let (value, tail) = tail
            .split_first()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        rest = tail;
        match flag.as_str() {
            "--component" => {
                let (name, file) = match value.split_once('=') {
                    Some((name, file)) => (name.to_string(), file.to_string()),
                    None => {
                        let stem = std::path::Path::new(value)
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .unwrap_or("app");
                        (stem.replace('_', "-"), value.clone())
                    }
                };
                options.components.push((name, file));
            }
            "--allow-outbound" => {
                let (name, pattern) = value.split_once('=').ok_or_else(|| {
                    format!("--allow-outbound {value}: expected NAME=scheme://host[:port]")
                })?;
                let allowed = host_test::serve::outbound::AllowedHost::parse(pattern)?;
                options
                    .allowed_outbound
                    .get_or_insert_with(Default::default)
                    .entry(name.to_string())
                    .or_default()
                    .push(allowed);
            }
            "--policy" => {
                let policy = std::fs::read_to_string(value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
                options.variables.insert("policy".into(), policy);
            }
            "--var" => {
                let (name, value) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--var {value}: expected NAME=VALUE"))?;
                options.variables.insert(name.into(), value.into());
            }
            "--upstream" => options.upstream = Some(value.trim_end_matches('/').to_string()),
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?;
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.components.is_empty() {
        return Err("--component is required".into());
    }
    options
        .variables
        .entry("proof_key".into())
        .or_insert_with(random_hex_key);
    Ok((options, listen))
}

/// 32 hex digits from the process's random hasher keys.
fn random_hex_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2u8)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// `host-test validate`.
fn validate(args: &[String]) -> ExitCode {
    let mut policy = None;
    let mut check = host_test::validate::Validation::default();
    let mut rest = args;
    while let Some((flag, tail)) = rest.split_first() {
        let Some((value, tail)) = tail.split_first() else {
            eprintln!("{flag} needs a value\n\n{USAGE}");
            return ExitCode::from(2);
        };
        rest = tail;
        match flag.as_str() {
            "--policy" => policy = Some(value.clone()),
            "--wasm" => check.plugins.push(value.into()),
            "--env" => match value.split_once('=') {
                Some((name, v)) => {
                    check.environment.insert(name.to_string(), v.to_string());
                }
                None => {
                    eprintln!("--env {value}: expected NAME=VALUE");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("unknown flag {flag}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(policy) = policy else {
        eprintln!("--policy is required\n\n{USAGE}");
        return ExitCode::from(2);
    };
    let text = match std::fs::read(&policy) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {policy}: {e}");
            return ExitCode::from(2);
        }
    };
    let findings = check.check(&text);
    for finding in &findings {
        println!("{policy}: {finding}");
    }
    if findings.is_empty() {
        println!(
            "{policy}: valid (schema, {} plugin{})",
            check.plugins.len(),
            if check.plugins.len() == 1 { "" } else { "s" }
        );
        ExitCode::SUCCESS
    } else {
        println!("{policy}: {} problem(s)", findings.len());
        ExitCode::FAILURE
    }
}

/// `host-test test`.
fn policy_tests(args: &[String]) -> ExitCode {
    let mut files = Vec::new();
    let mut wasm_dir = std::env::var("AGENTWARD_WASM_DIR")
        .unwrap_or_else(|_| "target/wasm32-wasip1/release".to_string());
    let mut junit = None;
    let mut show = false;
    let mut rest = args;
    while let Some((arg, tail)) = rest.split_first() {
        rest = tail;
        if arg == "--show" {
            show = true;
            continue;
        }
        if !arg.starts_with("--") {
            files.push(std::path::PathBuf::from(arg));
            continue;
        }
        let Some((value, tail)) = rest.split_first() else {
            eprintln!("{arg} needs a value\n\n{USAGE}");
            return ExitCode::from(2);
        };
        rest = tail;
        match arg.as_str() {
            "--wasm-dir" => wasm_dir = value.clone(),
            "--junit" => junit = Some(value.clone()),
            _ => {
                eprintln!("unknown flag {arg}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if files.is_empty() {
        eprintln!("no test file given\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let started = std::time::Instant::now();
    let mut suites = Vec::new();
    let mut broken = 0;
    for path in &files {
        let name = path.display().to_string();
        let runner = host_test::suite::Suite::load(path).and_then(|suite| {
            host_test::suite::Runner::new(suite, std::path::Path::new(&wasm_dir))
        });
        match runner {
            Ok(runner) => {
                let results = runner.run();
                print!("{}", host_test::suite::report::text(&name, &results, show));
                suites.push((name, results));
            }
            Err(problems) => {
                broken += 1;
                for problem in problems {
                    println!("FAIL {name}: {problem}");
                }
            }
        }
    }
    let cases: usize = suites.iter().map(|(_, r)| r.len()).sum();
    let failed: usize = suites
        .iter()
        .map(|(_, r)| r.iter().filter(|c| !c.failures.is_empty()).count())
        .sum();
    println!(
        "{} passed, {failed} failed, {broken} file(s) not run, in {:.2} s",
        cases - failed,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = junit {
        if let Err(e) = std::fs::write(&path, host_test::suite::report::junit(&suites)) {
            eprintln!("cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if failed == 0 && broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
