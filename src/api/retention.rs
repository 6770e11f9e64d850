//! How many backups of a schedule are kept.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which backups of a schedule are kept; the others are deleted with their data. A backup is
/// kept when any rule keeps it; with no keep rule set, successful backups are kept until
/// maxAge. The newest successful backup and running backups are never deleted. Without a
/// retention policy every backup is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N successful backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_last: Option<i32>,
    /// Keep the newest successful backup of each of the N most recent hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_hourly: Option<i32>,
    /// Keep the newest successful backup of each of the N most recent days that have one
    /// (days in the schedule's time zone; days without a backup, such as downtime, do not
    /// count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_daily: Option<i32>,
    /// Keep the newest successful backup of each of the N most recent ISO weeks that have
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_weekly: Option<i32>,
    /// Keep the newest successful backup of each of the N most recent months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_monthly: Option<i32>,
    /// Keep the newest successful backup of each of the N most recent years that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_yearly: Option<i32>,
    /// Keep the newest N failed runs (for their logs and status); older failed runs are
    /// deleted.
    #[serde(default = "default_keep_failed")]
    #[schemars(range(min = 0))]
    pub keep_failed: i32,
    /// Delete backups older than this, whatever the other rules say (except the newest
    /// successful one). A number followed by `h` (hours), `d` (days) or `w` (weeks), for
    /// example `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[hdw]$"))]
    pub max_age: Option<String>,
}

fn default_keep_failed() -> i32 {
    3
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_failed: default_keep_failed(),
            max_age: None,
        }
    }
}
