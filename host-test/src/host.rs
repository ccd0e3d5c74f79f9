//! The host: one plugin VM with its root context (id 1), driven by a test.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, ExternType, Func, Instance, Linker, Module, Store, Val};

use crate::abi::{Action, LogLevel, Status, StreamType};
use crate::headers::HeaderMap;
use crate::http_call::{self, CallState, Cluster, HttpCall, HttpCallResponse};
use crate::metrics::Metric;
use crate::record::{Callback, HttpRecord, LogEntry, LogSource};
use crate::shared::SharedData;
use crate::state::State;
use crate::{hostcalls, wasi};

/// The root context's id; HTTP contexts count up from 2.
pub const ROOT_CONTEXT_ID: u32 = 1;

/// How to set up a [`Host`].
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// The VM configuration buffer given to `proxy_on_vm_start`.
    pub vm_config: Vec<u8>,
    /// The VM id (names this VM's shared queues).
    pub vm_id: String,
    /// Properties the plugin can read, by dotted path (`plugin_name`,
    /// `request.path`); a segment that holds a dot cannot be addressed.
    pub properties: BTreeMap<String, Vec<u8>>,
    /// The shared-data store; clone one into several hosts to model
    /// several worker VMs.
    pub shared_data: SharedData,
    /// Offer Envoy's `verify_signature` foreign function; when false the
    /// plugin gets `NotFound`, as on a host without it.
    pub verify_signature: bool,
    /// Known clusters. Empty accepts every cluster name and leaves its
    /// calls to the test; otherwise an unknown cluster is `BadArgument`,
    /// as in Envoy.
    pub clusters: HashMap<String, Cluster>,
    /// What `proxy_get_log_level` answers (every line is recorded anyway).
    pub log_level: LogLevel,
    /// The clock's start; it moves only when the test moves it.
    pub start_time: SystemTime,
    /// The VM's environment variables (Envoy:
    /// `vm_config.environment_variables`), read through WASI.
    pub environment: BTreeMap<String, String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            vm_config: Vec::new(),
            vm_id: String::new(),
            properties: BTreeMap::new(),
            shared_data: SharedData::new(),
            verify_signature: true,
            clusters: HashMap::new(),
            log_level: LogLevel::Info,
            start_time: SystemTime::now(),
            environment: BTreeMap::new(),
        }
    }
}

impl HostOptions {
    /// Adds a property (builder style).
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(path.to_string(), value.into());
        self
    }

    /// Sends callouts to `cluster` to a real server at `address`.
    pub fn forward(mut self, cluster: &str, address: std::net::SocketAddr) -> Self {
        self.clusters
            .insert(cluster.to_string(), Cluster::Forward(address));
        self
    }
}

/// What went wrong driving the plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The file could not be read, compiled or instantiated.
    Load(String),
    /// The plugin trapped (a panic, `unreachable`, an unimplemented
    /// import) in `callback`; the VM is broken from now on.
    Trap {
        /// The export that was running.
        callback: String,
        /// The trap, with the plugin's stderr (panic message) when any.
        message: String,
    },
    /// The VM trapped earlier; like Envoy, it fails every later request.
    Broken(String),
    /// `configure` did not run, or the plugin refused its configuration.
    NotConfigured,
    /// The HTTP context already finished, or answered locally.
    StreamEnded(u32),
    /// No pending callout has this token.
    UnknownCall(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(message) => write!(f, "cannot load the plugin: {message}"),
            Error::Trap { callback, message } => {
                write!(f, "the plugin trapped in {callback}: {message}")
            }
            Error::Broken(message) => write!(f, "the VM is broken by an earlier trap: {message}"),
            Error::NotConfigured => write!(f, "the plugin is not configured"),
            Error::StreamEnded(id) => write!(f, "HTTP context {id} has ended"),
            Error::UnknownCall(token) => write!(f, "no pending callout has token {token}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result of driving the plugin.
pub type Result<T> = std::result::Result<T, Error>;

/// Process-wide engine and compiled modules, so that many hosts of one
/// plugin in a test binary compile it once.
fn compiled(wasm: &[u8]) -> Result<(Engine, Module)> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    static MODULES: OnceLock<Mutex<HashMap<[u8; 32], Module>>> = OnceLock::new();
    let engine = ENGINE.get_or_init(Engine::default).clone();
    let key: [u8; 32] = Sha256::digest(wasm).into();
    let modules = || {
        MODULES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(module) = modules().get(&key) {
        return Ok((engine, module.clone()));
    }
    // Compiled without the lock held, so several modules compile at once
    // (`Host::compile` from threads).
    let module = on_disk(&engine, wasm, &key)?;
    modules().insert(key, module.clone());
    Ok((engine, module))
}

/// Compiled modules kept between runs (Cranelift takes seconds per plugin):
/// `$HOST_TEST_CACHE`, else `$XDG_CACHE_HOME/agentward-host-test`, else
/// `~/.cache/agentward-host-test`; `HOST_TEST_CACHE=off` keeps none.
fn cache_dir() -> Option<std::path::PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    match var("HOST_TEST_CACHE") {
        Some(dir) if dir == "off" => None,
        Some(dir) => Some(dir.into()),
        None => var("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| var("HOME").map(|home| Path::new(&home).join(".cache")))
            .map(|dir| dir.join("agentward-host-test")),
    }
}

/// Cached files older than this are removed when a new one is written.
const CACHE_DAYS: u64 = 7;

/// The module for `wasm`: from the on-disk cache when this engine wrote it
/// there, else compiled and written there (best effort).
fn on_disk(engine: &Engine, wasm: &[u8], key: &[u8; 32]) -> Result<Module> {
    use std::hash::{Hash, Hasher};
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let name: String = key
        .iter()
        .chain(engine_hash.finish().to_be_bytes().iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir();
    let file = dir.as_ref().map(|dir| dir.join(format!("{name}.cwasm")));
    if let Some(file) = file.as_ref().filter(|f| f.is_file()) {
        // SAFETY: wasmtime runs a deserialized module's machine code as it
        // is. The file is one `on_disk` wrote into the user's own cache
        // directory, named by the hash of the wasm and of this engine's
        // configuration, and wasmtime refuses a file written by another
        // version or configuration (then the module is compiled again).
        if let Ok(module) = unsafe { Module::deserialize_file(engine, file) } {
            return Ok(module);
        }
    }
    let module = Module::new(engine, wasm).map_err(|e| Error::Load(format!("{e:?}")))?;
    if let (Some(dir), Some(file), Ok(bytes)) = (&dir, &file, module.serialize()) {
        let partial = file.with_extension(format!("{}.partial", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&partial, bytes))
            .and_then(|()| std::fs::rename(&partial, file));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        prune(dir);
    }
    Ok(module)
}

/// Removes cached modules not written for [`CACHE_DAYS`] days.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let old = Duration::from_secs(CACHE_DAYS * 24 * 3600);
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > old);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

struct Vm {
    store: Store<State>,
    instance: Instance,
    broken: Option<String>,
    vm_started: bool,
    configured: bool,
}

impl Vm {
    fn new(wasm: &[u8], options: HostOptions) -> Result<Self> {
        let (engine, module) = compiled(wasm)?;
        let abi = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];
        if !module.exports().any(|export| abi.contains(&export.name())) {
            return Err(Error::Load(
                "the module exports no proxy_abi_version_0_2_x: not a proxy-wasm plugin".into(),
            ));
        }
        let mut linker = Linker::new(&engine);
        let load = |e: wasmtime::Error| Error::Load(format!("{e:?}"));
        hostcalls::define(&mut linker).map_err(load)?;
        wasi::define(&mut linker).map_err(load)?;
        let mut store = Store::new(&engine, State::new(options));
        define_missing_imports(&mut linker, &mut store, &module)?;
        let instance = linker.instantiate(&mut store, &module).map_err(load)?;
        let mut vm = Vm {
            store,
            instance,
            broken: None,
            vm_started: false,
            configured: false,
        };
        let start = ["_initialize", "_start"]
            .into_iter()
            .find(|name| vm.instance.get_func(&mut vm.store, name).is_some());
        if let Some(start) = start {
            vm.call(ROOT_CONTEXT_ID, start, &[])?;
        }
        vm.call(
            ROOT_CONTEXT_ID,
            "proxy_on_context_create",
            &[ROOT_CONTEXT_ID, 0],
        )?;
        Ok(vm)
    }

    fn usable(&self) -> Result<()> {
        match &self.broken {
            Some(message) => Err(Error::Broken(message.clone())),
            None => Ok(()),
        }
    }

    /// Runs an export as `context`; `None` when the plugin does not export
    /// it (the SDK's no-op default) or it returns nothing.
    fn call(&mut self, context: u32, name: &str, args: &[u32]) -> Result<Option<i32>> {
        self.usable()?;
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let args: Vec<Val> = args.iter().map(|arg| Val::I32(*arg as i32)).collect();
        let mut results = vec![Val::I32(0); func.ty(&self.store).results().len()];
        self.store.data_mut().effective_context = context;
        let logs_before = self.store.data().logs.len();
        let outcome = func.call(&mut self.store, &args, &mut results);
        let state = self.store.data_mut();
        state.effective_context = ROOT_CONTEXT_ID;
        if let Err(trap) = outcome {
            state.flush_stdio();
            // The panic message: on stderr, or logged at critical by the
            // SDK's panic hook.
            let stderr: Vec<&str> = state.logs[logs_before..]
                .iter()
                .filter(|entry| {
                    entry.source == LogSource::Stderr || entry.level == LogLevel::Critical
                })
                .map(|entry| entry.message.as_str())
                .collect();
            let mut message = format!("{trap:?}");
            if !stderr.is_empty() {
                message = format!("{} ({message})", stderr.join("\n"));
            }
            self.broken = Some(message.clone());
            return Err(Error::Trap {
                callback: name.to_string(),
                message,
            });
        }
        Ok(results.first().and_then(Val::i32))
    }

    fn call_bool(&mut self, context: u32, name: &str, args: &[u32]) -> Result<bool> {
        Ok(self.call(context, name, args)?.is_none_or(|code| code != 0))
    }

    fn record(&mut self, id: u32) -> Result<&mut HttpRecord> {
        match self.store.data_mut().contexts.get_mut(&id) {
            Some(record) if !record.finished && record.local_response.is_none() => Ok(record),
            _ => Err(Error::StreamEnded(id)),
        }
    }

    /// Delivers the answer (or failure, `None`) of callout `token`.
    fn deliver(&mut self, token: u32, response: Option<HttpCallResponse>) -> Result<()> {
        self.usable()?;
        let state = self.store.data_mut();
        let call = state
            .call_mut(token)
            .filter(|call| call.state == CallState::Pending)
            .ok_or(Error::UnknownCall(token))?;
        let context_id = call.context_id;
        let caller_gone = context_id != ROOT_CONTEXT_ID
            && state
                .contexts
                .get(&context_id)
                .is_none_or(|record| record.finished);
        let call = state.call_mut(token).ok_or(Error::UnknownCall(token))?;
        if caller_gone {
            call.state = CallState::Cancelled;
            return Err(Error::StreamEnded(context_id));
        }
        call.state = match &response {
            Some(answer) => CallState::Answered(answer.status().unwrap_or(0)),
            None => CallState::Failed,
        };
        let sizes = response.as_ref().map_or([0, 0, 0], |answer| {
            [
                answer.headers.len() as u32,
                answer.body.len() as u32,
                answer.trailers.len() as u32,
            ]
        });
        state.call_response = response;
        let result = self.call(
            context_id,
            "proxy_on_http_call_response",
            &[context_id, token, sizes[0], sizes[1], sizes[2]],
        );
        self.store.data_mut().call_response = None;
        result.map(drop)
    }

    /// Performs the pending callouts to forwarding clusters, as Envoy would
    /// once the current callback returned; answers may trigger more.
    fn forward_calls(&mut self) -> Result<()> {
        loop {
            let state = self.store.data();
            let next = state.calls.iter().find_map(|call| {
                match state.options.clusters.get(&call.cluster) {
                    Some(Cluster::Forward(address)) if call.state == CallState::Pending => {
                        Some((call.token, *address))
                    }
                    _ => None,
                }
            });
            let Some((token, address)) = next else {
                return Ok(());
            };
            let call = state.calls[token as usize - 1].clone();
            match self.deliver(token, http_call::forward(address, &call)) {
                Ok(()) | Err(Error::StreamEnded(_)) => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Runs a stream callback on HTTP context `id` and records its action.
    fn stream_callback(
        &mut self,
        id: u32,
        callback: Callback,
        export: &str,
        args: &[u32],
    ) -> Result<Action> {
        let action = Action::from_code(self.call(id, export, args)?.unwrap_or(0));
        if let Some(record) = self.store.data_mut().contexts.get_mut(&id) {
            record.actions.push((callback, action));
        }
        self.forward_calls()?;
        Ok(action)
    }

    fn headers(
        &mut self,
        id: u32,
        stream: StreamType,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        let record = self.record(id)?;
        let map = HeaderMap::from_pairs(headers);
        match stream {
            StreamType::Request => record.request_headers = map,
            StreamType::Response => record.response_headers = map,
        }
        let direction = record.direction(stream);
        direction.headers_open = true;
        direction.end_of_stream = end_of_stream;
        let (callback, export) = match stream {
            StreamType::Request => (Callback::RequestHeaders, "proxy_on_request_headers"),
            StreamType::Response => (Callback::ResponseHeaders, "proxy_on_response_headers"),
        };
        let args = [id, headers.len() as u32, u32::from(end_of_stream)];
        let action = self.stream_callback(id, callback, export, &args)?;
        if let Some(record) = self.store.data_mut().contexts.get_mut(&id) {
            let direction = record.direction(stream);
            // A resume during the callback (or after it, from a callout
            // answer) already let the headers go.
            if action == Action::Continue {
                direction.headers_open = false;
            } else if direction.headers_open {
                direction.headers_held = true;
                direction.paused = true;
            }
        }
        Ok(action)
    }

    fn body(
        &mut self,
        id: u32,
        stream: StreamType,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action> {
        let record = self.record(id)?;
        let direction = record.direction(stream);
        direction.buffer.extend_from_slice(chunk);
        direction.end_of_stream |= end_of_stream;
        if direction.headers_held {
            return Ok(Action::Pause);
        }
        let args = [id, direction.buffer.len() as u32, u32::from(end_of_stream)];
        let (callback, export) = match stream {
            StreamType::Request => (Callback::RequestBody, "proxy_on_request_body"),
            StreamType::Response => (Callback::ResponseBody, "proxy_on_response_body"),
        };
        let action = self.stream_callback(id, callback, export, &args)?;
        if let Some(record) = self.store.data_mut().contexts.get_mut(&id) {
            match action {
                Action::Continue => record.resume(stream),
                Action::Pause => record.direction(stream).paused = true,
            }
        }
        Ok(action)
    }

    fn trailers(
        &mut self,
        id: u32,
        stream: StreamType,
        trailers: &[(&str, &str)],
    ) -> Result<Action> {
        let record = self.record(id)?;
        let map = HeaderMap::from_pairs(trailers);
        match stream {
            StreamType::Request => record.request_trailers = map,
            StreamType::Response => record.response_trailers = map,
        }
        let direction = record.direction(stream);
        direction.end_of_stream = true;
        if direction.headers_held {
            return Ok(Action::Pause);
        }
        let (callback, export) = match stream {
            StreamType::Request => (Callback::RequestTrailers, "proxy_on_request_trailers"),
            StreamType::Response => (Callback::ResponseTrailers, "proxy_on_response_trailers"),
        };
        let action = self.stream_callback(id, callback, export, &[id, trailers.len() as u32])?;
        if let Some(record) = self.store.data_mut().contexts.get_mut(&id) {
            match action {
                Action::Continue => record.resume(stream),
                Action::Pause => record.direction(stream).paused = true,
            }
        }
        Ok(action)
    }

    fn finish(&mut self, id: u32) -> Result<()> {
        let finished = self
            .store
            .data()
            .contexts
            .get(&id)
            .is_none_or(|record| record.finished);
        if finished {
            return Ok(());
        }
        let done = self.call(id, "proxy_on_done", &[id]);
        let logged = done.and_then(|_| self.call(id, "proxy_on_log", &[id]));
        let state = self.store.data_mut();
        if let Some(record) = state.contexts.get_mut(&id) {
            record.finished = true;
        }
        for call in &mut state.calls {
            if call.context_id == id && call.state == CallState::Pending {
                call.state = CallState::Cancelled;
            }
        }
        logged.and_then(|_| self.call(id, "proxy_on_delete", &[id]).map(drop))
    }
}

/// Defines every import the module declares that the host does not
/// implement: `env.proxy_*` calls answer `Unimplemented`, anything else
/// traps with a message naming it. So any real `.wasm` loads.
fn define_missing_imports(
    linker: &mut Linker<State>,
    store: &mut Store<State>,
    module: &Module,
) -> Result<()> {
    for import in module.imports() {
        if linker.get_by_import(&mut *store, &import).is_some() {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            return Err(Error::Load(format!(
                "the module imports {}.{}, which is not a function: not supported",
                import.module(),
                import.name()
            )));
        };
        let name = format!("{}.{}", import.module(), import.name());
        let returns_status = import.module() == "env"
            && import.name().starts_with("proxy_")
            && ty.results().len() == 1;
        let stub = Func::new(&mut *store, ty, move |_, _, results| {
            if returns_status {
                results[0] = Val::I32(Status::Unimplemented.code());
                Ok(())
            } else {
                Err(wasmtime::format_err!("host-test does not implement {name}"))
            }
        });
        linker
            .define(&mut *store, import.module(), import.name(), stub)
            .map_err(|e| Error::Load(format!("{e:?}")))?;
    }
    Ok(())
}

/// A proxy-wasm host running one plugin: one VM, one root context.
///
/// Cheap to clone (clones share the VM). Not `Send`: one test thread drives
/// it; share state across hosts with [`SharedData`].
#[derive(Clone)]
pub struct Host {
    vm: Rc<RefCell<Vm>>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("broken", &self.vm.borrow().broken)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Loads a `.wasm` file, runs `_initialize` and creates the root context.
    pub fn load(path: impl AsRef<Path>, options: HostOptions) -> Result<Self> {
        let path = path.as_ref();
        let wasm = std::fs::read(path)
            .map_err(|e| Error::Load(format!("cannot read {}: {e}", path.display())))?;
        Self::from_bytes(&wasm, options)
    }

    /// Like [`Host::load`], from the module's bytes.
    pub fn from_bytes(wasm: &[u8], options: HostOptions) -> Result<Self> {
        Ok(Self {
            vm: Rc::new(RefCell::new(Vm::new(wasm, options)?)),
        })
    }

    /// The `proxy_on_*` callbacks the module exports, sorted: the ones a
    /// host calls (it skips the others).
    pub fn callbacks(&self) -> Vec<String> {
        let mut vm = self.vm.borrow_mut();
        let vm = &mut *vm;
        let mut names: Vec<String> = vm
            .instance
            .exports(&mut vm.store)
            .map(|e| e.name().to_string())
            .filter(|n| n.starts_with("proxy_on_"))
            .collect();
        names.sort();
        names
    }

    /// Runs `proxy_on_vm_start` (first time only) then `proxy_on_configure`
    /// with this plugin configuration; false when the plugin refuses either.
    pub fn configure(&self, plugin_config: impl Into<Vec<u8>>) -> Result<bool> {
        let mut vm = self.vm.borrow_mut();
        vm.store.data_mut().plugin_config = plugin_config.into();
        if !vm.vm_started {
            let size = vm.store.data().options.vm_config.len() as u32;
            let started = vm.call_bool(
                ROOT_CONTEXT_ID,
                "proxy_on_vm_start",
                &[ROOT_CONTEXT_ID, size],
            )?;
            vm.forward_calls()?;
            if !started {
                vm.configured = false;
                return Ok(false);
            }
            vm.vm_started = true;
        }
        let size = vm.store.data().plugin_config.len() as u32;
        let configured = vm.call_bool(
            ROOT_CONTEXT_ID,
            "proxy_on_configure",
            &[ROOT_CONTEXT_ID, size],
        )?;
        vm.configured = configured;
        vm.forward_calls()?;
        Ok(configured)
    }

    /// Runs `proxy_on_tick` on the root context (whatever the tick period).
    pub fn tick(&self) -> Result<()> {
        let mut vm = self.vm.borrow_mut();
        vm.call(ROOT_CONTEXT_ID, "proxy_on_tick", &[ROOT_CONTEXT_ID])?;
        vm.forward_calls()
    }

    /// The period the plugin asked for with `proxy_set_tick_period_milliseconds`.
    pub fn tick_period(&self) -> Option<Duration> {
        self.vm.borrow().store.data().tick_period
    }

    /// The host clock (what `proxy_get_current_time_nanoseconds` and WASI
    /// clocks return).
    pub fn now(&self) -> SystemTime {
        self.vm.borrow().store.data().now
    }

    /// Sets the clock.
    pub fn set_time(&self, now: SystemTime) {
        self.vm.borrow_mut().store.data_mut().now = now;
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.vm.borrow_mut().store.data_mut().now += by;
    }

    /// Sets a property the plugin can read (dotted path).
    pub fn set_property(&self, path: &str, value: impl Into<Vec<u8>>) {
        let mut vm = self.vm.borrow_mut();
        let properties = &mut vm.store.data_mut().options.properties;
        properties.insert(path.to_string(), value.into());
    }

    /// A property as it stands (the plugin may have set it).
    pub fn property(&self, path: &str) -> Option<Vec<u8>> {
        self.vm
            .borrow()
            .store
            .data()
            .options
            .properties
            .get(path)
            .cloned()
    }

    /// Compiles the plugin at `path` into the process-wide cache without
    /// starting it; call from several threads to compile several at once.
    pub fn compile(path: impl AsRef<Path>) -> Result<()> {
        let wasm = std::fs::read(path.as_ref())
            .map_err(|e| Error::Load(format!("{}: {e}", path.as_ref().display())))?;
        compiled(&wasm).map(drop)
    }

    /// Every property as it stands (what the test set, what the plugin
    /// set: Envoy's filter state, which later filters read).
    pub fn properties(&self) -> BTreeMap<String, Vec<u8>> {
        self.vm.borrow().store.data().options.properties.clone()
    }

    /// Creates an HTTP context (`proxy_on_context_create`) for one request.
    pub fn http_context(&self) -> Result<HttpContext> {
        let mut vm = self.vm.borrow_mut();
        vm.usable()?;
        if !vm.configured {
            return Err(Error::NotConfigured);
        }
        let id = vm
            .store
            .data()
            .contexts
            .keys()
            .next_back()
            .map_or(2, |last| last + 1);
        vm.store.data_mut().contexts.insert(
            id,
            HttpRecord {
                id,
                ..HttpRecord::default()
            },
        );
        vm.call(id, "proxy_on_context_create", &[id, ROOT_CONTEXT_ID])?;
        Ok(HttpContext {
            id,
            vm: Rc::clone(&self.vm),
        })
    }

    /// Every callout so far, in order (token `n` is at index `n - 1`).
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.vm.borrow().store.data().calls.clone()
    }

    /// The callouts still waiting for an answer.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        let vm = self.vm.borrow();
        let calls = vm.store.data().calls.iter();
        calls
            .filter(|call| call.state == CallState::Pending)
            .cloned()
            .collect()
    }

    /// Answers callout `token`; runs `proxy_on_http_call_response` on the
    /// context that made it.
    pub fn answer_http_call(
        &self,
        token: u32,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        self.respond_http_call(token, HttpCallResponse::new(status, headers, body))
    }

    /// Answers callout `token` with a full response.
    pub fn respond_http_call(&self, token: u32, response: HttpCallResponse) -> Result<()> {
        let mut vm = self.vm.borrow_mut();
        vm.deliver(token, Some(response))?;
        vm.forward_calls()
    }

    /// Fails callout `token` (reset, timeout): the plugin sees no headers.
    pub fn fail_http_call(&self, token: u32) -> Result<()> {
        let mut vm = self.vm.borrow_mut();
        vm.deliver(token, None)?;
        vm.forward_calls()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.vm.borrow().store.data().logs.clone()
    }

    /// True when some log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        let vm = self.vm.borrow();
        let mut logs = vm.store.data().logs.iter();
        logs.any(|entry| entry.message.contains(text))
    }

    /// A metric by the name the plugin defined it with.
    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.vm.borrow().store.data().metrics.by_name(name).cloned()
    }

    /// Every metric the plugin defined.
    pub fn metrics(&self) -> Vec<Metric> {
        self.vm.borrow().store.data().metrics.all().to_vec()
    }

    /// The shared-data store this host uses.
    pub fn shared_data(&self) -> SharedData {
        self.vm.borrow().store.data().options.shared_data.clone()
    }

    /// Makes hostcall `name` (`proxy_get_shared_data`, …) answer `status`
    /// without acting, until [`Host::restore_hostcall`]: a host in trouble,
    /// or one that answers a status the SDK does not expect. Honoured by
    /// `proxy_log`, `proxy_get_current_time_nanoseconds`,
    /// `proxy_set_tick_period_milliseconds`, `proxy_get_buffer_bytes`,
    /// `proxy_get_header_map_pairs`, `proxy_get_header_map_value`,
    /// `proxy_get_shared_data`, `proxy_set_shared_data`, `proxy_http_call`,
    /// `proxy_define_metric`, `proxy_increment_metric` and
    /// `proxy_call_foreign_function`.
    pub fn fail_hostcall(&self, name: &str, status: Status) {
        let mut vm = self.vm.borrow_mut();
        vm.store.data_mut().failing.insert(name.to_string(), status);
    }

    /// Lets hostcall `name` act again.
    pub fn restore_hostcall(&self, name: &str) {
        self.vm.borrow_mut().store.data_mut().failing.remove(name);
    }

    /// True once the plugin trapped: every later call fails.
    pub fn is_broken(&self) -> bool {
        self.vm.borrow().broken.is_some()
    }

    /// The trap that broke the VM.
    pub fn trap_message(&self) -> Option<String> {
        self.vm.borrow().broken.clone()
    }

    /// A snapshot of HTTP context `id`.
    pub fn record(&self, id: u32) -> Option<HttpRecord> {
        self.vm.borrow().store.data().contexts.get(&id).cloned()
    }
}

/// One request through the plugin: an HTTP context. Drive it with the
/// callbacks in the order Envoy would, then [`finish`](Self::finish) it.
#[derive(Clone)]
pub struct HttpContext {
    id: u32,
    vm: Rc<RefCell<Vm>>,
}

impl fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpContext")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl HttpContext {
    /// The context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `proxy_on_request_headers` with these headers (pseudo-headers such
    /// as `:method` and `:path` included).
    pub fn request_headers(&self, headers: &[(&str, &str)], end_of_stream: bool) -> Result<Action> {
        let mut vm = self.vm.borrow_mut();
        vm.headers(self.id, StreamType::Request, headers, end_of_stream)
    }

    /// `proxy_on_request_body` with this chunk. While the headers callback
    /// holds the request, Envoy withholds the body from the plugin: the
    /// chunk is buffered, the plugin is not called, and this returns `Pause`.
    pub fn request_body(&self, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        let mut vm = self.vm.borrow_mut();
        vm.body(self.id, StreamType::Request, chunk, end_of_stream)
    }

    /// `proxy_on_request_trailers`.
    pub fn request_trailers(&self, trailers: &[(&str, &str)]) -> Result<Action> {
        let mut vm = self.vm.borrow_mut();
        vm.trailers(self.id, StreamType::Request, trailers)
    }

    /// `proxy_on_response_headers` (`:status` included).
    pub fn response_headers(
        &self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        let mut vm = self.vm.borrow_mut();
        vm.headers(self.id, StreamType::Response, headers, end_of_stream)
    }

    /// `proxy_on_response_body`, buffered like [`request_body`](Self::request_body).
    pub fn response_body(&self, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        let mut vm = self.vm.borrow_mut();
        vm.body(self.id, StreamType::Response, chunk, end_of_stream)
    }

    /// `proxy_on_response_trailers`.
    pub fn response_trailers(&self, trailers: &[(&str, &str)]) -> Result<Action> {
        let mut vm = self.vm.borrow_mut();
        vm.trailers(self.id, StreamType::Response, trailers)
    }

    /// Ends the stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    /// Its pending callouts are cancelled and the id becomes unknown to
    /// `proxy_set_effective_context`, as when a client goes away.
    pub fn finish(&self) -> Result<()> {
        self.vm.borrow_mut().finish(self.id)
    }

    /// A snapshot of what the plugin did to this request.
    pub fn record(&self) -> HttpRecord {
        let vm = self.vm.borrow();
        let record = vm.store.data().contexts.get(&self.id).cloned();
        record.unwrap_or_default()
    }

    /// The log lines written while this context was the effective one.
    pub fn logs(&self) -> Vec<LogEntry> {
        let vm = self.vm.borrow();
        let logs = vm.store.data().logs.iter();
        logs.filter(|entry| entry.context_id == self.id)
            .cloned()
            .collect()
    }
}
