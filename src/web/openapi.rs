//! `GET /api/openapi.json`: the API as an OpenAPI 3.1 document, built from
//! the route table the server registers its routes from (`routes.rs` hands
//! it over), so the document describes exactly the routes there are. Every
//! JSON body's schema (JSON Schema 2020-12, which OpenAPI 3.1 speaks) is
//! derived with schemars from the Rust type that serialises or parses it,
//! named in the table; named types are defined once in
//! `components.schemas`, and referenced from there.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use super::endpoint::{Answer, Endpoint, In, Method, OPEN_PATHS, Param, Type, Value, schema};
use super::error::ErrorBody;

/// The OpenAPI version the document follows.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Where the document keeps its schemas, as a JSON pointer.
pub const SCHEMAS: &str = "/components/schemas";

/// The OpenAPI document, as `GET /api/openapi.json` serialises it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Document {
    /// The OpenAPI version (`3.1.0`).
    pub openapi: &'static str,
    pub info: Map<String, Json>,
    pub tags: Vec<Map<String, Json>>,
    pub paths: Map<String, Json>,
    pub components: Map<String, Json>,
}

/// A schema generator whose definitions go to `components.schemas`, for
/// bodies vigil serialises (`response`) or parses (`!response`).
fn generator(response: bool) -> SchemaGenerator {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = SCHEMAS.into();
        s.meta_schema = None;
    });
    if response {
        settings.for_serialize().into_generator()
    } else {
        settings.for_deserialize().into_generator()
    }
}

/// The name of the security scheme admin operations require.
pub const BEARER: &str = "bearerAuth";

const ERROR_REF: &str = "#/components/responses/Error";

/// The whole document for `endpoints`, on a server whose largest page is
/// `max_page_size` rows.
pub fn document(endpoints: &[Endpoint], max_page_size: u32) -> Document {
    let mut responses = generator(true);
    let mut requests = generator(false);
    let error = schema::<ErrorBody>(&mut responses);
    let mut paths = Map::new();
    let mut tags: Vec<&str> = Vec::new();
    for e in endpoints {
        if !tags.contains(&e.tag) {
            tags.push(e.tag);
        }
        let item = paths
            .entry(e.path)
            .or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(item) = item {
            item.insert(
                e.method.as_str().to_ascii_lowercase(),
                operation(e, max_page_size, &mut responses, &mut requests, &error),
            );
        }
    }
    let mut schemas = responses.take_definitions(true);
    for (name, schema) in requests.take_definitions(true) {
        // A type both parsed and answered is defined once: its two
        // contracts must agree (a unit test checks no table has them differ).
        let same = schemas.get(&name).is_none_or(|s| *s == schema);
        debug_assert!(same, "{name} differs as a request and as a response");
        schemas.entry(name).or_insert(schema);
    }
    let json = |v: Json| match v {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    Document {
        openapi: OPENAPI_VERSION,
        info: json(json!({
            "title": "vigil",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A supervised sensor runtime for Raspberry Pi appliances: \
                sensors, stored readings, alerts, pacing, guards and the live feed. \
                Every error is JSON with a code, a message and, for bad input, the \
                parameter at fault. Where an operation lists query parameters, any \
                other is refused with 400.",
            "license": { "name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0" },
        })),
        tags: tags.iter().map(|t| json(json!({ "name": t }))).collect(),
        paths,
        components: json(json!({
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>`. Admin operations need \
                        `server.admin_token` (with none configured they answer only clients \
                        on this host connecting directly, 403 for others). With \
                        `server.viewer_token` set every other operation but `/health` and \
                        the login page needs the viewer or admin token, as a bearer or as \
                        the session cookie `/login` sets.",
                },
            },
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "An error: 400 bad parameter, 401 / 403 not admitted, \
                        404 unknown sensor or thing, 409 conflict, 429 rate limited (with \
                        `Retry-After`), 503 a dependency cannot answer.",
                    "content": {
                        "application/json": {
                            "schema": error,
                        },
                    },
                },
            },
        })),
    }
}

/// The errors `e` can answer besides its success: (status, why).
pub fn error_statuses(e: &Endpoint) -> Vec<(u16, &'static str)> {
    let mut out = Vec::new();
    let has_query = e.params.iter().any(|p| p.location == In::Query);
    let has_path = e.params.iter().any(|p| p.location == In::Path);
    if has_query || has_path || e.method == Method::Post || matches!(e.answer, Answer::Upgrade) {
        out.push((
            400,
            "A parameter, the body or the request is malformed (named in `parameter`).",
        ));
    }
    let open = OPEN_PATHS.contains(&e.path);
    let login = e.path == "/login" && e.method == Method::Post;
    if !open || e.admin || login {
        out.push((
            401,
            "No or a wrong token (or session), where one is needed.",
        ));
    }
    if e.admin {
        out.push((
            403,
            "The viewer token, or a non-local client while no admin token is set.",
        ));
    }
    if has_path
        || e.params
            .iter()
            .any(|p| p.name == "sensor" || p.name == "metric")
    {
        out.push((
            404,
            "The sensor, metric, alert or entry named does not exist.",
        ));
    }
    if e.admin && e.method == Method::Post {
        out.push((
            409,
            "Cannot apply in the current state: a change needing a restart without \
             `accept_restart`, nothing to reload, a job already running.",
        ));
    }
    if e.request.is_some() {
        out.push((
            408,
            "The body did not arrive within `server.connections.body_timeout_ms`.",
        ));
        out.push((413, "The body is larger than this endpoint takes."));
    }
    out.push((429, "Rate limited; `Retry-After` says when to try again."));
    if e.path != "/login" && e.path != "/logout" {
        out.push((
            503,
            "A dependency (database, supervisor) cannot answer right now.",
        ));
    }
    out
}

fn operation(
    e: &Endpoint,
    max_page_size: u32,
    gen_out: &mut SchemaGenerator,
    gen_in: &mut SchemaGenerator,
    error: &schemars::Schema,
) -> Json {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(e.id));
    op.insert("tags".into(), json!([e.tag]));
    op.insert("summary".into(), json!(e.summary));
    if !e.description.is_empty() {
        op.insert("description".into(), json!(e.description));
    }
    if !e.params.is_empty() {
        op.insert(
            "parameters".into(),
            e.params
                .iter()
                .map(|p| parameter(p, max_page_size))
                .collect::<Vec<_>>()
                .into(),
        );
    }
    if let Some(request) = e.request {
        op.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": { request.media: { "schema": (request.schema)(gen_in) } },
            }),
        );
    }
    let mut responses = Map::new();
    match e.answer {
        Answer::Body {
            status,
            media,
            schema,
        } => {
            let mut schema_of = |m: &str| match schema {
                Some(f) if m == "application/json" => (f)(gen_out).to_value(),
                _ => json!({ "type": "string" }),
            };
            let content: Map<String, Json> = media
                .iter()
                .map(|m| ((*m).to_owned(), json!({ "schema": schema_of(m) })))
                .collect();
            let mut response = json!({ "description": e.summary });
            if !content.is_empty() {
                response["content"] = content.into();
            }
            responses.insert(status.to_string(), response);
        }
        Answer::Upgrade => {
            responses.insert(
                "101".into(),
                json!({ "description": "Switching Protocols: the connection is a WebSocket" }),
            );
        }
    }
    for (status, why) in error_statuses(e) {
        let same_body = e.path == "/health" && status == 503;
        let html = e.path == "/login" && e.method == Method::Post;
        let response = if same_body {
            let mut r = responses["200"].clone();
            r["description"] =
                json!("Degraded: the same body, `status` `degraded`, with the reasons.");
            r
        } else if html {
            json!({ "description": why, "content": { "text/html": { "schema": { "type": "string" } } } })
        } else {
            json!({
                "description": why,
                "content": { "application/json": { "schema": error } },
            })
        };
        responses.insert(status.to_string(), response);
    }
    if e.admin {
        op.insert("security".into(), json!([{ BEARER: [] }]));
    } else if !OPEN_PATHS.contains(&e.path) {
        // The viewer token, or nothing while none is configured.
        op.insert("security".into(), json!([{ BEARER: [] }, {}]));
    }
    responses.insert("default".into(), json!({ "$ref": ERROR_REF }));
    op.insert("responses".into(), responses.into());
    op.into()
}

fn parameter(p: &Param, max_page_size: u32) -> Json {
    let mut schema = Map::new();
    let ty = match p.ty {
        Type::String | Type::Time => "string",
        Type::Integer => "integer",
        Type::Number => "number",
        Type::Boolean => "boolean",
    };
    if p.ty == Type::Time {
        // RFC 3339, or epoch milliseconds (digits, optionally signed).
        schema.insert(
            "oneOf".into(),
            json!([
                { "type": "string", "format": "date-time" },
                { "type": "string", "pattern": "^[+-]?[0-9]{1,15}$" },
            ]),
        );
    } else {
        schema.insert("type".into(), json!(ty));
    }
    if p.ty == Type::Integer {
        schema.insert("format".into(), json!("int64"));
    }
    if p.required && matches!(p.ty, Type::String) {
        schema.insert("minLength".into(), json!(1));
    }
    let maximum = if p.max_is_page_size {
        Some(i64::from(max_page_size))
    } else {
        p.maximum
    };
    if !p.choices.is_empty() {
        schema.insert("enum".into(), json!(p.choices));
    }
    if let Some(m) = p.minimum {
        schema.insert("minimum".into(), json!(m));
    }
    if let Some(m) = maximum {
        schema.insert("maximum".into(), json!(m));
    }
    if let Some(d) = p.default {
        let d = match d {
            Value::Str(s) => json!(s),
            Value::Int(n) => json!(n),
            Value::Bool(b) => json!(b),
        };
        schema.insert("default".into(), d);
    }
    let mut param = json!({
        "name": p.name,
        "in": match p.location {
            In::Query => "query",
            In::Path => "path",
        },
        "required": p.required,
        "description": p.description,
        "schema": schema,
    });
    if p.location == In::Query && !p.required {
        // An empty value (`?state=`) counts as absent.
        param["allowEmptyValue"] = json!(true);
    }
    param
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::routes::ENDPOINTS;

    #[test]
    fn every_endpoint_is_an_operation_and_nothing_else_is() {
        let doc = serde_json::to_value(document(ENDPOINTS, 1000)).unwrap();
        let mut ops = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops += 1;
                let e = ENDPOINTS
                    .iter()
                    .find(|e| e.path == path && e.method.as_str().eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} is not in the table"));
                assert_eq!(op["operationId"], e.id);
                // Admin: the bearer, required. Reads: the bearer, or nothing
                // while no viewer token is set. Open paths: nothing.
                let security = match (e.admin, OPEN_PATHS.contains(&e.path)) {
                    (true, _) => json!([{ BEARER: [] }]),
                    (false, false) => json!([{ BEARER: [] }, {}]),
                    (false, true) => Json::Null,
                };
                assert_eq!(op["security"], security, "{path}");
                let reached = !OPEN_PATHS.contains(&e.path) || e.id == "login";
                assert_eq!(
                    op["responses"]["401"].is_object(),
                    reached,
                    "{method} {path}"
                );
                assert!(op["responses"]["429"].is_object(), "{method} {path}");
            }
        }
        assert_eq!(ops, ENDPOINTS.len());
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    /// Every JSON answer and request body names its type, and the types
    /// are defined once, answers and requests agreeing (the document's
    /// builder asserts that in debug builds).
    #[test]
    fn every_json_body_names_its_type() {
        for e in ENDPOINTS {
            if let Answer::Body { media, schema, .. } = e.answer {
                assert_eq!(
                    media.contains(&"application/json"),
                    schema.is_some(),
                    "{} {}",
                    e.method.as_str(),
                    e.path
                );
            }
        }
        let doc = serde_json::to_value(document(ENDPOINTS, 1000)).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "Error",
            "Health",
            "SensorsView",
            "PageView",
            "SensorEntry",
            "LoginForm",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        let text = doc.to_string();
        assert!(
            !text.contains("\"$defs\""),
            "definitions left outside components"
        );
        let put = &doc["paths"]["/api/admin/config/sensors"]["post"]["requestBody"];
        assert_eq!(
            put["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/SensorEntry"
        );
        let login = &doc["paths"]["/login"]["post"]["requestBody"]["content"];
        assert!(login["application/x-www-form-urlencoded"]["schema"].is_object());
    }

    #[test]
    fn parameters_say_what_the_handlers_accept() {
        let doc = serde_json::to_value(document(ENDPOINTS, 1000)).unwrap();
        let format = &doc["paths"]["/api/readings/export"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "format")
            .unwrap()["schema"];
        assert_eq!(format["enum"], json!(["csv", "ndjson"]));
        assert_eq!(format["default"], "csv");
        let id = &doc["paths"]["/api/alerts/{id}/ack"]["post"]["parameters"][0];
        assert_eq!(
            (&id["in"], &id["required"], &id["schema"]["type"]),
            (&json!("path"), &json!(true), &json!("integer"))
        );
        let sensor = &doc["paths"]["/api/series"]["get"]["parameters"][0];
        assert_eq!(
            (&sensor["name"], &sensor["required"]),
            (&json!("sensor"), &json!(true))
        );
    }
}
