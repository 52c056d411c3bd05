//! Swaps drop nothing: a real stand-shim supervising the real service code (service1
//! through service-kit) while four clients keep requests running on loopback, across
//! deliveries, restarts and rollbacks. Every request must succeed.
//!
//! The service is this test's own executable: started with `STAND_SHIM_TEST_SERVE`
//! set, `main` runs `service_kit::server::main(service1::spec())`, exactly what
//! service1's binary does. Each delivered binary is a copy with a different trailer
//! (a different sha256, the same code), as an edit that rebuilds the binary would be.

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{poll, sha256, variant, Options, Shim, DEADLINE};

const SERVE_ENV: &str = "STAND_SHIM_TEST_SERVE";
/// Bounds of the load: per client, and for the whole run.
const MAX_REQUESTS_PER_CLIENT: u64 = 200_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(180);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    if std::env::var_os(SERVE_ENV).is_some() {
        return service_kit::server::main(service1::spec());
    }
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![libtest_mimic::Trial::test(
        "swaps_under_load_drop_no_request",
        || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(swaps_under_load());
            Ok(())
        },
    )];
    libtest_mimic::run(&args, trials).exit_code()
}

/// This executable with a trailer: the same service, another binary.
fn service_variant(n: u32) -> Vec<u8> {
    let mut bytes =
        std::fs::read(std::env::current_exe().expect("current_exe")).expect("read own exe");
    bytes.extend_from_slice(format!("\n#ZERO-DOWNTIME-VARIANT#{n}\n").as_bytes());
    bytes
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 20 {
            errors.push(what);
        }
    }
}

/// One client: GET /health and /api/service1 in turn until told to stop (or a bound).
async fn client(load: Arc<Load>, base: String, keep_alive: bool) {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT);
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0); // a new connection per request
    }
    let http = builder.build().expect("client");
    let started = Instant::now();
    for i in 0..MAX_REQUESTS_PER_CLIENT {
        if load.stop.load(Ordering::Relaxed) || started.elapsed() > MAX_LOAD_TIME {
            return;
        }
        let path = if i % 2 == 0 { "/health" } else { "/api/service1" };
        match http.get(format!("{base}{path}")).send().await {
            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                Ok(body) if !body.is_empty() => {
                    load.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => load.fail(format!("{path}: empty body")),
                Err(e) => load.fail(format!("{path}: reading the body: {e:?}")),
            },
            Ok(resp) => load.fail(format!("{path}: status {}", resp.status())),
            Err(e) => load.fail(format!("{path}: {e:?}")),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Swap {
    Deliver,
    Restart,
    Rollback,
}

async fn swaps_under_load() {
    let mut opts = Options::default();
    opts.env.extend([
        (SERVE_ENV, "service1".to_owned()),
        ("BIND_ADDRESS", "127.0.0.1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("STAND_SHIM_LOG", "info".to_owned()),
    ]);
    let first = service_variant(0);
    let shim = Shim::start_binary(&first, opts).await;
    let health = format!("{}/health", shim.service);
    poll("the service to answer /health", DEADLINE, || async {
        let resp = shim.client.get(&health).send().await.ok()?;
        resp.status().is_success().then_some(())
    })
    .await;

    let load = Arc::new(Load::default());
    let clients: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|keep_alive| tokio::spawn(client(load.clone(), shim.service.clone(), keep_alive)))
        .collect();
    // Load is running before the first swap.
    poll("the clients' first answers", DEADLINE, || {
        std::future::ready((load.ok.load(Ordering::Relaxed) >= 100).then_some(()))
    })
    .await;

    use Swap::*;
    let plan = [
        Deliver, Restart, Rollback, Deliver, Deliver, Restart, Rollback, Deliver, Restart,
        Deliver, Rollback, Restart,
    ];
    let bad = variant(json!({"exit_at_start": 3}));
    let bad_sha = sha256(&bad);
    let mut running_sha = sha256(&first);
    let mut times = Vec::new();
    let mut outcomes = Vec::new();
    for (n, swap) in plan.iter().enumerate() {
        let before_ok = load.ok.load(Ordering::Relaxed);
        let before_pid = shim.status().await["pid"].clone();
        let start = Instant::now();
        let (code, body) = match swap {
            Deliver => {
                let bytes = service_variant(n as u32 + 1);
                let sha = sha256(&bytes);
                let answer = shim.upload(bytes, &sha).await;
                if answer.0 == 200 {
                    running_sha = sha;
                }
                answer
            }
            Restart => shim.restart().await,
            Rollback => shim.upload(bad.clone(), &bad_sha).await,
        };
        times.push(start.elapsed());
        let status = shim.status().await;
        outcomes.push((
            *swap,
            code,
            body["error"]["code"].clone(),
            before_pid,
            status["pid"].clone(),
            status["sha256"].clone(),
        ));
        // Requests kept being answered while this swap ran, or right after it.
        let ok_now = load.ok.load(Ordering::Relaxed);
        poll("answers after the swap", DEADLINE, || {
            std::future::ready((load.ok.load(Ordering::Relaxed) > ok_now.max(before_ok)).then_some(()))
        })
        .await;
    }
    // A last stretch of load on the final process, then stop the clients.
    let ok_now = load.ok.load(Ordering::Relaxed);
    poll("answers after the last swap", DEADLINE, || {
        std::future::ready((load.ok.load(Ordering::Relaxed) >= ok_now + 200).then_some(()))
    })
    .await;
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }

    let ok = load.ok.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    println!(
        "{} swaps under load (4 clients: 2 keep-alive, 2 new connection per request): \
         {ok} requests answered, {failed} failed; swap answer times ms: {ms:?}",
        plan.len()
    );
    let errors = load.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(failed, 0, "failed requests during swaps, first ones: {errors:#?}");

    for (swap, code, error, before_pid, after_pid, sha) in &outcomes {
        match swap {
            Deliver | Restart => {
                assert_eq!(*code, 200, "{swap:?}");
                assert_ne!(after_pid, before_pid, "{swap:?} started a new process");
            }
            Rollback => {
                assert_eq!(*code, 409, "{swap:?}");
                assert_eq!(*error, json!("rolled_back"));
                assert_eq!(after_pid, before_pid, "the old process kept serving");
                assert_ne!(*sha, json!(bad_sha));
            }
        }
    }
    let status: Value = shim.status().await;
    assert_eq!(status["sha256"], json!(running_sha));
    assert_eq!(
        std::fs::read(&shim.binary).expect("read binary"),
        service_variant(plan.iter().rposition(|s| matches!(s, Deliver)).expect("a delivery") as u32 + 1)
    );
}
