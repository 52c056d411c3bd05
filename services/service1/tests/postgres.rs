//! service1 against a real PostgreSQL 15: each test has a fresh database of its own
//! (or a private cluster where the test stops the server).
#![allow(clippy::unwrap_used)] // test code: a panic here is the failure report

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use service_kit::testing::{wait_for, PrivatePostgres, ServiceProcess, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_service1");

async fn get(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn post_item(http: &reqwest::Client, svc: &ServiceProcess, name: &str) -> (StatusCode, Value) {
    let response = http.post(svc.url("/api/service1/items")).json(&json!({ "name": name })).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

/// Starts service1 on `url` and waits until it reports the database connected.
async fn connected(http: &reqwest::Client, url: &str) -> ServiceProcess {
    let svc = ServiceProcess::start(BIN, &[("DATABASE_URL", url)]).await;
    wait_for("database", Duration::from_secs(10), || async {
        get(http, &svc.url("/health")).await.1["database_connected"].as_bool().filter(|c| *c)
    })
    .await;
    svc
}

async fn names(http: &reqwest::Client, svc: &ServiceProcess) -> Vec<String> {
    let (status, body) = get(http, &svc.url("/api/service1/items")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn db_status_reports_the_real_server_version() {
    let db = TestDb::create().await;
    let svc = ServiceProcess::start(BIN, &[("DATABASE_URL", &db.url)]).await;
    let http = reqwest::Client::new();
    let expected: String = db.client().await.query_one("SHOW server_version", &[]).await.unwrap().get(0);
    assert!(expected.starts_with("15."), "the test server should be PostgreSQL 15, is {expected}");
    let body = wait_for("db-status to report connected", Duration::from_secs(10), || async {
        let (_, body) = get(&http, &svc.url("/db-status")).await;
        (body["connected"] == true).then_some(body)
    })
    .await;
    assert_eq!(body["version"], expected.as_str());
    // schema_migrations + items, created by the service's own migration.
    assert_eq!(body["tables_count"], 2);
    assert!(body["last_check"].as_str().is_some());
    let (_, health) = get(&http, &svc.url("/health")).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database_connected"], true);
}

#[tokio::test]
async fn items_persist_across_a_restart_and_sigterm_exits_cleanly() {
    let db = TestDb::create().await;
    let http = reqwest::Client::new();
    let svc = connected(&http, &db.url).await;
    let mut ids = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let (status, item) = post_item(&http, &svc, name).await;
        assert_eq!(status, StatusCode::CREATED, "{item}");
        assert_eq!(item["name"], name);
        assert!(item["created_at"].as_str().is_some());
        ids.push(item["id"].as_i64().unwrap());
    }
    let (status, elapsed) = svc.terminate(Duration::from_secs(5)).await;
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let again = ServiceProcess::start(BIN, &[("DATABASE_URL", &db.url)]).await;
    let listed = wait_for("items after restart", Duration::from_secs(10), || async {
        let (status, body) = get(&http, &again.url("/api/service1/items")).await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    let listed_ids: Vec<i64> = listed.as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(listed_ids, ids);
    // The migration ran once: the restart found it recorded.
    let rows = db.client().await.query("SELECT version FROM schema_migrations", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_written() {
    let db = TestDb::create().await;
    let http = reqwest::Client::new();
    let svc = connected(&http, &db.url).await;
    let long = json!({ "name": "n".repeat(201) }).to_string();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/api/service1/items", "{\"name\":".into(), 400, "parse"),
        ("POST", "/api/service1/items", "[]".into(), 422, "must be a JSON object"),
        ("POST", "/api/service1/items", "{}".into(), 422, "missing field `name`"),
        ("POST", "/api/service1/items", r#"{"name":""}"#.into(), 422, "must not be empty"),
        ("POST", "/api/service1/items", long, 422, "at most 200"),
        // PostgreSQL's text cannot hold NUL: refused as input, not a database error.
        ("POST", "/api/service1/items", json!({ "name": "nul\u{0}byte" }).to_string(), 422, "field `name` contains the control character U+0000"),
        ("GET", "/api/service1/nothing-here", String::new(), 404, "no route"),
        ("PUT", "/api/service1/items", r#"{"name":"x"}"#.into(), 405, "not allowed"),
    ];
    for (method, path, body, expected, needle) in cases {
        let request = http
            .request(method.parse().unwrap(), svc.url(path))
            .header("content-type", "application/json")
            .body(body.clone());
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{method} {path} {body}");
        let error: Value = response.json().await.expect("JSON error body");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{method} {path}: {message:?} lacks {needle:?}");
    }
    let count: i64 = db.client().await.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(count, 0, "bad input must write nothing");
    assert!(names(&http, &svc).await.is_empty());
}

/// The database goes away and comes back: degraded, 503 on items, nothing panics,
/// recovery within 5 s of the server being back, no committed row lost.
#[tokio::test]
async fn database_outage_degrades_then_recovers() {
    let pg = PrivatePostgres::start();
    let url = pg.url("postgres");
    let http = reqwest::Client::new();
    let svc = connected(&http, &url).await;
    for name in ["before-1", "before-2"] {
        assert_eq!(post_item(&http, &svc, name).await.0, StatusCode::CREATED);
    }

    pg.halt();
    let health = wait_for("health to say degraded", Duration::from_secs(10), || async {
        let (status, body) = get(&http, &svc.url("/health")).await;
        assert_eq!(status, StatusCode::OK, "health answers 200 while degraded");
        (body["status"] == "degraded").then_some(body)
    })
    .await;
    assert_eq!(health["database_connected"], false);
    let (status, body) = post_item(&http, &svc, "during").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable");
    let (status, _) = get(&http, &svc.url("/api/service1/items")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, db_status) = get(&http, &svc.url("/db-status")).await;
    assert_eq!(db_status["connected"], false);

    pg.resume();
    let back = Instant::now();
    wait_for("recovery within 5 s", Duration::from_secs(5), || async {
        let (_, body) = get(&http, &svc.url("/health")).await;
        (body["status"] == "ok").then_some(())
    })
    .await;
    eprintln!("recovered {:?} after the server came back", back.elapsed());
    assert_eq!(post_item(&http, &svc, "after").await.0, StatusCode::CREATED);
    assert_eq!(names(&http, &svc).await, ["before-1", "before-2", "after"]);
    assert!(!svc.logs().contains("panicked"), "{}", svc.logs());
}

/// SIGTERM while a request is in flight: the request completes, then the process exits 0.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let db = TestDb::create().await;
    let http = reqwest::Client::new();
    let mut svc = connected(&http, &db.url).await;
    // Hold a lock so the insert waits inside the service.
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = svc.url("/api/service1/items");
        async move { http.post(url).json(&json!({"name": "in-flight"})).send().await }
    });
    // Wait until the insert is really blocked on our lock.
    let probe = db.client().await;
    wait_for("the insert to wait on the lock", Duration::from_secs(10), || async {
        let waiting: i64 = probe
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO items%'", &[])
            .await
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
    let sent = Instant::now();
    svc.sigterm();
    wait_for("the service to start shutting down", Duration::from_secs(5), || {
        let logs = svc.logs();
        async move { logs.contains("shutting down").then_some(()) }
    })
    .await;
    tx.rollback().await.unwrap();
    let response = in_flight.await.unwrap().expect("the in-flight request gets its answer");
    assert_eq!(response.status(), StatusCode::CREATED);
    let status = svc.wait_exit(Duration::from_secs(5)).await;
    let elapsed = sent.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(elapsed < Duration::from_secs(5));
}

/// A query that fails inside the database is a 500 without internals, and its log
/// lines (JSON, as in containers) carry the request's span: method and URI.
#[tokio::test]
async fn a_failed_query_is_logged_inside_the_request_span() {
    let db = TestDb::create().await;
    let http = reqwest::Client::new();
    let svc = ServiceProcess::start(BIN, &[("DATABASE_URL", db.url.as_str()), ("LOG_FORMAT", "json")]).await;
    wait_for("database", Duration::from_secs(10), || async {
        get(&http, &svc.url("/health")).await.1["database_connected"].as_bool().filter(|c| *c)
    })
    .await;
    db.client().await.batch_execute("DROP TABLE items").await.unwrap();
    let (status, body) = post_item(&http, &svc, "into a table that is gone").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "database_error");
    assert!(!body.to_string().contains("items"), "no internals in the answer: {body}");
    let logs = wait_for("the error's log lines", Duration::from_secs(5), || {
        let logs = svc.logs();
        async move { logs.contains("request failed").then_some(logs) }
    })
    .await;
    let errors: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert!(errors.len() >= 2, "the query's error and the 5xx: {logs}");
    for line in &errors {
        let span = line["spans"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "request"));
        let span = span.unwrap_or_else(|| panic!("an error logged outside a request span: {line}"));
        assert_eq!((span["method"].as_str(), span["uri"].as_str()), (Some("POST"), Some("/api/service1/items")), "{line}");
    }
}
