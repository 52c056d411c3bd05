//! What `devd up` prints while it works: one line per stage and service, from the
//! status hub's events (the same events the API streams, so there is one source of
//! truth).
//!
//! [`Progress`] turns events into [`Say`]s, purely; [`spawn`] prints them to stderr.
//! On a terminal every service has one line that updates in place (indicatif), and
//! rebuild summaries are printed above them; in a file or a pipe every stage is a
//! plain line with the time and no colour. `NO_COLOR` turns colour off on a terminal
//! too; `devd up --quiet` prints none of this.
//!
//! First start: `building service1, service2`, cargo's `37/180 crates`, per service
//! `built in`, `image ... built in`, `database ... started in`, `container ...
//! started in`, `synced, 1/1 healthy in`. Later: `service1: rebuilt in 412 ms, serving
//! in 538 ms` (when the service is delivered somewhere), else `rebuilt in`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::status::{Event, EventBody, StatusHub};

/// How a [`Say`] is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A stage started or ended: a plain line; on a terminal the service's line.
    Stage,
    /// A count that moves (cargo's units): on a terminal the service's line; plain
    /// lines at most every [`PLAIN_PROGRESS_EVERY`].
    Count,
    /// Something to keep in the scrollback: a line on a terminal too.
    Summary,
}

/// What a [`Say`] does to a service's line on a terminal, besides showing its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// A build started: a new round of stages, the line says `building`.
    BuildStarted,
    /// cargo's count of the build's units: the line says `building: 37/180 crates`.
    Crates { done: u32, total: u32 },
    /// The service serves the build: the line stops spinning.
    Serving,
    /// A stage like any other.
    Other,
}

/// One thing to tell the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Say {
    /// The services it is about (empty: the stand).
    pub services: Vec<String>,
    pub text: String,
    pub kind: Kind,
    pub line: Line,
}

/// Plain output prints cargo's count at most this often.
pub const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct ServiceState {
    /// The service has been served once (its first start is over).
    served: bool,
    /// All its instances were healthy at the last look.
    healthy: bool,
    /// A rebuild's duration, waiting for its delivery to be told in one line.
    rebuilt_ms: Option<u64>,
    /// When the current build or deploy started.
    build_started: Option<DateTime<Utc>>,
    built_at: Option<DateTime<Utc>>,
}

/// A service's instances when an event comes: how many are healthy, of how many, and
/// the URLs they serve on from this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instances {
    pub healthy: usize,
    pub total: usize,
    pub urls: Vec<String>,
}

/// Events in, [`Say`]s out. `delivers`: the stand's target receives every build, so a
/// rebuild's line waits for the delivery.
pub struct Progress {
    delivers: bool,
    services: BTreeMap<String, ServiceState>,
    /// Builds already announced.
    announced: BTreeSet<u64>,
    last_count: BTreeMap<u64, DateTime<Utc>>,
}

/// `412 ms`, `35.2 s`, `1 min 37 s`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn ms_between(from: Option<DateTime<Utc>>, to: DateTime<Utc>) -> Option<u64> {
    from.and_then(|f| u64::try_from((to - f).num_milliseconds()).ok())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

impl Progress {
    pub fn new(delivers: bool) -> Self {
        Self { delivers, services: BTreeMap::new(), announced: BTreeSet::new(), last_count: BTreeMap::new() }
    }

    /// What `event` tells; `now`: its service's instances as they are now.
    pub fn on_event(&mut self, event: &Event, now: Option<&Instances>) -> Vec<Say> {
        let healthy = now.map(|n| (n.healthy, n.total));
        let Some(name) = event.service.clone() else {
            return self.on_stand_event(event);
        };
        let say = |text: String, kind: Kind, line: Line| vec![Say { services: vec![name.clone()], text, kind, line }];
        let one = |text: String, kind: Kind| say(text, kind, Line::Other);
        let delivers = self.delivers;
        let state = self.services.entry(name.clone()).or_default();
        match &event.body {
            EventBody::BuildStarted(started) => {
                state.build_started = Some(event.at);
                if !self.announced.insert(started.build) {
                    return Vec::new();
                }
                let services = if started.services.is_empty() { vec![name] } else { started.services.clone() };
                let why = match started.cause.as_slice() {
                    [] => String::new(),
                    [path] => format!(" ({path} changed)"),
                    many => format!(" ({} files changed)", many.len()),
                };
                // One service: `svc1: building (...)`; several: `building a, b`.
                let text = match services.as_slice() {
                    [_] => format!("building{why}"),
                    _ => format!("building {}{why}", services.join(", ")),
                };
                vec![Say { text, services, kind: Kind::Stage, line: Line::BuildStarted }]
            }
            EventBody::BuildFinished(finished) => {
                let ms = finished.duration_ms;
                state.built_at = Some(event.at);
                if !state.served {
                    // Nothing to deliver to: the first build is the whole start.
                    state.served = !delivers;
                    one(format!("built in {}", duration(ms)), Kind::Stage)
                } else if delivers {
                    state.rebuilt_ms = Some(ms);
                    Vec::new()
                } else {
                    one(format!("rebuilt in {}", duration(ms)), Kind::Summary)
                }
            }
            EventBody::BuildFailed(failed) => {
                let message = first_line(&failed.message);
                let ms = duration(failed.duration_ms);
                one(format!("build failed after {ms}: {message} (`devd status` shows the errors)"), Kind::Summary)
            }
            EventBody::ImageBuilt(step) => one(format!("image {} built in {}", step.name, duration(step.duration_ms)), Kind::Stage),
            EventBody::DatabaseStarted(step) => {
                one(format!("database {} started in {}", step.name, duration(step.duration_ms)), Kind::Stage)
            }
            EventBody::ContainerStarted(step) => {
                one(format!("container {} started in {}", step.name, duration(step.duration_ms)), Kind::Stage)
            }
            EventBody::ImageKept(step) => {
                one(format!("image {} kept: built before from the same Dockerfile, base image and shim", step.name), Kind::Stage)
            }
            EventBody::ImageProgress(progress) if !state.served => {
                let line: String = progress.line.chars().take(60).collect();
                one(format!("image: {line}"), Kind::Count)
            }
            EventBody::DeployFailed(failed) => one(format!("cannot start it: {}", first_line(&failed.error)), Kind::Summary),
            EventBody::SyncStarted(sync) if !state.served => {
                let n = sync.instances;
                one(format!("syncing into {n} instance{}", if n == 1 { "" } else { "s" }), Kind::Count)
            }
            EventBody::Synced(synced) => {
                let (up, total) = healthy.unwrap_or((0, 0));
                state.healthy = total > 0 && up == total;
                let health = format!("{up}/{total} healthy");
                if let Some(build_ms) = state.rebuilt_ms.take().filter(|_| state.served) {
                    let serving = synced.edit_to_serving_ms.or_else(|| ms_between(state.build_started, event.at));
                    let serving = serving.map_or_else(String::new, |ms| format!(", serving in {}", duration(ms)));
                    let unhealthy = if state.healthy { String::new() } else { format!(" ({health})") };
                    return say(format!("rebuilt in {}{serving}{unhealthy}", duration(build_ms)), Kind::Summary, Line::Serving);
                }
                let was_served = state.served;
                state.served = true;
                let since = ms_between(state.built_at, event.at).map_or_else(String::new, |ms| format!(" in {}", duration(ms)));
                let kind = if was_served { Kind::Summary } else { Kind::Stage };
                // The first time: where to reach it (the docker target publishes on
                // ports of its choosing).
                let urls = now.map(|n| n.urls.as_slice()).unwrap_or_default();
                let on = if was_served || urls.is_empty() { String::new() } else { format!(", serving on {}", urls.join(", ")) };
                say(format!("synced, {health}{since}{on}"), kind, Line::Serving)
            }
            EventBody::SyncFailed(failed) => {
                state.rebuilt_ms = None;
                let error = failed.errors.first().map_or("", String::as_str);
                one(format!("delivery failed: {}", first_line(error)), Kind::Summary)
            }
            EventBody::Instances(_) => {
                let (up, total) = healthy.unwrap_or((0, 0));
                let now = total > 0 && up == total;
                let was = std::mem::replace(&mut state.healthy, now);
                match (was, now, state.served) {
                    (false, true, true) => one(format!("healthy ({up}/{total})"), Kind::Summary),
                    (true, false, _) => one(format!("{up}/{total} healthy"), Kind::Summary),
                    _ => Vec::new(),
                }
            }
            EventBody::Resync(resync) => one(format!("instance {} runs another build; syncing it", short(&resync.instance)), Kind::Summary),
            EventBody::ContainerRevived(_) => one("its container was stopped or removed; started it again".to_owned(), Kind::Summary),
            EventBody::Restarted(_) => one("restarted".to_owned(), Kind::Summary),
            EventBody::RestartFailed(failed) => one(format!("restart failed: {}", first_line(&failed.error)), Kind::Summary),
            EventBody::ImageProgress(_)
            | EventBody::SyncStarted(_)
            | EventBody::BuildProgress(_)
            | EventBody::Deployed(_)
            | EventBody::ConfigError(_)
            | EventBody::ConfigReloaded(_)
            | EventBody::ServiceRemoved(_)
            | EventBody::DeliverySkipped(_)
            | EventBody::TargetState(_) => Vec::new(),
        }
    }

    fn on_stand_event(&mut self, event: &Event) -> Vec<Say> {
        let stand = |text: String| vec![Say { services: Vec::new(), text, kind: Kind::Summary, line: Line::Other }];
        match &event.body {
            EventBody::BuildProgress(progress) => {
                let (build, done, total) = (progress.build, progress.done, progress.total);
                let services = progress.services.clone();
                let text = match services.as_slice() {
                    [_] => format!("building: {done}/{total} crates"),
                    _ => format!("building {}: {done}/{total} crates", services.join(", ")),
                };
                let last = self.last_count.insert(build, event.at);
                let due = last.is_none_or(|t| ms_between(Some(t), event.at).unwrap_or(0) >= PLAIN_PROGRESS_EVERY.as_millis() as u64);
                if !due {
                    // Keep the time of the last plain line, not of this one.
                    if let Some(t) = last {
                        self.last_count.insert(build, t);
                    }
                }
                let kind = if due { Kind::Stage } else { Kind::Count };
                vec![Say { services, text, kind, line: Line::Crates { done, total } }]
            }
            EventBody::ConfigError(failed) => {
                stand(format!("stand.toml is invalid, running on the last good plan: {}", first_line(&failed.error)))
            }
            EventBody::ConfigReloaded(_) => stand("stand.toml reloaded".to_owned()),
            _ => Vec::new(),
        }
    }
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// One plain line: `HH:MM:SS service1: text` (or without a service).
pub fn plain_line(at: DateTime<Utc>, say: &Say) -> String {
    let clock = at.with_timezone(&chrono::Local).format("%H:%M:%S");
    match say.services.as_slice() {
        [one] => format!("{clock} {one}: {}", say.text),
        _ => format!("{clock} {}", say.text),
    }
}

/// Whether colour may be used on `stream`: a terminal, and no `NO_COLOR`.
pub fn colour_on(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// [`colour_on`] stderr.
pub fn colour_on_stderr() -> bool {
    colour_on(&std::io::stderr())
}

/// Prints the hub's events as progress until aborted.
pub fn spawn(hub: StatusHub, delivers: bool) -> JoinHandle<()> {
    let tty = std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
    tokio::spawn(async move {
        let (past, mut rx) = hub.subscribe(0);
        let mut progress = Progress::new(delivers);
        let mut out: Box<dyn Sink> = if tty { Box::new(Bars::new(&hub)) } else { Box::new(Plain) };
        let mut handle = |event: &Event, out: &mut Box<dyn Sink>| {
            let now = event.service.as_deref().and_then(|s| hub.service(s)).map(|s| Instances {
                healthy: s.instances.iter().filter(|i| i.healthy).count(),
                total: s.instances.len(),
                urls: s.instances.iter().filter_map(|i| i.url.clone()).collect(),
            });
            for say in progress.on_event(event, now.as_ref()) {
                out.say(event.at, &say);
            }
        };
        for event in &past {
            handle(event, &mut out);
        }
        loop {
            match rx.recv().await {
                Ok(event) => handle(&event, &mut out),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

trait Sink: Send {
    fn say(&mut self, at: DateTime<Utc>, say: &Say);
}

/// Plain lines to stderr; counts only when due.
struct Plain;

impl Sink for Plain {
    fn say(&mut self, at: DateTime<Utc>, say: &Say) {
        if say.kind == Kind::Count {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", plain_line(at, say));
    }
}

/// One updating line per service on a terminal: the stages done so far in this round
/// (`built in 35.2 s · image ... built in 3.2 s · ...`), then what runs now.
struct Bars {
    multi: indicatif::MultiProgress,
    bars: BTreeMap<String, indicatif::ProgressBar>,
    done: BTreeMap<String, Vec<String>>,
    colour: bool,
}

impl Bars {
    fn new(hub: &StatusHub) -> Self {
        let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
        let mut bars = Self { multi, bars: BTreeMap::new(), done: BTreeMap::new(), colour: colour_on_stderr() };
        let names: Vec<String> = hub.snapshot().services.iter().map(|s| s.name.clone()).collect();
        let width = names.iter().map(String::len).max().unwrap_or(0);
        for name in names {
            let bar = bars.multi.add(indicatif::ProgressBar::new_spinner());
            bar.set_style(bars.style(true));
            bar.set_prefix(format!("{name:<width$}"));
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.bars.insert(name, bar);
        }
        bars
    }

    fn style(&self, working: bool) -> indicatif::ProgressStyle {
        let template = match (working, self.colour) {
            (true, true) => "{spinner:.cyan} {prefix:.bold}  {msg}",
            (true, false) => "{spinner} {prefix}  {msg}",
            (false, true) => "  {prefix:.bold}  {msg}",
            (false, false) => "  {prefix}  {msg}",
        };
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
    }
}

impl Sink for Bars {
    fn say(&mut self, at: DateTime<Utc>, say: &Say) {
        if say.kind == Kind::Summary || say.services.is_empty() {
            let _ = self.multi.println(plain_line(at, say));
        }
        let settled = say.kind == Kind::Summary || say.line == Line::Serving;
        let style = self.style(!settled);
        for name in &say.services {
            let Some(bar) = self.bars.get(name) else { continue };
            let done = self.done.entry(name.clone()).or_default();
            bar.set_style(style.clone());
            bar.set_message(bar_message(done, say));
        }
    }
}

/// A service's terminal line after `say`, given the stages `done` so far in this round
/// (kept up to date): `built in 35.2 s · image ... built in 3.2 s · syncing ...`. A build's
/// lines say `building` and `building: 37/180 crates` on each of its services' lines.
fn bar_message(done: &mut Vec<String>, say: &Say) -> String {
    let text = match say.line {
        Line::BuildStarted => {
            done.clear(); // a new build: a new round of stages
            "building".to_owned()
        }
        Line::Crates { done: units, total } => format!("building: {units}/{total} crates"),
        Line::Serving | Line::Other => say.text.clone(),
    };
    let building = matches!(say.line, Line::BuildStarted | Line::Crates { .. });
    match say.kind {
        Kind::Summary => text,
        Kind::Stage if !building => {
            done.push(text);
            done.join(" · ")
        }
        _ => done.iter().cloned().chain([text]).collect::<Vec<_>>().join(" · "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::BuildErrorKind;
    use crate::config::Target;
    use crate::status::event::{BuildFailed, BuildFinished, BuildProgress, BuildStarted, StepDone, Synced};

    fn event(seq: u64, secs: i64, service: Option<&str>, body: EventBody) -> Event {
        let at = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().with_timezone(&Utc) + chrono::Duration::seconds(secs);
        Event { seq, at, service: service.map(str::to_owned), body }
    }

    fn started(build: u64, cause: &[&str], services: &[&str]) -> EventBody {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        EventBody::BuildStarted(BuildStarted { build, cause: owned(cause), services: owned(services) })
    }

    fn finished(duration_ms: u64) -> EventBody {
        EventBody::BuildFinished(BuildFinished {
            build: 1,
            duration_ms,
            edit_to_artifact_ms: None,
            fresh: false,
            replayed: false,
            sha256: "abc".to_owned(),
            size: 1,
        })
    }

    fn step(name: &str, duration_ms: u64) -> StepDone {
        StepDone { duration_ms, name: name.to_owned(), target: Target::Docker }
    }

    fn synced(edit_to_serving_ms: Option<u64>) -> EventBody {
        EventBody::Synced(Synced { edit_to_serving_ms, instances: 1, sha256: "abc".to_owned() })
    }

    fn texts(says: Vec<Say>) -> Vec<String> {
        says.into_iter().map(|s| format!("{}|{}", s.services.join(","), s.text)).collect()
    }

    #[test]
    fn a_first_start_then_a_rebuild() {
        let mut p = Progress::new(true);
        let both = started(1, &[], &["s1", "s2"]);
        assert_eq!(texts(p.on_event(&event(1, 0, Some("s1"), both.clone()), None)), ["s1,s2|building s1, s2"]);
        assert!(p.on_event(&event(2, 0, Some("s2"), both), None).is_empty(), "one line per build");
        let count = |seq, secs, done| {
            let services = vec!["s1".to_owned(), "s2".to_owned()];
            event(seq, secs, None, EventBody::BuildProgress(BuildProgress { build: 1, done, services, total: 180 }))
        };
        let first = p.on_event(&count(3, 1, 10), None);
        assert_eq!((first[0].text.as_str(), first[0].kind), ("building s1, s2: 10/180 crates", Kind::Stage));
        assert_eq!(p.on_event(&count(4, 2, 37), None)[0].kind, Kind::Count, "plain lines at most every 5 s");
        assert_eq!(p.on_event(&count(5, 7, 90), None)[0].kind, Kind::Stage);
        let built = p.on_event(&event(6, 35, Some("s1"), finished(35_200)), None);
        assert_eq!(texts(built), ["s1|built in 35.2 s"]);
        let image = event(7, 38, Some("s1"), EventBody::ImageBuilt(step("stand/s1:dev", 3200)));
        assert_eq!(texts(p.on_event(&image, None)), ["s1|image stand/s1:dev built in 3.2 s"]);
        let container = event(8, 39, Some("s1"), EventBody::ContainerStarted(step("stand-local-s1", 300)));
        assert_eq!(texts(p.on_event(&container, None)), ["s1|container stand-local-s1 started in 300 ms"]);
        let first_sync = event(9, 40, Some("s1"), synced(None));
        let now = Instances { healthy: 1, total: 1, urls: vec!["http://127.0.0.1:32770".to_owned()] };
        assert_eq!(texts(p.on_event(&first_sync, Some(&now))), ["s1|synced, 1/1 healthy in 5.0 s, serving on http://127.0.0.1:32770"]);

        // A rebuild: one line when it serves.
        let edit = started(2, &["services/s1/src/lib.rs"], &["s1"]);
        assert_eq!(texts(p.on_event(&event(10, 60, Some("s1"), edit), None)), ["s1|building (services/s1/src/lib.rs changed)"]);
        assert!(p.on_event(&event(11, 60, Some("s1"), finished(412)), None).is_empty());
        let line = p.on_event(&event(12, 61, Some("s1"), synced(Some(538))), Some(&now));
        assert_eq!(texts(line.clone()), ["s1|rebuilt in 412 ms, serving in 538 ms"]);
        assert_eq!(line[0].kind, Kind::Summary);
    }

    #[test]
    fn without_a_target_a_rebuild_is_told_when_built() {
        let mut p = Progress::new(false);
        let _ = p.on_event(&event(1, 0, Some("s1"), finished(900)), None);
        assert_eq!(texts(p.on_event(&event(2, 9, Some("s1"), finished(1900)), None)), ["s1|rebuilt in 1.9 s"]);
        let failed = EventBody::BuildFailed(BuildFailed {
            build: 3,
            duration_ms: 700,
            kind: BuildErrorKind::Compile,
            message: "cargo build failed\nmore".to_owned(),
        });
        let failed = p.on_event(&event(3, 9, Some("s1"), failed), None);
        assert_eq!(texts(failed), ["s1|build failed after 700 ms: cargo build failed (`devd status` shows the errors)"]);
    }

    #[test]
    fn a_services_terminal_line_collects_the_rounds_stages() {
        let mut p = Progress::new(true);
        let mut done = Vec::new();
        let mut line = |event: Event, now: Option<&Instances>| {
            let says = p.on_event(&event, now);
            says.iter().filter(|s| s.services.iter().any(|n| n == "s1")).map(|s| bar_message(&mut done, s)).collect::<Vec<_>>()
        };
        let units = |done| EventBody::BuildProgress(BuildProgress { build: 1, done, services: vec!["s1".to_owned(), "s2".to_owned()], total: 180 });
        assert_eq!(line(event(1, 0, Some("s1"), started(1, &[], &["s1", "s2"])), None), ["building"]);
        assert_eq!(line(event(2, 1, None, units(37)), None), ["building: 37/180 crates"]);
        assert_eq!(line(event(3, 35, Some("s1"), finished(35_200)), None), ["built in 35.2 s"]);
        let image = EventBody::ImageBuilt(step("stand/s1:dev", 3200));
        assert_eq!(line(event(4, 38, Some("s1"), image), None), ["built in 35.2 s · image stand/s1:dev built in 3.2 s"]);
        let now = Instances { healthy: 1, total: 1, urls: Vec::new() };
        let served = line(event(5, 40, Some("s1"), synced(None)), Some(&now));
        assert_eq!(served, ["built in 35.2 s · image stand/s1:dev built in 3.2 s · synced, 1/1 healthy in 5.0 s"]);
        // The next build starts a new round.
        assert_eq!(line(event(6, 60, Some("s1"), started(2, &["a.rs"], &["s1"])), None), ["building"]);
        assert_eq!(line(event(7, 61, Some("s1"), finished(412)), None), Vec::<String>::new());
        assert_eq!(line(event(8, 62, Some("s1"), synced(Some(538))), Some(&now)), ["rebuilt in 412 ms, serving in 538 ms"]);
    }

    #[test]
    fn serving_lines_settle_the_terminal_line() {
        let mut p = Progress::new(true);
        let now = Instances { healthy: 1, total: 1, urls: Vec::new() };
        let _ = p.on_event(&event(1, 0, Some("s1"), finished(900)), None);
        let synced = p.on_event(&event(2, 1, Some("s1"), synced(None)), Some(&now));
        assert_eq!((synced[0].kind, synced[0].line), (Kind::Stage, Line::Serving));
        let started = p.on_event(&event(3, 2, Some("s1"), started(2, &[], &["s1"])), None);
        assert_eq!(started[0].line, Line::BuildStarted);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(412), "412 ms");
        assert_eq!(duration(35_210), "35.2 s");
        assert_eq!(duration(97_000), "1 min 37 s");
    }
}
