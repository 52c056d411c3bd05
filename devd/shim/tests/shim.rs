//! stand-shim end to end: real shim process, real child processes, real HTTP.

mod common;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use common::{
    poll, proc_stat, sha256, variant, variant_padded, zombie_children, Options, Shim, DEADLINE,
    TOKEN,
};

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error shape: {body}"))
}

#[tokio::test]
async fn token_missing_or_wrong_is_401() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let new = variant(json!({"text": "v2"}));
    let sha = sha256(&new);
    for auth in [None, Some("wrong"), Some("")] {
        let with_auth = |rb: reqwest::RequestBuilder| match auth {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let requests = [
            with_auth(shim.client.get(format!("{}/v1/status", shim.api))),
            with_auth(shim.client.post(format!("{}/v1/restart", shim.api))),
            with_auth(shim.client.put(format!("{}/v1/binary", shim.api)))
                .header("X-Stand-Sha256", &sha)
                .body(new.clone()),
        ];
        for rb in requests {
            let resp = rb.send().await.expect("request");
            assert_eq!(resp.status(), 401, "auth {auth:?}");
            let text = resp.text().await.expect("body");
            let body: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
            assert_eq!(error_code(&body), "unauthorized");
            assert!(
                !body.to_string().contains(TOKEN),
                "the token never appears in answers"
            );
        }
    }
    // Nothing happened: same binary, same child, no restarts.
    let status = shim.status().await;
    assert_eq!(status["restarts"], 0);
    assert_eq!(
        std::fs::read(&shim.binary).expect("read"),
        variant(json!({"text": "v1"}))
    );
    assert_eq!(shim.served().await.map(|(t, _)| t).as_deref(), Some("v1"));
}

/// Through the Kubernetes pod proxy `Authorization` is the API server's: the token
/// travels as `X-Stand-Token`, and a wrong one there is refused even with a right bearer.
#[tokio::test]
async fn token_header_works_where_authorization_is_taken() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let url = format!("{}/v1/status", shim.api);
    let ok = shim.client.get(&url).header("X-Stand-Token", TOKEN).bearer_auth("api-server-credential").send().await;
    assert_eq!(ok.expect("request").status(), 200);
    let wrong = shim.client.get(&url).header("X-Stand-Token", "wrong").bearer_auth(TOKEN).send().await;
    assert_eq!(wrong.expect("request").status(), 401);
}

#[tokio::test]
async fn without_a_token_the_child_runs_and_no_endpoint_listens() {
    let opts = Options {
        token: None,
        ..Options::default()
    };
    let shim = Shim::start_with(json!({"text": "v1"}), opts).await;
    assert!(shim.served().await.is_some());
    let refused = shim
        .client
        .get(format!("{}/v1/status", shim.api))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "no endpoint without STAND_SHIM_TOKEN: {refused:?}"
    );
}

#[tokio::test]
async fn hash_mismatch_is_422_and_nothing_is_replaced() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let before = shim.status().await;
    let original = std::fs::read(&shim.binary).expect("read");
    let new = variant(json!({"text": "v2"}));
    let (code, body) = shim.upload(new, &sha256(b"something else")).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(error_code(&body), "hash_mismatch");
    // Bad header: 400, not a swap either.
    let (code, body) = shim.upload(b"x".to_vec(), "not-a-sha").await;
    assert_eq!(code, 400, "{body}");

    let after = shim.status().await;
    assert_eq!(after["pid"], before["pid"], "same child");
    assert_eq!(after["sha256"], before["sha256"]);
    assert_eq!(after["restarts"], 0);
    assert_eq!(
        std::fs::read(&shim.binary).expect("read"),
        original,
        "binary byte-identical"
    );
    let files: Vec<_> = std::fs::read_dir(shim.dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        files,
        vec![std::ffi::OsString::from("app")],
        "temp file removed, no .prev"
    );
    assert_eq!(shim.served().await.map(|(t, _)| t).as_deref(), Some("v1"));
}

#[tokio::test]
async fn upload_swaps_the_binary_and_restarts_the_child() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let old_pid = shim.status().await["pid"].as_i64().expect("pid");
    assert_eq!(
        shim.status().await["sha256"],
        sha256(&variant(json!({"text": "v1"})))
    );
    // About the size of a service binary (~16 MB).
    let new = variant_padded(json!({"text": "v2"}), 16 << 20);
    let sha = sha256(&new);

    let start = Instant::now();
    let upload = shim.upload(new.clone(), &sha);
    let serving = async {
        let pid = shim.wait_serving("v2").await;
        (pid, start.elapsed())
    };
    let ((code, body), (serving_pid, to_serving)) = tokio::join!(upload, serving);
    let to_answer = start.elapsed();
    println!(
        "swap of a {} MB binary: new child serving after {} ms, 200 after {} ms (grace 600 ms)",
        new.len() >> 20,
        to_serving.as_millis(),
        to_answer.as_millis()
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sha256"], sha);
    assert_eq!(body["restarts"], 1);
    let new_pid = body["pid"].as_i64().expect("pid");
    assert_ne!(new_pid, old_pid);
    assert_eq!(i64::from(serving_pid), new_pid);
    assert!(proc_stat(old_pid as i32).is_none(), "old child gone");

    let status = shim.status().await;
    assert_eq!(status["sha256"], sha);
    assert_eq!(status["pid"], new_pid);
    assert_eq!(status["restarts"], 1);
    assert_eq!(status["last_exit"]["cause"], "stopped");
    assert_eq!(std::fs::read(&shim.binary).expect("read"), new);
    let prev = std::fs::read(shim.dir.path().join("app.prev")).expect("read .prev");
    assert_eq!(prev, variant(json!({"text": "v1"})), "previous binary kept");
}

#[tokio::test]
async fn a_new_binary_that_exits_at_start_is_rolled_back() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let original = std::fs::read(&shim.binary).expect("read");
    let serving_pid = shim.status().await["pid"].clone();
    let bad = variant(json!({"text": "v2", "exit_at_start": 3}));
    let (code, body) = shim.upload(bad.clone(), &sha256(&bad)).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(error_code(&body), "rolled_back");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("exit code 3"), "{message}");
    assert!(
        message.contains("fatal: refusing to start"),
        "stderr tail in the reason: {message}"
    );

    // The previous child never stopped: same process, same bytes on disk.
    assert_eq!(body["error"]["details"]["restored_pid"], serving_pid);
    assert_eq!(shim.served().await.map(|(t, pid)| (t, json!(pid))), Some(("v1".to_owned(), serving_pid.clone())));
    assert_eq!(std::fs::read(&shim.binary).expect("read"), original);
    let status = shim.status().await;
    assert_eq!(status["pid"], serving_pid);
    assert_eq!(status["sha256"], sha256(&original));
    let rollback = &status["last_rollback"];
    assert_eq!(rollback["rejected_sha256"], sha256(&bad));
    assert_eq!(rollback["restored_sha256"], sha256(&original));
    assert!(
        rollback["reason"]
            .as_str()
            .is_some_and(|r| r.contains("exit code 3")),
        "{rollback}"
    );
    assert_eq!(rollback["exit"]["code"], 3);
    assert_eq!(status["restarts"], 1, "only the bad child was started");

    // A good upload afterwards still works.
    let good = variant(json!({"text": "v3"}));
    let (code, body) = shim.upload(good.clone(), &sha256(&good)).await;
    assert_eq!(code, 200, "{body}");
    shim.wait_serving("v3").await;
}

/// A new binary that runs but never reports ready (READY=1) is rejected after the
/// ready timeout; the old child serves throughout.
#[tokio::test]
async fn a_new_binary_that_never_gets_ready_is_rolled_back() {
    let mut opts = Options::default();
    opts.env.push(("STAND_SHIM_READY_TIMEOUT", "0.5".into()));
    let shim = Shim::start_with(json!({"text": "v1"}), opts).await;
    let serving_pid = shim.status().await["pid"].clone();
    let silent = variant(json!({"text": "v2", "no_ready": true}));
    let (code, body) = shim.upload(silent.clone(), &sha256(&silent)).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(error_code(&body), "rolled_back");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("did not report ready"), "{message}");
    let status = shim.status().await;
    assert_eq!(status["pid"], serving_pid, "the old child kept serving");
    assert_eq!(status["last_exit"]["cause"], "stopped", "the silent one was stopped");
    // Only v1 answers now: the silent child is gone.
    for _ in 0..20 {
        assert_eq!(shim.served().await.map(|(t, _)| t).as_deref(), Some("v1"));
    }
}

/// Ready, then dead within the grace period: the old child was already stopped, so
/// the previous binary is started again (connections wait in the shim's backlog).
#[tokio::test]
async fn a_new_binary_that_dies_after_ready_is_rolled_back_and_restarted() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let old_pid = shim.status().await["pid"].as_i64().expect("pid");
    let flaky = variant(json!({"text": "v2", "exit_after_ready_ms": 100}));
    let (code, body) = shim.upload(flaky.clone(), &sha256(&flaky)).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(error_code(&body), "rolled_back");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("exit code 4"), "{message}");
    shim.wait_serving("v1").await;
    let status = shim.status().await;
    assert_eq!(status["pid"], body["error"]["details"]["restored_pid"]);
    assert_ne!(status["pid"], json!(old_pid), "the previous binary runs in a new process");
    assert!(proc_stat(old_pid as i32).is_none(), "the old child was stopped at promotion");
    assert_eq!(status["sha256"], sha256(&variant(json!({"text": "v1"}))));
    assert_eq!(status["restarts"], 2, "flaky child + restored child");
}

/// `STAND_SHIM_LISTEN=off`: the child binds its own port; a swap stops the old child
/// before the new one starts, and a rollback starts the previous binary again.
#[tokio::test]
async fn without_shared_sockets_swaps_stop_then_start() {
    let mut opts = Options::default();
    opts.env.push(("STAND_SHIM_LISTEN", "off".into()));
    let shim = Shim::start_with(json!({"text": "v1"}), opts).await;
    let old_pid = shim.status().await["pid"].as_i64().expect("pid");
    let bad = variant(json!({"text": "v2", "exit_at_start": 3}));
    let (code, body) = shim.upload(bad.clone(), &sha256(&bad)).await;
    assert_eq!(code, 409, "{body}");
    shim.wait_serving("v1").await;
    let status = shim.status().await;
    assert_ne!(status["pid"], json!(old_pid), "the previous binary was started again");
    assert!(proc_stat(old_pid as i32).is_none(), "old child gone");
    assert_eq!(status["restarts"], 2, "bad child + restored child");
    let good = variant(json!({"text": "v3"}));
    let (code, body) = shim.upload(good.clone(), &sha256(&good)).await;
    assert_eq!(code, 200, "{body}");
    shim.wait_serving("v3").await;
}

/// Uploads `first`, then `second` as soon as `first` serves (`first_text`), without
/// waiting for `first`'s answer: two saves in a row. Both answers, within [`DEADLINE`].
async fn back_to_back(shim: &Shim, first: &[u8], first_text: &str, second: &[u8]) -> ((u16, Value), (u16, Value)) {
    let first_sha = sha256(first);
    let one = shim.upload(first.to_vec(), &first_sha);
    let two = async {
        shim.wait_serving(first_text).await;
        shim.upload(second.to_vec(), &sha256(second)).await
    };
    let both = tokio::time::timeout(DEADLINE, async { tokio::join!(one, two) }).await;
    both.unwrap_or_else(|_| panic!("no answers within {DEADLINE:?} (a probation waited out?)"))
}

/// Two saves in a row: the second upload does not wait out the first binary's
/// probation (a grace of 120 s here, far beyond every deadline of this test). The
/// first answers 200 once the second arrives; the second, dying after ready, is rolled
/// back, and not to the first: that one gave way before its probation was over (a
/// binary that may crash a moment later, as the next one did), so the binary the shim
/// started with, the last one that lived through its probation, serves again.
async fn newer_upload_cuts_the_probation(listen: Option<&str>) {
    let mut opts = Options::default();
    opts.env.push(("STAND_SHIM_GRACE_MS", "120000".into()));
    if let Some(listen) = listen {
        opts.env.push(("STAND_SHIM_LISTEN", listen.into()));
    }
    let v1 = variant(json!({"text": "v1"}));
    let shim = Shim::start_with(json!({"text": "v1"}), opts).await;
    let v2 = variant(json!({"text": "v2"}));
    let flaky = variant(json!({"text": "v3", "exit_after_ready_ms": 100}));
    let (v1_sha, v2_sha) = (sha256(&v1), sha256(&v2));
    let ((code, body), (flaky_code, flaky_body)) = back_to_back(&shim, &v2, "v2", &flaky).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sha256"], v2_sha);
    assert_eq!(flaky_code, 409, "{flaky_body}");
    assert_eq!(error_code(&flaky_body), "rolled_back");
    assert_eq!(flaky_body["error"]["details"]["rollback"]["restored_sha256"], v1_sha);
    shim.wait_serving("v1").await;
    let status = shim.status().await;
    assert_eq!(status["sha256"], v1_sha);
    assert_eq!(status["last_rollback"]["restored_sha256"], v1_sha);
    assert_eq!(std::fs::read(&shim.binary).expect("read"), v1, "the last binary that lived through its probation is back");
}

#[tokio::test]
async fn a_newer_upload_ends_the_probation_of_the_one_before() {
    newer_upload_cuts_the_probation(None).await;
}

#[tokio::test]
async fn without_shared_sockets_a_newer_upload_ends_the_probation_too() {
    newer_upload_cuts_the_probation(Some("off")).await;
}

/// A binary that gave way keeps serving when its successor never gets ready (the
/// shared sockets never left it): the rollback keeps it, on disk too.
#[tokio::test]
async fn a_binary_that_gave_way_serves_on_when_the_next_never_gets_ready() {
    let mut opts = Options::default();
    opts.env.push(("STAND_SHIM_GRACE_MS", "120000".into()));
    opts.env.push(("STAND_SHIM_READY_TIMEOUT", "1".into()));
    let shim = Shim::start_with(json!({"text": "v1"}), opts).await;
    let v2 = variant(json!({"text": "v2"}));
    let stuck = variant(json!({"text": "v3", "no_ready": true}));
    let v2_sha = sha256(&v2);
    let ((code, body), (stuck_code, stuck_body)) = back_to_back(&shim, &v2, "v2", &stuck).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(stuck_code, 409, "{stuck_body}");
    assert_eq!(stuck_body["error"]["details"]["rollback"]["restored_sha256"], v2_sha);
    assert_eq!(shim.served().await.map(|(t, _)| t).as_deref(), Some("v2"));
    assert_eq!(std::fs::read(&shim.binary).expect("read"), v2, "the binary that still serves is the one on disk");
    assert!(shim.dir.path().join("app.good").exists(), "v1 is kept: v2 never finished its probation");
    // v2 still has not lived through a whole probation: a binary dying after ready now
    // is replaced by v1.
    let flaky = variant(json!({"text": "v4", "exit_after_ready_ms": 100}));
    let (code, body) = tokio::time::timeout(DEADLINE, shim.upload(flaky.clone(), &sha256(&flaky)))
        .await
        .unwrap_or_else(|_| panic!("no answer within {DEADLINE:?}"));
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["details"]["rollback"]["restored_sha256"], sha256(&variant(json!({"text": "v1"}))));
    shim.wait_serving("v1").await;
}

/// After a binary that gave way, the next one that lives through its whole probation
/// is what a later rollback restores (the kept good binary is gone).
#[tokio::test]
async fn a_binary_that_serves_out_its_probation_is_the_next_rollback_target() {
    let mut opts = Options::default();
    opts.env.push(("STAND_SHIM_GRACE_MS", "1500".into()));
    let shim = Shim::start_with(json!({"text": "v1"}), opts).await;
    let v2 = variant(json!({"text": "v2"}));
    let v3 = variant(json!({"text": "v3"}));
    let flaky = variant(json!({"text": "v4", "exit_after_ready_ms": 100}));
    let (v3_sha, flaky_sha) = (sha256(&v3), sha256(&flaky));
    let ((code, body), (v3_code, v3_body)) = back_to_back(&shim, &v2, "v2", &v3).await;
    assert_eq!((code, v3_code), (200, 200), "{body} {v3_body}");
    assert!(!shim.dir.path().join("app.good").exists(), "v3 lived through its probation");
    let (code, body) = shim.upload(flaky.clone(), &flaky_sha).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["details"]["rollback"]["restored_sha256"], v3_sha);
    shim.wait_serving("v3").await;
}

#[tokio::test]
async fn concurrent_uploads_are_serialized_and_leave_one_intact_binary() {
    let shim = Shim::start(json!({"text": "v0"})).await;
    let variants: Vec<Vec<u8>> = (1..=4)
        .map(|i| variant(json!({"text": format!("v{i}")})))
        .collect();
    let shas: Vec<String> = variants.iter().map(|v| sha256(v)).collect();
    let answers = futures_join_all(
        variants
            .iter()
            .zip(&shas)
            .map(|(v, s)| shim.upload(v.clone(), s)),
    )
    .await;
    let mut pids = Vec::new();
    for ((code, body), sha) in answers.iter().zip(&shas) {
        assert_eq!(*code, 200, "{body}");
        assert_eq!(body["sha256"], *sha, "each answer describes its own upload");
        pids.push(body["pid"].as_i64().expect("pid"));
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 4, "each upload started its own child");
    let mut restarts: Vec<i64> = answers
        .iter()
        .map(|(_, b)| b["restarts"].as_i64().expect("restarts"))
        .collect();
    restarts.sort_unstable();
    assert_eq!(restarts, vec![1, 2, 3, 4], "one swap at a time");

    let status = shim.status().await;
    let final_sha = status["sha256"].as_str().expect("sha");
    let i = shas
        .iter()
        .position(|s| s == final_sha)
        .expect("final binary is one of the uploads");
    assert_eq!(
        std::fs::read(&shim.binary).expect("read"),
        variants[i],
        "intact"
    );
    shim.wait_serving(&format!("v{}", i + 1)).await;
    let leftovers: Vec<_> = std::fs::read_dir(shim.dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
}

/// `join_all` without a futures dependency: every future polled concurrently.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn restart_endpoint_and_crash_restart() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let first = shim.status().await["pid"].as_i64().expect("pid") as i32;
    let resp = shim
        .client
        .post(format!("{}/v1/restart", shim.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let second = body["pid"].as_i64().expect("pid") as i32;
    assert_ne!(second, first);
    assert_eq!(body["restarts"], 1);
    assert_eq!(shim.wait_serving("v1").await, second);
    assert!(proc_stat(first).is_none(), "old child reaped");

    // Dies on its own: restarted after a backoff, the exit recorded.
    kill(Pid::from_raw(second), Signal::SIGKILL).expect("kill child");
    let status = poll("a restarted child", DEADLINE, || async {
        let s = shim.try_status().await?;
        (s["restarts"] == 2 && s["pid"].is_i64()).then_some(s)
    })
    .await;
    assert_eq!(status["last_exit"]["pid"], second);
    assert_eq!(status["last_exit"]["signal"], 9);
    assert_eq!(status["last_exit"]["cause"], "exited");
    shim.wait_serving("v1").await;
}

#[tokio::test]
async fn sigterm_is_forwarded_and_the_shim_exits_with_the_childs_code() {
    let mut shim = Shim::start(json!({"text": "v1", "term_exit_code": 42})).await;
    let child = shim.status().await["pid"].as_i64().expect("pid") as i32;
    shim.signal(Signal::SIGTERM);
    let status = shim.wait_exit(DEADLINE).await;
    assert_eq!(status.code(), Some(42), "{status:?}");
    assert!(proc_stat(child).is_none(), "child exited and was reaped");
}

#[tokio::test]
async fn sigint_is_forwarded_too() {
    let mut shim = Shim::start(json!({"text": "v1", "term_exit_code": 7})).await;
    shim.signal(Signal::SIGINT);
    assert_eq!(shim.wait_exit(DEADLINE).await.code(), Some(7));
}

#[tokio::test]
async fn a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let mut opts = Options::default();
    opts.env.push(("STAND_SHIM_STOP_TIMEOUT", "0.5".into()));
    let mut shim = Shim::start_with(json!({"text": "v1", "ignore_term": true}), opts).await;
    let child = shim.status().await["pid"].as_i64().expect("pid") as i32;
    let start = Instant::now();
    shim.signal(Signal::SIGTERM);
    let status = shim.wait_exit(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "killed child -> 137: {status:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "waited for the stop timeout"
    );
    assert!(proc_stat(child).is_none());
}

#[tokio::test]
async fn orphans_of_the_child_are_reaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("orphans");
    let shim = Shim::start(json!({
        "text": "v1",
        "orphans": {"count": 5, "linger_ms": 1500, "pid_file": pid_file.to_str().expect("utf8")},
    }))
    .await;
    let orphans: Vec<i32> = poll("the orphans' pid file", DEADLINE, || async {
        let text = std::fs::read_to_string(&pid_file).ok()?;
        Some(text.lines().filter_map(|l| l.parse().ok()).collect())
    })
    .await;
    assert_eq!(orphans.len(), 5);
    // They were reparented to the shim (subreaper) and, once they exit, reaped by it.
    let mut seen_under_shim = false;
    poll("the orphans to be reaped", DEADLINE, || {
        let mut all_gone = true;
        for pid in &orphans {
            match proc_stat(*pid) {
                None => {}
                Some((_, ppid)) => {
                    all_gone = false;
                    seen_under_shim |= ppid == shim.pid();
                }
            }
        }
        std::future::ready(all_gone.then_some(()))
    })
    .await;
    assert!(
        seen_under_shim,
        "orphans reparent to the shim (PR_SET_CHILD_SUBREAPER)"
    );
    assert_eq!(
        zombie_children(shim.pid()),
        Vec::<i32>::new(),
        "no zombies under the shim"
    );
    // The child itself is untouched.
    assert_eq!(shim.status().await["restarts"], 0);
    assert!(shim.served().await.is_some());
}

/// `GET` and `PUT /v1/libs/<sha256>/<name>`: 404 until the library was put, then 200;
/// it lands under its sha256 beside the binary (where a dynamically linked binary's
/// rpath looks); a body of other bytes, a bad name or no token is refused and stores
/// nothing; the child serves on untouched.
#[tokio::test]
async fn a_library_is_stored_under_its_sha256_beside_the_binary() {
    let shim = Shim::start(json!({"text": "v1"})).await;
    let before = shim.status().await;
    let bytes = b"\x7fELF not really a library".to_vec();
    let sha = sha256(&bytes);
    let url = |name: &str| format!("{}/v1/libs/{sha}/{name}", shim.api);
    let call = |method: reqwest::Method, url: String, body: Vec<u8>, token: bool| {
        let mut request = shim.client.request(method, url).body(body);
        if token {
            request = request.bearer_auth(TOKEN);
        }
        async move {
            let resp = request.send().await.expect("request");
            let code = resp.status().as_u16();
            (code, resp.json::<Value>().await.expect("json body"))
        }
    };
    let (code, body) = call(reqwest::Method::GET, url("libx-1.so"), Vec::new(), true).await;
    assert_eq!((code, error_code(&body)), (404, "not_found"), "{body}");
    let (code, body) = call(reqwest::Method::PUT, url("libx-1.so"), bytes.clone(), false).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = call(reqwest::Method::PUT, url("libx-1.so"), b"other bytes".to_vec(), true).await;
    assert_eq!((code, error_code(&body)), (422, "hash_mismatch"), "{body}");
    for bad in ["..so", "libx", "lib%2Fx.so"] {
        let (code, body) = call(reqwest::Method::PUT, url(bad), bytes.clone(), true).await;
        assert_eq!((code, error_code(&body)), (400, "bad_library"), "{bad}: {body}");
    }
    let dir = shim.binary.parent().expect("binary dir").join(".stand-libs");
    assert!(!dir.join(&sha).join("libx-1.so").exists(), "nothing stored yet");

    let (code, body) = call(reqwest::Method::PUT, url("libx-1.so"), bytes.clone(), true).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(std::fs::read(dir.join(&sha).join("libx-1.so")).expect("stored"), bytes);
    let (code, body) = call(reqwest::Method::GET, url("libx-1.so"), Vec::new(), true).await;
    assert_eq!((code, body["sha256"].as_str()), (200, Some(sha.as_str())), "{body}");
    let (code, body) = call(reqwest::Method::PUT, url("libx-1.so"), bytes.clone(), true).await;
    assert_eq!(code, 200, "a second put is no error: {body}");
    let files: Vec<_> = std::fs::read_dir(dir.join(&sha)).expect("ls").flatten().map(|e| e.file_name()).collect();
    assert_eq!(files, [std::ffi::OsString::from("libx-1.so")], "no temp file left");

    let after = shim.status().await;
    assert_eq!((after["pid"].clone(), after["restarts"].clone()), (before["pid"].clone(), before["restarts"].clone()));
    assert_eq!(shim.served().await.map(|(t, _)| t).as_deref(), Some("v1"));
}
