//! The words the route table is written in: an [`Endpoint`] with its
//! method, [`Param`]s and [`Answer`]s. `routes.rs` lists the endpoints;
//! `openapi.rs` describes any list of them.

use actix_web::Route;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Paths anyone may request whatever tokens are set (the viewer gate lets
/// them through; the document declares no security for them).
pub const OPEN_PATHS: &[&str] = &["/health", "/login", "/logout"];

/// The HTTP methods vigil's routes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    pub fn http(self) -> actix_web::http::Method {
        match self {
            Method::Get => actix_web::http::Method::GET,
            Method::Post => actix_web::http::Method::POST,
        }
    }
}

/// Where a parameter is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Query,
    Path,
}

/// A parameter's type, as the handler parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Integer,
    Number,
    Boolean,
    /// A time: RFC 3339 or epoch milliseconds (a string either way).
    Time,
}

/// A parameter's default value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Str(&'static str),
    Int(i64),
    Bool(bool),
}

/// One query or path parameter an endpoint accepts.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub required: bool,
    pub ty: Type,
    pub description: &'static str,
    /// The only values accepted, when the handler takes a fixed set.
    pub choices: &'static [&'static str],
    pub default: Option<Value>,
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    /// The maximum is `server.max_page_size` (known only at run time).
    pub max_is_page_size: bool,
}

impl Param {
    /// An optional query parameter.
    pub const fn query(name: &'static str, ty: Type, description: &'static str) -> Param {
        Param {
            name,
            location: In::Query,
            required: false,
            ty,
            description,
            choices: &[],
            default: None,
            minimum: None,
            maximum: None,
            max_is_page_size: false,
        }
    }

    /// A path parameter (always required).
    pub const fn path(name: &'static str, ty: Type, description: &'static str) -> Param {
        Param {
            location: In::Path,
            required: true,
            ..Param::query(name, ty, description)
        }
    }

    pub const fn required(self) -> Param {
        Param {
            required: true,
            ..self
        }
    }

    pub const fn choices(self, choices: &'static [&'static str]) -> Param {
        Param { choices, ..self }
    }

    pub const fn default(self, value: Value) -> Param {
        Param {
            default: Some(value),
            ..self
        }
    }

    /// At most `server.max_page_size`.
    pub const fn at_most_page_size(self) -> Param {
        Param {
            max_is_page_size: true,
            ..self
        }
    }

    pub const fn range(self, minimum: Option<i64>, maximum: Option<i64>) -> Param {
        Param {
            minimum,
            maximum,
            ..self
        }
    }
}

/// The JSON Schema of a body: `schema::<T>` for the type `T` that
/// serialises (or parses) it. Called with the generator the document is
/// built with, so every named type lands once in `components.schemas`.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, as a `$ref` to its definition when it is a named type.
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a successful call answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// This status with a body of one of these media types; `schema` is the
    /// JSON body's (for `application/json`).
    Body {
        status: u16,
        media: &'static [&'static str],
        schema: Option<SchemaFn>,
    },
    /// A WebSocket upgrade: 101 Switching Protocols, then the live feed.
    Upgrade,
}

impl Answer {
    /// 200 with a JSON body of this schema.
    pub const fn json(schema: SchemaFn) -> Answer {
        Answer::Body {
            status: 200,
            media: &["application/json"],
            schema: Some(schema),
        }
    }
}

/// The body a call sends: its media type and the schema of the type the
/// handler parses it into.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub media: &'static str,
    pub schema: SchemaFn,
}

/// One route: a method on a path pattern, its handler, and its description.
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub method: Method,
    /// An actix pattern; `{name}` is a path parameter.
    pub path: &'static str,
    /// A unique name for the operation (OpenAPI `operationId`).
    pub id: &'static str,
    /// The area it belongs to (OpenAPI tag).
    pub tag: &'static str,
    pub summary: &'static str,
    /// More than the summary says; empty for nothing more.
    pub description: &'static str,
    pub params: &'static [Param],
    /// Needs admin authorisation: a bearer token, or loopback when no
    /// `server.admin_token` is configured (see `admin.rs`).
    pub admin: bool,
    pub answer: Answer,
    /// The request body, for operations that take one.
    pub request: Option<Request>,
    /// The handler, without a method guard: [`configure`] adds the guard
    /// for `method`, so the method is stated once.
    pub route: fn() -> Route,
}

impl Endpoint {
    /// The names in `{}` in the path pattern, in order.
    pub fn path_names(&self) -> Vec<&'static str> {
        self.path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(name, _)| name))
            .collect()
    }
}
