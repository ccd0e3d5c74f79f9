//! `host-test serve`: a wasi:http 0.2 runner on wasmtime, for the Spin
//! components. It serves the first component on a local address, one fresh
//! instance per request as Spin does, and gives every component what Spin
//! gives it here:
//!
//! - outbound HTTP (`wasi:http/outgoing-handler`): to
//!   `http://<name>.spin.internal`, the named component of this app, in
//!   process (Spin's local service chaining); anywhere else, over the
//!   network; with [`ServeOptions::allowed_outbound`] set, only to each
//!   component's `allowed_outbound_hosts` ([`outbound`]), as Spin;
//! - variables (`fermyon:spin/variables@2.0.0`): the same set for every
//!   component, plus `next`, the origin of the next component in the list
//!   (the last one's is the upstream);
//! - key-value (`fermyon:spin/key-value@2.0.0`): the store `default`, in
//!   memory, one for the whole app, as `key_value_stores = ["default"]`
//!   gives every component in Spin;
//! - `wasi:cli` (stdout and stderr go to the runner's), clocks and random.
//!
//! With `HOST_TEST_SERVE_TIMING` set in its environment, it logs how long
//! each instantiation took.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use tokio::net::TcpListener;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

mod spin {
    wasmtime::component::bindgen!({
        inline: "
            package fermyon:spin@2.0.0;

            interface variables {
                variant error {
                    invalid-name(string),
                    undefined(string),
                    provider(string),
                    other(string),
                }
                get: func(name: string) -> result<string, error>;
            }

            interface key-value {
                resource store {
                    open: static func(label: string) -> result<store, error>;
                    get: func(key: string) -> result<option<list<u8>>, error>;
                    set: func(key: string, value: list<u8>) -> result<_, error>;
                    delete: func(key: string) -> result<_, error>;
                    exists: func(key: string) -> result<bool, error>;
                    get-keys: func() -> result<list<string>, error>;
                }
                variant error {
                    store-table-full,
                    no-such-store,
                    access-denied,
                    other(string),
                }
            }

            world runner {
                import variables;
                import key-value;
            }
        ",
        with: {
            "fermyon:spin/key-value.store": super::KvStore,
        },
    });
}

use spin::fermyon::spin::{key_value, variables};

pub mod outbound;
use outbound::AllowedHost;

/// An open key-value store: the app's one store, `default` (Spin's name
/// for the store every app may be given), shared by every instance of
/// every component of the runner, in memory, for the process's life.
pub struct KvStore {
    entries: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

/// Host names that stand for a component of the app.
pub const INTERNAL_SUFFIX: &str = ".spin.internal";

/// Outbound calls that set no timeout of their own get these.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `host-test serve` serves.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The components, in chain order: (name, `.wasm` file). The first is
    /// the one served; each may call the others by name.
    pub components: Vec<(String, String)>,
    /// Variables every component sees.
    pub variables: HashMap<String, String>,
    /// The last component's `next`.
    pub upstream: Option<String>,
    /// Spin's `allowed_outbound_hosts` by component name. `None`: every
    /// component may call anywhere; `Some`: each only what its list allows
    /// (no entry: nowhere), as Spin does.
    pub allowed_outbound: Option<HashMap<String, Vec<AllowedHost>>>,
}

/// Upper bound on what the key-value store holds: a store that is full
/// refuses writes (a cache then misses), as a host's quota would.
const KV_MAX_ENTRIES: usize = 100_000;

struct App {
    name: String,
    pre: ProxyPre<State>,
    variables: Arc<HashMap<String, String>>,
    /// `None`: unrestricted.
    allowed: Option<Arc<Vec<AllowedHost>>>,
}

/// The loaded components, ready to serve.
pub struct Runner {
    apps: Vec<App>,
    store: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Hooks,
    variables: Arc<HashMap<String, String>>,
    store: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

struct Hooks {
    runner: Arc<Runner>,
    /// The calling component's name and allowed destinations.
    component: String,
    allowed: Option<Arc<Vec<AllowedHost>>>,
}

impl Hooks {
    /// Whether the calling component may reach the request's destination.
    fn may_reach(&self, uri: &http::Uri) -> bool {
        let Some(allowed) = &self.allowed else {
            return true;
        };
        let scheme = uri.scheme_str().unwrap_or("http");
        let host = uri.host().unwrap_or_default();
        allowed
            .iter()
            .any(|a| a.allows(scheme, host, uri.port_u16()))
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl variables::Host for State {
    fn get(&mut self, name: String) -> Result<String, variables::Error> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(variables::Error::InvalidName(name));
        }
        self.variables
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(name))
    }
}

impl key_value::Host for State {}

impl key_value::HostStore for State {
    fn open(
        &mut self,
        label: String,
    ) -> Result<wasmtime::component::Resource<KvStore>, key_value::Error> {
        if label != "default" {
            return Err(key_value::Error::NoSuchStore);
        }
        let store = KvStore {
            entries: self.store.clone(),
        };
        self.table
            .push(store)
            .map_err(|_| key_value::Error::StoreTableFull)
    }

    fn get(
        &mut self,
        store: wasmtime::component::Resource<KvStore>,
        key: String,
    ) -> Result<Option<Vec<u8>>, key_value::Error> {
        self.with_entries(&store, |entries| entries.get(&key).cloned())
    }

    fn set(
        &mut self,
        store: wasmtime::component::Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), key_value::Error> {
        self.with_entries(&store, |entries| {
            if entries.len() >= KV_MAX_ENTRIES && !entries.contains_key(&key) {
                return Err(key_value::Error::Other("the store is full".into()));
            }
            entries.insert(key, value);
            Ok(())
        })?
    }

    fn delete(
        &mut self,
        store: wasmtime::component::Resource<KvStore>,
        key: String,
    ) -> Result<(), key_value::Error> {
        self.with_entries(&store, |entries| {
            entries.remove(&key);
        })
    }

    fn exists(
        &mut self,
        store: wasmtime::component::Resource<KvStore>,
        key: String,
    ) -> Result<bool, key_value::Error> {
        self.with_entries(&store, |entries| entries.contains_key(&key))
    }

    fn get_keys(
        &mut self,
        store: wasmtime::component::Resource<KvStore>,
    ) -> Result<Vec<String>, key_value::Error> {
        self.with_entries(&store, |entries| entries.keys().cloned().collect())
    }

    fn drop(&mut self, store: wasmtime::component::Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl State {
    /// Runs `f` on the entries of an open store.
    fn with_entries<T>(
        &mut self,
        store: &wasmtime::component::Resource<KvStore>,
        f: impl FnOnce(&mut HashMap<String, Vec<u8>>) -> T,
    ) -> Result<T, key_value::Error> {
        let store = self
            .table
            .get(store)
            .map_err(|_| key_value::Error::Other("no such open store".into()))?;
        let mut entries = store
            .entries
            .lock()
            .map_err(|_| key_value::Error::Other("the store is poisoned".into()))?;
        Ok(f(&mut entries))
    }
}

type Sent = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Sent {
        drop(fut);
        let denied = !self.may_reach(request.uri());
        if denied {
            eprintln!(
                "host-test serve: component `{}` may not reach {}://{}: not in its allowed_outbound_hosts",
                self.component,
                request.uri().scheme_str().unwrap_or("http"),
                request.uri().authority().map(|a| a.as_str()).unwrap_or_default(),
            );
        }
        let internal = request
            .uri()
            .host()
            .and_then(|host| host.strip_suffix(INTERNAL_SUFFIX))
            .map(str::to_string);
        let runner = self.runner.clone();
        Box::new(async move {
            if denied {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let done: Box<dyn std::future::Future<Output = _> + Send> = Box::new(async { Ok(()) });
            if let Some(name) = internal {
                let index = runner
                    .apps
                    .iter()
                    .position(|a| a.name == name)
                    .ok_or(wasmtime_wasi_http::Error::DestinationNotFound)?;
                let response = runner.clone().handle(index, request).await.map_err(|e| {
                    eprintln!("host-test serve: component `{name}` failed: {e:?}");
                    wasmtime_wasi_http::Error::HttpRequestDenied
                })?;
                return Ok((response, done));
            }
            let options = options.unwrap_or_default();
            let options = RequestOptions {
                connect_timeout: options.connect_timeout.or(Some(CONNECT_TIMEOUT)),
                first_byte_timeout: options.first_byte_timeout.or(Some(FIRST_BYTE_TIMEOUT)),
                between_bytes_timeout: options.between_bytes_timeout.or(Some(FIRST_BYTE_TIMEOUT)),
            };
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

impl Runner {
    /// Compiles and links every component.
    pub fn load(options: &ServeOptions) -> wasmtime::Result<Arc<Runner>> {
        let engine = Engine::new(&Config::new())?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        variables::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        key_value::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        let mut apps = Vec::new();
        for (i, (name, file)) in options.components.iter().enumerate() {
            let component = Component::from_file(&engine, file)
                .map_err(|e| e.context(format!("cannot load {file}")))?;
            let pre = ProxyPre::new(linker.instantiate_pre(&component)?)
                .map_err(|e| e.context(format!("{file} is not a wasi:http component")))?;
            let mut variables = options.variables.clone();
            let next = match options.components.get(i + 1) {
                Some((next, _)) => Some(format!("http://{next}{INTERNAL_SUFFIX}")),
                None => options.upstream.clone(),
            };
            if let Some(next) = next {
                variables.entry("next".to_string()).or_insert(next);
            }
            let allowed = options
                .allowed_outbound
                .as_ref()
                .map(|lists| Arc::new(lists.get(name).cloned().unwrap_or_default()));
            apps.push(App {
                name: name.clone(),
                pre,
                variables: Arc::new(variables),
                allowed,
            });
        }
        if apps.is_empty() {
            wasmtime::bail!("no component to serve");
        }
        Ok(Arc::new(Runner {
            apps,
            store: Arc::default(),
        }))
    }

    /// Runs one request through a fresh instance of component `index`.
    pub async fn handle<B>(
        self: Arc<Self>,
        index: usize,
        request: http::Request<B>,
    ) -> wasmtime::Result<http::Response<HyperOutgoingBody>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Some(app) = self.apps.get(index) else {
            wasmtime::bail!("no component {index}");
        };
        let pre = app.pre.clone();
        let mut store = Store::new(
            pre.engine(),
            State {
                wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                hooks: Hooks {
                    runner: self.clone(),
                    component: app.name.clone(),
                    allowed: app.allowed.clone(),
                },
                variables: app.variables.clone(),
                store: self.store.clone(),
            },
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let timing = std::env::var_os("HOST_TEST_SERVE_TIMING").is_some();
        let task = tokio::task::spawn(async move {
            let started = std::time::Instant::now();
            let proxy = pre.instantiate_async(&mut store).await?;
            if timing {
                eprintln!(
                    "host-test serve: instantiated in {} µs",
                    started.elapsed().as_micros()
                );
            }
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => wasmtime::bail!("the component answered an error: {code:?}"),
            Err(_) => match task.await {
                Ok(Ok(())) => wasmtime::bail!("the component never set a response"),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// Serves the first component on `listen` until the process ends; calls
/// `ready` with the bound address first.
pub async fn serve(
    runner: Arc<Runner>,
    listen: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> wasmtime::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    ready(listener.local_addr()?);
    loop {
        let (client, _) = listener.accept().await?;
        let runner = runner.clone();
        tokio::task::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let runner = runner.clone();
                async move {
                    match runner.handle(0, request).await {
                        Ok(response) => Ok::<_, std::convert::Infallible>(response),
                        Err(e) => {
                            eprintln!("host-test serve: {e:?}");
                            Ok(failure())
                        }
                    }
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}

/// What a client gets when a component traps or never answers: a 500,
/// as Spin answers then.
fn failure() -> http::Response<HyperOutgoingBody> {
    use http_body_util::{BodyExt, Full};
    let body = Full::new(bytes::Bytes::from_static(b"component failed\n"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = http::Response::new(body);
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}
