//! The admin API's OpenAPI document against the server that serves it: every route the admin
//! router has is in the document, and every documented operation is served and answers one of
//! the statuses the document gives it.
//!
//! The document is generated from the same route table as the router (`utoipa_axum::routes!`
//! registers a handler and its `#[utoipa::path]` in one call). What could still slip past is a
//! route registered some other way, or a `#[utoipa::path]` whose methods differ from what the
//! router answers; the first is checked in the source, the second by calling every method on
//! every documented path.

mod common;

use common::{Db, TestServer};
use serde_json::{json, Value};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
const MAC: &str = "0004f2a1b2c3";
const DN: &str = "1000";
/// Both a profile and a site carry this name, so `{name}` means something under either path.
const NAME: &str = "openapi";

/// A valid body for the operations that take one; `{}` for the rest (a refusal is then
/// expected to be a documented 4xx, never a 404/405).
fn example_body(method: &str, path: &str) -> Option<(&'static str, String)> {
    let json_body = |v: Value| Some(("application/json", v.to_string()));
    match (method, path) {
        ("post", "/devices") => json_body(json!({"mac": "0004f2ffff01"})),
        ("patch", "/devices/{mac}") => json_body(json!({"model": "VVX 411"})),
        ("post", "/devices/{mac}/assign") => json_body(json!({"dn": DN})),
        ("post", "/dns") => json_body(json!({"number": "1001", "password": "pw"})),
        ("put", "/dns/{number}") => json_body(json!({"number": DN, "password": "pw2"})),
        ("post", "/profiles") => json_body(json!({"name": "openapi-2", "kind": "default"})),
        ("put", "/profiles/{name}") => json_body(json!({"name": NAME, "kind": "default"})),
        ("post", "/sites") => json_body(json!({"name": "openapi-2"})),
        ("put", "/sites/{name}") => json_body(json!({"name": NAME})),
        ("post", "/import") => Some(("text/csv", "0004f2ffff02,VVX 411,,\n".into())),
        ("post", "/dns/import") => Some(("text/csv", "1002,pw\n".into())),
        _ => None,
    }
}

fn concrete(path: &str) -> String {
    path.replace("{mac}", MAC)
        .replace("{number}", DN)
        .replace("{name}", NAME)
}

async fn call(
    ts: &TestServer,
    method: &str,
    path: &str,
    token: bool,
) -> (u16, Option<String>, String) {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = ts.http.request(m, ts.api(&concrete(path)));
    if token {
        req = req.bearer_auth(&ts.token);
    }
    req = match example_body(method, path) {
        Some((content_type, body)) => req.header("content-type", content_type).body(body),
        None if method != "get" && method != "delete" => req.json(&json!({})),
        None => req,
    };
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, content_type, r.text().await.unwrap_or_default())
}

/// `body` has the shape `schema` documents: every required property, none it does not name.
fn check_shape(doc: &Value, schema: &Value, body: &Value, what: &str) {
    if let Some(name) = schema["$ref"].as_str() {
        let name = name.rsplit('/').next().unwrap();
        let component = &doc["components"]["schemas"][name];
        assert!(component.is_object(), "{what}: no schema {name}");
        return check_shape(doc, component, body, what);
    }
    if schema["type"] == "array" {
        for item in body
            .as_array()
            .unwrap_or_else(|| panic!("{what}: not an array"))
        {
            check_shape(doc, &schema["items"], item, what);
        }
        return;
    }
    if let Some(properties) = schema["properties"].as_object() {
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("{what}: not an object"));
        for key in object.keys() {
            assert!(
                properties.contains_key(key),
                "{what}: `{key}` is not documented"
            );
        }
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap();
            assert!(
                object.contains_key(key),
                "{what}: required `{key}` is missing"
            );
        }
    }
}

fn is_error_body(content_type: Option<&str>, body: &str) -> bool {
    content_type.is_some_and(|c| c.starts_with("application/json"))
        && serde_json::from_str::<Value>(body).is_ok_and(|v| v["error"].is_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_operation_is_served() {
    let ts = TestServer::start(Db::Sqlite).await;
    for (path, body) in [
        ("/dns", json!({"number": DN, "password": "pw"})),
        (
            "/profiles",
            json!({"name": NAME, "kind": "device-management"}),
        ),
        ("/sites", json!({"name": NAME})),
        ("/devices", json!({"mac": MAC, "profile": NAME})),
    ] {
        let r = ts.post(path, body).await;
        assert_eq!(
            r.status(),
            201,
            "fixture {path}: {}",
            r.text().await.unwrap()
        );
    }

    // The document itself needs no token.
    let r = ts.http.get(ts.api("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "/fs/dm/api/v1");
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    assert_eq!(
        doc["components"]["schemas"]["Error"]["properties"]["error"]["type"],
        "string"
    );

    let paths = doc["paths"].as_object().expect("paths");
    // Every operation, deletes last so the placeholders exist for the rest.
    let mut operations: Vec<(String, &str)> = paths
        .iter()
        .flat_map(|(p, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (p.clone(), *m))
        })
        .collect();
    operations.sort_by_key(|(p, m)| (*m == "delete", p.clone()));
    assert!(operations.len() >= 30, "{} operations", operations.len());

    let mut shapes_checked = 0;
    for (path, method) in &operations {
        let op = &paths[path][*method];
        let documented: Vec<u16> = op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(|k| k.parse().expect("numeric status"))
            .collect();
        let open = op.get("security").is_some();

        let (status, content_type, body) = call(&ts, method, path, true).await;
        let what = format!("{} {path} answered {status} {body}", method.to_uppercase());
        assert_ne!(status, 405, "{what}");
        assert!(
            status != 404 || is_error_body(content_type.as_deref(), &body),
            "{what}: a 404 must be the API's error body, not an unknown route"
        );
        assert!(
            documented.contains(&status),
            "{what}; documented: {documented:?}"
        );
        if status >= 400 && !path.ends_with("import") {
            assert!(is_error_body(content_type.as_deref(), &body), "{what}");
        }
        let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
        if !schema.is_null() {
            let json: Value = serde_json::from_str(&body).expect(&what);
            check_shape(&doc, schema, &json, &what);
            shapes_checked += 1;
        }
        if !open {
            let (status, content_type, body) = call(&ts, method, path, false).await;
            assert_eq!(
                status,
                401,
                "{} {path} without a token",
                method.to_uppercase()
            );
            assert!(is_error_body(content_type.as_deref(), &body));
            assert!(
                documented.contains(&401),
                "{method} {path} does not document 401"
            );
        }
    }

    assert!(
        shapes_checked >= 25,
        "{shapes_checked} bodies checked against their schema"
    );

    // A method the document does not give a path is not served there either.
    for (path, item) in paths {
        for method in METHODS.iter().filter(|m| item.get(**m).is_none()) {
            let (status, _, _) = call(&ts, method, path, true).await;
            assert_eq!(
                status,
                405,
                "{} {path} is served but not documented",
                method.to_uppercase()
            );
        }
    }
    ts.stop().await;
}

/// Routes come only from `routes!` (handler and document together): nothing in src/admin
/// registers a route, a service or a fallback the plain axum way.
#[test]
fn admin_routes_are_registered_only_with_their_documentation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin");
    // `OpenApiRouter::new()` is how a resource's routes start; a bare `Router::new()` is not.
    let undocumented = regex::Regex::new(
        r"\.(route|route_service|nest_service|fallback|fallback_service)\(|(^|[^A-Za-z_])Router::new\(\)",
    )
    .unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for (n, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !undocumented.is_match(code),
                "{}:{}: `{}` adds a route without its OpenAPI operation; \
                 use OpenApiRouter::routes(routes!(handler))",
                path.display(),
                n + 1,
                code.trim()
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "read {checked} files in {}", dir.display());
}
