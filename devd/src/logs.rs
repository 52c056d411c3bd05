//! `devd logs [SERVICE...] [-f] [--since DURATION] [--tail N]`: what the services print.
//!
//! docker target: each service container's log through the Engine API; kubernetes:
//! every pod of the service (the chart's labels) through the API's `pods/log`. Each
//! line is prefixed with its service, and with the instance when the service has more
//! than one; on a terminal each service has its colour (not with `NO_COLOR`). `-f`
//! keeps streaming and picks up new instances as they come (a container devd
//! re-created, a new pod), looking for them every [`DISCOVER_EVERY`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use futures_util::{AsyncBufReadExt as _, StreamExt as _};
use tokio::sync::mpsc;

use crate::config::Target;
use crate::plan::Plan;
use crate::runtime::docker::{LABEL_COMPONENT, LABEL_ENV, LABEL_SERVICE, LABEL_STAND};

/// How often `-f` looks for new instances.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(1);

/// What to show.
#[derive(Clone, Debug)]
pub struct LogRequest {
    pub services: Vec<String>,
    pub follow: bool,
    pub since: Option<Duration>,
    pub tail: Option<u64>,
}

/// One running (or, without `-f`, stopped) instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Source {
    service: String,
    /// Container id or pod name.
    id: String,
    /// Short form for the prefix.
    short: String,
}

/// A line from an instance.
struct Line {
    source: Source,
    text: String,
}

/// ANSI colours for service prefixes, in turn.
const COLOURS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

/// The prefix of a line: `service1 | ` or `service1/3f2a9c1d0b7e | `, padded to `width`.
pub fn prefix(service: &str, instance: Option<&str>, width: usize) -> String {
    let name = match instance {
        Some(i) => format!("{service}/{i}"),
        None => service.to_owned(),
    };
    format!("{name:<width$} | ")
}

/// Streams the logs until they end (or, with `follow`, until the process is stopped).
pub async fn run(plan: &Plan, target: Target, request: LogRequest, colour: bool) -> anyhow::Result<()> {
    let services: Vec<String> = if request.services.is_empty() {
        plan.services.iter().map(|s| s.name.clone()).collect()
    } else {
        request.services.clone()
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let discover = {
        let plan = plan.clone();
        let services = services.clone();
        let request = request.clone();
        tokio::spawn(async move {
            match target {
                Target::Docker => docker(&plan, &services, &request, tx).await,
                Target::Kubernetes => kubernetes(&plan, &services, &request, tx).await,
            }
        })
    };
    // Prefixes: the instance only when a service has more than one.
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let width = services.iter().map(String::len).max().unwrap_or(0);
    let colours: BTreeMap<&str, &str> = services.iter().map(String::as_str).zip(COLOURS.iter().copied().cycle()).collect();
    while let Some(line) = rx.recv().await {
        let instances = seen.entry(line.source.service.clone()).or_default();
        instances.insert(line.source.id.clone());
        let instance = (instances.len() > 1).then_some(line.source.short.as_str());
        let width = if instance.is_some() { width + 13 } else { width };
        let head = prefix(&line.source.service, instance, width);
        let head = match colours.get(line.source.service.as_str()).filter(|_| colour) {
            Some(code) => format!("\x1b[{code}m{head}\x1b[0m"),
            None => head,
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{head}{}", line.text).and_then(|()| out.flush()).is_err() {
            return Ok(()); // stdout closed (`| head`)
        }
    }
    match discover.await {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("log task failed: {e}")),
    }
}

/// Splits a stream of chunks into lines (a partial line waits for its end).
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.0.push_str(&String::from_utf8_lossy(chunk));
        let mut lines = Vec::new();
        while let Some(end) = self.0.find('\n') {
            let line: String = self.0.drain(..=end).collect();
            lines.push(line.trim_end_matches(['\n', '\r']).to_owned());
        }
        lines
    }

    fn rest(self) -> Option<String> {
        Some(self.0).filter(|r| !r.is_empty())
    }
}

fn unix_since(since: Option<Duration>) -> i32 {
    since.map_or(0, |d| {
        let now = chrono::Utc::now().timestamp();
        i32::try_from(now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX).min(now)).unwrap_or(0)
    })
}

async fn docker(plan: &Plan, services: &[String], request: &LogRequest, tx: mpsc::UnboundedSender<Line>) -> anyhow::Result<()> {
    use bollard::query_parameters::{ListContainersOptions, LogsOptions};
    let docker = crate::image::connect().await?;
    let mut streams = tokio::task::JoinSet::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    // Containers whose stream ended (stopped), with when: a restart resumes from there.
    let mut ended: BTreeMap<String, i32> = BTreeMap::new();
    let mut first = true;
    loop {
        for service in services {
            let filters = std::collections::HashMap::from([(
                "label".to_owned(),
                vec![
                    format!("{LABEL_STAND}={}", plan.stand),
                    format!("{LABEL_ENV}={}", plan.env),
                    format!("{LABEL_SERVICE}={service}"),
                    format!("{LABEL_COMPONENT}=service"),
                ],
            )]);
            // Without -f, stopped containers' logs too; with -f, the running ones.
            let options = ListContainersOptions { all: !request.follow, filters: Some(filters), ..Default::default() };
            let containers = docker.list_containers(Some(options)).await?;
            for id in containers.into_iter().filter_map(|c| c.id) {
                if !started.insert(id.clone()) {
                    continue;
                }
                let source = Source { service: service.clone(), short: id.chars().take(12).collect(), id: id.clone() };
                // A container that appears while following shows all it printed; one
                // that was restarted, what it printed since its stream ended.
                let since = match ended.remove(&id) {
                    Some(at) => at,
                    None if first => unix_since(request.since),
                    None => 0,
                };
                let options = LogsOptions {
                    follow: request.follow,
                    stdout: true,
                    stderr: true,
                    since,
                    tail: match request.tail.filter(|_| first) {
                        Some(n) => n.to_string(),
                        None => "all".to_owned(),
                    },
                    ..Default::default()
                };
                let docker = docker.clone();
                let tx = tx.clone();
                streams.spawn(async move {
                    let mut stream = docker.logs(&source.id, Some(options));
                    let mut lines = Lines::default();
                    while let Some(item) = stream.next().await {
                        let Ok(output) = item else { break };
                        for text in lines.push(output.as_ref()) {
                            if tx.send(Line { source: source.clone(), text }).is_err() {
                                return (source.id, unix_since(None));
                            }
                        }
                    }
                    let id = source.id.clone();
                    if let Some(text) = lines.rest() {
                        let _ = tx.send(Line { source, text });
                    }
                    (id, i32::try_from(chrono::Utc::now().timestamp()).unwrap_or(0))
                });
            }
        }
        first = false;
        if !request.follow {
            while streams.join_next().await.is_some() {}
            return Ok(());
        }
        tokio::time::sleep(DISCOVER_EVERY).await;
        while let Some(done) = streams.try_join_next() {
            if let Ok((id, at)) = done {
                started.remove(&id);
                ended.insert(id, at);
            }
        }
    }
}

async fn kubernetes(plan: &Plan, services: &[String], request: &LogRequest, tx: mpsc::UnboundedSender<Line>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, LogParams};
    let client = kube::Client::try_default().await.map_err(|e| anyhow::anyhow!("cannot reach the cluster: {e}"))?;
    let pods: Api<Pod> = Api::namespaced(client, &plan.namespace);
    let mut streams = tokio::task::JoinSet::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut first = true;
    loop {
        for service in services {
            let selector = crate::runtime::kubernetes::service_selector(&plan.release, service);
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            for pod in list.items {
                let Some(name) = pod.metadata.name.clone() else { continue };
                let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p != "Pending");
                // A pod's uid tells a new pod of the same name apart.
                let key = format!("{name}/{}", pod.metadata.uid.clone().unwrap_or_default());
                if !running || !started.insert(key) {
                    continue;
                }
                let short = name.rsplit('-').next().unwrap_or(&name).to_owned();
                let source = Source { service: service.clone(), id: name.clone(), short };
                let params = LogParams {
                    container: Some(service.clone()),
                    follow: request.follow,
                    since_seconds: request.since.filter(|_| first).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                    tail_lines: request.tail.filter(|_| first).map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                    ..LogParams::default()
                };
                let pods = pods.clone();
                let tx = tx.clone();
                streams.spawn(async move {
                    let reader = match pods.log_stream(&source.id, &params).await {
                        Ok(reader) => reader,
                        Err(e) => {
                            tracing::warn!(pod = %source.id, error = %e, "cannot read the pod's log");
                            return;
                        }
                    };
                    let mut lines = reader.lines();
                    while let Some(Ok(text)) = lines.next().await {
                        if tx.send(Line { source: source.clone(), text }).is_err() {
                            return;
                        }
                    }
                });
            }
        }
        first = false;
        if !request.follow {
            while streams.join_next().await.is_some() {}
            return Ok(());
        }
        tokio::time::sleep(DISCOVER_EVERY).await;
        while streams.try_join_next().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_whole_lines() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(b"one\ntw"), ["one"]);
        assert_eq!(lines.push(b"o\r\nthree\n"), ["two", "three"]);
        assert!(lines.push(b"four").is_empty());
        assert_eq!(lines.rest().as_deref(), Some("four"));
    }

    #[test]
    fn prefixes_name_the_service_and_the_instance_when_several() {
        assert_eq!(prefix("service1", None, 8), "service1 | ");
        assert_eq!(prefix("s2", None, 8), "s2       | ");
        assert_eq!(prefix("s2", Some("abc"), 6), "s2/abc | ");
    }
}
