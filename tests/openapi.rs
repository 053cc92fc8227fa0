//! The OpenAPI document at `GET /api/openapi.json`, against a real node: served without
//! credentials, as JSON, with herald's version; a valid OpenAPI 3.1 document by
//! `openapi-spec-validator` (from `clients/python/.venv`, which `.ci/run` installs with the
//! package's dev extra; without it the check says why and passes, unless
//! `HERALD_REQUIRE_PYTHON=1`, as `.ci/run` sets); listing exactly the routes the node's router
//! serves, each answering its documented methods and refusing the others with 405; and the
//! node's real answers shaped as the document says.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TIMEOUT, TestNode};
use herald::api::openapi::{documented_routes, served_routes};
use herald::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn fetch_document(node: &TestNode) -> Value {
    let response = node
        .http()
        .get(node.http_url("/api/openapi.json"))
        .timeout(TIMEOUT)
        .send()
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("the document is JSON")
}

#[tokio::test]
async fn the_document_is_served_without_credentials_with_herald_s_version() {
    let node = TestNode::start().await;
    let document = fetch_document(&node).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "herald");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["user_token"]["bearerFormat"], "JWT");
    assert_eq!(schemes["user_token_query"]["in"], "query");
    assert_eq!(schemes["user_token_cookie"]["name"], "herald_token");
    assert_eq!(
        document["paths"]["/api/publish"]["post"]["security"],
        json!([{ "api_key": [] }])
    );
}

fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `openapi-spec-validator` on `document`: `Ok(Ok(()))` valid, `Ok(Err(what))` refused
/// (the start of its report), `Err(why)` when the validator cannot run here.
fn validate(python: &Path, document: &Value) -> Result<Result<(), String>, String> {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), serde_json::to_vec(document).unwrap()).unwrap();
    let output = Command::new(python)
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|error| format!("{} cannot run: {error}", python.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    if text.contains("No module named openapi_spec_validator") {
        return Err(format!(
            "{} lacks openapi-spec-validator (pip install -e 'clients/python[dev]')",
            python.display()
        ));
    }
    if output.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(text.chars().take(1500).collect()))
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi() {
    let node = TestNode::start().await;
    let document = fetch_document(&node).await;
    let python = python();
    let verdict = match validate(&python, &document) {
        Ok(verdict) => verdict,
        Err(reason) => {
            assert_ne!(
                std::env::var("HERALD_REQUIRE_PYTHON").as_deref(),
                Ok("1"),
                "HERALD_REQUIRE_PYTHON=1 but {reason}"
            );
            eprintln!("skipped: {reason}");
            return;
        }
    };
    if let Err(report) = verdict {
        panic!("openapi-spec-validator refused the document: {report}");
    }
    // The validator refuses what is wrong: a reference to no schema.
    let mut broken = document.clone();
    broken["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] =
        json!({ "$ref": "#/components/schemas/Nowhere" });
    let verdict = validate(&python, &broken).expect("the validator ran once already");
    assert!(
        verdict.is_err_and(|report| report.contains("Nowhere")),
        "a broken reference passed"
    );
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_node_serves() {
    let node = TestNode::start().await;
    let document = fetch_document(&node).await;
    let documented = documented_routes(&document);
    // The very router the node serves (`Server::start` builds it with `api::router`).
    let served = served_routes(&herald::api::router(node.server().state().clone()));
    let missing: BTreeMap<_, _> = served
        .iter()
        .filter(|(path, methods)| documented.get(*path) != Some(methods))
        .collect();
    assert!(
        missing.is_empty(),
        "served but not documented as served (add #[utoipa::path] and routes!): {missing:?}"
    );
    let unserved: BTreeMap<_, _> = documented
        .iter()
        .filter(|(path, methods)| served.get(*path) != Some(methods))
        .collect();
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    assert!(documented.len() >= 34, "{} paths", documented.len());
}

/// `path` with each `{parameter}` replaced by a sample value.
fn sample_path(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{channel}" => "openapi-probe",
            "{track_id}" | "{thread_id}" => "1",
            "{comment_id}" => "no-such-comment",
            other if other.starts_with('{') => panic!("no sample for {other} in {path}"),
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_operation_answers_and_other_methods_are_refused() {
    let node = TestNode::start().await;
    let document = fetch_document(&node).await;
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let mut wrong = Vec::new();
    for (path, documented) in documented_routes(&document) {
        let url = node.http_url(&sample_path(&path));
        for method in &methods {
            // No credentials: a guarded route answers 401 and does nothing (no leave).
            let response = node
                .http()
                .request(method.clone(), &url)
                .timeout(TIMEOUT)
                .send()
                .await
                .expect("a request");
            let status = response.status();
            let body = response.bytes().await.expect("a body");
            let routed = status != StatusCode::METHOD_NOT_ALLOWED
                && !(status == StatusCode::NOT_FOUND && body.is_empty());
            let expected = documented.contains(&method.as_str().to_ascii_lowercase());
            if routed != expected {
                wrong.push(format!("{method} {path}: {status}, documented: {expected}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---- answers against their schemas ----

/// Checks `value` against `schema` (the subset of JSON Schema the document uses: `$ref`,
/// `type`, `properties`, `required`, `items`, `additionalProperties`, `oneOf`, `enum`),
/// collecting what does not fit in `errors`. Stricter than JSON Schema on one point: a key
/// that an object's schema does not name is an error (an answer grew a field the document
/// does not describe), except in a rendered event, which carries the publisher's data.
fn check(document: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        let mut target = document["components"]["schemas"][name].clone();
        assert!(target.is_object(), "no schema {name}");
        if name == "RenderedEvent" {
            target["additionalProperties"] = json!({});
        }
        return check(document, &target, value, at, errors);
    }
    if let Some(choices) = schema["oneOf"].as_array() {
        let fitting = choices
            .iter()
            .filter(|choice| {
                let mut inner = Vec::new();
                check(document, choice, value, at, &mut inner);
                inner.is_empty()
            })
            .count();
        if fitting == 0 {
            errors.push(format!("{at}: {value} fits none of {schema}"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let fits = |kind: &str| match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|kind| fits(kind)) {
        errors.push(format!("{at}: {value} is not {types:?}"));
        return;
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            if !object.contains_key(required) {
                errors.push(format!("{at}: no {required}"));
            }
        }
        for (key, item) in object {
            let here = format!("{at}.{key}");
            match properties.and_then(|properties| properties.get(key)) {
                Some(property) => check(document, property, item, &here, errors),
                None if schema["additionalProperties"].is_object() => check(
                    document,
                    &schema["additionalProperties"],
                    item,
                    &here,
                    errors,
                ),
                None if properties.is_some() => errors.push(format!("{here}: not in the schema")),
                None => {}
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (index, item) in items.iter().enumerate() {
            check(document, schema, item, &format!("{at}[{index}]"), errors);
        }
    }
}

#[tokio::test]
async fn the_answer_checker_refuses_what_the_schema_does_not_say() {
    let node = TestNode::start().await;
    let document = fetch_document(&node).await;
    let healthz = json!({ "$ref": "#/components/schemas/Healthz" });
    let mut errors = Vec::new();
    let fine = json!({ "node_id": "n1", "status": "ok", "uptime_secs": 3 });
    check(&document, &healthz, &fine, "$", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    for wrong in [
        json!({ "status": "ok", "uptime_secs": 3 }),
        json!({ "node_id": "n1", "status": "ok", "uptime_secs": "3" }),
        json!({ "node_id": "n1", "status": "ok", "uptime_secs": 3, "extra": true }),
        json!([]),
    ] {
        let mut errors = Vec::new();
        check(&document, &healthz, &wrong, "$", &mut errors);
        assert!(!errors.is_empty(), "{wrong} passed");
    }
}

/// Fails unless `reply` is what the document says `method path` answers with its status.
fn assert_documented(document: &Value, method: &str, path: &str, reply: common::Reply) -> Value {
    let status = reply.status.as_u16().to_string();
    let answer = &document["paths"][path][method]["responses"][&status];
    assert!(
        answer.is_object(),
        "{method} {path} answered {status}, which the document does not list: {}",
        reply.body
    );
    let schema = &answer["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status}: no JSON schema"
    );
    let mut errors = Vec::new();
    check(document, schema, &reply.body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} {status} answered {} against its schema: {errors:#?}",
        reply.body
    );
    reply.body
}

#[tokio::test]
async fn the_node_answers_as_the_document_says() {
    let node = TestNode::start().await;
    let document = fetch_document(&node).await;
    let key = node.api_key().to_string();
    let admin = node.admin_token("100");
    let alice = node.token("1", "alice", &[]);
    let doc = &document;

    assert_documented(doc, "get", "/healthz", node.get("/healthz", None).await);
    assert_documented(doc, "get", "/readyz", node.get("/readyz", None).await);
    assert_documented(
        doc,
        "get",
        "/api/cluster",
        node.get("/api/cluster", Some(&key)).await,
    );
    assert_documented(
        doc,
        "post",
        "/api/console/token",
        node.post("/api/console/token", Some(&key), &json!({}))
            .await,
    );

    // Publishing, one channel, several, a replay, a batch, and errors.
    let publish = |body: Value| {
        let key = key.clone();
        let node = &node;
        async move { node.post("/api/publish", Some(&key), &body).await }
    };
    let data = json!({ "type": "new_message", "text": "hi" });
    assert_documented(
        doc,
        "post",
        "/api/publish",
        publish(json!({ "channel": "forum:thread:1", "data": data })).await,
    );
    let keyed = json!({ "channel": "room:1", "data": data, "idempotency_key": "k-1" });
    publish(keyed.clone()).await.expect_status(StatusCode::OK);
    let replayed = assert_documented(doc, "post", "/api/publish", publish(keyed).await);
    assert_eq!(replayed["replayed"], true);
    assert_documented(
        doc,
        "post",
        "/api/publish",
        publish(json!({ "channels": ["room:1", "room:2"], "data": data })).await,
    );
    assert_documented(
        doc,
        "post",
        "/api/publish",
        publish(json!({ "channel": "broadcasts", "data": data })).await,
    );
    assert_documented(
        doc,
        "post",
        "/api/publish",
        node.post("/api/publish", None, &json!({})).await,
    );
    let events = json!({ "events": [
        { "channel": "room:3", "data": data },
        { "channel": "room:3", "data": data, "idempotency_key": "k-2" },
    ]});
    assert_documented(
        doc,
        "post",
        "/api/batch",
        node.post("/api/batch", Some(&key), &events).await,
    );
    assert_documented(
        doc,
        "post",
        "/api/batch",
        node.post("/api/batch", Some(&key), &json!({ "events": [] }))
            .await,
    );

    let history = assert_documented(
        doc,
        "get",
        "/api/channels/{channel}/history",
        node.get("/api/channels/room:1/history", Some(&key)).await,
    );
    assert_eq!(history["events"].as_array().map(Vec::len), Some(2));
    for path in [
        "/api/channels/{channel}/presence",
        "/api/channels/{channel}/presence/count",
    ] {
        let real = path.replace("{channel}", "forum:thread:1");
        assert_documented(doc, "get", path, node.get(&real, Some(&key)).await);
        let untracked = path.replace("{channel}", "room:1");
        assert_documented(doc, "get", path, node.get(&untracked, Some(&key)).await);
    }

    // The broadcast banner.
    let created = assert_documented(
        doc,
        "post",
        "/api/creator/broadcast",
        node.post(
            "/api/creator/broadcast",
            Some(&admin),
            &json!({ "message": "hello", "type": "warning" }),
        )
        .await,
    );
    for path in [
        "/api/creator/broadcast/active",
        "/api/creator/broadcast/limits",
        "/api/creator/broadcast/stats",
    ] {
        assert_documented(doc, "get", path, node.get(path, Some(&admin)).await);
    }
    assert_documented(
        doc,
        "get",
        "/api/creator/broadcast/stats",
        node.get("/api/creator/broadcast/stats", Some(&alice)).await,
    );
    assert_documented(
        doc,
        "post",
        "/api/creator/broadcast/acknowledge",
        node.post(
            "/api/creator/broadcast/acknowledge",
            Some(&alice),
            &json!({ "broadcast_id": created["id"] }),
        )
        .await,
    );
    let active = assert_documented(
        doc,
        "get",
        "/api/creator/broadcast/active",
        node.get("/api/creator/broadcast/active", Some(&alice))
            .await,
    );
    assert_eq!(active["broadcast"], Value::Null);
    assert_documented(
        doc,
        "post",
        "/api/creator/broadcast/clear",
        node.post("/api/creator/broadcast/clear", Some(&admin), &json!({}))
            .await,
    );

    // Comments.
    let comments = "/api/tracks/{track_id}/comments";
    let comment = assert_documented(
        doc,
        "post",
        comments,
        node.post(
            "/api/tracks/7/comments",
            Some(&alice),
            &json!({ "content": "nice @bob", "timestamp": 3.5 }),
        )
        .await,
    );
    let id = comment["comment"]["id"].as_str().unwrap().to_string();
    assert_documented(
        doc,
        "get",
        comments,
        node.get("/api/tracks/7/comments", Some(&alice)).await,
    );
    let edit = node
        .http()
        .put(node.http_url(&format!("/api/comments/{id}")))
        .bearer_auth(&alice)
        .json(&json!({ "content": "edited" }))
        .send()
        .await
        .unwrap();
    let edit = common::Reply {
        status: edit.status(),
        body: edit.json().await.unwrap(),
    };
    assert_documented(doc, "put", "/api/comments/{comment_id}", edit);
    let bob = node.token("2", "bob", &[Role::Admin]);
    let delete = node
        .http()
        .delete(node.http_url(&format!("/api/comments/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let delete = common::Reply {
        status: delete.status(),
        body: delete.json().await.unwrap(),
    };
    assert_documented(doc, "delete", "/api/comments/{comment_id}", delete);
}
