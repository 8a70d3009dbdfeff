-- Alerts: one row per alert (a rule instance firing until it resolves),
-- and its transitions. Ids are assigned by the alert manager.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL,      -- rule and subject; one firing alert per key
    rule        TEXT NOT NULL,
    severity    TEXT NOT NULL,      -- info | warning | critical | emergency
    state       TEXT NOT NULL,      -- firing | resolved
    message     TEXT NOT NULL,
    value       REAL,
    fired_at    INTEGER NOT NULL,   -- epoch ms
    resolved_at INTEGER,
    acked_at    INTEGER
);
CREATE INDEX alerts_fired_at ON alerts (fired_at);

CREATE TABLE alert_events (
    alert_id INTEGER NOT NULL,
    ts       INTEGER NOT NULL,
    event    TEXT NOT NULL,         -- fired | resolved | acknowledged
    value    REAL,
    PRIMARY KEY (alert_id, ts, event)
) WITHOUT ROWID;
