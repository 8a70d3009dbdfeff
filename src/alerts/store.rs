//! Alerts on disk: each alert's row and its transitions, written through the
//! DbWriter, and read back at start-up so firing alerts survive a restart
//! without firing twice.

use diesel::prelude::*;

use super::rules::Severity;
use crate::storage::StorageError;
use crate::vocab::alert::AlertView;
use crate::vocab::clock::rfc3339;

diesel::table! {
    alerts (id) {
        id -> BigInt,
        key -> Text,
        rule -> Text,
        severity -> Text,
        state -> Text,
        message -> Text,
        value -> Nullable<Double>,
        fired_at -> BigInt,
        resolved_at -> Nullable<BigInt>,
        acked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    alert_events (alert_id, ts, event) {
        alert_id -> BigInt,
        ts -> BigInt,
        event -> Text,
        value -> Nullable<Double>,
    }
}

/// One alert: a rule instance that fired, until it resolves.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = alerts, treat_none_as_null = true)]
pub struct Alert {
    pub id: i64,
    /// Rule and subject (`hot:greenhouse/value`); one firing alert per key.
    pub key: String,
    pub rule: String,
    pub severity: String,
    pub state: String,
    pub message: String,
    pub value: Option<f64>,
    pub fired_at: i64,
    pub resolved_at: Option<i64>,
    pub acked_at: Option<i64>,
}

impl Alert {
    pub fn firing(&self) -> bool {
        self.state == "firing"
    }

    pub fn severity(&self) -> Severity {
        Severity::parse(&self.severity).unwrap_or(Severity::Warning)
    }

    /// The alert as the API and the live feed show it.
    pub fn view(&self) -> AlertView {
        AlertView {
            id: self.id,
            key: self.key.clone(),
            rule: self.rule.clone(),
            severity: self.severity.clone(),
            state: self.state.clone(),
            message: self.message.clone(),
            value: self.value,
            fired_at: rfc3339(self.fired_at),
            fired_at_ms: self.fired_at,
            resolved_at: self.resolved_at.map(rfc3339),
            acknowledged: self.acked_at.is_some(),
            acked_at: self.acked_at.map(rfc3339),
        }
    }
}

/// A change to record: the alert as it now is, and what happened.
#[derive(Debug, Clone)]
pub struct Change {
    pub alert: Alert,
    pub event: &'static str,
    pub at: i64,
    pub value: Option<f64>,
}

/// Writes changes in order (inside the writer's transaction).
pub fn apply(conn: &mut SqliteConnection, changes: &[Change]) -> Result<(), StorageError> {
    for c in changes {
        diesel::insert_into(alerts::table)
            .values(&c.alert)
            .on_conflict(alerts::id)
            .do_update()
            .set(&c.alert)
            .execute(conn)?;
        diesel::insert_into(alert_events::table)
            .values((
                alert_events::alert_id.eq(c.alert.id),
                alert_events::ts.eq(c.at),
                alert_events::event.eq(c.event),
                alert_events::value.eq(c.value),
            ))
            .on_conflict_do_nothing()
            .execute(conn)?;
    }
    Ok(())
}

/// Every firing alert plus the most recent `recent` others, newest first.
pub fn load(conn: &mut SqliteConnection, recent: i64) -> QueryResult<Vec<Alert>> {
    let mut out: Vec<Alert> = alerts::table
        .filter(alerts::state.eq("firing"))
        .select(Alert::as_select())
        .load(conn)?;
    out.extend(
        alerts::table
            .filter(alerts::state.ne("firing"))
            .order(alerts::id.desc())
            .limit(recent)
            .select(Alert::as_select())
            .load(conn)?,
    );
    out.sort_by_key(|a| std::cmp::Reverse(a.id));
    Ok(out)
}

/// The largest alert id ever used.
pub fn max_id(conn: &mut SqliteConnection) -> QueryResult<i64> {
    Ok(alerts::table
        .select(diesel::dsl::max(alerts::id))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0))
}

/// Deletes resolved alerts (and their events) that resolved before `before`.
pub fn prune(conn: &mut SqliteConnection, before: i64) -> Result<usize, StorageError> {
    let old: Vec<i64> = alerts::table
        .filter(alerts::state.eq("resolved"))
        .filter(alerts::resolved_at.lt(before))
        .select(alerts::id)
        .load(conn)?;
    for ids in old.chunks(10_000) {
        diesel::delete(alert_events::table.filter(alert_events::alert_id.eq_any(ids)))
            .execute(conn)?;
        diesel::delete(alerts::table.filter(alerts::id.eq_any(ids))).execute(conn)?;
    }
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::config::StorageConfig;
    use crate::storage::{open_writer, prepare};

    fn alert(id: i64, state: &str) -> Alert {
        Alert {
            id,
            key: format!("k{id}"),
            rule: "r".into(),
            severity: "warning".into(),
            state: state.into(),
            message: "m".into(),
            value: Some(1.0),
            fired_at: 1000 + id,
            resolved_at: (state == "resolved").then_some(2000 + id),
            acked_at: None,
        }
    }

    #[test]
    fn changes_round_trip_and_old_resolved_alerts_prune() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            path: dir.path().join("a.db"),
            ..StorageConfig::default()
        };
        prepare(&cfg).unwrap();
        let mut conn = open_writer(&cfg).unwrap();
        let mut a1 = alert(1, "firing");
        let changes = vec![
            Change {
                alert: a1.clone(),
                event: "fired",
                at: 1001,
                value: Some(1.0),
            },
            Change {
                alert: alert(2, "resolved"),
                event: "resolved",
                at: 2002,
                value: None,
            },
        ];
        apply(&mut conn, &changes).unwrap();
        a1.acked_at = Some(1500);
        apply(
            &mut conn,
            &[Change {
                alert: a1.clone(),
                event: "acknowledged",
                at: 1500,
                value: None,
            }],
        )
        .unwrap();
        let loaded = load(&mut conn, 10).unwrap();
        assert_eq!(loaded, vec![alert(2, "resolved"), a1]);
        assert_eq!(max_id(&mut conn).unwrap(), 2);
        assert_eq!(prune(&mut conn, 3000).unwrap(), 1);
        assert_eq!(load(&mut conn, 10).unwrap().len(), 1);
    }
}
