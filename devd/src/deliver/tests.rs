use super::*;
use crate::status::StandStatus;
use crate::runtime::shim::DirectHttp;
use crate::runtime::{ShimReply, ShimStatus, ShimTransport};

/// A target whose instances cannot be listed.
struct Broken(DirectHttp);

impl Target for Broken {
    fn kind(&self) -> &'static str {
        "broken"
    }
    fn instances<'a>(&'a self, _service: &'a str) -> futures_util::future::BoxFuture<'a, Result<Vec<Instance>, TargetError>> {
        Box::pin(async { Err(TargetError::Other("no instances here".into())) })
    }
    fn transport(&self) -> &dyn ShimTransport {
        &self.0
    }
}

/// One instance whose shim holds every PUT on probation until the next upload
/// arrives (as stand-shim does when its grace period is long): the new hash runs
/// and answers /health at once, the PUT's answer waits.
struct OnProbation {
    http: DirectHttp,
    instance: Instance,
    running: std::sync::Mutex<Option<String>>,
    uploads: std::sync::Mutex<Vec<String>>,
    arrived: tokio::sync::Notify,
    /// What the shim's status reports as its last rollback.
    rollback: std::sync::Mutex<Option<stand_shim_protocol::Rollback>>,
    /// Every PUT is refused (500) and changes nothing.
    refuse: bool,
    /// Libraries are refused as a shim from before them refuses them.
    no_libraries: bool,
    /// How many times libraries were sent.
    lib_attempts: std::sync::atomic::AtomicUsize,
    /// How many times its status was asked for.
    polls: std::sync::atomic::AtomicUsize,
    /// `polls` at the end of each upload of libraries.
    polls_during_libs: std::sync::Mutex<Vec<usize>>,
}

impl OnProbation {
    fn new(running: &str) -> Self {
        let instance = Instance {
            id: "c1".into(),
            name: "svc1-1".into(),
            service: "svc1".into(),
            shim_url: "http://127.0.0.1:9".into(),
            shim_token: "t".into(),
            service_url: "http://127.0.0.1:9".into(),
            started_at: None,
        };
        OnProbation {
            http: DirectHttp::new(reqwest::Client::new()),
            instance,
            running: std::sync::Mutex::new(Some(running.to_owned())),
            uploads: std::sync::Mutex::default(),
            arrived: tokio::sync::Notify::new(),
            rollback: std::sync::Mutex::new(None),
            refuse: false,
            no_libraries: false,
            lib_attempts: std::sync::atomic::AtomicUsize::new(0),
            polls: std::sync::atomic::AtomicUsize::new(0),
            polls_during_libs: std::sync::Mutex::default(),
        }
    }

    fn uploads(&self) -> Vec<String> {
        self.uploads.lock().expect("lock").clone()
    }

    /// Bounded: 10 s in steps of 10 ms.
    async fn wait_uploads(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.uploads().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Target for OnProbation {
    fn kind(&self) -> &'static str {
        "on-probation"
    }
    fn instances<'a>(&'a self, _service: &'a str) -> futures_util::future::BoxFuture<'a, Result<Vec<Instance>, TargetError>> {
        Box::pin(async { Ok(vec![self.instance.clone()]) })
    }
    fn transport(&self) -> &dyn ShimTransport {
        &self.http
    }
    fn deliver_libs<'a>(&'a self, _instance: &'a Instance, libs: &'a [crate::build::SharedLib]) -> futures_util::future::BoxFuture<'a, Result<(), ShimError>> {
        Box::pin(async move {
            if !libs.is_empty() {
                self.lib_attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if self.no_libraries && !libs.is_empty() {
                return Err(ShimError::NoLibraries { url: self.instance.shim_url.clone() });
            }
            if !libs.is_empty() {
                // A slow upload of a new library; how often the status was asked
                // meanwhile is kept.
                tokio::time::sleep(Duration::from_millis(150)).await;
                let polls = self.polls.load(std::sync::atomic::Ordering::SeqCst);
                self.polls_during_libs.lock().expect("lock").push(polls);
            }
            Ok(())
        })
    }
    fn deliver<'a>(&'a self, _instance: &'a Instance, _binary: &'a std::path::Path, sha256: &'a str) -> futures_util::future::BoxFuture<'a, Result<ShimReply, ShimError>> {
        Box::pin(async move {
            if self.refuse {
                let url = self.instance.shim_url.clone();
                return Err(ShimError::Refused { url, status: 500, code: "internal".into(), message: "disk full".into() });
            }
            // Ends the probation of the one before; then waits for the next.
            self.arrived.notify_waiters();
            let next = self.arrived.notified();
            *self.running.lock().expect("lock") = Some(sha256.to_owned());
            self.uploads.lock().expect("lock").push(sha256.to_owned());
            // Bounded by the test's own deadline: a minute's probation.
            let _ = tokio::time::timeout(Duration::from_secs(60), next).await;
            Ok(ShimReply { sha256: Some(sha256.to_owned()), pid: 1, restarts: 1 })
        })
    }
    fn shim_status<'a>(&'a self, _instance: &'a Instance) -> futures_util::future::BoxFuture<'a, Result<ShimStatus, ShimError>> {
        self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { Ok(ShimStatus {
                binary: "/app/svc1".into(),
                sha256: self.running.lock().expect("lock").clone(),
                pid: Some(1),
                restarts: 0,
                started_at: None,
                last_exit: None,
                last_rollback: self.rollback.lock().expect("lock").clone(),
            }) })
    }
    fn health<'a>(&'a self, _instance: &'a Instance) -> futures_util::future::BoxFuture<'a, HealthReport> {
        Box::pin(async { HealthReport { health: crate::status::Health::Ok, detail: None } })
    }
}

/// Two saves in a row: once the first artifact serves, a newer one goes out without
/// waiting for the first PUT's answer (the shim gives it only after its probation, or
/// when the next upload arrives), and the first is recorded as served.
#[tokio::test]
async fn a_newer_artifact_goes_out_while_the_one_before_is_on_probation() {
    // A subscriber on this thread too: a `sync` span first seen with none would be
    // cached as uninteresting for the span test beside this one.
    let (_logs, _guard) = crate::test_logs::capture_warnings();
    let hub = StatusHub::new(StandStatus::default());
    let (_, mut events) = hub.subscribe(0);
    let target = Arc::new(OnProbation::new(&"00".repeat(32)));
    let handle = spawn("svc1".into(), target.clone(), hub, Duration::from_secs(60), unheard());
    let (first, second) = ("aa".repeat(32), "bb".repeat(32));
    handle.deliver(desired(&first));
    // The first serves at once but its PUT waits: it counts as served only because
    // the second one arrives.
    target.wait_uploads(1).await;
    handle.deliver(desired(&second));
    let synced = next_event(&mut events, |b| matches!(b, EventBody::Synced(_))).await;
    let Some(EventBody::Synced(synced)) = synced else {
        panic!("the first artifact was never recorded as served; uploads {:?}", target.uploads())
    };
    assert_eq!(synced.sha256, first);
    assert!(synced.edit_to_serving_ms.is_some());
    target.wait_uploads(2).await;
    let uploads = || target.uploads();
    assert_eq!(uploads(), [first, second], "the second went out while the first PUT was unanswered");
}

/// The libraries go first, and the serving deadline starts after them: nobody asks
/// whether the new binary serves while they are still on their way.
#[tokio::test]
async fn the_libraries_go_before_the_binary_and_its_serving_deadline() {
    let (_logs, _guard) = crate::test_logs::capture_warnings();
    let hub = svc1_hub();
    let (_, mut events) = hub.subscribe(0);
    let target = Arc::new(OnProbation::new(&"00".repeat(32)));
    let handle = spawn("svc1".into(), target.clone(), hub, Duration::from_secs(60), unheard());
    let lib = deps_lib();
    let (first, second) = ("aa".repeat(32), "bb".repeat(32));
    handle.deliver(Desired { libs: vec![lib], ..desired(&first) });
    target.wait_uploads(1).await;
    handle.deliver(desired(&second));
    next_event(&mut events, |b| matches!(b, EventBody::Synced(_))).await.expect("the first served");
    let polls_before = target.polls_during_libs.lock().expect("lock").clone();
    assert_eq!(target.uploads().first(), Some(&first), "the binary after its libraries");
    assert_eq!(polls_before.len(), 1, "one upload of libraries: {polls_before:?}");
    let asked = polls_before[0];
    // The status polls of the reconcile at start (it finds the old hash) come
    // before the delivery; none while the libraries travel.
    let reconcile = target.polls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(asked <= 1 && asked < reconcile, "the status was asked {asked} times while the libraries were on their way");
}

/// A shim from before shared libraries refuses them: the binary that needs them is not
/// sent, the delivery fails with the shim's reason, and the daemon hears once that
/// this service needs binaries linked statically; a static one then goes out.
#[tokio::test]
async fn an_instance_that_takes_no_libraries_asks_once_for_static_binaries() {
    let (_logs, _guard) = crate::test_logs::capture_warnings();
    let hub = svc1_hub();
    let (_, mut events) = hub.subscribe(0);
    let (target, tx, mut asked) = refusing_libraries();
    let handle = spawn("svc1".into(), target.clone(), hub, Duration::from_secs(60), tx);
    let lib = deps_lib();
    let (dynamic, again, fixed) = ("aa".repeat(32), "bb".repeat(32), "dd".repeat(32));
    handle.deliver(Desired { libs: vec![lib.clone()], ..desired(&dynamic) });
    let failed = next_event(&mut events, |b| matches!(b, EventBody::SyncFailed(_))).await.expect("the delivery failed");
    let EventBody::SyncFailed(failed) = failed else { unreachable!() };
    assert_eq!(failed.sha256, dynamic);
    assert!(failed.errors.iter().any(|e| e.contains("takes no shared libraries")), "{:?}", failed.errors);
    let heard = tokio::time::timeout(Duration::from_secs(10), asked.recv()).await.expect("the daemon is told");
    assert_eq!(heard.as_deref(), Some("svc1"));
    assert!(target.uploads().is_empty(), "a binary that needs the libraries was sent: {:?}", target.uploads());
    // Another dynamic one (built before the daemon heard): refused again, not told again.
    handle.deliver(Desired { libs: vec![lib], ..desired(&again) });
    next_event(&mut events, |b| matches!(b, EventBody::SyncFailed(_))).await.expect("the second delivery failed");
    assert!(asked.try_recv().is_err(), "told twice");
    // The static binary the daemon builds then serves.
    handle.deliver(desired(&fixed));
    target.wait_uploads(1).await;
    assert_eq!(target.uploads(), [fixed]);
}

/// The reconcile pass does not send a refused binary (and its ~20 MB library) to the
/// instance that refused it again; the instance's status says why it runs another.
#[tokio::test]
async fn a_binary_refused_for_its_libraries_is_not_sent_again_by_the_reconcile_pass() {
    let (_logs, _guard) = crate::test_logs::capture_warnings();
    let hub = svc1_hub();
    let (_, mut events) = hub.subscribe(0);
    let (target, tx, mut asked) = refusing_libraries();
    let handle = spawn("svc1".into(), target.clone(), hub.clone(), Duration::from_millis(20), tx);
    let lib = deps_lib();
    handle.deliver(Desired { libs: vec![lib], ..desired(&"aa".repeat(32)) });
    next_event(&mut events, |b| matches!(b, EventBody::SyncFailed(_))).await.expect("the delivery failed");
    tokio::time::timeout(Duration::from_secs(10), asked.recv()).await.expect("the daemon is told");
    // Reconcile passes (each asks the shim's status): bounded, 10 s.
    let polls = target.polls.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.polls.load(std::sync::atomic::Ordering::SeqCst) < polls + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(target.polls.load(std::sync::atomic::Ordering::SeqCst) >= polls + 5, "no reconcile pass ran");
    assert_eq!(target.lib_attempts.load(std::sync::atomic::Ordering::SeqCst), 1, "the libraries went again");
    let detail = hub.service("svc1").and_then(|s| s.instances.first().and_then(|i| i.detail.clone()));
    assert!(detail.as_deref().is_some_and(|d| d.contains("takes no shared libraries")), "{detail:?}");
}

/// The next event whose body `want`s, within 10 s.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<crate::status::Event>,
    want: fn(&EventBody) -> bool,
) -> Option<EventBody> {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(event) = events.recv().await {
                if want(&event.body) {
                    return event.body;
                }
            }
        }
    });
    found.await.ok()
}

/// A hub that knows the service `svc1`.
fn svc1_hub() -> StatusHub {
    let service = crate::status::ServiceStatus { name: "svc1".into(), ..Default::default() };
    StatusHub::new(StandStatus { services: vec![service], ..StandStatus::default() })
}

/// The shim's record of `rejected` dying after ready, `restored` running again.
fn rollback(rejected: &str, restored: &str) -> stand_shim_protocol::Rollback {
    stand_shim_protocol::Rollback {
        at: "2026-12-04T00:00:00Z".into(),
        rejected_sha256: rejected.to_owned(),
        restored_sha256: Some(restored.to_owned()),
        reason: "new binary exited 300 ms after start (exit code 4)".into(),
        exit: None,
    }
}

fn desired(sha: &str) -> Desired {
    Desired { sha256: sha.to_owned(), path: PathBuf::from("/unused"), libs: Vec::new(), first_event_at: Some(Instant::now()) }
}

/// A binary recorded as served whose PUT was dropped (a newer artifact, the same
/// binary rebuilt, went out and found it running) and which then died on
/// probation: the shim rolled it back and devd never read that answer. The next
/// reconcile reads it from the shim's status: the instance says so and the service
/// gets `sync_failed`, instead of showing the restored hash with nothing said.
#[tokio::test]
async fn a_rollback_after_a_dropped_answer_is_reported() {
    let (_logs, _guard) = crate::test_logs::capture_warnings();
    let hub = svc1_hub();
    let (_, mut events) = hub.subscribe(0);
    let (old, new) = ("00".repeat(32), "aa".repeat(32));
    let target = Arc::new(OnProbation::new(&old));
    let handle = spawn("svc1".into(), target.clone(), hub.clone(), Duration::from_millis(50), unheard());
    handle.deliver(desired(&new));
    target.wait_uploads(1).await;
    handle.deliver(desired(&new));
    next_event(&mut events, |b| matches!(b, EventBody::DeliverySkipped(_))).await.expect("the rebuild found the binary running");
    // The binary dies on probation: the shim restores the old one.
    *target.rollback.lock().expect("lock") = Some(rollback(&new, &old));
    *target.running.lock().expect("lock") = Some(old.clone());
    let failed = next_event(&mut events, |b| matches!(b, EventBody::SyncFailed(_))).await.expect("no sync_failed after the rollback");
    let EventBody::SyncFailed(failed) = failed else { unreachable!() };
    assert_eq!(failed.sha256, new);
    assert!(failed.errors.iter().any(|e| e.contains("rolled back") && e.contains("exit code 4")), "{:?}", failed.errors);
    let deadline = Instant::now() + Duration::from_secs(10);
    let instance = loop {
        let instance = hub.service("svc1").and_then(|s| s.instances.first().cloned());
        if instance.as_ref().is_some_and(|i| i.detail.is_some()) || Instant::now() >= deadline {
            break instance.expect("an instance");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(instance.hash.as_deref(), Some(old.as_str()));
    assert!(instance.detail.as_deref().is_some_and(|d| d.contains("rolled back")), "{instance:?}");
    assert_eq!(target.uploads(), [new], "a rolled-back hash is not sent again");
}

/// A rollback of the current hash that the shim's status still reports from before
/// (devd restarted since, or an earlier delivery's 409 was read then) is not news:
/// a PUT of that hash that failed on its own is reported as that failure only.
#[tokio::test]
async fn an_old_rollback_in_the_shims_status_is_not_reported_again() {
    let (_logs, _guard) = crate::test_logs::capture_warnings();
    let hub = svc1_hub();
    let (_, mut events) = hub.subscribe(0);
    let (old, new) = ("00".repeat(32), "aa".repeat(32));
    let target = Arc::new(OnProbation { refuse: true, ..OnProbation::new(&old) });
    *target.rollback.lock().expect("lock") = Some(rollback(&new, &old));
    let handle = spawn("svc1".into(), target.clone(), hub.clone(), Duration::from_millis(20), unheard());
    handle.deliver(desired(&new));
    let failed = next_event(&mut events, |b| matches!(b, EventBody::SyncFailed(_))).await;
    let Some(EventBody::SyncFailed(failed)) = failed else { panic!("no sync_failed for the refused PUT") };
    assert!(failed.errors.iter().all(|e| e.contains("disk full")), "{:?}", failed.errors);
    // Some reconcile passes later (bounded: 10 s), nothing more was said.
    let polls = target.polls.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.polls.load(std::sync::atomic::Ordering::SeqCst) < polls + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(target.polls.load(std::sync::atomic::Ordering::SeqCst) >= polls + 5, "no reconcile passes");
    while let Ok(event) = events.try_recv() {
        assert!(!matches!(event.body, EventBody::SyncFailed(_)), "reported again: {:?}", event.body);
    }
}

/// What a service's delivery task logs is inside its `sync{service=...}` span.
#[tokio::test]
async fn the_delivery_task_logs_inside_its_service_span() {
    let (logs, _guard) = crate::test_logs::capture_warnings();
    let hub = StatusHub::new(StandStatus::default());
    // Spawned inside another span (the daemon spawns it inside the first build's):
    // the task's lines carry its own span only.
    let target = Arc::new(Broken(DirectHttp::new(reqwest::Client::new())));
    let handle = tracing::warn_span!("outer").in_scope(|| spawn("svc1".into(), target, hub, Duration::from_millis(20), unheard()));
    handle.deliver(Desired { sha256: "ab".repeat(32), path: PathBuf::from("/nonexistent"), libs: Vec::new(), first_event_at: None });
    let logs = || logs.text();
    // Bounded: 5 s in steps of 10 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logs().contains("cannot list instances") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = logs();
    let line = text.lines().find(|l| l.contains("cannot list instances")).unwrap_or_else(|| panic!("no warning logged: {text}"));
    assert!(line.contains("sync{service=svc1}") && !line.contains("outer"), "{line}");
}

/// A listener for [`spawn`]'s `refuses_libraries` that nobody reads.
fn unheard() -> mpsc::UnboundedSender<String> {
    mpsc::unbounded_channel().0
}

/// A library of the dependencies, never read (the fake targets do not upload it).
fn deps_lib() -> crate::build::SharedLib {
    crate::build::SharedLib { name: "libdeps.so".into(), sha256: "cc".repeat(32), size: 1, path: PathBuf::from("/unused") }
}

/// An instance whose shim refuses libraries, and the channel the daemon hears on.
fn refusing_libraries() -> (Arc<OnProbation>, mpsc::UnboundedSender<String>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(OnProbation { no_libraries: true, ..OnProbation::new(&"00".repeat(32)) }), tx, rx)
}
