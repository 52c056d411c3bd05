//! Talking to a running devd: `devd status` (table, `--watch`, `--json`) and actions.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::statedir::{DaemonInfo, StateDir, StateError};
use crate::status::{Event, Health, ServiceStatus, StandStatus};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("devd at {url} is not answering ({source}); is it still running? (`devd up --env <env>` starts it)")]
    Unreachable { url: String, #[source] source: reqwest::Error },
    #[error("devd at {url} sent an event stream that is not SSE: {message}")]
    Stream { url: String, message: String },
    #[error("devd at {url} answered {status}: {body}")]
    Status { url: String, status: reqwest::StatusCode, body: String },
}

pub struct Client {
    http: reqwest::Client,
    pub info: DaemonInfo,
    state: StateDir,
}

impl Client {
    /// Finds the daemon of the stand at `state`'s root.
    pub fn connect(state: StateDir) -> Result<Self, ClientError> {
        let info = state.read_info()?;
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build().map_err(|source| {
            ClientError::Unreachable { url: info.url.clone(), source }
        })?;
        Ok(Self { http, info, state })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.info.url.trim_end_matches('/'))
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|source| ClientError::Unreachable { url: url.to_owned(), source })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            // The API's errors are `{"error": {"message"}}`: show the message alone.
            let body = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Err(ClientError::Status { url: url.to_owned(), status, body })
        }
    }

    pub async fn status(&self) -> Result<StandStatus, ClientError> {
        let url = self.url("/api/v1/status");
        let response = self.send(self.http.get(&url).timeout(Duration::from_secs(5)), &url).await?;
        response.json().await.map_err(|source| ClientError::Unreachable { url, source })
    }

    /// Posts an action (`rebuild`, `restart`) for a service, with the token.
    pub async fn action(&self, service: &str, action: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/api/v1/services/{service}/{action}"));
        let token = self.state.read_token()?;
        self.send(self.http.post(&url).bearer_auth(token).timeout(Duration::from_secs(5)), &url).await?;
        Ok(())
    }

    /// Opens the SSE stream (replaying after `after`) and calls `on_event` for each
    /// event until the stream ends or `on_event` returns false.
    pub async fn follow(&self, after: u64, mut on_event: impl FnMut(Event) -> bool) -> Result<u64, ClientError> {
        use eventsource_stream::{EventStreamError, Eventsource as _};
        use futures_util::StreamExt as _;
        let url = self.url(&format!("/api/v1/events?after={after}"));
        let response = self.send(self.http.get(&url), &url).await?;
        // Frames parsed by eventsource-stream (comments and keep-alives yield nothing).
        let mut frames = response.bytes_stream().eventsource();
        let mut last = after;
        while let Some(frame) = frames.next().await {
            let data = match frame {
                Ok(frame) => frame.data,
                Err(EventStreamError::Transport(source)) => return Err(ClientError::Unreachable { url: url.clone(), source }),
                // Not SSE at all (the parser would stop at the same bytes again).
                Err(error) => return Err(ClientError::Stream { url: url.clone(), message: error.to_string() }),
            };
            match serde_json::from_str::<Event>(&data) {
                Ok(event) => {
                    last = event.seq;
                    if !on_event(event) {
                        return Ok(last);
                    }
                }
                // A kind or a payload this devd does not know (another version's
                // daemon): skipped, but not asked for again after a reconnect.
                Err(error) => match serde_json::from_str::<Sequenced>(&data) {
                    Ok(other) => {
                        tracing::debug!(seq = other.seq, %error, "an event of another devd version, skipped");
                        last = other.seq;
                    }
                    Err(_) => tracing::debug!(%error, "not an event, skipped"),
                },
            }
        }
        Ok(last)
    }
}

/// Any event's sequence number, whatever its kind.
#[derive(serde::Deserialize)]
struct Sequenced {
    seq: u64,
}

fn ago(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match at {
        None => "-".to_owned(),
        Some(at) => {
            let secs = (now - at).num_seconds().max(0);
            match secs {
                0..=59 => format!("{secs}s ago"),
                60..=3599 => format!("{}m ago", secs / 60),
                _ => format!("{}h ago", secs / 3600),
            }
        }
    }
}

fn instances_cell(service: &ServiceStatus) -> (String, String) {
    if service.instances.is_empty() {
        return ("-".to_owned(), "-".to_owned());
    }
    let current = service.artifact.as_ref().map(|a| a.sha256.as_str());
    let synced = service.instances.iter().filter(|i| i.hash.as_deref() == current && current.is_some()).count();
    let total = service.instances.len();
    let count = |health: Health| service.instances.iter().filter(|i| i.health == health).count();
    let mut health = format!("{}/{total}", count(Health::Ok));
    for other in [Health::Degraded, Health::Unreachable] {
        let n = count(other);
        if n > 0 {
            let _ = write!(health, ", {n} {}", other.as_str());
        }
    }
    let mut sync = format!("{synced}/{total}");
    if service.instances.iter().any(|i| i.detail.as_deref().is_some_and(|d| d.starts_with("rolled back"))) {
        sync.push_str(", rolled back");
    }
    (sync, health)
}

/// One line per instance that has something to say: why its sync failed or was rolled
/// back, why it is not healthy.
fn instance_notes(service: &ServiceStatus) -> Vec<String> {
    let mut notes = Vec::new();
    for instance in &service.instances {
        // A container id is 64 hex digits: its first 12, like `docker ps`; a pod name as it is.
        let hex = instance.id.len() == 64 && instance.id.chars().all(|c| c.is_ascii_hexdigit());
        let id: String = if hex { instance.id.chars().take(12).collect() } else { instance.id.clone() };
        if let Some(detail) = &instance.detail {
            notes.push(format!("{} instance {id}: {detail}", service.name));
        }
        if instance.health != Health::Ok {
            let why = instance.health_detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            notes.push(format!("{} instance {id}: {}{why}", service.name, instance.health.as_str()));
        }
    }
    notes
}

/// The `devd status` table (pure: the caller prints it). Eight narrow columns fit 80
/// characters for service names up to 8; on a narrower terminal comfy-table wraps the
/// widest cells instead of letting lines run over.
pub fn render_table(status: &StandStatus, now: DateTime<Utc>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    if let Some((_, columns)) = console::Term::stdout().size_checked() {
        table.set_width(columns);
    }
    table.set_header(["SERVICE", "BUILD", "BUILT", "ARTIFACT", "SYNCED", "HEALTHY", "EDIT→BUILT", "EDIT→SERVING"]);
    for service in &status.services {
        let (synced, healthy) = instances_cell(service);
        let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        table.add_row([
            service.name.clone(),
            service.build.state.as_str().to_owned(),
            ago(service.build.finished_at, now),
            service.artifact.as_ref().map_or_else(|| "-".to_owned(), |a| a.sha256.chars().take(8).collect()),
            synced,
            healthy,
            ms(service.last_edit_to_artifact_ms),
            ms(service.last_edit_to_serving_ms),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = format!("stand: env {} · target {} · {}\n", status.env, status.target, status.root);
    if let Some(t) = &status.target_state {
        let state = match t.state {
            crate::status::TargetState::Connecting => "connecting",
            crate::status::TargetState::Reachable => "reachable",
            crate::status::TargetState::Unreachable => "UNREACHABLE",
        };
        let reason = t.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let _ = writeln!(out, "target {}: {state}{reason}", status.target);
    }
    if let Some(error) = &status.config_error {
        let _ = writeln!(out, "stand.toml is invalid (running on the last good plan):\n  {error}");
    }
    for line in table.lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let notes: Vec<String> = status.services.iter().flat_map(instance_notes).collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\n{}", notes.join("\n"));
    }
    for service in &status.services {
        if let Some(error) = &service.build.error {
            let _ = writeln!(out, "\n{} build failed:\n{}", service.name, indent(error));
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().take(40).map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ArtifactStatus, BuildState, EventBody, HealthReport, InstanceStatus};

    /// A devd on loopback whose event stream sends `frames` (the `data:` JSON of each)
    /// and ends; returns a client connected to it.
    async fn streaming(frames: &[&str]) -> (Client, tempfile::TempDir) {
        let mut body = String::new();
        for (n, data) in frames.iter().enumerate() {
            body.push_str(&format!("id: {}\nevent: x\ndata: {data}\n\n", n + 1));
        }
        serving(vec![body.into_bytes()]).await
    }

    /// A devd on loopback whose event stream is `chunks`, each one HTTP chunk.
    async fn serving(chunks: Vec<Vec<u8>>) -> (Client, tempfile::TempDir) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            socket.write_all(head.as_bytes()).await.expect("answer");
            for chunk in chunks {
                socket.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.expect("chunk size");
                socket.write_all(&chunk).await.expect("chunk");
                socket.write_all(b"\r\n").await.expect("chunk end");
                socket.flush().await.expect("flush");
            }
            socket.write_all(b"0\r\n\r\n").await.expect("last chunk");
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(state.path()).expect("state dir");
        state.write_info(&DaemonInfo { pid: 1, url, env: "local".into(), started_at: Utc::now() }).expect("info");
        (Client::connect(state).expect("connect"), dir)
    }

    #[tokio::test]
    async fn follow_reads_frames_split_anywhere_with_comments_and_multi_line_data() {
        let event = |seq: u64, service: &str| {
            let body = EventBody::Instances(crate::status::event::Instances { instances: 2 });
            serde_json::to_string_pretty(&Event { seq, at: Utc::now(), service: Some(service.into()), body }).expect("json")
        };
        // A keep-alive comment, then two events whose JSON spans several `data:` lines.
        let mut stream = String::from(": keep-alive\n\n");
        for (seq, service) in [(1, "säule"), (2, "svc2")] {
            stream.push_str(&format!("id: {seq}\nevent: instances\n"));
            for line in event(seq, service).lines() {
                stream.push_str(&format!("data: {line}\n"));
            }
            stream.push('\n');
        }
        // Cut inside the two-byte `ä` and inside the blank line that ends the first frame.
        let bytes = stream.into_bytes();
        let in_char = bytes.windows(2).position(|w| w == "ä".as_bytes()).expect("ä") + 1;
        let first_data = bytes.windows(5).position(|w| w == b"data:".as_slice()).expect("data");
        let in_frame_end = first_data + bytes[first_data..].windows(2).position(|w| w == b"\n\n".as_slice()).expect("frame end") + 1;
        let mut cuts = [in_frame_end, in_char, bytes.len()];
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for to in cuts {
            chunks.push(bytes[from..to].to_vec());
            from = to;
        }
        let (client, _dir) = serving(chunks).await;
        let mut seen = Vec::new();
        let last = client.follow(0, |e| {
            seen.push((e.seq, e.service.unwrap_or_default()));
            true
        });
        assert_eq!(last.await.expect("follows"), 2);
        assert_eq!(seen, [(1, "säule".to_owned()), (2, "svc2".to_owned())]);
    }

    #[tokio::test]
    async fn follow_skips_an_event_it_does_not_know_but_counts_its_sequence() {
        let known = |seq: u64| {
            let body = EventBody::Instances(crate::status::event::Instances { instances: 1 });
            serde_json::to_string(&Event { seq, at: Utc::now(), service: Some("svc1".into()), body }).expect("json")
        };
        let unknown = r#"{"seq":2,"at":"2026-12-03T06:00:00Z","kind":"from_a_newer_devd","service":null,"detail":{}}"#;
        let (client, _dir) = streaming(&[&known(1), unknown, &known(3)]).await;
        let mut seen = Vec::new();
        let last = client.follow(0, |e| {
            seen.push(e.seq);
            true
        });
        assert_eq!(last.await.expect("follows"), 3);
        assert_eq!(seen, [1, 3]);

        // Only events it does not know: nothing told, but the stream moved on.
        let (client, _dir) = streaming(&[unknown]).await;
        assert_eq!(client.follow(1, |_| panic!("nothing to tell")).await.expect("follows"), 2);
    }

    #[test]
    fn table_shows_build_artifact_instances_and_errors() {
        let now = Utc::now();
        let mut ok = ServiceStatus { name: "service1".into(), ..ServiceStatus::default() };
        ok.build.state = BuildState::Ok;
        ok.build.finished_at = Some(now - chrono::Duration::seconds(5));
        ok.artifact = Some(ArtifactStatus { sha256: "0123456789abcdef".into(), ..ArtifactStatus::default() });
        ok.instances = vec![InstanceStatus {
            id: "c".into(),
            hash: Some("0123456789abcdef".into()),
            healthy: true,
            health: Health::Ok,
            ..Default::default()
        }];
        ok.last_edit_to_artifact_ms = Some(812);
        let mut failed = ServiceStatus { name: "service2".into(), ..ServiceStatus::default() };
        failed.build.state = BuildState::Failed;
        failed.build.error = Some("error: expected `;`".into());
        let status = StandStatus { env: "local".into(), target: "docker".into(), services: vec![ok, failed], ..StandStatus::default() };
        let table = render_table(&status, now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("SERVICE") && lines[1].contains("EDIT→SERVING"), "{table}");
        assert!(lines[2].contains("service1") && lines[2].contains("ok") && lines[2].contains("5s ago"));
        assert!(lines[2].contains("01234567") && !lines[2].contains("012345678"));
        assert!(lines[2].contains("1/1") && lines[2].contains("812 ms"));
        assert!(table.lines().all(|l| l.chars().count() <= 80), "fits 80 columns:\n{table}");
        assert!(lines[3].contains("service2") && lines[3].contains("failed"));
        assert!(table.contains("service2 build failed:\n  error: expected `;`"));
        assert!(lines[2].contains("1/1") && !table.contains("instance c:"), "{table}");
    }

    fn synced_service(health: HealthReport, detail: Option<&str>) -> StandStatus {
        let mut service = ServiceStatus { name: "service1".into(), ..ServiceStatus::default() };
        service.build.state = BuildState::Ok;
        service.artifact = Some(ArtifactStatus { sha256: "0123456789abcdef".into(), ..ArtifactStatus::default() });
        let mut instance = InstanceStatus {
            id: format!("4f1c2e3d5a6b{}", "0".repeat(52)),
            hash: Some("0123456789abcdef".into()),
            detail: detail.map(str::to_owned),
            ..Default::default()
        };
        instance.set_health(health);
        service.instances = vec![instance];
        StandStatus { env: "local".into(), target: "docker".into(), services: vec![service], ..StandStatus::default() }
    }

    #[test]
    fn table_shows_a_degraded_instance_as_degraded_with_the_reason() {
        let body = br#"{"status":"degraded","message":"database unavailable: connection refused"}"#;
        let table = render_table(&synced_service(HealthReport::from_answer(200, body), None), Utc::now());
        let row = table.lines().find(|l| l.starts_with("service1")).unwrap();
        assert!(row.contains("0/1, 1 degraded"), "{table}");
        assert!(table.contains("service1 instance 4f1c2e3d5a6b: degraded: database unavailable: connection refused"), "{table}");
    }

    #[test]
    fn table_shows_why_a_binary_was_rolled_back() {
        let mut status = synced_service(HealthReport { health: Health::Ok, detail: None }, None);
        status.services[0].artifact.as_mut().unwrap().sha256 = "fedcba9876543210".into();
        status.services[0].instances[0].detail =
            Some("rolled back fedcba987654: new binary exited 2 ms after start (exit code 3)".into());
        let table = render_table(&status, Utc::now());
        let row = table.lines().find(|l| l.starts_with("service1")).unwrap();
        assert!(row.contains("0/1, rolled back") && row.contains("1/1"), "{table}");
        assert!(
            table.contains("service1 instance 4f1c2e3d5a6b: rolled back fedcba987654: new binary exited 2 ms after start (exit code 3)"),
            "{table}"
        );
        assert!(!table.contains("target docker:"), "no target state, no line");
    }

    #[test]
    fn table_says_when_the_target_is_unreachable() {
        let reason = "cannot reach the API server https://127.0.0.1:6443 (context kind-stand): connection refused";
        let status = StandStatus {
            target: "kubernetes".into(),
            target_state: Some(crate::status::TargetHealth {
                state: crate::status::TargetState::Unreachable,
                reason: Some(reason.into()),
                since: Utc::now(),
            }),
            ..StandStatus::default()
        };
        let table = render_table(&status, Utc::now());
        assert_eq!(table.lines().nth(1), Some(format!("target kubernetes: UNREACHABLE: {reason}").as_str()), "{table}");
    }
}
