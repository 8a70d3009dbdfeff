//! The start-up check that a database is one this binary understands,
//! made before anything is written to it: every applied migration must be
//! one of ours (a newer vigil's database is refused, not half-used), and
//! the tables, indexes and triggers must be exactly what our migrations up
//! to the database's version create (a hand-added NOT NULL column or
//! trigger would otherwise make every commit fail at run time).
//!
//! The expected schema is not written down a second time: it is built by
//! running the same embedded migrations on an in-memory database and read
//! back from `sqlite_schema` and `PRAGMA table_xinfo`, so it cannot drift
//! from `migrations/`. Additions that cannot break the writer are allowed:
//! tables and views of the operator's own and non-unique indexes (the
//! performance advice suggests some).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;

use super::{MIGRATIONS, StorageError};

/// diesel's record of applied migrations.
const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// Why a database was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "{path}: the database has schema version {} that this vigil does not know \
         (it knows {}; the newest is {}). It was written by a newer vigil: run that \
         version, or restore a backup taken before the upgrade. Nothing was changed",
        unknown.join(", "), known_range(known), known.last().map_or("none", String::as_str)
    )]
    Newer {
        path: PathBuf,
        unknown: Vec<String>,
        known: Vec<String>,
    },
    #[error(
        "{path}: the schema at version {version} is not the one this vigil expects: {}. \
         Restore a backup, or move the file aside to start a new database. Nothing was changed",
        differences.join("; ")
    )]
    Tampered {
        path: PathBuf,
        version: String,
        differences: Vec<String>,
    },
    #[error(
        "{path}: not a vigil database: it holds tables ({}) but no vigil schema history \
         ({MIGRATIONS_TABLE}). Point storage.path at a vigil database or a new file. \
         Nothing was changed",
        tables.join(", ")
    )]
    Foreign { path: PathBuf, tables: Vec<String> },
}

fn known_range(known: &[String]) -> String {
    match (known.first(), known.last()) {
        (Some(a), Some(b)) if a != b => format!("{a} to {b}"),
        (Some(a), _) => a.clone(),
        _ => "none".into(),
    }
}

/// The versions of the migrations compiled into this binary, oldest first.
pub fn known_versions() -> Result<Vec<String>, StorageError> {
    let mut v: Vec<String> = MigrationSource::<Sqlite>::migrations(&MIGRATIONS)
        .map_err(|e| StorageError::Migration(e.to_string()))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    v.sort();
    Ok(v)
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
struct Object {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    tbl_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    sql: Option<String>,
}

#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
struct Column {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    type_: String,
    #[diesel(sql_type = BigInt)]
    notnull: i64,
    #[diesel(sql_type = Nullable<Text>)]
    dflt_value: Option<String>,
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

impl Column {
    fn describe(&self) -> String {
        let mut s = format!("{} {}", self.name, self.type_);
        if self.notnull != 0 {
            s.push_str(" NOT NULL");
        }
        if let Some(d) = &self.dflt_value {
            s.push_str(&format!(" DEFAULT {d}"));
        }
        if self.pk != 0 {
            s.push_str(" (primary key)");
        }
        s
    }
}

/// A database's schema objects, by name, and each table's columns.
#[derive(Debug, Default)]
struct Schema {
    objects: BTreeMap<String, Object>,
    columns: BTreeMap<String, Vec<Column>>,
}

fn read_schema(conn: &mut SqliteConnection) -> Result<Schema, StorageError> {
    let objects: Vec<Object> = diesel::sql_query(
        "SELECT type AS kind, name, tbl_name, sql FROM sqlite_schema \
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> ?",
    )
    .bind::<Text, _>(MIGRATIONS_TABLE)
    .load(conn)?;
    let mut schema = Schema::default();
    for o in objects {
        if o.kind == "table" {
            let cols: Vec<Column> = diesel::sql_query(
                "SELECT name, type AS type_, \"notnull\", dflt_value, pk \
                 FROM pragma_table_xinfo(?) ORDER BY cid",
            )
            .bind::<Text, _>(&o.name)
            .load(conn)?;
            schema.columns.insert(o.name.clone(), cols);
        }
        schema.objects.insert(o.name.clone(), o);
    }
    Ok(schema)
}

fn table_exists(conn: &mut SqliteConnection, name: &str) -> Result<bool, StorageError> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query(
        "SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table' AND name = ?",
    )
    .bind::<Text, _>(name)
    .get_result(conn)?;
    Ok(n.n > 0)
}

/// The schema our migrations create when exactly `applied` have run.
fn expected_schema(applied: &BTreeSet<String>) -> Result<Schema, StorageError> {
    let mut mem = SqliteConnection::establish(":memory:").map_err(|source| StorageError::Open {
        path: PathBuf::from(":memory:"),
        source,
    })?;
    let mut migrations = MigrationSource::<Sqlite>::migrations(&MIGRATIONS)
        .map_err(|e| StorageError::Migration(e.to_string()))?;
    migrations.sort_by_key(|m| m.name().version().to_string());
    for m in migrations {
        if applied.contains(&m.name().version().to_string()) {
            m.run(&mut mem)
                .map_err(|e| StorageError::Migration(format!("{}: {e}", m.name())))?;
        }
    }
    read_schema(&mut mem)
}

fn normalise(sql: Option<&str>) -> String {
    sql.unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// What differs between the expected and the actual schema, in words; empty
/// when the database may be used.
fn differences(expected: &Schema, actual: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in &expected.objects {
        let Some(have) = actual.objects.get(name) else {
            out.push(format!("{} {name} is missing", want.kind));
            continue;
        };
        if have.kind != want.kind {
            out.push(format!("{name} is a {}, not a {}", have.kind, want.kind));
            continue;
        }
        if want.kind == "table" {
            let (w, h) = (&expected.columns[name], &actual.columns[name]);
            for c in h {
                match w.iter().find(|x| x.name == c.name) {
                    None => out.push(format!(
                        "table {name} has an unknown column {}",
                        c.describe()
                    )),
                    Some(x) if x != c => out.push(format!(
                        "table {name} column {} is {}, expected {}",
                        c.name,
                        c.describe(),
                        x.describe()
                    )),
                    Some(_) => {}
                }
            }
            for c in w {
                if !h.iter().any(|x| x.name == c.name) {
                    out.push(format!("table {name} lacks column {}", c.describe()));
                }
            }
            if w == h && normalise(have.sql.as_deref()) != normalise(want.sql.as_deref()) {
                out.push(format!(
                    "table {name} is defined differently (constraints or options)"
                ));
            }
        } else if normalise(have.sql.as_deref()) != normalise(want.sql.as_deref()) {
            out.push(format!("{} {name} is defined differently", want.kind));
        }
    }
    for (name, have) in &actual.objects {
        if expected.objects.contains_key(name) {
            continue;
        }
        let ours = expected.objects.contains_key(&have.tbl_name);
        let unique = normalise(have.sql.as_deref()).starts_with("create unique");
        match have.kind.as_str() {
            "trigger" if ours => out.push(format!(
                "trigger {name} on table {} is not one of vigil's",
                have.tbl_name
            )),
            "index" if ours && unique => out.push(format!(
                "unique index {name} on table {} is not one of vigil's",
                have.tbl_name
            )),
            _ => {}
        }
    }
    out
}

/// Refuses a database this binary must not use, reading only. A new (empty)
/// file passes; so does any database at one of our versions with our schema.
pub fn check(conn: &mut SqliteConnection, path: &Path) -> Result<(), StorageError> {
    let refuse = |e: SchemaError| Err(StorageError::Schema(Box::new(e)));
    if !table_exists(conn, MIGRATIONS_TABLE)? {
        let actual = read_schema(conn)?;
        let tables: Vec<String> = actual
            .objects
            .values()
            .filter(|o| o.kind == "table")
            .map(|o| o.name.clone())
            .collect();
        if tables.is_empty() {
            return Ok(());
        }
        return refuse(SchemaError::Foreign {
            path: path.to_owned(),
            tables,
        });
    }
    let applied: BTreeSet<String> = diesel::sql_query(format!(
        "SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version"
    ))
    .load::<Version>(conn)?
    .into_iter()
    .map(|v| v.version)
    .collect();
    let known = known_versions()?;
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !known.contains(v))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return refuse(SchemaError::Newer {
            path: path.to_owned(),
            unknown,
            known,
        });
    }
    let expected = expected_schema(&applied)?;
    let actual = read_schema(conn)?;
    let diff = differences(&expected, &actual);
    if !diff.is_empty() {
        return refuse(SchemaError::Tampered {
            path: path.to_owned(),
            version: applied.last().cloned().unwrap_or_else(|| "none".into()),
            differences: diff,
        });
    }
    Ok(())
}

/// Applies `sql` to a fresh, fully migrated database and returns the check's
/// verdict (for tests here and in the integration suite's spirit).
#[cfg(test)]
fn verdict_after(sql: &str) -> Result<(), StorageError> {
    use diesel::connection::SimpleConnection;
    use diesel_migrations::MigrationHarness;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut conn = super::establish(&path).unwrap();
    conn.run_pending_migrations(MIGRATIONS).unwrap();
    conn.batch_execute(sql).unwrap();
    check(&mut conn, &path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel_migrations::MigrationHarness;

    #[test]
    fn a_database_of_ours_passes_at_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = super::super::establish(&path).unwrap();
        check(&mut conn, &path).expect("an empty file");
        while conn.run_next_migration(MIGRATIONS).is_ok() {
            check(&mut conn, &path).expect("each version");
        }
        assert!(verdict_after("CREATE INDEX mine ON readings (value);").is_ok());
        assert!(verdict_after("CREATE TABLE notes (t TEXT); CREATE VIEW v AS SELECT 1;").is_ok());
    }

    #[test]
    fn a_newer_version_is_named() {
        let e = verdict_after(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000000');",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("20991231000000"), "{e}");
        assert!(e.contains("s.db"), "{e}");
        let newest = known_versions().unwrap().pop().unwrap();
        assert!(e.contains(&newest), "{e}");
    }

    #[test]
    fn tampered_tables_are_named() {
        let e =
            verdict_after("ALTER TABLE readings ADD COLUMN quality INTEGER NOT NULL DEFAULT 0;")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("table readings has an unknown column quality"),
            "{e}"
        );
        let e = verdict_after("DROP TABLE rollup_day;")
            .unwrap_err()
            .to_string();
        assert!(e.contains("table rollup_day is missing"), "{e}");
        let e = verdict_after("CREATE TRIGGER t AFTER INSERT ON readings BEGIN SELECT 1; END;")
            .unwrap_err()
            .to_string();
        assert!(e.contains("trigger t on table readings"), "{e}");
        let e = verdict_after("CREATE UNIQUE INDEX u ON readings (value);")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unique index u"), "{e}");
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let mut conn = super::super::establish(&path).unwrap();
        conn.batch_execute("CREATE TABLE invoices (id INTEGER);")
            .unwrap();
        let e = check(&mut conn, &path).unwrap_err().to_string();
        assert!(
            e.contains("not a vigil database") && e.contains("invoices"),
            "{e}"
        );
    }
}
