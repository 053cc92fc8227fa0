use std::collections::{BTreeMap, BTreeSet};

use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::*;
use crate::api::ApiError;
use crate::event::{ChannelName, Event, Hlc, NodeId, VersionVector};

fn document() -> Value {
    serde_json::to_value(openapi()).expect("the document is JSON")
}

fn schema<'a>(document: &'a Value, name: &str) -> &'a Value {
    let schema = &document["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

/// Fails unless `value`'s keys are the schema's properties, with every required one present.
fn assert_described(document: &Value, name: &str, value: &Value) {
    let schema = schema(document, name);
    let keys: BTreeSet<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("{name}: {value} is not an object"))
        .keys()
        .map(String::as_str)
        .collect();
    let properties: BTreeSet<&str> = schema["properties"]
        .as_object()
        .map(|properties| properties.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys, properties,
        "{name}: the JSON's keys against the schema's properties"
    );
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().expect("a required name is a string");
        assert!(keys.contains(required), "{name}: {required} is required");
    }
}

#[test]
fn the_router_serves_exactly_the_documented_routes() {
    let (router, document) = crate::api::routes().split_for_parts();
    let served = served_routes(&router);
    let documented = documented_routes(&serde_json::to_value(document).unwrap());
    assert_eq!(served, documented);
    // The document's own path, a WebSocket and a path with two methods, as a sanity check of
    // what the router's debug form was read as.
    assert_eq!(served[DOCUMENT_PATH], BTreeSet::from(["get".to_string()]));
    assert_eq!(served["/ws"], BTreeSet::from(["get".to_string()]));
    assert_eq!(
        served["/api/tracks/{track_id}/comments"],
        BTreeSet::from(["get".to_string(), "post".to_string()])
    );
}

#[test]
fn a_route_added_without_its_description_is_caught() {
    let undocumented = crate::api::routes()
        .route("/api/undocumented", axum::routing::get(|| async {}))
        .route("/healthz", axum::routing::post(|| async {}));
    let (router, document) = undocumented.split_for_parts();
    let served = served_routes(&router);
    let documented = documented_routes(&serde_json::to_value(document).unwrap());
    assert_eq!(
        served["/api/undocumented"],
        BTreeSet::from(["get".to_string()])
    );
    assert!(!documented.contains_key("/api/undocumented"));
    assert_eq!(
        served["/healthz"],
        BTreeSet::from(["get".to_string(), "post".to_string()])
    );
    assert_ne!(served, documented);
}

#[test]
fn the_document_names_herald_its_version_and_openapi_3_1() {
    let document = document();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "herald");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        serde_json::from_str::<Value>(&DOCUMENT).unwrap(),
        document,
        "the served text is this document"
    );
}

#[test]
fn every_operation_has_an_id_a_tag_a_summary_answers_and_known_schemes() {
    let document = document();
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for name in [
        API_KEY,
        USER_TOKEN,
        USER_TOKEN_QUERY,
        USER_TOKEN_COOKIE,
        SNAPSHOT_TOKEN,
    ] {
        assert!(schemes.contains_key(name), "scheme {name}");
    }
    let tags: BTreeSet<&str> = document["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag["name"].as_str().unwrap())
        .collect();
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let here = format!("{method} {path}");
            let id = operation["operationId"].as_str().expect(&here);
            assert!(ids.insert(id.to_string()), "{here}: operationId {id} twice");
            assert!(operation["summary"].is_string(), "{here}: a doc comment");
            for tag in operation["tags"].as_array().expect(&here) {
                assert!(tags.contains(tag.as_str().unwrap()), "{here}: tag {tag}");
            }
            let responses = operation["responses"].as_object().expect(&here);
            assert!(!responses.is_empty(), "{here}: answers");
            for requirement in operation["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(scheme), "{here}: scheme {scheme}");
                }
            }
            // Each `{name}` of the path is a declared path parameter, and no other.
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|parameter| parameter["in"] == "path")
                .map(|parameter| parameter["name"].as_str().unwrap())
                .collect();
            assert_eq!(in_path, declared, "{here}: path parameters");
        }
    }
    assert!(ids.len() >= 36, "{} operations", ids.len());
}

#[test]
fn every_reference_names_a_schema_of_the_document() {
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let document = document();
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target} is not a schema reference"));
        schema(&document, name);
    }
}

#[tokio::test]
async fn the_error_body_is_as_described() {
    let response = ApiError::bad_request("no").into_response();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_described(&document(), "ErrorBody", &body);
}

#[test]
fn types_of_other_modules_write_the_json_their_schemas_describe() {
    let document = document();
    let comment = crate::store::CommentRecord {
        id: "c1".into(),
        track_id: "t1".into(),
        user_id: "1".into(),
        username: "alice".into(),
        content: "hi".into(),
        timestamp: 1.5,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        is_edited: false,
        last_edited_at: None,
    };
    assert_described(&document, "Comment", &json!(comment));
    let health = crate::backplane::BackplaneHealth {
        kind: "mesh",
        healthy: true,
        detail: "2 peers".into(),
        partition: None,
    };
    assert_described(&document, "BackplaneHealth", &json!(health));
    let quorum = crate::backplane::mesh_quorum::Quorum {
        reachable: 2,
        known: 3,
        ready: true,
    };
    assert_described(&document, "Quorum", &json!(quorum));

    let mut vector = VersionVector::new();
    vector.advance(&NodeId::new("n1").unwrap(), 7);
    let vector = json!(vector);
    assert!(
        vector["n1"] == 7 && vector.as_object().unwrap().len() == 1,
        "a version vector is a map of origins to sequence numbers: {vector}"
    );
    let described = schema(&document, "VersionVector");
    assert_eq!(described["type"], "object");
    assert_eq!(described["additionalProperties"]["type"], "integer");

    let event = Event {
        origin: NodeId::new("n1").unwrap(),
        seq: 7,
        id: uuid::Uuid::nil(),
        hlc: Hlc(1),
        channel: ChannelName::new("forum").unwrap(),
        kind: "new_message".into(),
        payload: r#"{"type":"new_message"}"#.into(),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    };
    let rendered: Value =
        serde_json::from_str(&crate::hub::render_event(&event, &VersionVector::new())).unwrap();
    assert_described(&document, "RenderedEvent", &rendered);
}

#[test]
fn every_described_route_says_who_may_call_it() {
    let document = document();
    let public: BTreeSet<&str> = [
        "/",
        "/console",
        "/demo/broadcast",
        "/client/herald.js",
        "/client/herald.d.ts",
        "/healthz",
        "/readyz",
        "/metrics",
        DOCUMENT_PATH,
    ]
    .into();
    let mut unguarded = BTreeMap::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let guarded = operation["security"]
                .as_array()
                .is_some_and(|requirements| !requirements.is_empty());
            if guarded == public.contains(path.as_str()) {
                unguarded.insert(format!("{method} {path}"), guarded);
            }
        }
    }
    assert!(
        unguarded.is_empty(),
        "routes whose security is not what they need (true: guarded but public): {unguarded:?}"
    );
}
