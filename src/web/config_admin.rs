//! Configuration from the browser: `GET /api/admin/config` and the edits
//! that add, change, disable and remove sensors and alert rules. The
//! request and answer bodies are plain serde structs defined here.
//!
//! Editing is the assembly's (`app::edit`, which owns the aggregate config
//! and the file); this layer sees it through the [`ConfigEditor`] it is
//! handed, maps the outcome to HTTP and never touches TOML. An edit is
//! validated with the same rules as the file, written back to the file with
//! its comments kept, and applied live; with `dry_run=true` nothing is
//! written, and a change some part of which needs a restart is refused (409,
//! nothing written) unless `accept_restart=true`.

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::LocalBoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::admin::Admin;
use super::error::ApiError;
use super::params::Params;
use crate::vocab::check::ConfigError;

/// The query parameters every edit accepts.
pub const EDIT_PARAMS: &[&str] = &["dry_run", "accept_restart"];

/// One change to the config file.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Adds the `[[sensors]]` entry of this `name`, or replaces it.
    PutSensor(serde_json::Map<String, serde_json::Value>),
    RemoveSensor(String),
    /// Adds the `[[alerts.rules]]` entry of this `name`, or replaces it.
    PutRule(serde_json::Map<String, serde_json::Value>),
    RemoveRule(String),
}

/// How an edit is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct EditMode {
    /// Validate and report what would happen; write and apply nothing.
    pub dry_run: bool,
    /// Write the file even though some change takes effect only after a
    /// restart.
    pub accept_restart: bool,
}

/// The editable parts of the configuration, as the file has them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ConfigView {
    /// The file edits are written to.
    pub path: String,
    /// Whether vigil was started from that file (false: the embedded
    /// defaults; the first edit creates the file).
    pub exists: bool,
    /// Every `[[sensors]]` entry, keys as in the file.
    pub sensors: Vec<serde_json::Value>,
    /// Every `[[alerts.rules]]` entry, keys as in the file.
    pub rules: Vec<serde_json::Value>,
    /// The sensor kinds a build knows.
    pub kinds: Vec<String>,
}

/// What an edit did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, JsonSchema)]
pub struct EditReport {
    pub path: String,
    pub dry_run: bool,
    /// The file did not exist and this edit created it.
    pub created: bool,
    /// Sensors whose actors were started, restarted or stopped.
    pub sensors_added: Vec<String>,
    pub sensors_changed: Vec<String>,
    pub sensors_removed: Vec<String>,
    /// Sections applied to the running appliance.
    pub applied: Vec<String>,
    /// Sections whose new values wait for a restart.
    pub needs_restart: Vec<String>,
    /// One sentence for the operator.
    pub message: String,
}

/// Why an edit was refused (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The result would not be a valid config: the error names the key.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The request body is not an entry (not an object, no `name`).
    #[error("{message}")]
    Body { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// Some of the change takes effect only after a restart, and the
    /// request did not accept that.
    #[error(
        "changes to [{}] take effect only after a restart; nothing was saved (repeat with accept_restart=true to save anyway)",
        .0.join("], [")
    )]
    NeedsRestart(Vec<String>),
    /// Another edit or a reload is being applied, or the file cannot be
    /// used as it is.
    #[error("{0}")]
    Conflict(String),
    /// The file could not be read or written; it is unchanged.
    #[error("{0}")]
    Io(String),
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> ApiError {
        match e {
            EditError::Invalid(ConfigError::Invalid { key, message })
            | EditError::Invalid(ConfigError::Parse { key, message, .. }) => {
                let (key, message) = field_of(&key, &message);
                ApiError::bad(&key, format!("{key}: {message}"))
            }
            EditError::Invalid(e @ ConfigError::Read { .. }) => {
                ApiError::Unavailable(e.to_string())
            }
            EditError::Body { field, message } => ApiError::bad(&field, message),
            EditError::NotFound(m) => ApiError::NotFound(m),
            e @ EditError::NeedsRestart(_) => ApiError::Conflict(e.to_string()),
            EditError::Conflict(m) => ApiError::Conflict(m),
            EditError::Io(m) => ApiError::Unavailable(m),
        }
    }
}

/// The most precise key an error names. A sensor's or a rule's own checks
/// name the entry by its name (`sensors[tank].interval_ms`) inside a parse
/// error located at its index (`sensors[1]`): the inner key wins.
fn field_of(key: &str, message: &str) -> (String, String) {
    let root = key.split(['[', '.']).next().unwrap_or(key);
    if !root.is_empty() && message.starts_with(&format!("{root}[")) {
        let from = message.find(']').unwrap_or(0);
        if let Some(i) = message[from..].find(": ") {
            let i = from + i;
            return (message[..i].to_owned(), message[i + 2..].to_owned());
        }
    }
    (key.to_owned(), message.to_owned())
}

/// Reads and edits the config file (the assembly implements it).
pub trait ConfigEditor: Send + Sync {
    fn view(&self) -> LocalBoxFuture<'_, Result<ConfigView, EditError>>;
    fn edit(&self, edit: Edit, mode: EditMode)
    -> LocalBoxFuture<'_, Result<EditReport, EditError>>;
}

fn mode(req: &HttpRequest) -> Result<EditMode, ApiError> {
    let p = Params::parse(req.query_string(), EDIT_PARAMS)?;
    let flag = |name| -> Result<bool, ApiError> {
        Ok(p.choice(name, &["true", "false"], "false")? == "true")
    };
    Ok(EditMode {
        dry_run: flag("dry_run")?,
        accept_restart: flag("accept_restart")?,
    })
}

/// The body of `POST /api/admin/config/sensors`: one `[[sensors]]` entry,
/// keys as in the file (`kind`, `interval_ms`, ..., `options`), validated
/// with the file's rules.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SensorEntry {
    /// The sensor's name; an entry of this name is replaced.
    pub name: String,
    #[serde(flatten)]
    pub keys: serde_json::Map<String, serde_json::Value>,
}

/// The body of `POST /api/admin/config/rules`: one `[[alerts.rules]]`
/// entry, keys as in the file, validated with the file's rules.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RuleEntry {
    /// The rule's name; a rule of this name is replaced.
    pub name: String,
    #[serde(flatten)]
    pub keys: serde_json::Map<String, serde_json::Value>,
}

/// An entry from a JSON body: an object with a string `name`, parsed as
/// `T` (a [`SensorEntry`] or a [`RuleEntry`]) and given back as the
/// entry's keys.
fn entry<T: serde::de::DeserializeOwned + Into<Entry>>(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad("body", "the body must be a JSON object"));
    }
    let Entry { name, mut keys } = serde_json::from_value::<T>(value)
        .map_err(|_| ApiError::bad("name", "name: a string `name` is required"))?
        .into();
    keys.insert("name".into(), serde_json::Value::String(name));
    Ok(keys)
}

/// A parsed entry: its name and its other keys.
struct Entry {
    name: String,
    keys: serde_json::Map<String, serde_json::Value>,
}

impl From<SensorEntry> for Entry {
    fn from(e: SensorEntry) -> Entry {
        Entry {
            name: e.name,
            keys: e.keys,
        }
    }
}

impl From<RuleEntry> for Entry {
    fn from(e: RuleEntry) -> Entry {
        Entry {
            name: e.name,
            keys: e.keys,
        }
    }
}

async fn run(state: &AppState, edit: Edit, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let mode = mode(req)?;
    if !mode.dry_run {
        state.guard.admit_expensive("config edit")?;
    }
    let report = state.editor.edit(edit, mode).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /api/admin/config` (admin).
pub async fn view(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.editor.view().await?))
}

/// `POST /api/admin/config/sensors` (admin): the body is one `[[sensors]]`
/// entry as JSON.
pub async fn put_sensor(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::body::read(&req, payload, super::body::MAX_ENTRY_BYTES).await?;
    let edit = Edit::PutSensor(entry::<SensorEntry>(&body)?);
    run(&state, edit, &req).await
}

/// `POST /api/admin/config/sensors/{name}/remove` (admin).
pub async fn remove_sensor(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(&state, Edit::RemoveSensor(name.into_inner()), &req).await
}

/// `POST /api/admin/config/rules` (admin): the body is one
/// `[[alerts.rules]]` entry as JSON.
pub async fn put_rule(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::body::read(&req, payload, super::body::MAX_ENTRY_BYTES).await?;
    let edit = Edit::PutRule(entry::<RuleEntry>(&body)?);
    run(&state, edit, &req).await
}

/// `POST /api/admin/config/rules/{name}/remove` (admin).
pub async fn remove_rule(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(&state, Edit::RemoveRule(name.into_inner()), &req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_key_inside_a_message_is_the_field() {
        assert_eq!(
            field_of(
                "sensors[1]",
                "sensors[tank].interval_ms: must be greater than 0"
            ),
            (
                "sensors[tank].interval_ms".into(),
                "must be greater than 0".into()
            )
        );
        assert_eq!(
            field_of("sensors[bad name!].name", "must be 1-64 characters"),
            (
                "sensors[bad name!].name".into(),
                "must be 1-64 characters".into()
            )
        );
        assert_eq!(
            field_of("alerts.rules[r].sensor", "no sensor named `x`"),
            (
                "alerts.rules[r].sensor".into(),
                "no sensor named `x`".into()
            )
        );
    }
}
