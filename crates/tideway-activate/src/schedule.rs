//! When syncs run by themselves, inside `tideway serve`.
//!
//! ```toml
//! [schedule]
//! interval = "24h"                  # every 24 hours after the last run started
//! # cron = "0 0 6 * * Mon-Fri"      # sec min hour day-of-month month day-of-week (year)
//! # timezone = "Europe/Paris"       # for cron; default UTC
//! # after = "marts.lead_score"      # whenever that table (a model's) commits a new version
//! # continuous = true               # again as soon as the last run ended (each scheduler tick)
//! ```
//!
//! A sync without `[schedule]` runs only when asked (`tideway sync run`). The last run of each
//! sync, and for `after` the version of the table it followed, come from `_tideway.sync_runs`,
//! so a restart picks up where the schedule was.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use tideway_lake::{Lake, SqlOutput, TableName};

use crate::state;
use crate::{ActivateError, Result};

/// When a sync runs by itself.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Only when asked.
    Manual,
    Interval(Duration),
    Cron {
        text: String,
        schedule: Box<cron::Schedule>,
        timezone: chrono_tz::Tz,
    },
    /// When this table has a version newer than the one the last run saw.
    After(String),
    Continuous,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        match (self, other) {
            (Schedule::Manual, Schedule::Manual) | (Schedule::Continuous, Schedule::Continuous) => {
                true
            }
            (Schedule::Interval(a), Schedule::Interval(b)) => a == b,
            (Schedule::After(a), Schedule::After(b)) => a == b,
            (
                Schedule::Cron {
                    text: a,
                    timezone: ta,
                    ..
                },
                Schedule::Cron {
                    text: b,
                    timezone: tb,
                    ..
                },
            ) => a == b && ta == tb,
            _ => false,
        }
    }
}

/// What the scheduler knows of a sync's last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRun {
    pub started: DateTime<Utc>,
    /// For `after`: the followed table's version when the run started.
    pub after_version: Option<i64>,
}

impl Schedule {
    /// Parses the `[schedule]` fields; `Err` says what is wrong and what is valid.
    pub fn parse(
        interval: Option<&str>,
        cron: Option<&str>,
        timezone: Option<&str>,
        after: Option<&str>,
        continuous: bool,
    ) -> std::result::Result<Schedule, String> {
        let given = [
            interval.is_some(),
            cron.is_some(),
            after.is_some(),
            continuous,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            return Err("a schedule is one of `interval`, `cron`, `after` or `continuous = true`, not several".into());
        }
        if timezone.is_some() && cron.is_none() {
            return Err("`timezone` applies to `cron` schedules only".into());
        }
        if let Some(i) = interval {
            return tideway_core::time::parse_interval(i)
                .map(Schedule::Interval)
                .ok_or_else(|| {
                    format!("`{i}` is not an interval; write e.g. `15m`, `1h`, `24h`, `daily`")
                });
        }
        if let Some(c) = cron {
            // Accept 5-field crontab lines too, running at second 0.
            let fields = c.split_whitespace().count();
            let full = if fields == 5 {
                format!("0 {c}")
            } else {
                c.to_string()
            };
            let schedule = cron::Schedule::from_str(&full).map_err(|e| {
                format!("`{c}` is not a cron expression ({e}); write `min hour day-of-month month day-of-week`, e.g. `0 6 * * Mon-Fri`")
            })?;
            let timezone = match timezone {
                None => chrono_tz::UTC,
                Some(tz) => tz.parse::<chrono_tz::Tz>().map_err(|_| {
                    format!("unknown time zone `{tz}`; use an IANA name such as `Europe/Paris` or `America/New_York`")
                })?,
            };
            return Ok(Schedule::Cron {
                text: c.to_string(),
                schedule: Box::new(schedule),
                timezone,
            });
        }
        if let Some(a) = after {
            if a.parse::<TableName>().is_err() || a.split('.').count() != 2 {
                return Err(format!(
                    "`after = \"{a}\"` is not a table; write `schema.table`, e.g. `marts.lead_score`"
                ));
            }
            return Ok(Schedule::After(a.to_string()));
        }
        Ok(if continuous {
            Schedule::Continuous
        } else {
            Schedule::Manual
        })
    }

    /// Whether a run is due at `now`, given the last run and (for `after`) the followed
    /// table's current version.
    pub fn due(
        &self,
        last: Option<&LastRun>,
        now: DateTime<Utc>,
        after_version: Option<i64>,
    ) -> bool {
        match self {
            Schedule::Manual => false,
            Schedule::Continuous => true,
            Schedule::Interval(every) => last.is_none_or(|l| {
                l.started + chrono::Duration::from_std(*every).unwrap_or(chrono::Duration::MAX)
                    <= now
            }),
            Schedule::Cron {
                schedule, timezone, ..
            } => {
                let since = last.map_or(now - chrono::Duration::days(366), |l| l.started);
                schedule
                    .after(&since.with_timezone(timezone))
                    .next()
                    .is_some_and(|fire| fire.with_timezone(&Utc) <= now)
            }
            Schedule::After(_) => match (after_version, last.and_then(|l| l.after_version)) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(now_v), Some(seen)) => now_v > seen,
            },
        }
    }
}

/// The last run of every sync that ran.
pub async fn last_runs(lake: &Lake) -> Result<HashMap<String, LastRun>> {
    let runs = state::table(state::RUNS);
    let Some(table) = lake.load(&runs).await? else {
        return Ok(HashMap::new());
    };
    let has_after = Lake::schema_of(&runs, &table)?
        .field_with_name("after_version")
        .is_ok();
    let sql = format!(
        "SELECT sync, started_at, {} AS after_version FROM _tideway.sync_runs r \
         WHERE run = (SELECT max(run) FROM _tideway.sync_runs m WHERE m.sync = r.sync)",
        if has_after {
            "after_version"
        } else {
            "CAST(NULL AS BIGINT)"
        }
    );
    let SqlOutput::Rows(rows) = lake.sql(&sql).await? else {
        return Ok(HashMap::new());
    };
    let mut out = HashMap::new();
    for b in &rows.batches {
        let cast = |i: usize, t: &DataType| {
            deltalake::arrow::compute::cast(b.column(i), t)
                .map_err(|e| ActivateError::Internal(format!("sync_runs: {e}")))
        };
        let names = cast(0, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let started = cast(
            1,
            &DataType::Timestamp(deltalake::arrow::datatypes::TimeUnit::Microsecond, None),
        )?;
        let started = started.as_primitive::<TimestampMicrosecondType>();
        let after = cast(2, &DataType::Int64)?;
        let after = after.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let Some(at) = DateTime::from_timestamp_micros(started.value(i)) else {
                continue;
            };
            out.insert(
                names.value(i).to_string(),
                LastRun {
                    started: at,
                    after_version: after.is_valid(i).then(|| after.value(i)),
                },
            );
        }
    }
    Ok(out)
}

/// Runs every sync of `project` that is due at `now`, one after the other; each sync's result.
pub async fn tick(
    lake: &Lake,
    project: &crate::Project,
    now: DateTime<Utc>,
) -> Vec<(String, Result<crate::RunReport>)> {
    let last = match last_runs(lake).await {
        Ok(last) => last,
        Err(e) => return vec![("(scheduler)".to_string(), Err(e))],
    };
    let mut out = Vec::new();
    for sync in &project.syncs {
        let after_version = match &sync.schedule {
            Schedule::After(table) => match crate::run::table_version(lake, table).await {
                Ok(v) => v,
                Err(e) => {
                    out.push((sync.name.clone(), Err(e)));
                    continue;
                }
            },
            _ => None,
        };
        if !sync.schedule.due(last.get(&sync.name), now, after_version) {
            continue;
        }
        let result = match project.job(&sync.name) {
            Ok(job) => job.run(lake, &Default::default(), &|_| {}).await,
            Err(e) => Err(e),
        };
        out.push((sync.name.clone(), result));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn intervals_crons_and_tables_decide_when_a_sync_is_due() {
        let now = at("2026-12-02T06:30:00Z");
        let last = |s: &str| LastRun {
            started: at(s),
            after_version: Some(4),
        };
        let daily = Schedule::parse(Some("24h"), None, None, None, false).unwrap();
        assert!(daily.due(None, now, None));
        assert!(!daily.due(Some(&last("2026-12-01T07:00:00Z")), now, None));
        assert!(daily.due(Some(&last("2026-12-01T06:00:00Z")), now, None));

        // 06:00 in Paris is 05:00 UTC in winter.
        let cron =
            Schedule::parse(None, Some("0 6 * * *"), Some("Europe/Paris"), None, false).unwrap();
        assert!(cron.due(Some(&last("2026-12-01T05:30:00Z")), now, None));
        assert!(!cron.due(Some(&last("2026-12-02T05:00:01Z")), now, None));

        let after = Schedule::parse(None, None, None, Some("marts.lead_score"), false).unwrap();
        assert!(!after.due(Some(&last("2026-12-01T00:00:00Z")), now, Some(4)));
        assert!(after.due(Some(&last("2026-12-01T00:00:00Z")), now, Some(5)));
        assert!(
            !after.due(None, now, None),
            "no table yet: nothing to follow"
        );

        assert!(!Schedule::Manual.due(None, now, None));
        assert!(Schedule::Continuous.due(Some(&last("2026-12-02T06:29:59Z")), now, None));
    }

    #[test]
    fn bad_schedules_say_what_is_valid() {
        let e = Schedule::parse(Some("1h"), Some("* * * * *"), None, None, false).unwrap_err();
        assert!(e.contains("not several"), "{e}");
        let e = Schedule::parse(None, Some("61 * * * *"), None, None, false).unwrap_err();
        assert!(e.contains("is not a cron expression"), "{e}");
        let e = Schedule::parse(None, Some("0 6 * * *"), Some("Mars/Olympus"), None, false)
            .unwrap_err();
        assert!(e.contains("unknown time zone `Mars/Olympus`"), "{e}");
        let e = Schedule::parse(Some("often"), None, None, None, false).unwrap_err();
        assert!(e.contains("`often` is not an interval"), "{e}");
    }
}
