//! The routes an axum router really serves, for checking them against the document: each path
//! with its methods. axum has no API that lists a router's routes, so they are read from its
//! `Debug` form (the path table and each route's `Allow` header); when a new axum writes that
//! form differently, [`served_routes`] panics rather than answer a wrong list.

use std::collections::{BTreeMap, BTreeSet};

/// Every path `router` serves, with its methods in lower case (`get`, `post`, ...; `head`,
/// which axum answers for every `get`, is left out). A route with no method list (a service
/// mounted whole) has the method `*`, which no document path has.
///
/// # Panics
///
/// When the router's debug form is not the one this reads (another axum).
pub fn served_routes<S>(router: &axum::Router<S>) -> BTreeMap<String, BTreeSet<String>> {
    let text = format!("{router:?}");
    let main = between(
        &text,
        "path_router: PathRouter { routes: {",
        ", fallback_router:",
    )
    .expect("axum's Router debug form starts with its path router");
    let (routes, paths) = main
        .split_once("node: Node { paths: {")
        .expect("axum's PathRouter debug form lists its paths");
    let methods = route_methods(routes);
    let mut served = BTreeMap::new();
    for (id, path) in entries(paths) {
        let path = path
            .strip_prefix('"')
            .and_then(|path| path.split('"').next())
            .expect("a path is a quoted string");
        let methods = methods
            .get(id)
            .unwrap_or_else(|| panic!("route {id} ({path}) has no endpoint in the debug form"));
        served.insert(path.to_string(), methods.clone());
    }
    assert!(
        !served.is_empty() && served.len() == methods.len(),
        "read {} paths and {} endpoints from the router's debug form",
        served.len(),
        methods.len()
    );
    served
}

/// Each route id's methods, from its `allow_header`.
fn route_methods(routes: &str) -> BTreeMap<&str, BTreeSet<String>> {
    entries(routes)
        .map(|(id, endpoint)| {
            let allowed = between(endpoint, "allow_header: Bytes(b\"", "\"");
            let methods = match allowed {
                Some(list) => {
                    let methods: BTreeSet<String> =
                        list.split(',').map(str::to_ascii_lowercase).collect();
                    let head_of_get = methods.contains("get");
                    methods
                        .into_iter()
                        .filter(|method| !(head_of_get && method == "head"))
                        .collect()
                }
                None => BTreeSet::from(["*".to_string()]),
            };
            (id, methods)
        })
        .collect()
}

/// The `RouteId(n): value` entries of a debug map, as `("n", "value...")`, each value running
/// to the next entry.
fn entries(map: &str) -> impl Iterator<Item = (&str, &str)> {
    map.split("RouteId(").skip(1).filter_map(|entry| {
        let (id, rest) = entry.split_once("): ")?;
        Some((id, rest))
    })
}

/// The text between the first `start` and the first `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// The operations an OpenAPI document (as JSON) lists: each path with its methods.
pub fn documented_routes(document: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    document["paths"]
        .as_object()
        .map(|paths| {
            paths
                .iter()
                .map(|(path, item)| {
                    let methods = METHODS
                        .iter()
                        .filter(|method| item.get(**method).is_some())
                        .map(|method| method.to_string())
                        .collect();
                    (path.clone(), methods)
                })
                .collect()
        })
        .unwrap_or_default()
}
