//! Edits of the config file from the browser: a sensor or an alert rule
//! added, changed, disabled or removed. The edit is made on the file's text
//! with `toml_edit`, so its comments and layout stay; the result is
//! validated exactly as the file is at start-up (errors name the key),
//! written atomically (a temporary file beside it, fsync, rename, fsync of
//! the directory), and applied like a reload (`reload.rs`), in which
//! `[[sensors]]` changes restart only the sensors that changed.
//!
//! Running on the embedded defaults, the first edit starts from the
//! documented defaults (`config/vigil.toml`, comments and all) and creates
//! `vigil.toml` beside the database ([`default_path`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use futures_util::future::LocalBoxFuture;

use super::config::{Config, DEFAULT_TOML};
use super::reload::{Plan, Reloads, plan};
use crate::sensors::registry::Change;
use crate::web::config_admin::{ConfigEditor, ConfigView, Edit, EditError, EditMode, EditReport};
use crate::web::reload::ReloadError;

/// Where the first edit writes the config file when vigil runs on its
/// embedded defaults: `vigil.toml` in the database's directory.
pub fn default_path(database: &Path) -> PathBuf {
    match database.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("vigil.toml"),
        _ => PathBuf::from("vigil.toml"),
    }
}

/// The documented defaults with `storage.path` set to the database the
/// appliance runs on (given by `VIGIL_DB` or the working directory), so
/// that the file created beside it leads back to it.
fn defaults_with_database(database: &Path) -> Result<String, EditError> {
    let mut doc: DocumentMut = DEFAULT_TOML
        .parse()
        .map_err(|e| EditError::Io(format!("the embedded defaults do not parse: {e}")))?;
    let path = database.display().to_string();
    if let Some(old) = doc
        .get_mut("storage")
        .and_then(|s| s.get_mut("path"))
        .and_then(Item::as_value_mut)
    {
        let decor = old.decor().clone();
        *old = Value::from(path.as_str());
        *old.decor_mut() = decor;
    }
    Ok(doc.to_string())
}

/// The entries of a list of tables, however the file writes it.
enum Entries<'a> {
    /// `[[sensors]]` tables.
    Tables(&'a mut ArrayOfTables),
    /// `rules = [ { ... }, ... ]`.
    Inline(&'a mut toml_edit::Array),
}

impl Entries<'_> {
    fn names(&self) -> Vec<Option<String>> {
        let name = |t: &dyn TableLike| t.get("name").and_then(|i| i.as_str()).map(str::to_owned);
        match self {
            Entries::Tables(a) => a.iter().map(|t| name(t)).collect(),
            Entries::Inline(a) => a
                .iter()
                .map(|v| v.as_inline_table().and_then(|t| name(t)))
                .collect(),
        }
    }

    fn position(&self, wanted: &str) -> Option<usize> {
        self.names()
            .iter()
            .position(|n| n.as_deref() == Some(wanted))
    }

    fn put(&mut self, entry: &Map<String, Json>, key: &str) -> Result<(), EditError> {
        let name = entry.get("name").and_then(Json::as_str).unwrap_or_default();
        let at = self.position(name);
        match self {
            Entries::Tables(a) => match at.and_then(|i| a.get_mut(i)) {
                Some(t) => merge(t, entry, false, key),
                None => {
                    let mut t = Table::new();
                    merge(&mut t, entry, false, key)?;
                    t.decor_mut().set_prefix("\n");
                    a.push(t);
                    Ok(())
                }
            },
            Entries::Inline(a) => match at.and_then(|i| a.get_mut(i)) {
                Some(Value::InlineTable(t)) => merge(t, entry, true, key),
                _ => {
                    let mut t = InlineTable::new();
                    merge(&mut t, entry, true, key)?;
                    t.decor_mut().set_prefix("\n  ");
                    a.push_formatted(Value::InlineTable(t));
                    a.set_trailing("\n");
                    a.set_trailing_comma(true);
                    Ok(())
                }
            },
        }
    }

    fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self.position(name) else {
            return false;
        };
        match self {
            Entries::Tables(a) => {
                a.remove(i);
            }
            Entries::Inline(a) => {
                a.remove(i);
                if a.is_empty() {
                    a.set_trailing("");
                    a.set_trailing_comma(false);
                }
            }
        }
        true
    }
}

/// The `[[sensors]]` list of `doc`. A file without one runs the default
/// set, so that set (with its comments) is written out first.
fn sensors(doc: &mut DocumentMut) -> Result<Entries<'_>, EditError> {
    if !doc.contains_key("sensors") {
        let defaults: DocumentMut = DEFAULT_TOML
            .parse()
            .map_err(|e| EditError::Io(format!("the embedded defaults do not parse: {e}")))?;
        let mut list = defaults
            .get("sensors")
            .and_then(Item::as_array_of_tables)
            .cloned()
            .unwrap_or_default();
        for t in list.iter_mut() {
            // Placed after everything the file has.
            t.set_position(None);
            for (_, item) in t.iter_mut() {
                if let Some(sub) = item.as_table_mut() {
                    sub.set_position(None);
                }
            }
        }
        doc.insert("sensors", Item::ArrayOfTables(list));
    }
    entries(doc.as_table_mut(), "sensors", "sensors")
}

/// The `rules` list of `[alerts]`.
fn rules(doc: &mut DocumentMut) -> Result<Entries<'_>, EditError> {
    let alerts = doc
        .entry("alerts")
        .or_insert_with(|| Item::Table(Table::new()));
    let Some(alerts) = alerts.as_table_like_mut() else {
        return Err(EditError::Conflict(
            "`alerts` in the config file is not a table".into(),
        ));
    };
    if alerts.get("rules").is_none() {
        alerts.insert("rules", Item::Value(Value::Array(toml_edit::Array::new())));
    }
    entries(alerts, "rules", "alerts.rules")
}

fn entries<'a>(
    table: &'a mut dyn TableLike,
    key: &str,
    path: &str,
) -> Result<Entries<'a>, EditError> {
    match table.get_mut(key) {
        Some(Item::ArrayOfTables(a)) => Ok(Entries::Tables(a)),
        Some(Item::Value(Value::Array(a))) => Ok(Entries::Inline(a)),
        _ => Err(EditError::Conflict(format!(
            "`{path}` in the config file is not a list of tables"
        ))),
    }
}

/// Makes `table` hold exactly `entry`'s keys, keeping the comments and
/// layout of the keys it already had. Nested objects become sub-tables
/// (inline ones inside an inline table); `null` means "leave out".
fn merge(
    table: &mut dyn TableLike,
    entry: &Map<String, Json>,
    inline: bool,
    key: &str,
) -> Result<(), EditError> {
    let stale: Vec<String> = table
        .iter()
        .map(|(k, _)| k.to_owned())
        .filter(|k| entry.get(k).is_none_or(Json::is_null))
        .collect();
    for k in stale {
        table.remove(&k);
    }
    for (k, v) in entry {
        let at = format!("{key}.{k}");
        match v {
            Json::Null => {}
            Json::Object(sub) => match table.get_mut(k) {
                Some(item) if item.is_table_like() => {
                    let nested_inline = inline || item.is_inline_table();
                    if let Some(t) = item.as_table_like_mut() {
                        merge(t, sub, nested_inline, &at)?;
                    }
                }
                _ if inline => {
                    let mut t = InlineTable::new();
                    merge(&mut t, sub, true, &at)?;
                    table.insert(k, Item::Value(Value::InlineTable(t)));
                }
                _ => {
                    let mut t = Table::new();
                    merge(&mut t, sub, false, &at)?;
                    table.insert(k, Item::Table(t));
                }
            },
            other => {
                let new = value(other, &at)?;
                match table.get_mut(k).and_then(Item::as_value_mut) {
                    Some(old) => {
                        let decor = old.decor().clone();
                        *old = new;
                        *old.decor_mut() = decor;
                    }
                    None => {
                        table.insert(k, Item::Value(new));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A JSON value as a TOML value; `key` names it in errors.
fn value(v: &Json, key: &str) -> Result<Value, EditError> {
    Ok(match v {
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) if n.is_f64() => Value::from(f),
            _ => {
                return Err(EditError::Body {
                    field: key.to_owned(),
                    message: format!("{key}: {n} is out of range"),
                });
            }
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => {
            let mut a = toml_edit::Array::new();
            for (i, item) in items.iter().enumerate() {
                if !item.is_null() {
                    a.push(value(item, &format!("{key}[{i}]"))?);
                }
            }
            Value::Array(a)
        }
        Json::Object(m) => {
            let mut t = InlineTable::new();
            merge(&mut t, m, true, key)?;
            Value::InlineTable(t)
        }
        Json::Null => {
            return Err(EditError::Body {
                field: key.to_owned(),
                message: format!("{key}: null is not a value"),
            });
        }
    })
}

/// `text` with `edit` made to it. Validation is the caller's: this only
/// knows where entries live.
pub fn apply(text: &str, edit: &Edit) -> Result<String, EditError> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        EditError::Conflict(format!(
            "the config file does not parse, so it cannot be edited: {}",
            e.message()
        ))
    })?;
    match edit {
        Edit::PutSensor(entry) => {
            let name = entry.get("name").and_then(Json::as_str).unwrap_or_default();
            sensors(&mut doc)?.put(entry, &format!("sensors[{name}]"))?;
        }
        Edit::RemoveSensor(name) => {
            if !sensors(&mut doc)?.remove(name) {
                return Err(EditError::NotFound(format!("no sensor named `{name}`")));
            }
        }
        Edit::PutRule(entry) => {
            let name = entry.get("name").and_then(Json::as_str).unwrap_or_default();
            rules(&mut doc)?.put(entry, &format!("alerts.rules[{name}]"))?;
        }
        Edit::RemoveRule(name) => {
            if !rules(&mut doc)?.remove(name) {
                return Err(EditError::NotFound(format!("no alert rule named `{name}`")));
            }
        }
    }
    Ok(doc.to_string())
}

/// The sensors and rules of a config text, as JSON objects with the keys
/// the file has (the default set when the file names no sensors).
pub fn entries_of(text: &str) -> Result<(Vec<Json>, Vec<Json>), EditError> {
    let parse = |t: &str| -> Result<toml::Table, EditError> {
        toml::from_str(t).map_err(|e: toml::de::Error| {
            EditError::Conflict(format!("the config file does not parse: {}", e.message()))
        })
    };
    let table = parse(text)?;
    let list = |v: Option<&toml::Value>| -> Vec<Json> {
        v.and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let sensors = match table.get("sensors") {
        Some(v) => list(Some(v)),
        None => list(parse(DEFAULT_TOML)?.get("sensors")),
    };
    let rules = list(table.get("alerts").and_then(|a| a.get("rules")));
    Ok((sensors, rules))
}

/// Replaces `path` with `text` so that a crash at any moment leaves either
/// the old file or the new one: a temporary file in the same directory,
/// written and fsynced, renamed over it, then the directory fsynced so the
/// rename itself is durable. The file keeps its permissions.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vigil.toml".into());
    let tmp = dir.join(format!(".{file_name}.tmp"));
    // A temporary file left by a crash is ours to replace.
    match std::fs::symlink_metadata(&tmp) {
        Ok(m) if m.is_file() => std::fs::remove_file(&tmp)?,
        _ => {}
    }
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Reloads {
    /// The file edits go to, whether it exists yet, and its text (the
    /// documented defaults when there is no file).
    fn target(&self) -> Result<(PathBuf, bool, String), EditError> {
        let (path, exists) = match self.source() {
            Some(p) => (p, true),
            None => (self.default_path.clone(), false),
        };
        if !exists {
            let database = self.running().storage.path;
            return Ok((path, false, defaults_with_database(&database)?));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EditError::Io(format!("cannot read {}: {e}", path.display())))?;
        Ok((path, true, text))
    }

    async fn edit_config(&self, edit: Edit, mode: EditMode) -> Result<EditReport, EditError> {
        let _one = self
            .busy
            .try_lock()
            .map_err(|_| EditError::Conflict("another edit or a reload is being applied".into()))?;
        let (path, exists, text) = self.target()?;
        if !exists && path.exists() {
            return Err(EditError::Conflict(format!(
                "vigil runs on its embedded defaults, but {} exists; start vigil with \
                 `--config {}` to edit it",
                path.display(),
                path.display()
            )));
        }
        let edited = apply(&text, &edit)?;
        let origin = path.display().to_string();
        let mut new = Config::from_toml(&edited, &origin)?;
        new.apply_env(|k| std::env::var(k).ok())
            .map_err(|e| e.in_origin(&origin))?;
        new.source = Some(path.clone());
        let planned = plan(&self.running(), &new);
        let names = |p: &Plan| -> (Vec<String>, Vec<String>) {
            (
                p.live.iter().map(|l| l.name().to_owned()).collect(),
                p.needs_restart.iter().map(|s| (*s).to_owned()).collect(),
            )
        };
        let (applied, needs_restart) = names(&planned);
        let mut report = EditReport {
            path: origin.clone(),
            dry_run: mode.dry_run,
            created: !exists,
            applied,
            needs_restart,
            ..EditReport::default()
        };
        if mode.dry_run {
            for (name, change) in self.sensors.changes(&new.sensors) {
                match change {
                    Change::Added => report.sensors_added.push(name),
                    Change::Changed => report.sensors_changed.push(name),
                    Change::Removed => report.sensors_removed.push(name),
                }
            }
            report.message = if report.needs_restart.is_empty() {
                "valid; saving would apply it at once".into()
            } else {
                format!(
                    "valid; changes to [{}] would take effect only after a restart",
                    report.needs_restart.join("], [")
                )
            };
            return Ok(report);
        }
        if !report.needs_restart.is_empty() && !mode.accept_restart {
            return Err(EditError::NeedsRestart(report.needs_restart));
        }
        write_atomically(&path, &edited)
            .map_err(|e| EditError::Io(format!("cannot write {origin}: {e}; it is unchanged")))?;
        if !exists {
            *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
            log::warn!(
                "config edited from the API: created {origin}; start vigil with `--config {origin}` to keep using it"
            );
        } else {
            log::info!("config edited from the API: wrote {origin}");
        }
        let done = self.apply(new).await.map_err(|e| match e {
            ReloadError::Config(e) => EditError::Invalid(e),
            other => EditError::Conflict(format!("saved, but not applied: {other}")),
        })?;
        report.sensors_added = done.sensors_added;
        report.sensors_changed = done.sensors_changed;
        report.sensors_removed = done.sensors_removed;
        report.message = match (report.created, report.needs_restart.is_empty()) {
            (true, _) => format!(
                "created {origin} (vigil ran on its embedded defaults) and applied the change; \
                 start vigil with `--config {origin}` so that it keeps it after a restart"
            ),
            (false, true) => format!("saved to {origin} and applied"),
            (false, false) => format!(
                "saved to {origin}; changes to [{}] take effect after a restart",
                report.needs_restart.join("], [")
            ),
        };
        Ok(report)
    }
}

impl ConfigEditor for Reloads {
    fn view(&self) -> LocalBoxFuture<'_, Result<ConfigView, EditError>> {
        Box::pin(async move {
            let (path, exists, text) = self.target()?;
            let (sensors, rules) = entries_of(&text)?;
            Ok(ConfigView {
                path: path.display().to_string(),
                exists,
                sensors,
                rules,
                kinds: crate::sensors::KINDS
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect(),
            })
        })
    }

    fn edit(
        &self,
        edit: Edit,
        mode: EditMode,
    ) -> LocalBoxFuture<'_, Result<EditReport, EditError>> {
        Box::pin(self.edit_config(edit, mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_added_sensor_keeps_every_comment_and_validates() {
        let edit = Edit::PutSensor(obj(json!({
            "name": "greenhouse", "kind": "simulated", "interval_ms": 250,
            "options": {"waveform": "constant", "offset": 21.5, "metric": "temp", "unit": "°C"}
        })));
        let text = apply(DEFAULT_TOML, &edit).unwrap();
        for line in DEFAULT_TOML
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
        {
            assert!(text.contains(line), "lost comment {line:?}");
        }
        let c = Config::from_toml(&text, "edited").unwrap();
        let names: Vec<_> = c.sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["system", "cpu_temp", "simulated", "greenhouse"]);
        assert_eq!(c.sensors[3].interval_ms, 250);
        // Everything else is what it was.
        let expect = Config {
            sensors: c.sensors.clone(),
            ..Config::default()
        };
        assert_eq!(c, expect);
    }

    #[test]
    fn editing_in_place_keeps_trailing_comments_and_drops_left_out_keys() {
        let text = "# head\n[[sensors]]\n# about a\nname = \"a\"\nkind = \"simulated\"\ninterval_ms = 1000 # fast\npriority = \"optional\"\n";
        let edit = Edit::PutSensor(obj(json!({
            "name": "a", "kind": "simulated", "interval_ms": 2000, "enabled": false
        })));
        let out = apply(text, &edit).unwrap();
        assert!(
            out.contains("# head\n[[sensors]]\n# about a\nname = \"a\""),
            "{out}"
        );
        assert!(out.contains("interval_ms = 2000 # fast"), "{out}");
        assert!(!out.contains("priority"), "{out}");
        assert!(out.contains("enabled = false"), "{out}");
    }

    #[test]
    fn a_file_without_sensors_gets_the_default_set_written_out() {
        let text = "# mine\n[log]\nfilter = \"debug\"\n";
        let edit = Edit::PutSensor(obj(json!({"name": "x", "kind": "system"})));
        let out = apply(text, &edit).unwrap();
        assert!(
            out.starts_with("# mine\n[log]\nfilter = \"debug\"\n"),
            "{out}"
        );
        let c = Config::from_toml(&out, "edited").unwrap();
        let names: Vec<_> = c.sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["system", "cpu_temp", "simulated", "x"]);
        assert_eq!(c.log.filter, "debug");
    }

    #[test]
    fn rules_are_added_to_the_inline_list_and_removed() {
        let rule = obj(json!({
            "name": "hot", "sensor": "simulated", "condition": "above", "threshold": 25
        }));
        let out = apply(DEFAULT_TOML, &Edit::PutRule(rule)).unwrap();
        assert!(out.contains("# Rules on sensor values"), "comment kept");
        let c = Config::from_toml(&out, "edited").unwrap();
        assert_eq!(c.alerts.rules.len(), 1);
        assert_eq!(c.alerts.rules[0].threshold, Some(25.0));
        let out = apply(&out, &Edit::RemoveRule("hot".into())).unwrap();
        assert!(out.contains("rules = []"), "{out}");
        assert!(matches!(
            apply(&out, &Edit::RemoveRule("hot".into())),
            Err(EditError::NotFound(_))
        ));
    }

    #[test]
    fn removing_a_sensor_leaves_the_others() {
        let out = apply(DEFAULT_TOML, &Edit::RemoveSensor("cpu_temp".into())).unwrap();
        let c = Config::from_toml(&out, "edited").unwrap();
        let names: Vec<_> = c.sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["system", "simulated"]);
        let (sensors, rules) = entries_of(&out).unwrap();
        assert_eq!(sensors.len(), 2);
        assert_eq!(sensors[1]["options"]["waveform"], "sine");
        assert!(rules.is_empty());
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, "old").unwrap();
        let mut old = std::fs::File::open(&path).unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        // The old file was replaced, not rewritten: an open handle still
        // reads the old contents.
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut old, &mut seen).unwrap();
        assert_eq!(seen, "old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vigil.toml"]);
        // A temporary that cannot be created fails the write and leaves
        // the file alone.
        std::fs::create_dir(dir.path().join(".vigil.toml.tmp")).unwrap();
        assert!(write_atomically(&path, "newer").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }
}
