//! `GET /api/openapi.json`: the API as an OpenAPI 3.0.3 document, built from
//! the route table the server registers its routes from (`routes.rs` hands
//! it over), so the document describes exactly the routes there are.

use serde_json::{Map, Value as Json, json};

use super::endpoint::{Answer, Endpoint, In, Param, Type, Value};

/// The OpenAPI version the document follows.
pub const OPENAPI_VERSION: &str = "3.0.3";

/// The name of the security scheme admin operations require.
pub const BEARER: &str = "bearerAuth";

const ERROR_REF: &str = "#/components/responses/Error";

/// The whole document for `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Json {
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
            item.insert(e.method.as_str().to_ascii_lowercase(), operation(e));
        }
    }
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "vigil",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A supervised sensor runtime for Raspberry Pi appliances: \
                sensors, stored readings, alerts, pacing, guards and the live feed. \
                Every error is JSON with a code, a message and, for bad input, the \
                parameter at fault. Where an operation lists query parameters, any \
                other is refused with 400.",
            "license": { "name": "MIT OR Apache-2.0" },
        },
        "tags": tags.iter().map(|t| json!({ "name": t })).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <server.admin_token>`. With no \
                        token configured, admin operations answer only clients on \
                        loopback (403 for others).",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "enum": [
                                        "bad_parameter", "unauthorized", "forbidden",
                                        "not_found", "method_not_allowed", "conflict",
                                        "unavailable", "rate_limited",
                                    ],
                                },
                                "message": { "type": "string" },
                                "parameter": {
                                    "type": "string",
                                    "description": "The parameter at fault (bad_parameter).",
                                },
                            },
                        },
                    },
                },
            },
            "responses": {
                "Error": {
                    "description": "An error: 400 bad parameter, 401 / 403 not admitted, \
                        404 unknown sensor or thing, 409 conflict, 429 rate limited (with \
                        `Retry-After`), 503 a dependency cannot answer.",
                    "content": {
                        "application/json": {
                            "schema": { "$ref": "#/components/schemas/Error" },
                        },
                    },
                },
            },
        },
    })
}

fn operation(e: &Endpoint) -> Json {
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
            e.params.iter().map(parameter).collect::<Vec<_>>().into(),
        );
    }
    let mut responses = Map::new();
    match e.answer {
        Answer::Body { status, media } => {
            let schema = |m: &str| {
                if m == "application/json" {
                    json!({ "type": "object" })
                } else {
                    json!({ "type": "string" })
                }
            };
            let content: Map<String, Json> = media
                .iter()
                .map(|m| ((*m).to_owned(), json!({ "schema": schema(m) })))
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
    if e.admin {
        responses.insert("401".into(), json!({ "$ref": ERROR_REF }));
        responses.insert("403".into(), json!({ "$ref": ERROR_REF }));
        op.insert("security".into(), json!([{ BEARER: [] }]));
    }
    responses.insert("default".into(), json!({ "$ref": ERROR_REF }));
    op.insert("responses".into(), responses.into());
    op.into()
}

fn parameter(p: &Param) -> Json {
    let mut schema = Map::new();
    let ty = match p.ty {
        Type::String => "string",
        Type::Integer => "integer",
        Type::Number => "number",
        Type::Boolean => "boolean",
    };
    schema.insert("type".into(), json!(ty));
    if !p.choices.is_empty() {
        schema.insert("enum".into(), json!(p.choices));
    }
    if let Some(m) = p.minimum {
        schema.insert("minimum".into(), json!(m));
    }
    if let Some(m) = p.maximum {
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
    json!({
        "name": p.name,
        "in": match p.location {
            In::Query => "query",
            In::Path => "path",
        },
        "required": p.required,
        "description": p.description,
        "schema": schema,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::routes::ENDPOINTS;

    #[test]
    fn every_endpoint_is_an_operation_and_nothing_else_is() {
        let doc = document(ENDPOINTS);
        let mut ops = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops += 1;
                let e = ENDPOINTS
                    .iter()
                    .find(|e| e.path == path && e.method.as_str().eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} is not in the table"));
                assert_eq!(op["operationId"], e.id);
                assert_eq!(op["security"].is_array(), e.admin, "{path}");
            }
        }
        assert_eq!(ops, ENDPOINTS.len());
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn parameters_say_what_the_handlers_accept() {
        let doc = document(ENDPOINTS);
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
