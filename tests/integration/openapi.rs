//! `GET /api/openapi.json` against the real server: the document is valid
//! OpenAPI (checked here structurally and by swagger-cli, which
//! `scripts/setup` installs), lists exactly the routes of the route table,
//! and every parameterless GET it lists is served, answering the media type
//! it says; every JSON body a route answers conforms to the schema the
//! document declares for it (validated with the `jsonschema` crate,
//! JSON Schema 2020-12 as OpenAPI 3.1 speaks it).

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use vigil::routes::{Answer, ENDPOINTS, Endpoint, In, Method};

use crate::util::{TestServer, config};

const TOKEN: &str = "s3cret";

const SENSOR: &str = r#"
[[sensors]]
name = "sim"
kind = "simulated"
interval_ms = 20
"#;

async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, SENSOR);
    cfg.server.admin_token = TOKEN.into();
    TestServer::start_with(dir, cfg).await
}

/// swagger-cli: `VIGIL_SWAGGER_CLI`, else where `scripts/setup` puts it.
fn swagger_cli() -> PathBuf {
    std::env::var_os("VIGIL_SWAGGER_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/tools/openapi/node_modules/.bin/swagger-cli")
        })
}

/// The problems of `body` against `schema`, a schema of `doc`'s whose
/// `$ref`s point into its `components.schemas`: empty when it conforms.
fn violations(doc: &Value, schema: &Value, body: &Value) -> Vec<String> {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": { "schemas": doc["components"]["schemas"] },
        "allOf": [schema],
    });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the schema {schema} does not compile: {e}"));
    validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// The schema `doc` declares for `status` answered as `media` by
/// `method path`, if any.
fn declared_schema<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    status: &str,
    media: &str,
) -> Option<&'a Value> {
    let res = &doc["paths"][path][method.to_lowercase()]["responses"][status];
    let res = match res["$ref"].as_str() {
        Some(r) => resolve(doc, r)?,
        None => res,
    };
    let schema = &res["content"][media]["schema"];
    (!schema.is_null()).then_some(schema)
}

/// Resolves a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` anywhere under `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// What OpenAPI requires of the parts vigil uses, and what swagger-cli does
/// not check (path templates against path parameters); the problems found.
fn structural_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut bad = |what: String| problems.push(what);
    if !doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")) {
        bad(format!("openapi is {}", doc["openapi"]));
    }
    if !doc["info"]["title"].is_string() || !doc["info"]["version"].is_string() {
        bad("info needs a title and a version".into());
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    for r in all {
        if resolve(doc, r).is_none() {
            bad(format!("$ref {r} does not resolve"));
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    let mut ids = HashSet::new();
    let Some(paths) = doc["paths"].as_object() else {
        bad("no paths".into());
        return problems;
    };
    for (path, item) in paths {
        if !path.starts_with('/') {
            bad(format!("path {path} does not start with /"));
        }
        let templated: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(n, _)| n))
            .collect();
        for (method, op) in item.as_object().into_iter().flatten() {
            let at = format!("{method} {path}");
            if ![
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                bad(format!("{at}: not an HTTP method"));
                continue;
            }
            if let Some(id) = op["operationId"].as_str()
                && !ids.insert(id.to_owned())
            {
                bad(format!("{at}: operationId {id} twice"));
            }
            match op["responses"].as_object() {
                Some(r) if !r.is_empty() => {
                    for (code, res) in r {
                        let res = match res["$ref"].as_str() {
                            Some(r) => resolve(doc, r).unwrap_or(&Value::Null),
                            None => res,
                        };
                        if !res["description"].is_string() {
                            bad(format!("{at}: response {code} has no description"));
                        }
                    }
                }
                _ => bad(format!("{at}: no responses")),
            }
            let mut in_path = BTreeSet::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                if name.is_empty() {
                    bad(format!("{at}: a parameter without a name"));
                }
                match p["in"].as_str() {
                    Some("path") => {
                        in_path.insert(name);
                        if p["required"] != true {
                            bad(format!("{at}: path parameter {name} not required"));
                        }
                    }
                    Some("query" | "header" | "cookie") => {}
                    other => bad(format!("{at}: parameter {name} is in {other:?}")),
                }
                if !p["schema"]["type"].is_string() && !p["schema"]["oneOf"].is_array() {
                    bad(format!("{at}: parameter {name} has no schema type"));
                }
            }
            if in_path != templated {
                bad(format!(
                    "{at}: path parameters {in_path:?}, template {templated:?}"
                ));
            }
            for req in op["security"].as_array().into_iter().flatten() {
                for scheme in req.as_object().into_iter().flatten().map(|(k, _)| k) {
                    if !schemes[scheme].is_object() {
                        bad(format!("{at}: unknown security scheme {scheme}"));
                    }
                }
            }
        }
    }
    problems
}

#[actix_rt::test]
async fn openapi_document_describes_exactly_the_route_table() {
    let s = start().await;
    let mut res = s
        .client()
        .get(s.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers().get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("application/json"), "{ct}");
    let body = res.body().limit(1 << 20).await.unwrap();
    let doc: Value = serde_json::from_slice(&body).expect("the document is JSON");

    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["title"], "vigil");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let problems = structural_problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}");

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|e| (e.method.as_str().to_owned(), e.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    for e in ENDPOINTS.iter().filter(|e| e.admin) {
        let op = &doc["paths"][e.path][e.method.as_str().to_lowercase()];
        assert_eq!(
            op["security"][0]["bearerAuth"],
            Value::Array(vec![]),
            "{}",
            e.path
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
    }

    let file = s.dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let cli = swagger_cli();
    let out = Command::new(&cli)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/setup", cli.display()));
    assert!(
        out.status.success(),
        "swagger-cli: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}

/// Every GET the table lists without path parameters is served: never a 404
/// or 405; a 2xx carries a media type the document names; a 400 can only
/// be a required parameter the document says is required (or, for the
/// WebSocket, the missing upgrade).
#[actix_rt::test]
async fn every_parameterless_get_is_served_as_documented() {
    let s = start().await;
    s.wait_for("a reading", Duration::from_secs(10), async |s| {
        s.get_ok("/api/readings?limit=1").await["count"] == 1
    })
    .await;
    let doc = s.get_ok("/api/openapi.json").await;
    let gets: Vec<&Endpoint> = ENDPOINTS
        .iter()
        .filter(|e| e.method == Method::Get && e.path_names().is_empty())
        .collect();
    assert!(gets.len() > 10);
    let mut validated = 0;
    for e in gets {
        let mut req = s.client().get(s.url(e.path));
        if e.admin {
            req = req.insert_header(("Authorization", format!("Bearer {TOKEN}")));
        }
        let mut res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let essence = ct.split(';').next().unwrap_or_default().trim().to_owned();
        let body = res.body().limit(50 << 20).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(![404, 405].contains(&status), "GET {}: {status}", e.path);
        match e.answer {
            Answer::Upgrade => assert_eq!(status, 400, "GET {}: {body}", e.path),
            Answer::Body {
                status: ok, media, ..
            } => {
                if status == 400 {
                    let parameter = body["error"]["parameter"].as_str().unwrap_or_default();
                    assert!(
                        e.params
                            .iter()
                            .any(|p| p.name == parameter && p.required && p.location == In::Query),
                        "GET {}: 400 for `{parameter}`, not a required parameter",
                        e.path
                    );
                } else {
                    assert_eq!(status, ok, "GET {}: {body}", e.path);
                    assert!(media.contains(&essence.as_str()), "GET {}: {ct}", e.path);
                }
            }
        }
        if essence == "application/json" {
            let schema = declared_schema(&doc, "GET", e.path, &status.to_string(), &essence)
                .unwrap_or_else(|| panic!("GET {}: no schema for {status}", e.path));
            let problems = violations(&doc, schema, &body);
            assert!(
                problems.is_empty(),
                "GET {} {status}: {problems:#?}\n{body}",
                e.path
            );
            validated += 1;
        }
    }
    assert!(validated > 10, "{validated}");
    s.stop().await;
}

/// Every JSON answer the table declares has a named schema in
/// `components.schemas`, and a body that drifts from its type is refused:
/// a field of the wrong type, a missing field, an unknown error code.
#[actix_rt::test]
async fn every_json_body_is_typed_and_a_drifting_body_is_refused() {
    let s = start().await;
    let doc = s.get_ok("/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for e in ENDPOINTS {
        if let Answer::Body { status, media, .. } = e.answer
            && media.contains(&"application/json")
        {
            let schema = declared_schema(
                &doc,
                e.method.as_str(),
                e.path,
                &status.to_string(),
                "application/json",
            )
            .unwrap_or_else(|| panic!("{} {}: no schema", e.method.as_str(), e.path));
            let name = schema["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .unwrap_or_else(|| panic!("{}: {schema} is not a named type", e.path));
            let def = &doc["components"]["schemas"][name];
            assert!(
                def["properties"].is_object(),
                "{}: {name} has no properties: {def}",
                e.path
            );
        }
    }
    let schema = declared_schema(&doc, "GET", "/api/sensors", "200", "application/json").unwrap();
    let good = s.get_ok("/api/sensors").await;
    assert_eq!(violations(&doc, schema, &good), Vec::<String>::new());
    let mut wrong_type = good.clone();
    wrong_type["sensors"][0]["reads"] = json!("many");
    assert!(!violations(&doc, schema, &wrong_type).is_empty());
    let mut missing = good.clone();
    missing["sensors"][0]
        .as_object_mut()
        .unwrap()
        .remove("status");
    assert!(!violations(&doc, schema, &missing).is_empty());
    assert!(!violations(&doc, schema, &json!({})).is_empty());

    let error = &doc["components"]["schemas"]["Error"];
    let (status, body) = s.get("/api/readings?zzz=1").await;
    assert_eq!(status, 400);
    let error_ref = json!({ "$ref": "#/components/schemas/Error" });
    assert!(error.is_object());
    assert_eq!(violations(&doc, &error_ref, &body), Vec::<String>::new());
    let mut unknown = body.clone();
    unknown["error"]["code"] = json!("oops");
    assert!(!violations(&doc, &error_ref, &unknown).is_empty());

    let readings =
        declared_schema(&doc, "GET", "/api/readings", "200", "application/json").unwrap();
    let page = s.get_ok("/api/readings?limit=2").await;
    assert_eq!(violations(&doc, readings, &page), Vec::<String>::new());
    let mut extra = page.clone();
    extra["readings"][0]["colour"] = json!("red");
    assert!(!violations(&doc, readings, &extra).is_empty());
    s.stop().await;
}

/// Every status each route answers, provoked without a credential, with a
/// stray parameter, with unknown names and with the admin token, is one
/// its operation declares, with the body the declaration says.
#[actix_rt::test]
async fn every_status_a_route_answers_is_declared_with_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, SENSOR);
    cfg.server.admin_token = TOKEN.into();
    cfg.server.viewer_token = "v13w".into();
    let s = TestServer::start_with(dir, cfg).await;
    let client = awc::Client::builder().disable_redirects().finish();
    let mut res = client
        .get(s.url("/api/openapi.json"))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&res.body().limit(1 << 20).await.unwrap()).unwrap();
    let mut seen = 0;
    let mut validated = 0;
    for e in ENDPOINTS {
        let op = &doc["paths"][e.path][e.method.as_str().to_lowercase()];
        let path = e.path_names().iter().fold(e.path.to_owned(), |p, n| {
            p.replace(&format!("{{{n}}}"), "99999")
        });
        let has_query = e.params.iter().any(|p| p.location == In::Query);
        let mut tries: Vec<(String, bool)> = vec![(path.clone(), false), (path.clone(), true)];
        if has_query {
            tries.push((format!("{path}?zzz=1"), true));
        }
        if e.params.iter().any(|p| p.name == "sensor") {
            tries.push((format!("{path}?sensor=nope"), true));
        }
        for (url, admin) in tries {
            let mut req = client.request(e.method.http(), s.url(&url));
            if admin {
                req = req.insert_header(("Authorization", format!("Bearer {TOKEN}")));
            }
            let mut res = req.send().await.unwrap();
            let status = res.status().as_u16().to_string();
            let ct = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let body = res.body().limit(50 << 20).await.unwrap();
            let at = format!(
                "{} {url} (admin: {admin}) answered {status}",
                e.method.as_str()
            );
            let declared = &op["responses"][&status];
            assert!(declared.is_object(), "{at}: not declared");
            seen += 1;
            let content = &declared["content"];
            if content.is_null() {
                assert!(body.is_empty(), "{at}: a body where none is declared");
                continue;
            }
            assert!(content[&ct].is_object(), "{at}: {ct} is not declared");
            if ct == "application/json" {
                let body: Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("{at}: not JSON ({e})"));
                let problems = violations(&doc, &content[&ct]["schema"], &body);
                assert!(problems.is_empty(), "{at}: {problems:#?}\n{body}");
                validated += 1;
            }
        }
    }
    assert!(seen > ENDPOINTS.len() * 2, "{seen}");
    assert!(validated > ENDPOINTS.len(), "{validated}");
    // A wrong login: the form again, with its declared status and type.
    let mut res = client
        .post(s.url("/login"))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body("token=wrong")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let declared = &doc["paths"]["/login"]["post"]["responses"]["401"]["content"]["text/html"];
    assert!(declared.is_object(), "POST /login 401 is declared as HTML");
    assert!(
        res.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let _ = res.body().await;
    s.stop().await;
}

/// The bounds the handlers enforce are in the document: a value just past
/// a declared maximum is refused, the maximum itself is not.
#[actix_rt::test]
async fn declared_bounds_are_the_enforced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, SENSOR);
    cfg.server.max_page_size = 250;
    let s = TestServer::start_with(dir, cfg).await;
    let doc = s.get_ok("/api/openapi.json").await;
    let schema_of = |path: &str, name: &str| {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    for (path, name, extra) in [
        ("/api/readings", "limit", ""),
        ("/api/alerts", "limit", ""),
        ("/api/series", "points", "&sensor=sim"),
    ] {
        let max = schema_of(path, name)["maximum"]
            .as_i64()
            .unwrap_or_else(|| panic!("{path} {name} has no maximum"));
        if path == "/api/readings" {
            assert_eq!(max, 250, "the configured page size");
        }
        let (status, _) = s.get(&format!("{path}?{name}={max}{extra}")).await;
        assert_eq!(status, 200, "{path} {name}={max}");
        let (status, body) = s.get(&format!("{path}?{name}={}{extra}", max + 1)).await;
        assert_eq!(
            (status, &body["error"]["parameter"]),
            (400, &Value::from(name))
        );
    }
    let since = schema_of("/api/alerts", "since");
    assert!(since["oneOf"].is_array(), "{since}");
    let id = &doc["paths"]["/api/alerts/{id}/ack"]["post"]["parameters"][0]["schema"];
    assert_eq!(id["maximum"], i64::MAX);
    s.stop().await;
}
