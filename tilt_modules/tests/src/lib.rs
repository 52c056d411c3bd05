//! A Tiltfile evaluator for tests: the root `Tiltfile` (and what it `load`s) runs under the
//! `starlark` crate against stand-ins for Tilt's builtins, and every call is recorded.
//!
//! The stand-ins keep Tilt's documented names and parameters: `tilt-api.json` (a copy of
//! `../shared/tilt-api.json`, Tilt v0.37.6) is turned into Starlark wrappers (see
//! [`prelude_source`]), so an unknown builtin, an unknown keyword, too many positional
//! arguments or a missing required one fail the evaluation as they would in Tilt.
//! Behaviour that matters for the stand extension is reproduced (see `call`):
//! - `local()` returns a `blob` (no string methods) and runs `devd plan|env list --json`
//!   through devd's command-line crate (`stand-cli`) and `stand-model`, with devd's own
//!   command-line parser;
//! - `helm()` runs the real `helm template` and drops the chart's test hooks as Tilt does;
//! - `config.define_*` / `config.parse` honour the simulated `tilt up -- <args>`;
//! - after the evaluation, Tilt's assembly checks: `k8s_resource` names an existing
//!   workload, `objects` selectors match exactly one unclaimed object, `resource_deps`
//!   name existing resources, UI buttons sit on existing resources, every
//!   `custom_build` image is used by a deployed container.
//!
//! Choices:
//! - `tilt-api.json` is a copy inside this package (and a test compares it with
//!   `../shared/tilt-api.json` when that exists): the tests must not depend on a file
//!   outside the repository, and an API update is then a visible change here.
//! - `local('devd ...')` calls `stand-cli` and `stand-model` (dependencies; devd's
//!   commands answer with the same functions) instead of a built binary:
//!   `CARGO_BIN_EXE_devd` does not exist across packages, a `target/debug/devd` may be
//!   stale or elsewhere (`CARGO_TARGET_DIR`), and a nested `cargo build` in a test is
//!   slow and racy. The argv still goes through devd's own clap parser, so a
//!   flag devd does not accept fails here as it would in Tilt.
//! - starlark 0.13, not 0.14: 0.14 enables serde_json's `arbitrary_precision`, which
//!   Cargo's feature unification would impose on every crate of the workspace.
//!
//! The language is starlark-rust's `Standard` dialect (no top-level `for`/`if`, no
//! `while`, no f-strings, no type annotations, `load` does not re-export) with only the
//! global functions go.starlark.net also has, so what passes here is what both accept.

// starlark's `ProvidesStaticType` derive and value macros expand to `unsafe impl`s; this
// crate has no unsafe code of its own.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use allocative::Allocative;
use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;
use serde_json::{json, Map, Value as Json};
use starlark::any::ProvidesStaticType;
use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::starlark_module;
use starlark::starlark_simple_value;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::AllocDict;
use starlark::values::list::AllocList;
use starlark::values::list::ListRef;
use starlark::values::{starlark_value, Heap, StarlarkValue, Value, ValueLike};


/// The documented Tilt API this harness enforces (copied from ../shared/tilt-api.json).
pub const TILT_API_JSON: &str = include_str!("../tilt-api.json");

/// Global functions of go.starlark.net's universe that starlark-rust also has; the
/// Tiltfiles see no other language builtins (`set` and `bytes` are missing from
/// starlark-rust, so using them fails here, as they are not portable).
const GO_UNIVERSE: &[&str] = &[
    "None", "True", "False", "any", "all", "bool", "chr", "dict", "dir", "enumerate", "float",
    "getattr", "hasattr", "hash", "int", "len", "list", "max", "min", "ord", "print", "range",
    "repr", "reversed", "sorted", "str", "tuple", "type", "zip", "struct",
];

/// Tilt's workload kinds (objects that become resources of their own).
const WORKLOAD_KINDS: &[&str] = &[
    "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job",
    "CronJob", "Pod",
];

/// One builtin's signature from tilt-api.json.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Signature {
    pub params: Vec<String>,
    pub required: Vec<String>,
    pub varargs: bool,
    pub varkw: bool,
}

/// Every documented builtin, by its dotted name.
pub fn tilt_api() -> BTreeMap<String, Signature> {
    #[derive(serde::Deserialize)]
    struct Api {
        functions: BTreeMap<String, Signature>,
    }
    let api: Api = serde_json::from_str(TILT_API_JSON).expect("tilt-api.json parses");
    api.functions
}

/// One recorded builtin call: its dotted name and the arguments given (by parameter name,
/// `*args` under `"*"`), as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub name: String,
    pub args: Map<String, Json>,
}

/// What one evaluation did.
#[derive(Debug, Default)]
pub struct Run {
    pub calls: Vec<Call>,
    /// The Kubernetes objects given to `k8s_yaml`, in order.
    pub objects: Vec<Json>,
    /// Every resource Tilt would show: workloads, `new_name` groups, local resources.
    pub resources: BTreeSet<String>,
    /// What Tilt would warn about (unused images, ...).
    pub warnings: Vec<String>,
}

impl Run {
    /// The recorded calls of one builtin.
    pub fn calls_of(&self, name: &str) -> Vec<&Map<String, Json>> {
        self.calls.iter().filter(|c| c.name == name).map(|c| &c.args).collect()
    }

    /// The one call of `name` whose argument `key` equals `value`.
    pub fn call_with(&self, name: &str, key: &str, value: &str) -> &Map<String, Json> {
        let found: Vec<_> = self
            .calls_of(name)
            .into_iter()
            .filter(|a| a.get(key).and_then(Json::as_str) == Some(value))
            .collect();
        assert_eq!(found.len(), 1, "expected one {name}({key}={value:?}) call, got {found:?}");
        found[0]
    }
}

// ---- values ---------------------------------------------------------------------------

/// Tilt's Blob: what `local()`, `helm()`, `read_file()` and `blob()` return. Its type is
/// `blob` and it has no string methods: `str()` turns it into a string.
#[derive(Debug, Clone, ProvidesStaticType, Allocative)]
pub struct Blob(pub String);
starlark_simple_value!(Blob);

/// Recorded as `{"_type": "blob", "text": ...}`, so a test sees where a Blob (and not a
/// string) was passed.
impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({"_type": "blob", "text": self.0}).serialize(s)
    }
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[starlark_value(type = "blob")]
impl<'v> StarlarkValue<'v> for Blob {
    fn to_bool(&self) -> bool {
        !self.0.is_empty()
    }
}

/// What constructors such as `probe()`, `link()`, `port_forward()` and the `v1alpha1.*`
/// functions return: the builtin's name and its arguments.
#[derive(Debug, Clone, ProvidesStaticType, Allocative)]
pub struct TiltObject {
    pub kind: String,
    #[allocative(skip)]
    pub fields: Map<String, Json>,
}
starlark_simple_value!(TiltObject);

impl Serialize for TiltObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = self.fields.clone();
        m.insert("_type".to_owned(), Json::String(self.kind.clone()));
        m.serialize(s)
    }
}

impl fmt::Display for TiltObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.kind, Json::Object(self.fields.clone()))
    }
}

#[starlark_value(type = "tilt_object")]
impl<'v> StarlarkValue<'v> for TiltObject {}

/// The default of every optional parameter of the wrappers: "not given".
#[derive(Debug, Clone, ProvidesStaticType, Allocative, Serialize)]
pub struct Unset;
starlark_simple_value!(Unset);

impl fmt::Display for Unset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<unset>")
    }
}

#[starlark_value(type = "unset")]
impl<'v> StarlarkValue<'v> for Unset {}

// ---- the evaluation -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum FlagKind {
    String,
    Bool,
    StringList,
}

#[derive(Debug)]
struct FlagDef {
    name: String,
    kind: FlagKind,
    positional: bool,
}

#[derive(Default)]
struct Inner {
    root: PathBuf,
    args: Vec<String>,
    api: BTreeMap<String, Signature>,
    flags: Vec<FlagDef>,
    parsed: bool,
    /// What `k8s_context()` answers.
    context: String,
    /// What `allow_k8s_contexts` was given.
    allowed_contexts: Vec<String>,
    run: Run,
}

#[derive(ProvidesStaticType)]
struct State {
    inner: RefCell<Inner>,
}

/// Evaluate `<root>/Tiltfile` as `tilt up -- <args>` would, with kube context `context`
/// current. Like Tilt, the evaluation fails when the context is neither a local
/// cluster's (Tilt's own list) nor given to `allow_k8s_contexts`.
pub fn run_tiltfile(root: &Path, args: &[&str], context: &str) -> anyhow::Result<Run> {
    let root = root
        .canonicalize()
        .with_context(|| format!("no directory {}", root.display()))?;
    let state = State {
        inner: RefCell::new(Inner {
            root: root.clone(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            api: tilt_api(),
            context: context.to_owned(),
            ..Inner::default()
        }),
    };
    let globals = globals();
    let prelude = build_prelude(&globals, &root)?;
    let loader = Loader {
        root: root.clone(),
        globals: &globals,
        prelude: &prelude,
        state: &state,
    };
    loader
        .eval_file(&root.join("Tiltfile"))
        .map_err(|e| anyhow!("{e}"))?;
    let mut inner = state.inner.into_inner();
    if !inner.run.objects.is_empty() && !tilt_deems_local(context) && !inner.allowed_contexts.iter().any(|c| c == context) {
        bail!("Stop! {context} might be production. If you're sure you want to deploy there, add:\n\tallow_k8s_contexts('{context}')\nto your Tiltfile.");
    }
    assemble(&mut inner.run)?;
    Ok(inner.run)
}

fn globals() -> Globals {
    let full = Globals::extended_by(&[LibraryExtension::StructType, LibraryExtension::Print]);
    let mut b = GlobalsBuilder::new();
    for (name, value) in full.iter() {
        if GO_UNIVERSE.contains(&name) {
            b.set(name, value);
        }
    }
    natives(&mut b);
    b.set("__tilt_unset", Unset);
    b.build()
}

fn dialect() -> Dialect {
    Dialect {
        // go.starlark.net: loaded names are local to the loading file.
        enable_load_reexport: false,
        ..Dialect::Standard
    }
}

/// The Starlark source of the builtins: one wrapper per documented function, whose
/// parameters are exactly tilt-api.json's, forwarding to the native `__tilt_call`.
/// Dotted names become structs (`config.parse`, `os.path.join`, `v1alpha1.cmd`).
pub fn prelude_source(api: &BTreeMap<String, Signature>, main_dir: &str) -> String {
    let mut src = String::from("_U = __tilt_unset\n");
    // namespace path -> [(member, expression)]
    let mut spaces: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (name, sig) in api {
        // `load` is a statement; `struct` is the language's own (same call shape).
        if name == "load" || name == "struct" {
            continue;
        }
        let ident = format!("_tilt_{}", name.replace('.', "__"));
        let mut params: Vec<String> = sig.params.iter().map(|p| format!("{p} = _U")).collect();
        let mut forward: Vec<String> = sig.params.iter().map(|p| format!("{p} = {p}")).collect();
        if sig.varargs {
            params.push("*args".to_owned());
            forward.push("__varargs = list(args)".to_owned());
        }
        if sig.varkw {
            params.push("**kwargs".to_owned());
            forward.push("__varkw = kwargs".to_owned());
        }
        src.push_str(&format!(
            "def {ident}({}):\n    return __tilt_call({:?}{}{})\n",
            params.join(", "),
            name,
            if forward.is_empty() { "" } else { ", " },
            forward.join(", ")
        ));
        match name.rsplit_once('.') {
            None => src.push_str(&format!("{name} = {ident}\n")),
            Some((space, member)) => spaces
                .entry(space.to_owned())
                .or_default()
                .push((member.to_owned(), ident)),
        }
    }
    spaces
        .entry("config".to_owned())
        .or_default()
        .extend([
            ("main_dir".to_owned(), format!("{main_dir:?}")),
            ("main_path".to_owned(), format!("{:?}", format!("{main_dir}/Tiltfile"))),
            ("tilt_subcommand".to_owned(), "\"up\"".to_owned()),
        ]);
    // Nested namespaces first (os.path before os).
    let names: Vec<String> = spaces.keys().cloned().collect();
    for space in names.iter().rev() {
        if let Some((parent, member)) = space.rsplit_once('.') {
            let ident = format!("_ns_{}", space.replace('.', "__"));
            spaces
                .entry(parent.to_owned())
                .or_default()
                .push((member.to_owned(), ident));
        }
    }
    let mut order: Vec<&String> = spaces.keys().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.matches('.').count()));
    for space in order {
        let members: Vec<String> = spaces[space]
            .iter()
            .map(|(m, e)| format!("{m} = {e}"))
            .collect();
        let target = if space.contains('.') {
            format!("_ns_{}", space.replace('.', "__"))
        } else {
            space.clone()
        };
        src.push_str(&format!("{target} = struct({})\n", members.join(", ")));
    }
    src
}

fn build_prelude(globals: &Globals, root: &Path) -> anyhow::Result<FrozenModule> {
    let src = prelude_source(&tilt_api(), &root.display().to_string());
    let module = Module::new();
    {
        let ast = AstModule::parse("<tilt builtins>", src, &dialect_with_top_level())
            .map_err(|e| anyhow!("{e}"))?;
        let mut eval = Evaluator::new(&module);
        eval.eval_module(ast, globals).map_err(|e| anyhow!("{e}"))?;
    }
    module.freeze().map_err(|e| anyhow!("{e:?}"))
}

/// The prelude is the harness's own code (not a Tiltfile): it may assign at top level.
fn dialect_with_top_level() -> Dialect {
    Dialect {
        enable_top_level_stmt: true,
        ..dialect()
    }
}

struct Loader<'a> {
    root: PathBuf,
    globals: &'a Globals,
    prelude: &'a FrozenModule,
    state: &'a State,
}

impl Loader<'_> {
    fn eval_file(&self, path: &Path) -> starlark::Result<FrozenModule> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let name = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string();
        let ast = AstModule::parse(&name, text, &dialect())?;
        let module = Module::new();
        module.import_public_symbols(self.prelude);
        {
            let mut eval = Evaluator::new(&module);
            eval.extra = Some(self.state);
            eval.set_loader(self);
            eval.eval_module(ast, self.globals)?;
        }
        Ok(module.freeze().map_err(|e| anyhow!("{e:?}"))?)
    }
}

impl FileLoader for Loader<'_> {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        if path.starts_with("ext://") {
            return Err(anyhow!("load({path:?}): the tests resolve relative paths only (no extension repositories, no network)").into());
        }
        // Relative to the main Tiltfile's directory (the only file that loads here).
        self.eval_file(&self.root.join(path))
    }
}

#[starlark_module]
fn natives(builder: &mut GlobalsBuilder) {
    fn __tilt_call<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(kwargs)] kwargs: starlark::collections::SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let state = eval
            .extra
            .and_then(|e| e.downcast_ref::<State>())
            .ok_or_else(|| anyhow!("{name}: called outside a Tiltfile evaluation"))?;
        let mut given: Vec<(String, Value<'v>)> = Vec::new();
        for (k, v) in kwargs {
            if v.downcast_ref::<Unset>().is_none() {
                given.push((k, v));
            }
        }
        call(state, name, given, eval.heap())
    }
}

// ---- the stand-ins --------------------------------------------------------------------

fn to_json(name: &str, key: &str, v: Value) -> anyhow::Result<Json> {
    v.to_json_value()
        .map_err(|e| anyhow!("{name}: argument {key}: cannot represent {} ({e})", v.get_type()))
}

fn to_starlark<'v>(heap: &'v Heap, j: &Json) -> Value<'v> {
    match j {
        Json::Null => Value::new_none(),
        Json::Bool(b) => Value::new_bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => heap.alloc(i),
            None => heap.alloc(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => heap.alloc(s.as_str()),
        Json::Array(a) => heap.alloc(AllocList(a.iter().map(|x| to_starlark(heap, x)))),
        Json::Object(m) => heap.alloc(AllocDict(m.iter().map(|(k, v)| (k.as_str(), to_starlark(heap, v))))),
    }
}

/// A string or a Blob (Tilt's `value.AsString`).
fn as_text(v: Value) -> Option<String> {
    if let Some(s) = v.unpack_str() {
        return Some(s.to_owned());
    }
    v.downcast_ref::<Blob>().map(|b| b.0.clone())
}

fn call<'v>(
    state: &State,
    name: &str,
    given: Vec<(String, Value<'v>)>,
    heap: &'v Heap,
) -> anyhow::Result<Value<'v>> {
    let mut inner = state.inner.borrow_mut();
    let sig = inner
        .api
        .get(name)
        .cloned()
        .ok_or_else(|| anyhow!("{name}: not a documented Tilt builtin"))?;
    for r in &sig.required {
        if !given.iter().any(|(k, _)| k == r) {
            bail!("{name}: missing argument for {r}");
        }
    }
    let mut args = Map::new();
    for (k, v) in &given {
        let key = match k.as_str() {
            "__varargs" => "*",
            "__varkw" => "**",
            k => k,
        };
        args.insert(key.to_owned(), to_json(name, key, *v)?);
    }
    let raw = |key: &str| given.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    let text = |key: &str| -> anyhow::Result<Option<String>> {
        match raw(key) {
            None => Ok(None),
            Some(v) => as_text(v)
                .map(Some)
                .ok_or_else(|| anyhow!("{name}: {key} must be a string or blob, got {}", v.get_type())),
        }
    };
    let root = inner.root.clone();
    let abs = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    inner.run.calls.push(Call {
        name: name.to_owned(),
        args: args.clone(),
    });

    let none = Value::new_none();
    let value = match name {
        "config.define_string" | "config.define_bool" | "config.define_string_list" => {
            let flag = text("name")?.unwrap_or_default();
            if inner.parsed {
                bail!("{name}: {flag:?}: config.define_* cannot be called after config.parse");
            }
            if inner.flags.iter().any(|f| f.name == flag) {
                bail!("{name}: {flag:?} is already defined");
            }
            let kind = match name {
                "config.define_string" => FlagKind::String,
                "config.define_bool" => FlagKind::Bool,
                _ => FlagKind::StringList,
            };
            let positional = args.get("args").and_then(Json::as_bool).unwrap_or(false);
            inner.flags.push(FlagDef { name: flag, kind, positional });
            none
        }
        "config.parse" => {
            let parsed = parse_flags(&inner.flags, &inner.args)?;
            inner.parsed = true;
            to_starlark(heap, &Json::Object(parsed))
        }
        "local" => {
            let command = match raw("command") {
                Some(v) if v.unpack_str().is_some() => {
                    let s = v.unpack_str().unwrap_or_default();
                    if s.contains(['|', ';', '&', '$', '`', '>', '<', '\'', '"']) {
                        bail!("local: the stand-in runs argv commands only, not shell text: {s:?}");
                    }
                    s.split_whitespace().map(str::to_owned).collect()
                }
                Some(_) => match args.get("command") {
                    Some(Json::Array(a)) => a
                        .iter()
                        .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| anyhow!("local: command list items must be strings")))
                        .collect::<anyhow::Result<Vec<String>>>()?,
                    _ => bail!("local: command must be a string or a list of strings"),
                },
                None => bail!("local: missing argument for command"),
            };
            let dir = text("dir")?.map_or_else(|| root.clone(), |d| abs(&d));
            heap.alloc(Blob(run_local(&command, &dir)?))
        }
        "decode_json" => {
            let s = text("json")?.unwrap_or_default();
            let j: Json = serde_json::from_str(&s).context("decode_json: error parsing JSON")?;
            to_starlark(heap, &j)
        }
        "encode_json" => {
            let j = args.get("obj").cloned().unwrap_or(Json::Null);
            heap.alloc(format!("{}\n", serde_json::to_string_pretty(&j)?))
        }
        "encode_yaml" => {
            let j = args.get("obj").cloned().unwrap_or(Json::Null);
            heap.alloc(Blob(serde_yaml_ng::to_string(&j)?))
        }
        "decode_yaml_stream" => {
            let s = text("yaml")?.unwrap_or_default();
            to_starlark(heap, &Json::Array(parse_yaml_stream(&s)?))
        }
        "blob" => heap.alloc(Blob(text("contents")?.unwrap_or_default())),
        "read_file" => {
            let path = abs(&text("file_path")?.unwrap_or_default());
            match std::fs::read_to_string(&path) {
                Ok(s) => heap.alloc(Blob(s)),
                Err(_) if raw("default").is_some() => raw("default").unwrap_or(none),
                Err(e) => bail!("read_file: {}: {e}", path.display()),
            }
        }
        "watch_file" => none,
        "k8s_context" => heap.alloc(inner.context.clone()),
        "fail" => bail!("{}", text("msg")?.unwrap_or_default()),
        "warn" => {
            let msg = text("msg")?.unwrap_or_default();
            inner.run.warnings.push(msg);
            none
        }
        "os.path.join" => {
            let mut p = PathBuf::from(text("path")?.unwrap_or_default());
            for part in args.get("*").and_then(Json::as_array).into_iter().flatten() {
                p.push(part.as_str().ok_or_else(|| anyhow!("os.path.join: parts must be strings"))?);
            }
            heap.alloc(p.display().to_string())
        }
        "os.path.dirname" => {
            let p = text("path")?.unwrap_or_default();
            heap.alloc(p.rsplit_once('/').map_or("", |(d, _)| d).to_owned())
        }
        "os.path.basename" => {
            let p = text("path")?.unwrap_or_default();
            heap.alloc(p.rsplit_once('/').map_or(p.as_str(), |(_, b)| b).to_owned())
        }
        "os.path.exists" => Value::new_bool(abs(&text("path")?.unwrap_or_default()).exists()),
        "helm" => {
            let chart = abs(&text("pathToChartDir")?.unwrap_or_default());
            heap.alloc(Blob(run_helm(&chart, &args, &abs)?))
        }
        "k8s_yaml" => {
            let v = raw("yaml").unwrap_or(none);
            let mut docs = Vec::new();
            let items: Vec<Value> = match ListRef::from_value(v) {
                Some(list) => list.content().to_vec(),
                None => vec![v],
            };
            for item in items {
                // A string is a path to a YAML file; YAML text comes as a Blob.
                let s = if let Some(path) = item.unpack_str() {
                    let path = abs(path);
                    std::fs::read_to_string(&path).with_context(|| format!("k8s_yaml: cannot read {}", path.display()))?
                } else if let Some(b) = item.downcast_ref::<Blob>() {
                    b.0.clone()
                } else {
                    bail!("k8s_yaml: expected a path or a blob, got {}", item.get_type());
                };
                docs.extend(parse_yaml_stream(&s)?);
            }
            let allow_dup = args.get("allow_duplicates").and_then(Json::as_bool).unwrap_or(false);
            for d in docs {
                let id = object_id(&d);
                if !allow_dup && inner.run.objects.iter().any(|o| object_id(o) == id) {
                    bail!("k8s_yaml: duplicate Kubernetes object {id}");
                }
                inner.run.objects.push(d);
            }
            none
        }
        "k8s_resource" | "local_resource" => {
            if let Some(labels) = args.get("labels") {
                let labels: Vec<&Json> = match labels {
                    Json::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for l in labels {
                    let l = l.as_str().ok_or_else(|| anyhow!("{name}: labels must be strings"))?;
                    check_label(l).map_err(|e| anyhow!("{name}: label {l:?}: {e}"))?;
                }
            }
            if name == "local_resource" {
                let n = text("name")?.unwrap_or_default();
                if !inner.run.resources.insert(n.clone()) {
                    bail!("local_resource: a resource named {n:?} already exists");
                }
            }
            none
        }
        "probe" => {
            let actions = ["exec", "http_get", "tcp_socket"]
                .iter()
                .filter(|a| args.contains_key(**a))
                .count();
            if actions != 1 {
                bail!("probe: exactly one of exec, http_get, tcp_socket must be given ({actions} given)");
            }
            heap.alloc(TiltObject { kind: name.to_owned(), fields: args })
        }
        "allow_k8s_contexts" => {
            let allowed: Vec<String> = match args.get("contexts") {
                Some(Json::String(c)) => vec![c.clone()],
                Some(Json::Array(a)) => a.iter().filter_map(Json::as_str).map(str::to_owned).collect(),
                _ => bail!("allow_k8s_contexts: contexts must be a string or a list of strings"),
            };
            inner.allowed_contexts.extend(allowed);
            none
        }
        "custom_build" | "docker_build" | "k8s_kind" | "update_settings" | "ci_settings"
        | "version_settings" | "watch_settings" | "default_registry"
        | "docker_prune_settings" | "analytics_settings" | "secret_settings" | "enable_feature"
        | "disable_snapshots" | "set_team" => none,
        "http_get_action" | "exec_action" | "tcp_socket_action" | "port_forward" | "link" => {
            heap.alloc(TiltObject { kind: name.to_owned(), fields: args })
        }
        n if n.starts_with("v1alpha1.") => {
            if sig.required.iter().any(|r| r == "name") {
                let id = text("name")?.unwrap_or_default();
                let dup = inner.run.calls[..inner.run.calls.len() - 1]
                    .iter()
                    .any(|c| c.name == n && c.args.get("name").and_then(Json::as_str) == Some(&id));
                if dup {
                    bail!("{n}: an object named {id:?} already exists");
                }
            }
            heap.alloc(TiltObject { kind: name.to_owned(), fields: args })
        }
        other => bail!("{other}: documented Tilt builtin without a stand-in in these tests; add one in tilt_modules/tests/src/lib.rs"),
    };
    Ok(value)
}

/// `tilt up -- <args>`: `--name=value`, `--name value`, `--flag` for bools; positional
/// words go to the definition with `args=True`. Unset flags are absent from the result.
fn parse_flags(defs: &[FlagDef], args: &[String]) -> anyhow::Result<Map<String, Json>> {
    let mut out = Map::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) {
            let (key, inline) = match flag.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (flag, None),
            };
            let def = defs
                .iter()
                .find(|d| d.name == key)
                .ok_or_else(|| anyhow!("config.parse: unknown flag: --{key}"))?;
            let value = match (def.kind, inline) {
                (FlagKind::Bool, None) => "true".to_owned(),
                (_, Some(v)) => v,
                (_, None) => {
                    let v = args.get(i).cloned().ok_or_else(|| anyhow!("config.parse: flag needs an argument: --{key}"))?;
                    i += 1;
                    v
                }
            };
            set_flag(&mut out, def, value)?;
        } else {
            let def = defs
                .iter()
                .find(|d| d.positional)
                .ok_or_else(|| anyhow!("config.parse: positional arguments given ({a:?}), but no setting was defined with args=True"))?;
            set_flag(&mut out, def, a.clone())?;
        }
    }
    Ok(out)
}

fn set_flag(out: &mut Map<String, Json>, def: &FlagDef, value: String) -> anyhow::Result<()> {
    match def.kind {
        FlagKind::String => {
            if out.contains_key(&def.name) {
                bail!("config.parse: string setting {:?} specified multiple times", def.name);
            }
            out.insert(def.name.clone(), Json::String(value));
        }
        FlagKind::Bool => {
            let b: bool = value
                .parse()
                .map_err(|_| anyhow!("config.parse: {:?} must be true or false, got {value:?}", def.name))?;
            out.insert(def.name.clone(), Json::Bool(b));
        }
        FlagKind::StringList => {
            let list = out.entry(def.name.clone()).or_insert_with(|| json!([]));
            if let Json::Array(a) = list {
                a.push(Json::String(value));
            }
        }
    }
    Ok(())
}

/// Tilt labels: Kubernetes label values (at most 63 characters, alphanumeric at both
/// ends, `-_.` inside).
fn check_label(l: &str) -> Result<(), String> {
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if l.is_empty() || l.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    let ends = [l.chars().next(), l.chars().last()];
    if ends.iter().any(|c| !c.is_some_and(|c| c.is_ascii_alphanumeric())) || !l.chars().all(ok_inner) {
        return Err("must be alphanumeric at both ends with only '-', '_' or '.' inside".into());
    }
    Ok(())
}

fn parse_yaml_stream(s: &str) -> anyhow::Result<Vec<Json>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(s) {
        let j = Json::deserialize(doc).context("invalid YAML")?;
        match j {
            Json::Null => {}
            Json::Object(ref m) if m.get("kind").and_then(Json::as_str) == Some("List") => {
                out.extend(m.get("items").and_then(Json::as_array).cloned().unwrap_or_default());
            }
            j => out.push(j),
        }
    }
    Ok(out)
}

fn object_id(o: &Json) -> String {
    let s = |p: &str| o.pointer(p).and_then(Json::as_str).unwrap_or("").to_owned();
    format!("{}/{}/{}", s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

/// `local(argv)`: `devd ...` runs through devd's command-line crate (its own clap parser,
/// then the same functions `devd plan --json` and `devd env list --json` print). Anything else is
/// refused: a Tiltfile that shells out to something else at load time needs a stand-in.
fn run_local(argv: &[String], dir: &Path) -> anyhow::Result<String> {
    use clap::Parser as _;
    use stand_cli::{Cli, Command as DevdCommand, EnvCommand, Place};

    let shown = argv.join(" ");
    let program = argv.first().map(|p| p.rsplit('/').next().unwrap_or(p)).unwrap_or("");
    if program != "devd" {
        bail!("local({shown:?}): the stand-in runs devd commands only");
    }
    let failed = |e: &anyhow::Error| {
        anyhow!(
            "command {shown:?} failed.\nerror: exit status {}\nstderr:\n{}",
            stand_cli::exit_code(e),
            stand_cli::render_error(e)
        )
    };
    let cli = Cli::try_parse_from(argv).map_err(|e| anyhow!("command {shown:?} failed.\nerror: exit status 2\nstderr:\n{e}"))?;
    let root = cli.root.as_ref().map_or_else(|| dir.to_path_buf(), |r| dir.join(r));
    let file = cli.file.as_ref().map(|f| dir.join(f));
    let result = (|| -> anyhow::Result<String> {
        let place = Place::find(Some(&root), file.as_deref())?;
        let stand = place.load()?;
        let value = match cli.command {
            DevdCommand::Plan(args) if args.json => {
                let env = args.env.unwrap_or_else(|| stand.section().default_env.get_ref().clone());
                let needs_host = stand.environment(&env).is_some_and(|e| e.build_target.is_none());
                let triple = if needs_host { stand_cli::host_triple().unwrap_or_else(|guess| guess.triple) } else { String::new() };
                serde_json::to_value(stand_model::plan::resolve(&stand, &env, &triple)?)?
            }
            // The kube context comes from the evaluation (`k8s_context()`), never from
            // this machine's kubeconfig.
            DevdCommand::Context(args) if args.json => {
                let env = args.env.unwrap_or_else(|| stand.section().default_env.get_ref().clone());
                let context = args.context.ok_or_else(|| anyhow!("the stand-in runs `devd context` with an explicit context only"))?;
                serde_json::to_value(stand_cli::context_verdict(&stand, &env, Some(context))?)?
            }
            DevdCommand::Env(EnvCommand::List(flag)) if flag.json => {
                serde_json::to_value(stand_cli::env_summaries(&stand)?)?
            }
            // The real command writes the generated values files; here it must find them
            // up to date (the writes would be no-ops), else the evaluation fails with
            // what `devd check` says: a test never edits the checkout.
            DevdCommand::Generate => {
                stand_model::values::check_files(&stand, &place.root).map_err(|e| anyhow!("{e}"))?;
                return Ok(String::new());
            }
            _ => bail!("the stand-in local() runs `devd plan --json`, `devd env list --json`, `devd context --json <context>` and `devd generate` only"),
        };
        Ok(format!("{}\n", serde_json::to_string_pretty(&value)?))
    })();
    result.map_err(|e| failed(&e))
}

/// `helm(...)`: `helm template` with the same arguments Tilt passes, minus the chart's
/// test hooks (Tilt drops documents whose `# Source:` is under `tests/`).
fn run_helm(chart: &Path, args: &Map<String, Json>, abs: &dyn Fn(&str) -> PathBuf) -> anyhow::Result<String> {
    let list = |key: &str| -> Vec<String> {
        match args.get(key) {
            Some(Json::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
            Some(Json::String(s)) => vec![s.clone()],
            _ => vec![],
        }
    };
    let mut cmd = Command::new("helm");
    cmd.arg("template");
    if let Some(n) = args.get("name").and_then(Json::as_str) {
        cmd.arg(n);
    }
    cmd.arg(chart);
    if let Some(ns) = args.get("namespace").and_then(Json::as_str) {
        cmd.args(["--namespace", ns]);
    }
    for v in list("values") {
        cmd.arg("--values").arg(abs(&v));
    }
    for s in list("set") {
        cmd.args(["--set", &s]);
    }
    let out = cmd
        .output()
        .context("helm(): cannot run `helm` (bash scripts/setup installs it at /usr/local/bin/helm)")?;
    if !out.status.success() {
        bail!("helm(): helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout).context("helm(): output is not UTF-8")?;
    let kept: Vec<&str> = text
        .split("---\n")
        .filter(|doc| !doc.lines().any(|l| l.starts_with("# Source: ") && l.contains("/tests/")))
        .collect();
    Ok(kept.join("---\n"))
}

// ---- Tilt's assembly checks -----------------------------------------------------------

fn assemble(run: &mut Run) -> anyhow::Result<()> {
    let kind = |o: &Json| o.pointer("/kind").and_then(Json::as_str).unwrap_or("").to_owned();
    let oname = |o: &Json| o.pointer("/metadata/name").and_then(Json::as_str).unwrap_or("").to_lowercase();
    let workloads: Vec<&Json> = run.objects.iter().filter(|o| WORKLOAD_KINDS.contains(&kind(o).as_str())).collect();
    let mut workload_names = BTreeSet::new();
    for w in &workloads {
        let n = oname(w);
        let unique = workloads.iter().filter(|x| oname(x) == n).count() == 1;
        workload_names.insert(if unique { n } else { format!("{n}:{}", kind(w).to_lowercase()) });
    }
    let mut resources: BTreeSet<String> = run.resources.clone();
    resources.extend(workload_names.iter().cloned());
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut renamed = BTreeSet::new();
    for c in run.calls.iter().filter(|c| c.name == "k8s_resource") {
        let workload = c.args.get("workload").and_then(Json::as_str);
        let new_name = c.args.get("new_name").and_then(Json::as_str);
        match (workload, new_name) {
            (Some(w), _) if !workload_names.contains(w) => {
                bail!("k8s_resource: no workload named {w:?} (workloads: {workload_names:?})")
            }
            (Some(w), Some(n)) => {
                renamed.insert(w.to_owned());
                resources.insert(n.to_owned());
            }
            (None, Some(n)) => {
                if !c.args.contains_key("objects") {
                    bail!("k8s_resource: new_name {n:?} without a workload needs objects");
                }
                resources.insert(n.to_owned());
            }
            (Some(_), None) => {}
            (None, None) => bail!("k8s_resource: give a workload or a new_name with objects"),
        }
        for sel in c.args.get("objects").and_then(Json::as_array).into_iter().flatten() {
            let sel = sel.as_str().ok_or_else(|| anyhow!("k8s_resource: objects must be strings"))?;
            let parts: Vec<&str> = sel.split(':').collect();
            let matches: Vec<&Json> = run
                .objects
                .iter()
                .filter(|o| {
                    oname(o) == parts[0].to_lowercase()
                        && parts.get(1).is_none_or(|k| kind(o).to_lowercase() == k.to_lowercase())
                        && parts.get(2).is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Json::as_str) == Some(*ns))
                })
                .collect();
            if matches.len() != 1 {
                bail!("k8s_resource: objects selector {sel:?} matches {} objects (it must match exactly one)", matches.len());
            }
            if WORKLOAD_KINDS.contains(&kind(matches[0]).as_str()) {
                bail!("k8s_resource: objects selector {sel:?} names a workload");
            }
            if !claimed.insert(object_id(matches[0])) {
                bail!("k8s_resource: object {sel:?} is already claimed by another resource");
            }
        }
    }
    for w in renamed {
        resources.remove(&w);
    }
    for c in run.calls.iter().filter(|c| c.name == "k8s_resource" || c.name == "local_resource") {
        for d in c.args.get("resource_deps").and_then(Json::as_array).into_iter().flatten() {
            let d = d.as_str().unwrap_or_default();
            if !resources.contains(d) {
                bail!("{}: resource_deps names an unknown resource {d:?} (resources: {resources:?})", c.name);
            }
        }
    }
    for c in run.calls.iter().filter(|c| c.name == "v1alpha1.ui_button") {
        let loc = c.args.get("location").cloned().unwrap_or(Json::Null);
        let ty = loc.get("component_type").and_then(Json::as_str).unwrap_or("");
        let id = loc.get("component_id").and_then(Json::as_str).unwrap_or("");
        if ty == "Resource" && !resources.contains(id) {
            bail!("v1alpha1.ui_button {:?}: no resource named {id:?}", c.args.get("name"));
        }
    }
    let images: BTreeSet<String> = workloads
        .iter()
        .flat_map(|w| {
            let spec = w.pointer("/spec/template/spec").or_else(|| w.pointer("/spec")).cloned().unwrap_or(Json::Null);
            let mut refs = Vec::new();
            for key in ["containers", "initContainers"] {
                for c in spec.get(key).and_then(Json::as_array).into_iter().flatten() {
                    if let Some(img) = c.get("image").and_then(Json::as_str) {
                        refs.push(image_repository(img));
                    }
                }
            }
            refs
        })
        .collect();
    for c in run.calls.iter().filter(|c| c.name == "custom_build" || c.name == "docker_build") {
        let r = c.args.get("ref").and_then(Json::as_str).unwrap_or_default();
        if !images.contains(&image_repository(r)) {
            run.warnings.push(format!("Image not used in any deploy config: {r}"));
        }
    }
    run.resources = resources;
    Ok(())
}

/// `registry/name:tag@digest` -> `registry/name`.
fn image_repository(r: &str) -> String {
    let r = r.split('@').next().unwrap_or(r);
    match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_owned(),
        _ => r.to_owned(),
    }
}

/// Whether Tilt itself treats kube context `context` as a local cluster's, deploying to
/// it without `allow_k8s_contexts` (Tilt's internal/k8s/env.go: the product is read off
/// the context's name).
fn tilt_deems_local(context: &str) -> bool {
    const EXACT: &[&str] = &["minikube", "docker-desktop", "docker-for-desktop", "microk8s", "rancher-desktop", "orbstack", "colima", "kind"];
    const PREFIXES: &[&str] = &["kind-", "k3d-", "colima-", "crc-", "krucible-"];
    EXACT.contains(&context) || PREFIXES.iter().any(|p| context.starts_with(p))
}
