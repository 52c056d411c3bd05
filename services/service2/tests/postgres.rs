//! service2 runs the same kit as service1 (tested in depth there); here: its own
//! name, port default and database, through the real binary.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use service_kit::testing::{wait_for, ServiceProcess, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_service2");

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let response = http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status(), response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn serves_its_own_items_from_its_own_database() {
    let db = TestDb::create().await;
    let svc = ServiceProcess::start(BIN, &[("DATABASE_URL", &db.url)]).await;
    let http = reqwest::Client::new();
    wait_for("database", Duration::from_secs(10), || async {
        get(&http, svc.url("/health")).await.1["database_connected"].as_bool().filter(|c| *c)
    })
    .await;
    let (status, about) = get(&http, svc.url("/api/service2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(about["name"], "service2");
    assert_eq!(about["message"], service2::MESSAGE);

    let created = http.post(svc.url("/api/service2/items")).json(&json!({"name": "widget"})).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let (_, items) = get(&http, svc.url("/api/service2/items")).await;
    assert_eq!(items.as_array().map(Vec::len), Some(1));
    assert_eq!(items[0]["name"], "widget");
    let stored: String = db.client().await.query_one("SELECT name FROM items", &[]).await.unwrap().get(0);
    assert_eq!(stored, "widget");

    let (_, status) = get(&http, svc.url("/db-status")).await;
    assert_eq!(status["connected"], true);
    assert!(status["version"].as_str().unwrap().starts_with("15."));
    // service1's routes are not here.
    assert_eq!(get(&http, svc.url("/api/service1/items")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn runs_without_a_database() {
    let svc = ServiceProcess::start(BIN, &[]).await;
    let http = reqwest::Client::new();
    let (status, health) = get(&http, svc.url("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database_connected"], false);
    let (_, db) = get(&http, svc.url("/db-status")).await;
    assert_eq!(db["connected"], false);
    assert_eq!(db["configured"], false);
    let (status, _) = get(&http, svc.url("/api/service2/items")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, elapsed) = svc.terminate(Duration::from_secs(5)).await;
    assert!(status.success() && elapsed < Duration::from_secs(5), "{status:?} {elapsed:?}");
}
