//! A server's audit log: who did what to whom, when and why. Entries are written in the
//! transaction of the change they describe (a change and its entry land together or not at
//! all); what the server never reads (message content) never appears in them.

use std::collections::BTreeSet;

use copains_client_core::api::PublicUser;
use copains_client_core::servers::{AuditAction, AuditEntry, AuditLog, Permissions};
use copains_client_core::{ServerId, UserId};
use serde_json::{Map, Value};
use sqlx::{AnyConnection, Row};

use super::servers::{member_access, public_user_at, CommunityError};
use super::{Result, Store, StoreError};

/// Most entries in one page.
pub const AUDIT_PAGE_MAX: u32 = 100;

/// One entry to write.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// The server.
    pub server: ServerId,
    /// Who did it.
    pub actor: UserId,
    /// What.
    pub action: AuditAction,
    /// To what (a user, channel, role or message id, or an invite code).
    pub target: Option<String>,
    /// Why, as the actor said.
    pub reason: Option<&'a str>,
    /// What changed (an object).
    pub details: Value,
    /// When (Unix milliseconds).
    pub at: i64,
}

impl<'a> AuditRecord<'a> {
    /// An entry of `action` by `actor` in `server`, now, with no target, reason or details.
    pub fn new(server: ServerId, actor: UserId, action: AuditAction) -> Self {
        AuditRecord { server, actor, action, target: None, reason: None, details: Value::Object(Map::new()), at: super::now_ms() }
    }

    /// On `target`.
    pub fn target(mut self, target: impl ToString) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// Because of `reason` (none when empty).
    pub fn reason(mut self, reason: Option<&'a str>) -> Self {
        self.reason = reason.filter(|r| !r.is_empty());
        self
    }

    /// With these details (an object).
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Writes `entry` on `c` (inside the change's transaction).
pub(crate) async fn record(c: &mut AnyConnection, entry: AuditRecord<'_>) -> Result<()> {
    let details = match &entry.details {
        Value::Object(m) if m.is_empty() => None,
        d => Some(d.to_string()),
    };
    sqlx::query(
        "INSERT INTO audit_log (server_id, actor_id, action, target_id, reason, details, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.server.0)
    .bind(entry.actor.0)
    .bind(entry.action.as_str())
    .bind(entry.target)
    .bind(entry.reason)
    .bind(details)
    .bind(entry.at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The filters of `GET /api/v1/servers/{id}/audit-log`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// At most this many (1 to [`AUDIT_PAGE_MAX`]).
    pub limit: u32,
    /// Entries before this id.
    pub before: Option<i64>,
    /// Of this action only.
    pub action: Option<AuditAction>,
    /// By this user only.
    pub actor: Option<UserId>,
    /// On this target only (a user, channel, role or message id).
    pub target: Option<String>,
}

impl Store {
    /// Writes one entry outside any other change (a voice moderation, a message deleted).
    pub async fn record_audit(&self, entry: AuditRecord<'_>) -> Result<()> {
        let mut c = self.pool().acquire().await?;
        record(&mut c, entry).await
    }

    /// A page of `server`'s audit log, newest first, for `viewer` (who needs the view audit
    /// log permission).
    pub async fn audit_log(&self, server: ServerId, viewer: UserId, q: &AuditQuery) -> Result<AuditLog, CommunityError> {
        let mut c = self.pool().acquire().await?;
        let access = member_access(&mut c, server, viewer).await?;
        if !access.permissions().contains(Permissions::VIEW_AUDIT_LOG) {
            return Err(CommunityError::Forbidden("reading the audit log needs the view audit log permission"));
        }
        let limit = q.limit.clamp(1, AUDIT_PAGE_MAX);
        // One more than asked tells whether a next page exists.
        let rows = sqlx::query(
            "SELECT id, action, actor_id, target_id, reason, details, created_at FROM audit_log \
             WHERE server_id = $1 AND id < $2 AND ($3 = '' OR action = $3) AND ($4 = 0 OR actor_id = $4) \
             AND ($5 = '' OR target_id = $5) ORDER BY id DESC LIMIT $6",
        )
        .bind(server.0)
        .bind(q.before.unwrap_or(i64::MAX))
        .bind(q.action.map_or("", AuditAction::as_str))
        .bind(q.actor.map_or(0, |a| a.0))
        .bind(q.target.as_deref().unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *c)
        .await?;
        let more = rows.len() > limit as usize;
        let mut entries = Vec::with_capacity(rows.len().min(limit as usize));
        let mut named = BTreeSet::new();
        for r in rows.iter().take(limit as usize) {
            let action: String = r.try_get(1)?;
            let action = AuditAction::parse(&action).ok_or_else(|| StoreError::Corrupt(format!("audit action {action}")))?;
            let actor = UserId(r.try_get(2)?);
            let target: Option<String> = r.try_get(3)?;
            let details: Option<String> = r.try_get(5)?;
            let details = match details {
                Some(d) => serde_json::from_str(&d).map_err(|_| StoreError::Corrupt("audit details".into()))?,
                None => Value::Object(Map::new()),
            };
            named.insert(actor.0);
            if action_targets_user(action) {
                if let Some(t) = target.as_deref().and_then(|t| t.parse::<i64>().ok()) {
                    named.insert(t);
                }
            }
            // A message's author, for "deleted a message by …".
            if let Some(author) = details.get("author_id").and_then(Value::as_str).and_then(|a| a.parse::<i64>().ok()) {
                named.insert(author);
            }
            let id: i64 = r.try_get(0)?;
            entries.push(AuditEntry {
                id: id.to_string(),
                action,
                actor_id: actor,
                target_id: target,
                reason: r.try_get(4)?,
                details,
                created_at: r.try_get(6)?,
            });
        }
        let next_before = if more { entries.last().map(|e| e.id.clone()) } else { None };
        let mut users: Vec<PublicUser> = Vec::with_capacity(named.len());
        for id in named {
            if let Some(row) = sqlx::query("SELECT id, username, display_name, status_text FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *c)
                .await?
            {
                users.push(public_user_at(&row, 0)?);
            }
        }
        Ok(AuditLog { entries, users, next_before })
    }
}

/// How an invite shows in the log: its first four characters. The code itself lets anyone in,
/// and reading the log is not the permission to see every invite.
pub fn invite_hint(code: &str) -> String {
    format!("{}…", code.chars().take(4).collect::<String>())
}

/// The top-level fields that differ between `before` and `after` (two of one type), as
/// `{"field": {"old": …, "new": …}}`.
pub fn changes(before: &impl serde::Serialize, after: &impl serde::Serialize) -> Value {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (serde_json::to_value(before), serde_json::to_value(after)) else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    for (k, v) in &new {
        let was = old.get(k).cloned().unwrap_or(Value::Null);
        if &was != v {
            out.insert(k.clone(), serde_json::json!({"old": was, "new": v}));
        }
    }
    Value::Object(out)
}

/// Whether the action's target is a user.
pub fn action_targets_user(action: AuditAction) -> bool {
    matches!(
        action,
        AuditAction::MemberKick
            | AuditAction::MemberBan
            | AuditAction::MemberUnban
            | AuditAction::MemberTimeout
            | AuditAction::MemberTimeoutRemove
            | AuditAction::MemberRolesUpdate
            | AuditAction::MemberVoiceUpdate
            | AuditAction::MemberVoiceDisconnect
            | AuditAction::MemberVoiceMove
            | AuditAction::MessagesPurge
            | AuditAction::ReactionRemove
    )
}
