//! JavaScript transformations, compatible with RudderStack's user transformations.
//!
//! A transformation is an ES module, `transformations/NAME.js`, that exports
//! `transformEvent(event, metadata)` and/or `transformBatch(events, metadata)`. Each returns an
//! event object, an array of events, or nothing (`null`/`undefined`: drop the event); either
//! may be `async`. Every other file in `transformations/` is a library that a transformation (or
//! another library) imports by its file stem:
//!
//! ```js
//! import { rebuild_object, compare_truths } from 'warehouseActionsUtils'; // warehouseActionsUtils.js
//!
//! export function transformEvent(event, metadata) {
//!   const { sourceName } = metadata(event); // RudderStack's shape; `metadata.sourceName` works too
//!   log('from', sourceName, event.type);      // collected into `Output::logs`
//!   event.properties.x = 1;
//!   return event;
//! }
//! ```
//!
//! An import names a library by its stem, `'warehouseActionsUtils'`, or as `'./warehouseActionsUtils'`
//! or `'./warehouseActionsUtils.js'`; only the libraries a transformation imports (directly or
//! through another library) are compiled. The globals are the ECMAScript built-ins (QuickJS),
//! `log(...args)` (each argument written as JSON unless it is a string, joined by a space;
//! `console.log` and friends are the same) and nothing else: no network, no timers, no file
//! system.
//!
//! `metadata` is what the caller passes with each event. As in RudderStack it is a function,
//! `metadata(event)`, returning that object (for `transformBatch`, the metadata of the input the
//! event is, or shares a `messageId` with); its prototype is the same object, so
//! `metadata.sourceId` reads the field too. (It is not a copy: `Object.keys(metadata)` is
//! empty. Copying the fields onto a fresh function per event would cost five times as much.)
//!
//! Each [`Transformation`] is one isolated QuickJS runtime with one context, its own memory
//! limit and a deadline per call, so one transformation can neither see nor starve another.
//! A throw, a timeout or running out of memory fails that event only; the next one runs normally.
//!
//! ```
//! use tideway_activate::transform::{Limits, Source, Transformation};
//! use serde_json::json;
//!
//! let main = Source {
//!     name: "enrich".into(),
//!     file: "transformations/enrich.js".into(),
//!     text: "export function transformEvent(e) { e.properties.x = 1; return e; }".into(),
//! };
//! let mut t = Transformation::load(&main, &[], Limits::default())?;
//! let event = json!({"type": "track", "event": "Signed Up", "properties": {}});
//! let metadata = json!({"sourceId": "src_1", "destinationType": "WEBHOOK"});
//! let out = t.run(&[(event, metadata)]).remove(0)?;
//! assert_eq!(out.events[0]["properties"]["x"], 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How a call runs
//!
//! Each event crosses into JavaScript as objects built directly from the `serde_json::Value`
//! (no JSON text in between), a small driver (`driver.js`) calls `transformEvent`, catches a
//! throw, collects the event's log lines and checks what came back, and the events come back
//! by walking the returned objects with JSON's rules (own enumerable keys; `undefined`,
//! functions and symbols left out; `toJSON` honoured through `JSON.stringify` for anything that
//! is not a plain object or array). Walking the objects costs less than half of what writing
//! and parsing JSON text on both sides does (QuickJS's `JSON.parse` and `JSON.stringify` are
//! slow): about 190k instructions per 1 KB track event in all, measured with callgrind.
//!
//! A deadline starts before every call into JavaScript (one per event, or one per
//! `transformBatch`); the runtime's interrupt handler stops the engine once it has passed, with
//! an error the user's code cannot catch, and that event fails with
//! [`TransformError::Timeout`]. Memory is capped by the runtime's allocator; running out throws
//! inside JavaScript and is reported as [`TransformError::OutOfMemory`], after which the
//! runtime is rebuilt from the loaded code (module-level state starts over).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::object::Property;
use rquickjs::{
    Array, Atom, CatchResultExt, CaughtError, Context, Ctx, Function, Module, Object, Runtime,
    Type, Value,
};
use tideway_core::{Fault, Faulty};

#[cfg(test)]
mod tests;

/// The JavaScript half of every call into the context; see the module docs.
const DRIVER: &str = include_str!("driver.js");

/// What one transformation may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long one `transformEvent` (or one `transformBatch`) call may run. Default 4 s.
    pub timeout: Duration,
    /// The most memory the transformation's runtime may allocate, code and data together.
    /// Default 128 MiB.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(4),
            memory_bytes: 128 * 1024 * 1024,
        }
    }
}

/// One JavaScript file: a transformation or a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The name other files import it by: the file stem (`warehouseActionsUtils`).
    pub name: String,
    /// The path as the user sees it (`transformations/warehouseActionsUtils.js`); errors and
    /// stack traces name it.
    pub file: String,
    /// The code.
    pub text: String,
}

/// What one input event became.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The events to send on, in the order returned; empty when the transformation dropped
    /// the event.
    pub events: Vec<serde_json::Value>,
    /// The lines `log(...)` wrote while this event was transformed.
    pub logs: Vec<String>,
}

/// Why a transformation could not be loaded or could not transform an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The file is not valid JavaScript.
    #[error("{file}:{line}:{column}: {message}")]
    Compile {
        file: String,
        line: u32,
        column: u32,
        message: String,
    },
    /// A file imports something that is neither a library nor another file's stem.
    #[error(
        "{file}: unknown import `{import}`; {}",
        if available.is_empty() { "there are no libraries in transformations/".to_string() }
        else { format!("available libraries: {}", available.join(", ")) }
    )]
    UnknownImport {
        /// The file with the `import`.
        file: String,
        /// What it imports.
        import: String,
        /// The names that can be imported.
        available: Vec<String>,
    },
    /// The code threw (or a promise it returned rejected). `message` is `Name: message`.
    #[error("{}{message}", location(file.as_deref(), *line))]
    Thrown {
        message: String,
        /// The innermost file of ours in the stack, if any.
        file: Option<String>,
        line: Option<u32>,
        /// The JavaScript stack, one `at function (file:line:column)` per line.
        stack: String,
    },
    /// One call (one event, or one `transformBatch`) ran longer than [`Limits::timeout`].
    #[error("{file}: timed out after {millis} ms, the limit per call; look for an endless loop")]
    Timeout {
        /// The transformation's file.
        file: String,
        millis: u64,
    },
    /// The transformation used more than [`Limits::memory_bytes`].
    #[error("{file}: ran out of memory; the limit is {limit_mib} MiB")]
    OutOfMemory {
        /// The transformation's file.
        file: String,
        limit_mib: usize,
    },
    /// `transformEvent`/`transformBatch` returned something that is not events.
    #[error(
        "{file}: {function} must return an event object, an array of event objects or nothing; it returned {what}"
    )]
    BadReturn {
        file: String,
        /// `transformEvent` or `transformBatch`.
        function: String,
        /// What came back: `a number (42)`, `an array whose item 0 is a string ("x")`.
        what: String,
    },
    /// The module exports neither entry point.
    #[error(
        "{file} exports neither `transformEvent` nor `transformBatch`; add `export function transformEvent(event, metadata) {{ ... }}`"
    )]
    Missing { file: String },
    /// The engine failed in a way that is not the code's fault.
    #[error("javascript engine failure: {message} (likely a bug in Tideway, please report it)")]
    Internal { message: String },
}

fn location(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{f}:{l}: "),
        (Some(f), None) => format!("{f}: "),
        _ => String::new(),
    }
}

impl TransformError {
    fn internal(message: impl fmt::Display) -> Self {
        // rquickjs writes `Error resolving module ...`; ours are lowercase.
        let message = message.to_string();
        let mut chars = message.chars();
        let message = match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => message,
        };
        TransformError::Internal { message }
    }
}

impl Faulty for TransformError {
    /// Everything but [`TransformError::Internal`] is the transformation's code (or what it
    /// made of its input): fix the code; the same event fails the same way again.
    fn fault(&self) -> Fault {
        match self {
            TransformError::Internal { .. } => Fault::Internal,
            _ => Fault::User,
        }
    }
}

/// Which entry point the module exports (`transformEvent` wins when both are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Event,
    Batch,
}

/// What errors need to know about the transformation: its files and limits.
#[derive(Debug, Clone)]
struct Files {
    main: String,
    /// Every library's file, imported or not.
    libraries: Vec<String>,
    limits: Limits,
}

impl Files {
    fn ours(&self, file: &str) -> bool {
        file == self.main || self.libraries.iter().any(|l| l == file)
    }

    fn timeout(&self) -> TransformError {
        TransformError::Timeout {
            file: self.main.clone(),
            millis: u64::try_from(self.limits.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn out_of_memory(&self) -> TransformError {
        TransformError::OutOfMemory {
            file: self.main.clone(),
            limit_mib: self.limits.memory_bytes / (1024 * 1024),
        }
    }

    fn bad_return(&self, function: &str, what: impl Into<String>) -> TransformError {
        TransformError::BadReturn {
            file: self.main.clone(),
            function: function.to_string(),
            what: what.into(),
        }
    }

    /// A throw: `Name: message`, located at the innermost frame in one of our files.
    fn thrown(&self, name: &str, message: &str, stack: &str) -> TransformError {
        let message = if name.is_empty() {
            message.to_string()
        } else {
            format!("{name}: {message}")
        };
        let frame = stack
            .lines()
            .filter_map(parse_frame)
            .find(|(f, _, _)| self.ours(f));
        let (file, line) = match frame {
            Some((file, line, _)) => (file.to_string(), Some(line)),
            None => (self.main.clone(), None),
        };
        TransformError::Thrown {
            message,
            file: Some(file),
            line,
            stack: stack.to_string(),
        }
    }
}

/// Per input, the events that come out of a [`Chain`], or why a transformation failed.
pub type ChainResult = Result<Vec<serde_json::Value>, String>;

/// The transformations a sync or a connection names, run in order: each one's output events
/// are the next one's inputs. Cloning shares the loaded runtimes.
#[derive(Clone)]
pub struct Chain {
    /// Who runs it (a sync or connection name), for the logs.
    owner: String,
    steps: Arc<Mutex<Vec<(String, Transformation)>>>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Chain")
            .field("owner", &self.owner)
            .field("steps", &steps.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish()
    }
}

impl Chain {
    /// Loads the transformations `names`, in order, from `scripts` (the files of
    /// `transformations/`; every other file is a library they may import).
    pub fn load(
        owner: &str,
        names: &[String],
        scripts: &[Source],
        limits: Limits,
    ) -> crate::Result<Chain> {
        let mut steps = Vec::new();
        for name in names {
            let main = scripts.iter().find(|s| &s.name == name).ok_or_else(|| {
                crate::ActivateError::Internal(format!(
                    "transformation `{name}` was checked but is missing"
                ))
            })?;
            let libraries: Vec<Source> = scripts
                .iter()
                .filter(|s| &s.name != name)
                .cloned()
                .collect();
            steps.push((
                name.clone(),
                Transformation::load(main, &libraries, limits.clone())?,
            ));
        }
        Ok(Chain {
            owner: owner.to_string(),
            steps: Arc::new(Mutex::new(steps)),
        })
    }

    /// Whether there is no transformation to run.
    pub fn is_empty(&self) -> bool {
        self.steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Runs the transformations in order on each (event, metadata), off the async threads;
    /// one result per input.
    pub async fn run(
        &self,
        inputs: Vec<(serde_json::Value, serde_json::Value)>,
    ) -> crate::Result<Vec<ChainResult>> {
        if self.is_empty() {
            return Ok(inputs.into_iter().map(|(e, _)| Ok(vec![e])).collect());
        }
        let steps = self.steps.clone();
        let owner = self.owner.clone();
        tokio::task::spawn_blocking(move || {
            let mut steps = steps.lock().unwrap_or_else(PoisonError::into_inner);
            let mut results: Vec<ChainResult> =
                inputs.iter().map(|(e, _)| Ok(vec![e.clone()])).collect();
            for (name, t) in steps.iter_mut() {
                // Flatten the current events of every input into one call.
                let mut calls = Vec::new();
                let mut from = Vec::new();
                for (i, r) in results.iter().enumerate() {
                    if let Ok(events) = r {
                        for e in events {
                            calls.push((e.clone(), inputs[i].1.clone()));
                            from.push(i);
                        }
                    }
                }
                let outputs = t.run(&calls);
                let mut next: Vec<ChainResult> = results
                    .iter()
                    .map(|r| r.as_ref().map(|_| Vec::new()).map_err(Clone::clone))
                    .collect();
                for (i, out) in from.into_iter().zip(outputs) {
                    match (out, &mut next[i]) {
                        (Ok(out), Ok(events)) => {
                            for line in &out.logs {
                                tracing::info!(owner = %owner, transformation = %name, "{line}");
                            }
                            events.extend(out.events);
                        }
                        (Err(e), slot) => *slot = Err(format!("transformation `{name}`: {e}")),
                        (Ok(_), Err(_)) => {}
                    }
                }
                results = next;
            }
            results
        })
        .await
        .map_err(|e| {
            crate::ActivateError::Internal(format!("a transformation thread panicked: {e}"))
        })
    }
}

/// A loaded transformation: its code compiled into its own runtime, ready to run events.
///
/// It is `Send` (run it on `tokio::task::spawn_blocking`), not `Sync`: one call at a time.
pub struct Transformation {
    main: Source,
    /// The libraries offered to imports (only the imported ones are compiled).
    libraries: Arc<Vec<Source>>,
    files: Files,
    entry: Entry,
    engine: Engine,
}

impl fmt::Debug for Transformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transformation")
            .field("file", &self.main.file)
            .field("libraries", &self.files.libraries)
            .field("limits", &self.files.limits)
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl Transformation {
    /// Compiles `main` and every library it (transitively) imports from `libraries`, and runs
    /// their top-level code once.
    pub fn load(
        main: &Source,
        libraries: &[Source],
        limits: Limits,
    ) -> Result<Transformation, TransformError> {
        let files = Files {
            main: main.file.clone(),
            libraries: libraries.iter().map(|l| l.file.clone()).collect(),
            limits,
        };
        let libraries = Arc::new(libraries.to_vec());
        let (engine, entry) = Engine::new(main, &libraries, &files)?;
        Ok(Transformation {
            main: main.clone(),
            libraries,
            files,
            entry,
            engine,
        })
    }

    /// The file this transformation was loaded from.
    pub fn file(&self) -> &str {
        &self.main.file
    }

    /// Runs `transformEvent` on each `(event, metadata)` pair, or `transformBatch` once over
    /// all of them if only it is exported; one result per input, in order.
    ///
    /// With `transformBatch`, each returned event belongs to the input it is (the same object)
    /// or shares a `messageId` with, else to the first input; the logs go with the first input,
    /// and a throw fails every input.
    pub fn run(
        &mut self,
        inputs: &[(serde_json::Value, serde_json::Value)],
    ) -> Vec<Result<Output, TransformError>> {
        let mut results = Vec::with_capacity(inputs.len());
        if inputs.is_empty() {
            return results;
        }
        if self.entry == Entry::Batch {
            let rebuild = self.engine.run_batch(inputs, &self.files, &mut results);
            if rebuild {
                self.rebuild();
            }
            return results;
        }
        while results.len() < inputs.len() {
            let rest = &inputs[results.len()..];
            if self.engine.run_events(rest, &self.files, &mut results) {
                self.rebuild();
            }
        }
        results
    }

    /// Replaces the runtime with a fresh one running the same code.
    fn rebuild(&mut self) {
        // The same code loaded before; should it fail now (say, its top-level code is slow and
        // the machine busy), the old engine is still better than none.
        if let Ok((engine, _)) = Engine::new(&self.main, &self.libraries, &self.files) {
            self.engine = engine;
        }
    }
}

/// Parses a QuickJS stack line, `    at f (file:line:column)` or `    at file:line:column`.
fn parse_frame(line: &str) -> Option<(&str, u32, u32)> {
    let rest = line.trim().strip_prefix("at ")?;
    let loc = match rest.rfind('(') {
        Some(open) => rest[open + 1..].trim_end_matches(')'),
        None => rest,
    };
    let (rest, column) = loc.rsplit_once(':')?;
    let (file, line) = rest.rsplit_once(':')?;
    Some((file, line.parse().ok()?, column.parse().ok()?))
}

/// The deadline the interrupt handler checks, restarted before every call into JavaScript.
#[derive(Debug)]
struct Clock {
    epoch: Instant,
    timeout_nanos: u64,
    /// Nanoseconds since `epoch`.
    deadline: AtomicU64,
    /// Set when the interrupt handler stopped the engine; cleared by `arm`.
    fired: AtomicBool,
}

impl Clock {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn arm(&self) {
        self.fired.store(false, Ordering::Relaxed);
        self.deadline.store(
            self.now().saturating_add(self.timeout_nanos),
            Ordering::Relaxed,
        );
    }

    fn expired(&self) -> bool {
        let expired = self.now() > self.deadline.load(Ordering::Relaxed);
        if expired {
            self.fired.store(true, Ordering::Relaxed);
        }
        expired
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}

/// What went wrong while modules were being resolved and loaded.
#[derive(Debug, Default)]
struct LoadState {
    /// An import no library answers: (importing file, import).
    unknown: Option<(String, String)>,
    /// A library whose compilation failed.
    failed: Option<String>,
}

/// Resolves and loads imports from the in-memory libraries.
#[derive(Debug, Clone)]
struct Libraries {
    sources: Arc<Vec<Source>>,
    state: Arc<Mutex<LoadState>>,
}

impl Libraries {
    fn find(&self, import: &str) -> Option<&Source> {
        let stem = import.strip_prefix("./").unwrap_or(import);
        let stem = stem.strip_suffix(".js").unwrap_or(stem);
        self.sources.iter().find(|s| s.name == stem)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LoadState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Resolver for Libraries {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        match self.find(name) {
            Some(source) => Ok(source.file.clone()),
            None => {
                self.state().unknown = Some((base.to_string(), name.to_string()));
                Err(rquickjs::Error::new_resolving(base, name))
            }
        }
    }
}

impl Loader for Libraries {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js>> {
        let Some(source) = self.sources.iter().find(|s| s.file == name) else {
            return Err(rquickjs::Error::new_loading(name));
        };
        let module = Module::declare(ctx.clone(), source.file.as_str(), source.text.as_str());
        if module.is_err() {
            self.state().failed = Some(source.file.clone());
        }
        module
    }
}

/// The driver's functions and what converting values needs, looked up once per `run`.
struct Host<'js> {
    event: Function<'js>,
    batch: Function<'js>,
    settle: Function<'js>,
    object_prototype: Value<'js>,
    keys: RefCell<Keys<'js>>,
}

impl<'js> Host<'js> {
    fn get(ctx: &Ctx<'js>) -> rquickjs::Result<Host<'js>> {
        let host: Object = ctx.globals().get("__tideway")?;
        let object: Object = ctx.globals().get("Object")?;
        Ok(Host {
            event: host.get("event")?,
            batch: host.get("batch")?,
            settle: host.get("settle")?,
            object_prototype: object.get("prototype")?,
            keys: RefCell::new(Keys::new()),
        })
    }
}

/// One runtime and its context (which holds the runtime) with the driver and the user's module
/// loaded.
struct Engine {
    context: Context,
    clock: Arc<Clock>,
}

impl Engine {
    fn new(
        main: &Source,
        libraries: &Arc<Vec<Source>>,
        files: &Files,
    ) -> Result<(Engine, Entry), TransformError> {
        let runtime = Runtime::new().map_err(TransformError::internal)?;
        runtime.set_memory_limit(files.limits.memory_bytes);
        let clock = Arc::new(Clock {
            epoch: Instant::now(),
            timeout_nanos: u64::try_from(files.limits.timeout.as_nanos()).unwrap_or(u64::MAX),
            deadline: AtomicU64::new(u64::MAX),
            fired: AtomicBool::new(false),
        });
        let handler_clock = Arc::clone(&clock);
        runtime.set_interrupt_handler(Some(Box::new(move || handler_clock.expired())));
        let libs = Libraries {
            sources: Arc::clone(libraries),
            state: Arc::default(),
        };
        runtime.set_loader(libs.clone(), libs.clone());
        let context = Context::full(&runtime).map_err(TransformError::internal)?;
        let engine = Engine { context, clock };
        let entry = engine.load(main, &libs, files)?;
        Ok((engine, entry))
    }

    fn load(
        &self,
        main: &Source,
        libs: &Libraries,
        files: &Files,
    ) -> Result<Entry, TransformError> {
        self.context.with(|ctx| {
            ctx.eval::<(), _>(DRIVER)
                .catch(&ctx)
                .map_err(|e| TransformError::internal(format!("driver: {e}")))?;

            // Imports are resolved and loaded while `main` is declared or evaluated; the loader
            // notes which import or library failed, since QuickJS reports either as main's.
            let import_error = |e: &CaughtError<'_>| {
                let state = libs.state();
                if let Some((file, import)) = &state.unknown {
                    return Some(TransformError::UnknownImport {
                        file: file.clone(),
                        import: import.clone(),
                        available: libs.sources.iter().map(|s| s.name.clone()).collect(),
                    });
                }
                state.failed.as_ref().map(|file| compile_error(file, e))
            };
            self.clock.arm();
            let module = Module::declare(ctx.clone(), main.file.as_str(), main.text.as_str())
                .catch(&ctx)
                .map_err(|e| import_error(&e).unwrap_or_else(|| compile_error(&main.file, &e)))?;
            let module = module
                .eval()
                .and_then(|(module, promise)| {
                    promise.finish::<()>()?;
                    Ok(module)
                })
                .catch(&ctx)
                .map_err(|e| import_error(&e).unwrap_or_else(|| self.failure(&e, files)))?;
            let namespace = module
                .namespace()
                .catch(&ctx)
                .map_err(TransformError::internal)?;
            let host: Object = ctx
                .globals()
                .get("__tideway")
                .map_err(TransformError::internal)?;
            let install: Function = host.get("install").map_err(TransformError::internal)?;
            let entry: Option<String> = install
                .call((namespace,))
                .catch(&ctx)
                .map_err(TransformError::internal)?;
            match entry.as_deref() {
                Some("event") => Ok(Entry::Event),
                Some("batch") => Ok(Entry::Batch),
                _ => Err(TransformError::Missing {
                    file: main.file.clone(),
                }),
            }
        })
    }

    /// Runs `transformEvent` over `inputs`, appending one result each, until the end or until
    /// the runtime should be rebuilt (it ran out of memory); returns whether it should be.
    fn run_events(
        &self,
        inputs: &[(serde_json::Value, serde_json::Value)],
        files: &Files,
        results: &mut Vec<Result<Output, TransformError>>,
    ) -> bool {
        self.context.with(|ctx| {
            let host = match Host::get(&ctx) {
                Ok(host) => host,
                Err(e) => {
                    results.push(Err(TransformError::internal(format!("driver: {e}"))));
                    return true;
                }
            };
            for (event, metadata) in inputs {
                let result = self.run_event(&ctx, &host, event, metadata, files);
                let rebuild = matches!(
                    result,
                    Err(TransformError::OutOfMemory { .. } | TransformError::Internal { .. })
                );
                results.push(result);
                if rebuild {
                    return true;
                }
            }
            false
        })
    }

    fn run_event<'js>(
        &self,
        ctx: &Ctx<'js>,
        host: &Host<'js>,
        event: &serde_json::Value,
        metadata: &serde_json::Value,
        files: &Files,
    ) -> Result<Output, TransformError> {
        self.clock.arm();
        let args = to_js(ctx, event).and_then(|e| Ok((e, to_js(ctx, metadata)?)));
        let record = args.and_then(|args| host.event.call::<_, Value>(args));
        let (events, logs, _) = self.record(ctx, host, record, files)?;
        let events = events
            .iter::<Value>()
            .map(|v| {
                v.map_err(|e| self.failure(&CaughtError::from_error(ctx, e), files))
                    .and_then(|v| {
                        from_js(ctx, host, &v, 0)
                            .map_err(|what| self.unwritable("transformEvent", &what, files))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Output { events, logs })
    }

    /// Runs `transformBatch` once over all inputs; returns whether to rebuild the runtime.
    fn run_batch(
        &self,
        inputs: &[(serde_json::Value, serde_json::Value)],
        files: &Files,
        results: &mut Vec<Result<Output, TransformError>>,
    ) -> bool {
        let outcome = self.context.with(|ctx| {
            let host =
                Host::get(&ctx).map_err(|e| TransformError::internal(format!("driver: {e}")))?;
            self.clock.arm();
            let args = (|| {
                let (events, metas) = (Array::new(ctx.clone())?, Array::new(ctx.clone())?);
                for (i, (event, metadata)) in inputs.iter().enumerate() {
                    events.set(i, to_js(&ctx, event)?)?;
                    metas.set(i, to_js(&ctx, metadata)?)?;
                }
                Ok((events, metas))
            })();
            let record = args.and_then(|args| host.batch.call::<_, Value>(args));
            let (events, logs, owners) = self.record(&ctx, &host, record, files)?;
            let mut outputs = vec![Output::default(); inputs.len()];
            outputs[0].logs = logs;
            for (k, event) in events.iter::<Value>().enumerate() {
                let event =
                    event.map_err(|e| self.failure(&CaughtError::from_error(&ctx, e), files))?;
                let event = from_js(&ctx, &host, &event, 0)
                    .map_err(|what| self.unwritable("transformBatch", &what, files))?;
                let owner = owners
                    .as_ref()
                    .and_then(|o| o.get::<Option<usize>>(k).ok().flatten())
                    .filter(|&o| o < inputs.len())
                    .unwrap_or(0);
                outputs[owner].events.push(event);
            }
            Ok(outputs)
        });
        match outcome {
            Ok(outputs) => {
                results.extend(outputs.into_iter().map(Ok));
                false
            }
            Err(error) => {
                let rebuild = matches!(
                    error,
                    TransformError::OutOfMemory { .. } | TransformError::Internal { .. }
                );
                results.extend(std::iter::repeat_n(Err(error), inputs.len()));
                rebuild
            }
        }
    }

    /// Reads a driver record (see `driver.js`), running the job queue first if the entry
    /// point returned a promise: the events, the log lines and, for a batch, the owners.
    fn record<'js>(
        &self,
        ctx: &Ctx<'js>,
        host: &Host<'js>,
        mut record: rquickjs::Result<Value<'js>>,
        files: &Files,
    ) -> Result<(Array<'js>, Vec<String>, Option<Array<'js>>), TransformError> {
        loop {
            let value = record.catch(ctx).map_err(|e| self.failure(&e, files))?;
            let fields = value
                .as_array()
                .ok_or_else(|| TransformError::internal("driver record is not an array"))?;
            let read = |e: rquickjs::Error| TransformError::internal(format!("driver record: {e}"));
            let status: i32 = fields.get(0).map_err(read)?;
            if status == 2 {
                // An async entry point: run its jobs until they run out or the deadline passes.
                while ctx.execute_pending_job() && !self.clock.fired() {}
                if self.clock.fired() {
                    return Err(files.timeout());
                }
                record = host.settle.call(());
                continue;
            }
            let logs: Option<Vec<String>> = fields.get(2).map_err(read)?;
            let logs = logs.unwrap_or_default();
            if status == 1 {
                let error: Object = fields.get(1).map_err(read)?;
                let field = |k: &str| -> String {
                    error
                        .get::<_, Option<String>>(k)
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                };
                return Err(match field("k").as_str() {
                    "thrown" => files.thrown(&field("name"), &field("message"), &field("stack")),
                    "bad" => files.bad_return(&field("f"), field("what")),
                    "oom" => files.out_of_memory(),
                    other => TransformError::internal(format!("driver record of kind {other:?}")),
                });
            }
            let events: Array = fields.get(1).map_err(read)?;
            let owners: Option<Array> = fields.get(3).map_err(read)?;
            return Ok((events, logs, owners));
        }
    }

    /// An event `from_js` could not read (unless reading it ran out of time: a `toJSON` loop).
    fn unwritable(&self, function: &str, what: &str, files: &Files) -> TransformError {
        if self.clock.fired() {
            return files.timeout();
        }
        files.bad_return(
            function,
            format!("an event that cannot be written as JSON: {what}"),
        )
    }

    /// What an error escaping a call into JavaScript means.
    fn failure(&self, e: &CaughtError<'_>, files: &Files) -> TransformError {
        if self.clock.fired() {
            return files.timeout();
        }
        match e {
            CaughtError::Exception(ex) => {
                let name: String = ex.get("name").unwrap_or_default();
                let message = ex.message().unwrap_or_default();
                if message == "out of memory" {
                    return files.out_of_memory();
                }
                files.thrown(&name, &message, &ex.stack().unwrap_or_default())
            }
            CaughtError::Value(v) if v.is_null() => {
                // QuickJS throws null when it runs out of memory while making the error.
                files.out_of_memory()
            }
            CaughtError::Value(v) => {
                files.thrown("", &format!("uncaught exception: {}", value_text(v)), "")
            }
            CaughtError::Error(rquickjs::Error::Allocation) => files.out_of_memory(),
            CaughtError::Error(e) => TransformError::internal(e),
        }
    }
}

/// Builds the JavaScript value of a JSON value, as `JSON.parse` would.
fn to_js<'js>(ctx: &Ctx<'js>, value: &serde_json::Value) -> rquickjs::Result<Value<'js>> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => Value::new_null(ctx.clone()),
        J::Bool(b) => Value::new_bool(ctx.clone(), *b),
        J::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => Value::new_int(ctx.clone(), i),
            None => Value::new_float(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        J::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, to_js(ctx, item)?)?;
            }
            array.into_value()
        }
        J::Object(map) => {
            let object = Object::new(ctx.clone())?;
            for (key, item) in map {
                let item = to_js(ctx, item)?;
                if key == "__proto__" {
                    // A plain set would replace the prototype; JSON.parse makes a property.
                    let prop = Property::from(item).writable().enumerable().configurable();
                    object.prop(key.as_str(), prop)?;
                } else {
                    object.set(key.as_str(), item)?;
                }
            }
            object.into_value()
        }
    })
}

/// The names of property keys already seen in this `run`: events repeat their keys, and
/// turning a QuickJS atom into a Rust string is half the cost of reading an object.
struct Keys<'js> {
    names: HashMap<Atom<'js>, String, BuildHasherDefault<AtomHasher>>,
}

impl<'js> Keys<'js> {
    /// More distinct keys than this in one run and the cache starts over.
    const CAPACITY: usize = 4096;

    fn new() -> Self {
        Keys {
            names: HashMap::default(),
        }
    }

    fn name(&mut self, atom: Atom<'js>) -> rquickjs::Result<String> {
        if let Some(name) = self.names.get(&atom) {
            return Ok(name.clone());
        }
        let name = atom.to_string()?;
        if self.names.len() >= Self::CAPACITY {
            self.names.clear();
        }
        self.names.insert(atom, name.clone());
        Ok(name)
    }
}

/// Atoms hash as one `u32`: a multiply is all the mixing they need.
#[derive(Debug, Default)]
struct AtomHasher(u64);

impl Hasher for AtomHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u32(u32::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(26) ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// How deep `from_js` follows nested objects before calling it a cycle.
const MAX_DEPTH: usize = 256;

/// Reads a JavaScript value as JSON, as `JSON.stringify` then `JSON.parse` would; the error
/// says why it cannot be.
fn from_js<'js>(
    ctx: &Ctx<'js>,
    host: &Host<'js>,
    value: &Value<'js>,
    depth: usize,
) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels, or cyclic"));
    }
    // Catching clears the exception (from a getter or a `toJSON`) from the context.
    let js = |e: rquickjs::Error| match CaughtError::from_error(ctx, e) {
        CaughtError::Exception(ex) => {
            let name: String = ex.get("name").unwrap_or_default();
            format!("threw {name}: {}", ex.message().unwrap_or_default())
        }
        CaughtError::Value(v) => format!("threw {}", value_text(&v)),
        CaughtError::Error(e) => e.to_string().to_lowercase(),
    };
    Ok(match value.type_of() {
        Type::Null | Type::Undefined | Type::Uninitialized => J::Null,
        Type::Bool => J::Bool(value.as_bool().unwrap_or_default()),
        Type::Int => J::from(value.as_int().unwrap_or_default()),
        Type::Float => number(value.as_float().unwrap_or(f64::NAN)),
        Type::String => J::String(
            value
                .as_string()
                .map(rquickjs::String::to_string)
                .transpose()
                .map_err(js)?
                .unwrap_or_default(),
        ),
        Type::Array => {
            let array = value.as_array().ok_or("an array that is not one")?;
            let mut items = Vec::with_capacity(array.len());
            for item in array.iter::<Value>() {
                let item = item.map_err(js)?;
                items.push(if skipped(&item) {
                    J::Null
                } else {
                    from_js(ctx, host, &item, depth + 1)?
                });
            }
            J::Array(items)
        }
        Type::Object if plain(host, value) => {
            let object = value.as_object().ok_or("an object that is not one")?;
            let mut map = serde_json::Map::new();
            for prop in object.props::<Atom, Value>() {
                let (key, item) = prop.map_err(js)?;
                if !skipped(&item) {
                    let item = from_js(ctx, host, &item, depth + 1)?;
                    map.insert(host.keys.borrow_mut().name(key).map_err(js)?, item);
                }
            }
            J::Object(map)
        }
        Type::BigInt => return Err("a bigint".into()),
        // Dates, class instances, boxed primitives, proxies: whatever JSON makes of them.
        _ => match ctx.json_stringify(value.clone()).map_err(js)? {
            Some(text) => {
                let text = text.to_string().map_err(js)?;
                serde_json::from_str(&text).map_err(|e| e.to_string())?
            }
            None => J::Null,
        },
    })
}

/// A number as `JSON.stringify` then serde would read it: integral values (JavaScript writes
/// them without a fraction up to 1e21) as integers where they fit, NaN and infinities as null.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn number(f: f64) -> serde_json::Value {
    const I64: f64 = 9_223_372_036_854_775_808.0; // 2^63
    const U64: f64 = 18_446_744_073_709_551_616.0; // 2^64
    if f.fract() == 0.0 {
        // Integral and inside the target's range, so the casts are exact (and -0 becomes 0).
        if (-I64..I64).contains(&f) {
            return serde_json::Value::from(f as i64);
        }
        if (0.0..U64).contains(&f) {
            return serde_json::Value::from(f as u64);
        }
    }
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Values JSON leaves out of objects (and writes as null in arrays).
fn skipped(value: &Value<'_>) -> bool {
    matches!(
        value.type_of(),
        Type::Undefined | Type::Function | Type::Constructor | Type::Symbol
    )
}

/// An object whose prototype is `Object.prototype` or null, without `toJSON`: read field by
/// field. Anything else goes through `JSON.stringify`.
fn plain<'js>(host: &Host<'js>, value: &Value<'js>) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    match object.get_prototype() {
        None => true,
        Some(proto) => {
            *proto.as_value() == host.object_prototype
                && !object.contains_key("toJSON").unwrap_or(true)
        }
    }
}

fn value_text(v: &Value<'_>) -> String {
    v.ctx()
        .json_stringify(v.clone())
        .ok()
        .flatten()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| v.type_name().to_string())
}

/// An error from compiling `file`, located by its stack (`at file:line:column`).
fn compile_error(file: &str, e: &CaughtError<'_>) -> TransformError {
    match e {
        CaughtError::Exception(ex) => {
            let name: String = ex.get("name").unwrap_or_else(|_| "SyntaxError".into());
            let message = ex.message().unwrap_or_default();
            let stack = ex.stack().unwrap_or_default();
            let (line, column) = stack
                .lines()
                .filter_map(parse_frame)
                .find(|(f, _, _)| *f == file)
                .map_or((0, 0), |(_, l, c)| (l, c));
            TransformError::Compile {
                file: file.to_string(),
                line,
                column,
                message: format!("{name}: {message}"),
            }
        }
        CaughtError::Value(v) => TransformError::Compile {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: value_text(v),
        },
        CaughtError::Error(e) => TransformError::internal(e),
    }
}

// The promise in the docs: a transformation can move to another thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Transformation>();
};
