//! JumpCloud's directory API, read-only: users (v1), user groups and their members (v2), and
//! the groups bound to an SSO application. Paged with `limit=100`, `skip` and `sort=_id`
//! until a short page, with no record cap; one request at a time, paced; 429 and 5xx retried
//! with exponential backoff and jitter, honouring `Retry-After`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::snapshot::{RawDirectory, RawGroup, RawUser};
use crate::config::DirectoryConfig;
use crate::metrics::Metrics;
use crate::oidc::http::{urlencode, IdpClient};
use crate::secret::Secret;

/// JumpCloud's largest page.
const PAGE: usize = 100;
/// Longest wait honoured from `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Longest backoff between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the user list is re-read when it changed while being paged.
const USER_LIST_ATTEMPTS: usize = 3;

/// Why a sync failed. A failed sync changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The API answered with a status that retrying cannot fix (401, 403, 404, …).
    #[error("{path} answered {status}")]
    Status {
        /// The request path.
        path: String,
        /// The status.
        status: u16,
    },
    /// Retries were exhausted.
    #[error("{path}: gave up after {attempts} attempts ({last})")]
    GaveUp {
        /// The request path.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The response was not the JSON shape JumpCloud documents.
    #[error("{path}: unexpected response: {why}")]
    Shape {
        /// The request path.
        path: String,
        /// What was wrong.
        why: String,
    },
    /// The user list kept changing while it was being paged.
    #[error("the user list changed during every one of {0} attempts to read it")]
    Unstable(usize),
}

/// A read-only JumpCloud API client for one sync.
pub struct JumpCloud<'a> {
    client: &'a IdpClient,
    base: String,
    api_key: &'a Secret,
    org_id: Option<&'a str>,
    interval: Duration,
    max_retries: u32,
    backoff: Duration,
    last_request: Option<Instant>,
    metrics: &'a Metrics,
    /// Records fetched in this sync.
    pub fetched: u64,
}

impl<'a> JumpCloud<'a> {
    /// A client for `config`, using `client` for HTTP.
    pub fn new(
        config: &'a DirectoryConfig,
        client: &'a IdpClient,
        api_key: &'a Secret,
        metrics: &'a Metrics,
    ) -> Self {
        JumpCloud {
            client,
            base: config.api_url.trim_end_matches('/').to_owned(),
            api_key,
            org_id: config.org_id.as_deref(),
            interval: config.request_interval,
            max_retries: config.max_retries,
            backoff: config.retry_backoff,
            last_request: None,
            metrics,
            fetched: 0,
        }
    }

    /// Waits so consecutive requests are at least `interval` apart.
    async fn pace(&mut self) {
        if let Some(last) = self.last_request {
            let next = last + self.interval;
            if next > Instant::now() {
                tokio::time::sleep_until(next.into()).await;
            }
        }
        self.last_request = Some(Instant::now());
    }

    /// GET a JSON document, retrying what is worth retrying.
    async fn get(&mut self, path_and_query: &str) -> Result<Value, SyncError> {
        let url = format!("{}{}", self.base, path_and_query);
        let path = path_and_query
            .split('?')
            .next()
            .unwrap_or(path_and_query)
            .to_owned();
        let mut attempt: u32 = 0;
        loop {
            self.pace().await;
            let mut headers: Vec<(&str, &str)> = vec![("x-api-key", self.api_key.expose())];
            if let Some(org) = self.org_id {
                headers.push(("x-org-id", org));
            }
            let outcome = self.client.get(&url, &headers).await;
            let (why, retry_after) = match outcome {
                Ok(f) if f.status.is_success() => {
                    return serde_json::from_slice(&f.body).map_err(|e| SyncError::Shape {
                        path,
                        why: e.to_string(),
                    });
                }
                Ok(f) => {
                    self.metrics
                        .directory_api_errors
                        .get_or_create(&crate::metrics::StatusLabel {
                            status: f.status.as_u16(),
                        })
                        .inc();
                    if f.status.as_u16() != 429 && !f.status.is_server_error() {
                        return Err(SyncError::Status {
                            path,
                            status: f.status.as_u16(),
                        });
                    }
                    (
                        format!("status {}", f.status.as_u16()),
                        f.retry_after.map(Duration::from_secs),
                    )
                }
                Err(e) => {
                    self.metrics
                        .directory_api_errors
                        .get_or_create(&crate::metrics::StatusLabel { status: 0 })
                        .inc();
                    (e.to_string(), None)
                }
            };
            attempt += 1;
            if attempt > self.max_retries {
                return Err(SyncError::GaveUp {
                    path,
                    attempts: attempt,
                    last: why,
                });
            }
            self.metrics.directory_retries.inc();
            let backoff = crate::clock::jitter(
                self.backoff
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(MAX_BACKOFF),
            );
            let wait = retry_after.map_or(backoff, |r| r.min(MAX_RETRY_AFTER));
            tracing::warn!(path = %path, attempt, error = %why, wait = ?wait, "directory API request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Pages through a list endpoint; `results` picks the records out of a page.
    /// `sort` is `_id` for v1 endpoints and `id` for v2 ones, so paging is over a stable order.
    async fn all(
        &mut self,
        path: &str,
        sort: &str,
        results: fn(&Value) -> Option<&Vec<Value>>,
    ) -> Result<(Vec<Value>, Option<u64>), SyncError> {
        let mut out = Vec::new();
        let mut first_total = None;
        let mut skip = 0usize;
        loop {
            let page = self
                .get(&format!("{path}?limit={PAGE}&skip={skip}&sort={sort}"))
                .await?;
            let records = results(&page).ok_or_else(|| SyncError::Shape {
                path: path.to_owned(),
                why: "expected a list of records".to_owned(),
            })?;
            if skip == 0 {
                first_total = page.get("totalCount").and_then(Value::as_u64);
            }
            let n = records.len();
            self.fetched += n as u64;
            out.extend(records.iter().cloned());
            if n < PAGE {
                return Ok((out, first_total));
            }
            skip += n;
        }
    }

    /// Every user. The list is re-read when it changed while being paged (its total moved or
    /// the count does not add up), since `skip` paging then misses or repeats records.
    pub async fn users(&mut self) -> Result<Vec<RawUser>, SyncError> {
        for _ in 0..USER_LIST_ATTEMPTS {
            let (records, total) = self
                .all("/api/systemusers", "_id", |v| {
                    v.get("results").and_then(Value::as_array)
                })
                .await?;
            let users: Vec<RawUser> = records.iter().map(parse_user).collect();
            let mut ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let consistent =
                ids.len() == users.len() && total.is_none_or(|t| t as usize == users.len());
            if consistent {
                return Ok(users);
            }
            tracing::warn!(fetched = users.len(), total = ?total, "user list changed while paging; reading it again");
        }
        Err(SyncError::Unstable(USER_LIST_ATTEMPTS))
    }

    /// Every user group's id and name, without members.
    pub async fn group_list(&mut self) -> Result<Vec<(String, String)>, SyncError> {
        let (records, _) = self
            .all("/api/v2/usergroups", "id", Value::as_array)
            .await?;
        records
            .iter()
            .map(|g| {
                let id = g
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SyncError::Shape {
                        path: "/api/v2/usergroups".to_owned(),
                        why: "group without id".to_owned(),
                    })?;
                let name = g.get("name").and_then(Value::as_str).unwrap_or(id);
                Ok((id.to_owned(), name.to_owned()))
            })
            .collect()
    }

    /// Every user group, with its members.
    pub async fn groups(&mut self) -> Result<Vec<RawGroup>, SyncError> {
        let list = self.group_list().await?;
        let mut groups = Vec::with_capacity(list.len());
        for (id, name) in list {
            let path = format!("/api/v2/usergroups/{}/members", urlencode(&id));
            // A failed member fetch fails the whole sync: an empty group would silently
            // remove everyone's access through it.
            let (members, _) = self.all(&path, "id", Value::as_array).await?;
            let members = members
                .iter()
                .filter_map(|m| {
                    let to = m.get("to")?;
                    (to.get("type").and_then(Value::as_str) == Some("user"))
                        .then(|| to.get("id").and_then(Value::as_str).map(str::to_owned))
                        .flatten()
                })
                .collect();
            groups.push(RawGroup { id, name, members });
        }
        Ok(groups)
    }

    /// Ids of the user groups bound to application `app`.
    pub async fn app_groups(&mut self, app: &str) -> Result<Vec<String>, SyncError> {
        let path = format!("/api/v2/applications/{}/usergroups", urlencode(app));
        let (records, _) = self.all(&path, "id", Value::as_array).await?;
        Ok(records
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// A complete directory read.
    pub async fn read(&mut self, application_id: Option<&str>) -> Result<RawDirectory, SyncError> {
        let users = self.users().await?;
        let groups = self.groups().await?;
        let app_groups = match application_id {
            Some(app) => Some(self.app_groups(app).await?),
            None => None,
        };
        Ok(RawDirectory {
            taken_at: crate::clock::now(),
            users,
            groups,
            app_groups,
        })
    }
}

/// Reads one user record leniently: a missing or odd field never fails the page, it makes
/// this one user inactive and says why.
pub fn parse_user(v: &Value) -> RawUser {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let b = |k: &str| v.get(k).and_then(Value::as_bool);
    let mut problems: Vec<String> = Vec::new();
    let id = s("_id").or_else(|| s("id")).unwrap_or_default().to_owned();
    if id.is_empty() {
        problems.push("no id".into());
    }
    let email = s("email").map(str::to_owned);
    if email.is_none() {
        problems.push("no email".into());
    }
    let state = s("state").unwrap_or_default().to_owned();
    if !matches!(state.as_str(), "ACTIVATED" | "STAGED" | "SUSPENDED") {
        problems.push(format!("unknown state {state:?}"));
    }
    let activated = b("activated").unwrap_or_else(|| {
        problems.push("no activated flag".into());
        false
    });
    let user = RawUser {
        email,
        username: s("username").map(str::to_owned),
        activated,
        suspended: b("suspended").unwrap_or(state == "SUSPENDED"),
        account_locked: b("account_locked").unwrap_or(false),
        password_expired: b("password_expired").unwrap_or(false),
        state,
        problem: (!problems.is_empty()).then(|| problems.join(", ")),
        id,
    };
    if let Some(p) = &user.problem {
        tracing::warn!(user.id = %user.id, problem = %p, "directory record read with problems; user treated as inactive");
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_user_records() {
        let ok = parse_user(
            &json!({"_id": "a", "id": "a", "email": "a@x", "username": "a", "state": "ACTIVATED",
            "activated": true, "suspended": false, "account_locked": false, "password_expired": false, "brandNew": {"x": 1}}),
        );
        assert!(ok.is_active(), "{ok:?}");
        let null_email = parse_user(
            &json!({"_id": "b", "email": null, "state": "ACTIVATED", "activated": true}),
        );
        assert!(!null_email.is_active());
        assert_eq!(null_email.id, "b");
        let odd_state = parse_user(
            &json!({"_id": "c", "email": "c@x", "state": "ARCHIVED", "activated": true}),
        );
        assert!(!odd_state.is_active());
        assert!(odd_state.problem.unwrap().contains("ARCHIVED"));
        let suspended = parse_user(
            &json!({"_id": "d", "email": "d@x", "state": "SUSPENDED", "activated": true}),
        );
        assert!(suspended.suspended && !suspended.is_active());
    }
}
