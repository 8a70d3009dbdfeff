//! The one route table. Every endpoint vigil serves is an entry of
//! [`ENDPOINTS`], with its handler and what a client needs to know about it
//! (parameters, admin auth, what it answers). [`configure`] registers the
//! server's routes from it and `openapi.rs` describes them from it, so the
//! server and its OpenAPI document cannot disagree.
//!
//! The dashboard's page and assets are in the table, and so in the document,
//! like every other route: one mechanism, no unlisted routes.

use std::collections::HashSet;

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

pub use super::endpoint::{Answer, Endpoint, In, Method, Param, Request, Type, Value, schema};
use super::error::ApiError;
use super::{
    admin_storage, alerts, config_admin, dashboard, export, guards, health, live, login, metrics,
    openapi, pacing, performance, readings, reload, series, status,
};

const SENSOR: Param = Param::query(
    "sensor",
    Type::String,
    "Only this sensor (404 if it is neither configured nor stored).",
);
const METRIC: Param = Param::query(
    "metric",
    Type::String,
    "Only this metric of `sensor` (a 400 without `sensor`).",
);
const FROM: Param = Param::query(
    "from",
    Type::Time,
    "Start of the range, inclusive: an RFC 3339 time or epoch milliseconds.",
);
const TO: Param = Param::query(
    "to",
    Type::Time,
    "End of the range, exclusive: an RFC 3339 time or epoch milliseconds.",
);

const DRY_RUN: Param = Param::query(
    "dry_run",
    Type::Boolean,
    "Validate and report what would happen; write and apply nothing.",
)
.default(Value::Bool(false));
const ACCEPT_RESTART: Param = Param::query(
    "accept_restart",
    Type::Boolean,
    "Save even though part of the change takes effect only after a restart.",
)
.default(Value::Bool(false));
const EDIT: &[Param] = &[DRY_RUN, ACCEPT_RESTART];

/// Every route the server has.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::Get,
        path: "/",
        id: "dashboard",
        tag: "dashboard",
        summary: "The dashboard page",
        description: "Served with an ETag; a matching `If-None-Match` answers 304.",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/html"],
            schema: None,
        },
        request: None,
        route: || web::to(dashboard::page),
    },
    Endpoint {
        method: Method::Get,
        path: "/assets/app.js",
        id: "dashboardScript",
        tag: "dashboard",
        summary: "The dashboard's script",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/javascript"],
            schema: None,
        },
        request: None,
        route: || web::to(dashboard::script),
    },
    Endpoint {
        method: Method::Get,
        path: "/assets/style.css",
        id: "dashboardStyle",
        tag: "dashboard",
        summary: "The dashboard's style sheet",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/css"],
            schema: None,
        },
        request: None,
        route: || web::to(dashboard::style),
    },
    Endpoint {
        method: Method::Get,
        path: "/assets/vendor/uplot.js",
        id: "chartScript",
        tag: "dashboard",
        summary: "The chart library the dashboard draws with (uPlot, MIT)",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/javascript"],
            schema: None,
        },
        request: None,
        route: || web::to(dashboard::chart_script),
    },
    Endpoint {
        method: Method::Get,
        path: "/assets/vendor/uplot.css",
        id: "chartStyle",
        tag: "dashboard",
        summary: "The chart library's style sheet",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/css"],
            schema: None,
        },
        request: None,
        route: || web::to(dashboard::chart_style),
    },
    Endpoint {
        method: Method::Get,
        path: "/health",
        id: "health",
        tag: "status",
        summary: "Liveness and readiness, with the reasons",
        description: "200 when the database is writable and no essential part of the \
                      supervision tree has been given up; otherwise 503 with the same body, \
                      `status` `degraded` and the `reasons`.",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<health::Health>),
        request: None,
        route: || web::to(health::health),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/sensors",
        id: "listSensors",
        tag: "status",
        summary: "Every configured sensor with its status and latest values",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<status::SensorsView<'static>>),
        request: None,
        route: || web::to(status::sensors),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/supervisor",
        id: "supervisor",
        tag: "status",
        summary: "The supervision tree, the restart policy and recent supervision events",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<status::SupervisorView>),
        request: None,
        route: || web::to(status::supervisor),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/readings",
        id: "listReadings",
        tag: "readings",
        summary: "Stored readings, paginated by cursor",
        description: "Following `next_cursor` until it is null returns every row of the \
                      range exactly once, even while new readings arrive.",
        params: &[
            SENSOR,
            METRIC,
            FROM,
            TO,
            Param::query(
                "limit",
                Type::Integer,
                "Rows per page, from 1 to `server.max_page_size` (1000 by default).",
            )
            .range(Some(1), None)
            .at_most_page_size()
            .default(Value::Int(readings::DEFAULT_LIMIT as i64)),
            Param::query("order", Type::String, "Time order of the rows.")
                .choices(readings::ORDERS)
                .default(Value::Str(readings::ORDERS[0])),
            Param::query(
                "cursor",
                Type::String,
                "The `next_cursor` of the previous page.",
            ),
            Param::query(
                "fields",
                Type::String,
                "Comma-separated subset of `sensor,metric,unit,value,ts,ts_ms`: the fields \
                 each row carries (all by default).",
            ),
        ],
        admin: false,
        answer: Answer::json(schema::<readings::PageView<'static>>),
        request: None,
        route: || web::to(readings::readings),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/readings/export",
        id: "exportReadings",
        tag: "readings",
        summary: "Raw readings of a range as a CSV or NDJSON file, streamed",
        description: "In time order, in a chunked body; an error after the first chunk cuts \
                      the body short. Without `to`, the export ends at the request.",
        params: &[
            Param::query(
                "sensor",
                Type::String,
                "Only this sensor (all sensors without it; 404 if unknown).",
            ),
            METRIC,
            FROM,
            TO,
            Param::query(
                "format",
                Type::String,
                "`csv` (`ts,ts_ms,sensor,metric,unit,value`) or `ndjson` (one JSON object \
                 per line).",
            )
            .choices(export::FORMATS)
            .default(Value::Str(export::FORMATS[0])),
        ],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/csv", "application/x-ndjson"],
            schema: None,
        },
        request: None,
        route: || web::to(export::export),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/series",
        id: "series",
        tag: "readings",
        summary: "A sensor's readings over a range as chart buckets",
        description: "Each metric of the sensor (or one) as at most `points` buckets (count, \
                      min, max, mean), from the cheapest storage tier with the resolution \
                      asked for; `tier` names it.",
        params: &[
            Param::query(
                "sensor",
                Type::String,
                "The sensor (404 if it is neither configured nor stored).",
            )
            .required(),
            Param::query(
                "metric",
                Type::String,
                "Only this metric (404 if the sensor stored none by that name).",
            ),
            Param::query(
                "from",
                Type::Time,
                "Start of the range: an RFC 3339 time or epoch milliseconds; by default \
                 24 hours before `to`.",
            ),
            Param::query(
                "to",
                Type::Time,
                "End of the range: an RFC 3339 time or epoch milliseconds; by default now.",
            ),
            Param::query("points", Type::Integer, "At most this many buckets.")
                .range(Some(1), Some(series::MAX_POINTS as i64))
                .default(Value::Int(series::DEFAULT_POINTS as i64)),
        ],
        admin: false,
        answer: Answer::json(schema::<series::SeriesBody>),
        request: None,
        route: || web::to(series::series),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/pacing",
        id: "pacing",
        tag: "status",
        summary: "The pacing level, why, and what the thermal and load monitors see",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<pacing::PacingView<'static>>),
        request: None,
        route: || web::to(pacing::pacing),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/live",
        id: "liveStats",
        tag: "live",
        summary: "Live sessions, open connections and what the feed has done",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<live::LiveView>),
        request: None,
        route: || web::to(live::stats),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/guards",
        id: "guards",
        tag: "status",
        summary: "Circuit breakers, rate limits and the memory guard",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<crate::guard::GuardsView>),
        request: None,
        route: || web::to(guards::guards),
    },
    Endpoint {
        method: Method::Get,
        path: "/ws",
        id: "liveFeed",
        tag: "live",
        summary: "The live feed: readings, alerts and status over a WebSocket",
        description: "A WebSocket upgrade (400 without one). Browsers from another origin \
                      need `live.allowed_origins`; beyond `live.max_sessions` the answer \
                      is 503.",
        params: &[],
        admin: false,
        answer: Answer::Upgrade,
        request: None,
        route: || web::to(live::ws),
    },
    Endpoint {
        method: Method::Get,
        path: "/metrics",
        id: "metrics",
        tag: "performance",
        summary: "Every figure for Prometheus (text format 0.0.4)",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/plain"],
            schema: None,
        },
        request: None,
        route: || web::to(metrics::metrics),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/performance/stats",
        id: "performanceStats",
        tag: "performance",
        summary: "Latency of every operation, slow queries, process and database figures",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<performance::StatsView>),
        request: None,
        route: || web::to(performance::stats),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/performance/recommendations",
        id: "performanceRecommendations",
        tag: "performance",
        summary: "Advice derived from measured evidence, and the evidence",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<performance::RecommendationsView<'static>>),
        request: None,
        route: || web::to(performance::recommendations),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/alerts",
        id: "listAlerts",
        tag: "alerts",
        summary: "Alerts, newest first",
        description: "",
        params: &[
            Param::query("state", Type::String, "Only alerts in this state.")
                .choices(alerts::STATES),
            Param::query("severity", Type::String, "Only alerts of this severity.")
                .choices(alerts::SEVERITIES),
            Param::query(
                "since",
                Type::Time,
                "Only alerts changed since this time: RFC 3339 or epoch milliseconds.",
            ),
            Param::query("limit", Type::Integer, "At most this many alerts.")
                .range(Some(1), Some(alerts::MAX_LIMIT as i64))
                .default(Value::Int(alerts::DEFAULT_LIMIT as i64)),
        ],
        admin: false,
        answer: Answer::json(schema::<alerts::AlertsPage>),
        request: None,
        route: || web::to(alerts::list),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/alerts/rules",
        id: "alertRules",
        tag: "alerts",
        summary: "The rules in force, whether each fires, and webhook delivery",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<crate::alerts::RulesView>),
        request: None,
        route: || web::to(alerts::rules),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/alerts/{id}/ack",
        id: "ackAlert",
        tag: "alerts",
        summary: "Acknowledge an alert",
        description: "",
        params: &[
            Param::path("id", Type::Integer, "The alert's id.").range(Some(0), Some(i64::MAX))
        ],
        admin: true,
        answer: Answer::json(schema::<crate::vocab::alert::AlertView>),
        request: None,
        route: || web::to(alerts::ack),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/reload",
        id: "reload",
        tag: "admin",
        summary: "Re-read the config file's alert rules and webhooks",
        description: "An invalid file is refused with 400 and the old rules stay. An \
                      expensive operation, limited by `guard.admin`.",
        params: &[],
        admin: true,
        answer: Answer::json(schema::<reload::ReloadReport>),
        request: None,
        route: || web::to(reload::reload),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/admin/config",
        id: "configView",
        tag: "admin",
        summary: "The config file's sensors and alert rules, for editing",
        description: "`path` is the file edits are written to; `exists` is false while vigil \
                      runs on its embedded defaults (the first edit then creates the file).",
        params: &[],
        admin: true,
        answer: Answer::json(schema::<config_admin::ConfigView>),
        request: None,
        route: || web::to(config_admin::view),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/config/sensors",
        id: "putSensor",
        tag: "admin",
        summary: "Add a sensor, or replace the one of that name (also to disable it)",
        description: "The body is one `[[sensors]]` entry as JSON (`name`, `kind`, ..., \
                      `options`). It is validated with the file's rules (a 400 names the key), \
                      written to the config file with its comments kept (atomically), and \
                      applied live: only this sensor's actor is (re)started or stopped. A \
                      change needing a restart is refused (409, nothing saved) unless \
                      `accept_restart=true`.",
        params: EDIT,
        admin: true,
        answer: Answer::json(schema::<config_admin::EditReport>),
        request: Some(Request {
            media: "application/json",
            schema: schema::<config_admin::SensorEntry>,
        }),
        route: || web::to(config_admin::put_sensor),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/config/sensors/{name}/remove",
        id: "removeSensor",
        tag: "admin",
        summary: "Remove a sensor from the config file and stop it",
        description: "A rule that still watches the sensor makes this a 400 naming the rule.",
        params: &[
            Param::path("name", Type::String, "The sensor's name.").required(),
            DRY_RUN,
            ACCEPT_RESTART,
        ],
        admin: true,
        answer: Answer::json(schema::<config_admin::EditReport>),
        request: None,
        route: || web::to(config_admin::remove_sensor),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/config/rules",
        id: "putRule",
        tag: "admin",
        summary: "Add an alert rule, or replace the one of that name",
        description: "The body is one `[[alerts.rules]]` entry as JSON; validated, written \
                      and applied like a sensor.",
        params: EDIT,
        admin: true,
        answer: Answer::json(schema::<config_admin::EditReport>),
        request: Some(Request {
            media: "application/json",
            schema: schema::<config_admin::RuleEntry>,
        }),
        route: || web::to(config_admin::put_rule),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/config/rules/{name}/remove",
        id: "removeRule",
        tag: "admin",
        summary: "Remove an alert rule from the config file",
        description: "",
        params: &[
            Param::path("name", Type::String, "The rule's name.").required(),
            DRY_RUN,
            ACCEPT_RESTART,
        ],
        admin: true,
        answer: Answer::json(schema::<config_admin::EditReport>),
        request: None,
        route: || web::to(config_admin::remove_rule),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/restart/{child}",
        id: "restartChild",
        tag: "admin",
        summary: "Restart a supervised child now",
        description: "A running child is stopped and started afresh; a given-up one is \
                      started again with its restart history cleared. An expensive \
                      operation, limited by `guard.admin`.",
        params: &[Param::path(
            "child",
            Type::String,
            "The child's name: a sensor, `writer`, `live`, `sensors`, ...",
        )],
        admin: true,
        answer: Answer::Body {
            status: 202,
            media: &["application/json"],
            schema: Some(schema::<status::Restarting>),
        },
        request: None,
        route: || web::to(status::restart),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/optimize",
        id: "optimize",
        tag: "admin",
        summary: "Optimize the database between two commits",
        description: "Statistics, `PRAGMA optimize`, an incremental vacuum and a WAL \
                      checkpoint; a full optimize stops ingestion while it runs.",
        params: &[
            Param::query("full", Type::Boolean, "Also a full `VACUUM` and `REINDEX`.")
                .default(Value::Bool(false)),
        ],
        admin: true,
        answer: Answer::json(schema::<crate::storage::maintenance::OptimizeReport>),
        request: None,
        route: || web::to(admin_storage::optimize),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/backup",
        id: "backup",
        tag: "admin",
        summary: "Write a backup of the database",
        description: "",
        params: &[],
        admin: true,
        answer: Answer::json(schema::<crate::storage::maintenance::BackupReport>),
        request: None,
        route: || web::to(admin_storage::backup),
    },
    Endpoint {
        method: Method::Post,
        path: "/api/admin/retention",
        id: "retention",
        tag: "admin",
        summary: "Run retention and the size cap now",
        description: "",
        params: &[],
        admin: true,
        answer: Answer::json(schema::<crate::storage::retention::RetentionReport>),
        request: None,
        route: || web::to(admin_storage::retention),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/storage",
        id: "storage",
        tag: "storage",
        summary: "Database figures, retention settings and the storage jobs' last outcomes",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<admin_storage::Storage>),
        request: None,
        route: || web::to(admin_storage::storage),
    },
    Endpoint {
        method: Method::Get,
        path: "/login",
        id: "loginPage",
        tag: "access",
        summary: "The login page: a form for the viewer or admin token",
        description: "Open whatever tokens are set.",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 200,
            media: &["text/html"],
            schema: None,
        },
        request: None,
        route: || web::to(login::form),
    },
    Endpoint {
        method: Method::Post,
        path: "/login",
        id: "login",
        tag: "access",
        summary: "Exchange the viewer or admin token for a session cookie",
        description: "A form (`application/x-www-form-urlencoded`) with `token`. Right: 303 to \
                      the dashboard with an HttpOnly, SameSite=Strict session cookie (Secure \
                      over HTTPS) lasting `server.session_ttl_secs`. Wrong: the form again \
                      with 401; no token: 400; after five failures in a minute from one \
                      client: 429 with `Retry-After` until the minute ends.",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 303,
            media: &[],
            schema: None,
        },
        request: Some(Request {
            media: "application/x-www-form-urlencoded",
            schema: schema::<login::LoginForm>,
        }),
        route: || web::to(login::login),
    },
    Endpoint {
        method: Method::Post,
        path: "/logout",
        id: "logout",
        tag: "access",
        summary: "End the session and clear its cookie",
        description: "303 to the login page.",
        params: &[],
        admin: false,
        answer: Answer::Body {
            status: 303,
            media: &[],
            schema: None,
        },
        request: None,
        route: || web::to(login::logout),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/session",
        id: "session",
        tag: "access",
        summary: "This client's access: logged in or not, and whether the data is open",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<login::SessionView>),
        request: None,
        route: || web::to(login::session),
    },
    Endpoint {
        method: Method::Get,
        path: "/api/openapi.json",
        id: "openapi",
        tag: "meta",
        summary: "This API as an OpenAPI document, generated from the route table",
        description: "",
        params: &[],
        admin: false,
        answer: Answer::json(schema::<openapi::Document>),
        request: None,
        route: || web::to(openapi_json),
    },
];

/// `GET /api/openapi.json`: the document of [`ENDPOINTS`] with this
/// server's page size.
async fn openapi_json(state: web::Data<super::AppState>) -> HttpResponse {
    HttpResponse::Ok().json(openapi::document(ENDPOINTS, state.server.max_page_size))
}

/// Registers every route of [`ENDPOINTS`]: one resource per path, holding
/// each method's route, and HEAD wherever GET is (the same answer without
/// its body, as HTTP asks and uptime probes use); other methods on a known
/// path get a JSON 405 naming the allowed ones (and an `Allow` header).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut seen = HashSet::new();
    for first in ENDPOINTS {
        if !seen.insert(first.path) {
            continue;
        }
        let on_path: Vec<&Endpoint> = ENDPOINTS.iter().filter(|e| e.path == first.path).collect();
        let mut methods: Vec<&str> = on_path.iter().map(|e| e.method.as_str()).collect();
        if on_path.iter().any(|e| e.method == Method::Get) {
            methods.push("HEAD");
        }
        let allow = methods.join(", ");
        let mut resource = web::resource(first.path);
        for e in on_path {
            resource = resource.route((e.route)().method(e.method.http()));
            if e.method == Method::Get {
                resource = resource.route(
                    (e.route)()
                        .method(actix_web::http::Method::HEAD)
                        .wrap(actix_web::middleware::from_fn(head_without_stream)),
                );
            }
        }
        cfg.service(resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move { method_not_allowed(&req, &allow) }
        })));
    }
}

/// HEAD's answer: GET's status and headers. A streamed body (an export)
/// is dropped unread, since the dispatcher would otherwise pull the whole
/// stream only to discard it; a body already in memory is left for the
/// dispatcher, which sends its length and not its bytes.
async fn head_without_stream(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<EitherBody<impl MessageBody, actix_web::body::None>>,
    actix_web::Error,
> {
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| {
        if matches!(body.size(), BodySize::Stream) {
            EitherBody::right(actix_web::body::None::new())
        } else {
            EitherBody::left(body)
        }
    }))
}

fn method_not_allowed(req: &HttpRequest, allow: &str) -> HttpResponse {
    let mut res = ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}; use {allow}",
        req.method(),
        req.path()
    ))
    .error_response();
    if let Ok(v) = HeaderValue::from_str(allow) {
        res.headers_mut().insert(ALLOW, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use actix_web::test::{TestRequest, call_service, init_service};
    use actix_web::{App, http::StatusCode};

    use super::*;

    #[test]
    fn path_parameters_match_the_pattern() {
        for e in ENDPOINTS {
            let in_pattern: BTreeSet<&str> = e.path_names().into_iter().collect();
            let declared: BTreeSet<&str> = e
                .params
                .iter()
                .filter(|p| p.location == In::Path)
                .map(|p| p.name)
                .collect();
            assert_eq!(in_pattern, declared, "{} {}", e.method.as_str(), e.path);
            assert_eq!(e.path_names().len(), in_pattern.len(), "{}", e.path);
            assert!(
                e.params
                    .iter()
                    .filter(|p| p.location == In::Path)
                    .all(|p| p.required),
                "{}",
                e.path
            );
        }
    }

    #[test]
    fn routes_operations_and_parameters_are_unique() {
        let mut routes = HashSet::new();
        let mut ids = HashSet::new();
        for e in ENDPOINTS {
            assert!(e.path.starts_with('/'), "{}", e.path);
            assert!(
                routes.insert((e.method, e.path)),
                "{} {} twice",
                e.method.as_str(),
                e.path
            );
            assert!(ids.insert(e.id), "operation id {} twice", e.id);
            assert!(!e.summary.is_empty(), "{}", e.path);
            let mut names = HashSet::new();
            for p in e.params {
                assert!(names.insert(p.name), "{}: {} twice", e.path, p.name);
            }
        }
    }

    #[test]
    fn defaults_and_choices_fit_their_parameters() {
        for e in ENDPOINTS {
            for p in e.params {
                let at = format!("{} {}", e.path, p.name);
                assert!(p.choices.is_empty() || p.ty == Type::String, "{at}");
                match p.default {
                    None => {}
                    Some(Value::Str(s)) => {
                        assert_eq!(p.ty, Type::String, "{at}");
                        assert!(p.choices.is_empty() || p.choices.contains(&s), "{at}");
                    }
                    Some(Value::Int(n)) => {
                        assert_eq!(p.ty, Type::Integer, "{at}");
                        assert!(p.minimum.is_none_or(|m| n >= m), "{at}");
                        assert!(p.maximum.is_none_or(|m| n <= m), "{at}");
                    }
                    Some(Value::Bool(_)) => assert_eq!(p.ty, Type::Boolean, "{at}"),
                }
                assert!(!(p.required && p.default.is_some()), "{at}");
            }
        }
    }

    /// The query parameters each handler accepts are the ones the table
    /// declares; a handler that parses no query string declares none.
    #[test]
    fn query_parameters_are_what_the_handlers_accept() {
        let accepted: &[(&str, &[&str])] = &[
            ("/api/readings", readings::PARAMS),
            ("/api/readings/export", export::PARAMS),
            ("/api/series", series::PARAMS),
            ("/api/alerts", alerts::LIST_PARAMS),
            ("/api/admin/optimize", admin_storage::OPTIMIZE_PARAMS),
            ("/api/admin/config/sensors", config_admin::EDIT_PARAMS),
            (
                "/api/admin/config/sensors/{name}/remove",
                config_admin::EDIT_PARAMS,
            ),
            ("/api/admin/config/rules", config_admin::EDIT_PARAMS),
            (
                "/api/admin/config/rules/{name}/remove",
                config_admin::EDIT_PARAMS,
            ),
        ];
        for e in ENDPOINTS {
            let declared: BTreeSet<&str> = e
                .params
                .iter()
                .filter(|p| p.location == In::Query)
                .map(|p| p.name)
                .collect();
            let handler: BTreeSet<&str> = accepted
                .iter()
                .find(|(path, _)| *path == e.path)
                .map(|(_, names)| names.iter().copied().collect())
                .unwrap_or_default();
            assert_eq!(declared, handler, "{}", e.path);
        }
    }

    /// Every entry is routed with its method, and every other method on its
    /// path is a JSON 405 naming the allowed ones. (No state is given, so
    /// handlers fail, but not with 404 or 405.)
    #[actix_web::test]
    async fn every_entry_is_registered_with_its_method() {
        let app = init_service(App::new().configure(configure)).await;
        for e in ENDPOINTS {
            let path = e.path_names().iter().fold(e.path.to_owned(), |p, n| {
                p.replace(&format!("{{{n}}}"), "1")
            });
            let req = TestRequest::default()
                .method(e.method.http())
                .uri(&path)
                .to_request();
            let status = call_service(&app, req).await.status();
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{} {path}: {status}",
                e.method.as_str()
            );
            let req = TestRequest::default()
                .method(actix_web::http::Method::DELETE)
                .uri(&path)
                .to_request();
            let res = call_service(&app, req).await;
            assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            let allow = res.headers().get(ALLOW).unwrap().to_str().unwrap();
            assert!(allow.contains(e.method.as_str()), "{path}: {allow}");
            let head_too = ENDPOINTS
                .iter()
                .any(|o| o.path == e.path && o.method == Method::Get);
            assert_eq!(allow.contains("HEAD"), head_too, "{path}: {allow}");
            let body: serde_json::Value = actix_web::test::read_body_json(res).await;
            assert_eq!(body["error"]["code"], "method_not_allowed", "{path}");
            if e.method == Method::Get {
                let req = TestRequest::default()
                    .method(actix_web::http::Method::HEAD)
                    .uri(&path)
                    .to_request();
                let status = call_service(&app, req).await.status();
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "HEAD {path}: {status}"
                );
            }
        }
    }
}
