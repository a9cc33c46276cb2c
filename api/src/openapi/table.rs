//! The one hand-written table: per route, who may call it, its successes, the
//! problem `code`s per error status and its links.

use serde_json::json;

use super::operation::{
    Access, Operation, Schemas, Success, header, limit_param, list_params, op, path_param, query,
};
use crate::request::{GpuRef, InviteId, NodeName, PackName, SessionId, SnapshotId, UserId};
use crate::validate;

const SESSION_ID_OF_REPLY: &str = "$response.body#/data/session/id";
const SNAPSHOT_ID_OF_REPLY: &str = "$response.body#/data/snapshot/id";

/// Every operation the API serves.
pub fn operations() -> Vec<Operation> {
    operations_with(&mut Schemas::new())
}

pub(super) fn operations_with(s: &mut Schemas) -> Vec<Operation> {
    use Access::*;
    let health = s.response::<crate::health::Health>();
    let readiness = s.response::<crate::health::Readiness>();
    let user_reply = s.response::<crate::auth::UserReply>();
    let message = s.response::<crate::auth::Message>();
    let event_token = s.response::<crate::events::EventToken>();
    let node = s.response::<crate::admin::NodeView>();
    let nodes = s.response_list::<crate::admin::NodeView>();
    let session = s.response::<crate::sessions::SessionView>();
    let sessions = s.response_list::<crate::sessions::SessionView>();
    let session_reply = s.response::<crate::sessions::SessionReply>();
    let users = s.response_list::<crate::auth::UserView>();
    let signup = s.request::<crate::auth::Signup>();
    let login = s.request::<crate::auth::Login>();
    let user_patch = s.request::<crate::admin::UserPatch>();
    let create = s.request::<crate::sessions::CreateSession>();
    let new_user = s.request::<crate::accounts::NewUser>();
    let password_change = s.request::<crate::accounts::PasswordChange>();
    let password_reset = s.request::<crate::accounts::PasswordReset>();
    let new_invite = s.request::<crate::accounts::NewInvite>();
    let invite_reply = s.response::<crate::accounts::InviteReply>();
    let invites = s.response_list::<crate::accounts::InviteView>();
    let audit = s.response_list::<crate::audit::AuditEntry>();
    let snapshot = s.response::<crate::snapshots::SnapshotView>();
    let snapshots = s.response_list::<crate::snapshots::SnapshotView>();
    let snapshot_reply = s.response::<crate::snapshots::SnapshotReply>();
    let packs = s.response_list::<crate::packs::view::PackView>();
    let pack_reply = s.response::<crate::packs::view::PackReply>();
    let pack_body = s.request::<crate::packs::body::PackBody>();

    let mut ops = vec![
        op("get", "/healthz", "healthz", "The process is up", "health", Public)
            .ok(200, Success::Envelope(health)),
        op("get", "/readyz", "readyz", "Database and control plane answer, session watch synced", "health", Public)
            .ok(200, Success::Envelope(readiness))
            .error(503, &["not_ready"]),
        op("get", "/api/v2/openapi.json", "openapi", "This document", "meta", Public)
            .ok(200, Success::Raw("application/json", json!({"type": "object", "required": ["openapi", "paths"]}))),
        op("post", "/api/v2/auth/signup", "signup", "Create an account and log in (sets the cookie)", "auth", Public)
            .body(signup, true)
            .ok(201, Success::Envelope(user_reply.clone()))
            .header("Set-Cookie", "The login cookie")
            .link("ChangeUser", "changeUser", &[("id", "$response.body#/data/user/id")])
            .error(403, &["signup_disabled", "invite_required", "invite_invalid", "signup_domain_not_allowed"])
            .error(409, &["email_taken"])
            .error(429, &["rate_limited"])
            .error(503, &["database_unavailable", "busy"]),
        op("post", "/api/v2/auth/login", "login", "Log in (sets the cookie)", "auth", Public)
            .body(login, true)
            .ok(200, Success::Envelope(user_reply.clone()))
            .header("Set-Cookie", "The login cookie")
            .error(401, &["invalid_credentials"])
            .error(403, &["account_disabled"])
            .error(429, &["rate_limited", "login_delayed"])
            .error(503, &["database_unavailable", "busy"]),
        op("post", "/api/v2/auth/logout", "logout", "Revoke the login token and clear the cookie", "auth", Public)
            .ok(200, Success::Envelope(message))
            .header("Set-Cookie", "The cleared cookie")
            .error(503, &["database_unavailable"]),
        op("get", "/api/v2/me", "me", "The logged-in user", "auth", User)
            .ok(200, Success::Envelope(user_reply.clone())),
        op("patch", "/api/v2/me", "changePassword", "Change your password, given the current one (your other logins end)", "auth", User)
            .body(password_change, true)
            .ok(200, Success::Envelope(user_reply.clone()))
            .error(403, &["wrong_password"])
            .error(429, &["login_delayed"])
            .error(503, &["busy"]),
        op("get", "/api/v2/auth/session-proxy", "sessionProxy", "Caddy forward_auth for s-<slug> hosts: 200 with X-Upstream for the owner or an admin of a running session (the cookie authenticates; the Host names the session)", "auth", Public)
            .ok(200, Success::Empty)
            .header("X-Upstream", "Where Caddy sends the request (host:port)")
            .error(401, &["unauthenticated"])
            .error(403, &["session_access_denied"])
            .error(404, &["not_found"])
            .error(503, &["database_unavailable"]),
        op("get", "/api/v2/events", "events", "Server-Sent Events of the caller's sessions and snapshots (cookie, bearer or ?token=)", "events", User)
            .param(query("token", validate::EVENT_TOKEN.schema(), "Single-use token from POST /api/v2/events/token, for EventSource"))
            .ok(200, Success::Raw("text/event-stream", json!({"type": "string"}))),
        op("post", "/api/v2/events/token", "eventToken", "A single-use token (60 s) for EventSource", "events", User)
            .ok(201, Success::Envelope(event_token)),
        op("get", "/api/v2/admin/nodes", "listNodes", "GPU nodes with free and used GPUs", "admin", Admin)
            .ok(200, Success::Envelope(nodes))
            .error(503, &["control_plane_unavailable"])
            .link("CordonNode", "cordonNode", &[("node", "$response.body#/data/0/name")])
            .link("CordonGpu", "cordonGpu", &[("node", "$response.body#/data/0/name"), ("gpu", "$response.body#/data/0/gpus/0/uuid")]),
        op("post", "/api/v2/admin/nodes/{node}/cordon", "cordonNode", "Cordon a node", "admin", Admin)
            .param(path_param::<NodeName>())
            .ok(200, Success::Envelope(node.clone()))
            .error(503, &["control_plane_unavailable"])
            .link("UncordonNode", "uncordonNode", &[("node", "$response.body#/data/name")]),
        op("post", "/api/v2/admin/nodes/{node}/uncordon", "uncordonNode", "Uncordon a node", "admin", Admin)
            .param(path_param::<NodeName>())
            .ok(200, Success::Envelope(node.clone()))
            .error(503, &["control_plane_unavailable"]),
        op("post", "/api/v2/admin/nodes/{node}/gpus/{gpu}/cordon", "cordonGpu", "Cordon one GPU (by index or UUID)", "admin", Admin)
            .param(path_param::<NodeName>())
            .param(path_param::<GpuRef>())
            .ok(200, Success::Envelope(node.clone()))
            .error(409, &["conflict"])
            .error(503, &["control_plane_unavailable"])
            .link("UncordonGpu", "uncordonGpu", &[("node", "$request.path.node"), ("gpu", "$request.path.gpu")]),
        op("post", "/api/v2/admin/nodes/{node}/gpus/{gpu}/uncordon", "uncordonGpu", "Uncordon one GPU (by index or UUID)", "admin", Admin)
            .param(path_param::<NodeName>())
            .param(path_param::<GpuRef>())
            .ok(200, Success::Envelope(node))
            .error(409, &["conflict"])
            .error(503, &["control_plane_unavailable"]),
        op("get", "/api/v2/admin/sessions", "listAllSessions", "Every session, both exposures", "admin", Admin)
            .params(list_params(false))
            .ok(200, Success::Envelope(sessions.clone())),
        op("get", "/api/v2/admin/users", "listUsers", "Users, by email", "admin", Admin)
            .param(limit_param())
            .param(query("cursor", validate::USERS_CURSOR.schema(), "`meta.next_cursor` of the previous page"))
            .ok(200, Success::Envelope(users)),
        op("post", "/api/v2/admin/users", "createUser", "Create an account", "admin", Admin)
            .body(new_user, true)
            .ok(201, Success::Envelope(user_reply.clone()))
            .link("ChangeUser", "changeUser", &[("id", "$response.body#/data/user/id")])
            .error(409, &["email_taken"])
            .error(503, &["busy"]),
        op("patch", "/api/v2/admin/users/{id}", "changeUser", "Change a user's flags; disable (every login ends, every session stops) or enable the account", "admin", Admin)
            .param(path_param::<UserId>())
            .body(user_patch, true)
            .ok(200, Success::Envelope(user_reply.clone()))
            .error(409, &["last_admin_guard", "own_account"])
            .error(503, &["control_plane_unavailable"]),
        op("post", "/api/v2/admin/users/{id}/password", "resetPassword", "Set a user's password (every login of theirs ends)", "admin", Admin)
            .param(path_param::<UserId>())
            .body(password_reset, true)
            .ok(200, Success::Envelope(user_reply))
            .error(409, &["own_account"])
            .error(503, &["busy"]),
        op("post", "/api/v2/admin/invites", "createInvite", "Create a single-use invite code (shown once)", "admin", Admin)
            .body(new_invite, false)
            .ok(201, Success::Envelope(invite_reply))
            .link("RevokeInvite", "revokeInvite", &[("id", "$response.body#/data/invite/id")]),
        op("get", "/api/v2/admin/invites", "listInvites", "Invites, newest first (without their codes)", "admin", Admin)
            .param(limit_param())
            .param(query("cursor", validate::LOG_ID.schema(), "`meta.next_cursor` of the previous page"))
            .ok(200, Success::Envelope(invites)),
        op("delete", "/api/v2/admin/invites/{id}", "revokeInvite", "Revoke an unused invite", "admin", Admin)
            .param(path_param::<InviteId>())
            .ok(204, Success::Empty)
            .error(409, &["invite_used"]),
        op("get", "/api/v2/admin/audit", "listAudit", "The audit log, newest first", "admin", Admin)
            .param(limit_param())
            .param(query("cursor", validate::LOG_ID.schema(), "`meta.next_cursor` of the previous page"))
            .param(query("action", validate::AUDIT_ACTION.schema(), "Only this action (`user.disabled`, …)"))
            .param(query("actor", validate::USER_ID.schema(), "Only entries by this user"))
            .param(query("target", validate::AUDIT_TARGET.schema(), "Only entries about this user, invite or Pack"))
            .ok(200, Success::Envelope(audit)),
        op("get", "/api/v2/packs", "listPacks", "The Packs you may use, by name (every Pack for admins, deprecated ones marked)", "packs", User)
            .param(limit_param())
            .param(query("cursor", validate::PACK_CURSOR.schema(), "`meta.next_cursor` of the previous page"))
            .ok(200, Success::Envelope(packs))
            .error(503, &["control_plane_unavailable"]),
        op("put", "/api/v2/admin/packs/{name}", "putPack", "Create (201) or replace (200) a Pack with this spec", "admin", Admin)
            .param(path_param::<PackName>())
            .body(pack_body, true)
            .ok(200, Success::Envelope(pack_reply.clone()))
            .ok(201, Success::Envelope(pack_reply))
            .link("DeletePack", "deletePack", &[("name", "$response.body#/data/pack/name")])
            .error(409, &["conflict"])
            .error(503, &["control_plane_unavailable"]),
        op("delete", "/api/v2/admin/packs/{name}", "deletePack", "Delete a Pack that no session uses (one neither stopped nor failed)", "admin", Admin)
            .param(path_param::<PackName>())
            .ok(204, Success::Empty)
            .error(409, &["pack_in_use"])
            .error(503, &["control_plane_unavailable"]),
        op("get", "/api/v2/snapshots", "listSnapshots", "Your workspace snapshots (everyone's for admins), newest first", "snapshots", User)
            .param(query("session", validate::KUBE_NAME.schema(), "One session's snapshots (a session id)"))
            .param(limit_param())
            .param(query("cursor", validate::SNAPSHOT_CURSOR.schema(), "`meta.next_cursor` of the previous page"))
            .ok(200, Success::Envelope(snapshots)),
        op("get", "/api/v2/snapshots/{id}", "getSnapshot", "One snapshot", "snapshots", User)
            .param(path_param::<SnapshotId>())
            .ok(200, Success::Envelope(snapshot)),
        op("delete", "/api/v2/snapshots/{id}", "deleteSnapshot", "Delete a snapshot: 204 once gone, 202 while the node agent destroys it (or a workspace cloned from it holds it)", "snapshots", User)
            .param(path_param::<SnapshotId>())
            .ok(202, Success::Envelope(snapshot_reply.clone()))
            .ok(204, Success::Empty)
            .error(503, &["control_plane_unavailable"]),
    ];
    for (exposure, title) in [("external", "External"), ("internal", "Internal")] {
        let base = format!("/api/v2/{exposure}/sessions");
        let get_id = format!("get{title}Session");
        let stop_id = format!("stop{title}Session");
        let delete_id = format!("delete{title}Session");
        let session_links = |o: Operation, id: &'static str| {
            o.link("GetSession", get_id.clone(), &[("id", id)])
                .link("StopSession", stop_id.clone(), &[("id", id)])
                .link("DeleteSession", delete_id.clone(), &[("id", id)])
        };
        let mut create_op = op(
            "post",
            base.clone(),
            format!("create{title}Session"),
            "Create a session and wait for the scheduler (wait=ready: until Ready)",
            "sessions",
            User,
        )
        .body(create.clone(), false)
        .param(query(
            "wait",
            json!({"type": "string", "enum": validate::WAIT_VALUES}),
            "`ready`: answer once the session is Ready (202 if it is not in time)",
        ))
        .param(header(
            crate::sessions::idempotency::HEADER,
            validate::IDEMPOTENCY_KEY.schema(),
            "Makes the create idempotent: a retry with the same key and body gets the session the first request created (docs/api.md, \"Idempotent creates\")",
        ))
        .ok(201, Success::Envelope(session_reply.clone()))
        .ok(202, Success::Envelope(session_reply.clone()))
        .optional_header(
            crate::sessions::idempotency::REPLAYED_HEADER,
            "`true` when the session is the one an earlier request with the same Idempotency-Key created",
        )
        .error(400, &["invalid_idempotency_key"])
        .error(409, &["idempotency_key_reused"])
        .error(
            409,
            &[
                "session_deleted",
                "session_failed",
                "conflict",
                crate::sessions::OTHER_REFUSAL,
            ],
        )
        .error(503, &["scheduler_timeout", "control_plane_unavailable"])
        .error(404, &["snapshot_not_found"])
        .error(
            409,
            &["snapshot_not_ready", "snapshot_not_owned", "owner_disabled"],
        );
        for (_, code, _) in crate::sessions::SCHEDULER_REFUSALS {
            create_op = create_op.error(409, &[code]);
        }
        if exposure == "internal" {
            create_op = create_op.error(403, &["internal_not_allowed"]);
        }
        ops.push(session_links(create_op, SESSION_ID_OF_REPLY));
        ops.push(
            op(
                "get",
                base.clone(),
                format!("list{title}Sessions"),
                "Your sessions (everyone's for admins), newest first",
                "sessions",
                User,
            )
            .params(list_params(true))
            .ok(200, Success::Envelope(sessions.clone())),
        );
        ops.push(
            op(
                "get",
                format!("{base}/{{id}}"),
                get_id.clone(),
                "One session",
                "sessions",
                User,
            )
            .param(path_param::<SessionId>())
            .ok(200, Success::Envelope(session.clone())),
        );
        ops.push(
            op(
                "delete",
                format!("{base}/{{id}}"),
                delete_id.clone(),
                "Delete a session (admins)",
                "sessions",
                Admin,
            )
            .param(path_param::<SessionId>())
            .ok(204, Success::Empty)
            .error(503, &["control_plane_unavailable"]),
        );
        let mut start_op = op(
            "post",
            format!("{base}/{{id}}/start"),
            format!("start{title}Session"),
            "Start a Stopped or Failed session again on its own workspace, same URL (idempotent; waits for the scheduler)",
            "sessions",
            User,
        )
        .param(path_param::<SessionId>())
        .ok(202, Success::Envelope(session_reply.clone()))
        .error(
            409,
            &["session_deleted", "conflict", crate::sessions::OTHER_REFUSAL],
        )
        .error(503, &["scheduler_timeout", "control_plane_unavailable"]);
        for (_, code, _) in crate::sessions::SCHEDULER_REFUSALS {
            start_op = start_op.error(409, &[code]);
        }
        ops.push(session_links(start_op, SESSION_ID_OF_REPLY));
        ops.push(session_links(
            op(
                "post",
                format!("{base}/{{id}}/keepalive"),
                format!("keepAlive{title}Session"),
                "Reset a running session's idle clock (never past its maximum lifetime)",
                "sessions",
                User,
            )
            .param(path_param::<SessionId>())
            .ok(200, Success::Envelope(session_reply.clone()))
            .error(409, &["session_not_running"])
            .error(503, &["control_plane_unavailable"]),
            SESSION_ID_OF_REPLY,
        ));
        ops.push(
            op(
                "post",
                format!("{base}/{{id}}/snapshots"),
                format!("snapshot{title}Session"),
                "Ask for a snapshot of a running session's workspace (the node agent takes it; at most 3 pending per session)",
                "sessions",
                User,
            )
            .param(path_param::<SessionId>())
            .ok(202, Success::Envelope(snapshot_reply.clone()))
            .header("Location", "The snapshot: /api/v2/snapshots/{id}")
            .link("GetSnapshot", "getSnapshot", &[("id", SNAPSHOT_ID_OF_REPLY)])
            .link("DeleteSnapshot", "deleteSnapshot", &[("id", SNAPSHOT_ID_OF_REPLY)])
            .error(409, &["session_not_running", "too_many_pending_snapshots", "conflict"])
            .error(503, &["control_plane_unavailable"]),
        );
        ops.push(session_links(
            op(
                "post",
                format!("{base}/{{id}}/stop"),
                stop_id.clone(),
                "Stop a session (idempotent)",
                "sessions",
                User,
            )
            .param(path_param::<SessionId>())
            .ok(202, Success::Envelope(session_reply.clone()))
            .error(503, &["control_plane_unavailable"]),
            SESSION_ID_OF_REPLY,
        ));
    }
    ops.into_iter().map(Operation::with_common_errors).collect()
}

/// The documented operation that serves `method` on a concrete `path` (such as
/// `/api/v2/external/sessions/abc/stop`; a query is ignored), if any.
pub fn operation_for(method: &str, path: &str) -> Option<Operation> {
    let method = method.to_ascii_lowercase();
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    operations().into_iter().find(|o| {
        let template: Vec<&str> = o.path.split('/').collect();
        o.method == method
            && template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
    })
}
