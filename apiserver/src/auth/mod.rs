//! Who is asking and whether they may: authentication (the admin token,
//! ServiceAccount tokens, impersonation), RBAC authorization, the audit log
//! of each decision, and the reviews and TokenRequests that belong with
//! them. See docs/decisions/0021-rbac-in-the-embedded-control-plane.md.

pub mod audit;
pub mod rbac;
pub mod review;
pub mod token;
mod user;

pub use user::{AUTHENTICATED, User, service_account_user};

use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use http::{HeaderMap, Method};
use subtle::ConstantTimeEq;

use crate::registry::Registry;
use crate::request::query::Query;
use crate::request::target::Target;
use crate::status::{ApiError, ApiResult};
use crate::store::Store;
use rbac::{Attributes, Decision};

/// What authentication and authorization need besides the store.
pub struct Auth {
    /// The admin token.
    pub admin_token: String,
    /// Signs and checks ServiceAccount tokens.
    pub signer: token::Signer,
    /// RBAC over the stored roles and bindings.
    pub authz: rbac::Authorizer,
    /// Where each authorization decision is recorded, when configured.
    pub audit: Option<audit::AuditLog>,
}

/// Whether `presented` is the admin token, compared in constant time.
fn is_admin_token(admin: &str, presented: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(admin.as_bytes()))
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The user a request's bearer token names: the admin token (compared in
/// constant time) or a valid ServiceAccount token whose ServiceAccount
/// still exists with the uid it was given for. 401 otherwise.
pub fn authenticate(st: &Auth, store: &Store, headers: &HeaderMap) -> ApiResult<User> {
    let presented = headers
        .typed_get::<Authorization<Bearer>>()
        .ok_or_else(ApiError::unauthorized)?;
    let token = presented.token();
    if is_admin_token(&st.admin_token, token) {
        return Ok(User::admin());
    }
    if token::is_service_account_token(token)
        && let Some(claims) = st.signer.verify(token, now_unix())
        && st
            .authz
            .snapshot(store)
            .service_account_uid(&claims.namespace, &claims.name)
            == Some(claims.uid.as_str())
    {
        return Ok(User::service_account(&claims.namespace, &claims.name));
    }
    Err(ApiError::unauthorized())
}

/// The user a request acts as: `user`, or the one its `Impersonate-User`
/// (and `Impersonate-Group`) headers name when `user` may impersonate them
/// (verb `impersonate` on `users`, `groups` or `serviceaccounts`, as on
/// kube-apiserver; members of `system:masters` may).
pub fn impersonate(
    st: &Auth,
    store: &Store,
    user: User,
    headers: &HeaderMap,
    uri: &str,
) -> ApiResult<User> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let as_user = values("impersonate-user");
    let as_groups = values("impersonate-group");
    let extra = headers.keys().any(|k| {
        let k = k.as_str();
        k.starts_with("impersonate-extra-") || k == "impersonate-uid"
    });
    if as_user.is_empty() {
        if !as_groups.is_empty() || extra {
            return Err(ApiError::internal(
                "requested impersonation of groups or extra fields without impersonating a user",
            ));
        }
        return Ok(user);
    }
    if as_user.len() > 1 {
        return Err(ApiError::bad_request(
            "only one Impersonate-User header is allowed",
        ));
    }
    if extra {
        return Err(ApiError::bad_request(
            "Impersonate-Uid and Impersonate-Extra-* are not supported by this server",
        ));
    }
    let name = as_user[0].clone();
    let snapshot = st.authz.snapshot(store);
    let mut checks = vec![match User::service_account_of(&name) {
        Some((ns, sa)) => Attributes::resource("impersonate", "", "serviceaccounts", "", ns, sa),
        None => Attributes::resource("impersonate", "", "users", "", "", &name),
    }];
    checks.extend(
        as_groups
            .iter()
            .map(|g| Attributes::resource("impersonate", "", "groups", "", "", g)),
    );
    for a in &checks {
        let decision = snapshot.authorize(&user, a);
        if let Some(log) = &st.audit {
            log.record(&user, a, uri, &decision);
        }
        if !decision.allowed {
            return Err(rbac::forbidden(&user, a));
        }
    }
    let mut groups = match User::service_account_of(&name) {
        Some((ns, sa)) if as_groups.is_empty() => User::service_account(ns, sa).groups,
        _ => as_groups,
    };
    if !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.into());
    }
    Ok(User { name, groups })
}

/// The RBAC verb of a request on a resource, as kube-apiserver names it.
pub fn verb(method: &Method, target: &Target, query: &Query) -> String {
    let named = target.name.is_some();
    match *method {
        Method::GET | Method::HEAD => {
            if target.watch || (!named && query.flag("watch")) {
                "watch"
            } else if named {
                "get"
            } else {
                "list"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return method.as_str().to_lowercase(),
    }
    .to_string()
}

/// The name a list or watch is limited to by `fieldSelector=metadata.name=x`,
/// which kube-apiserver authorizes as a request on that name.
fn selected_name(query: &Query) -> Option<String> {
    let selector = crate::selector::FieldSelector::parse(query.get("fieldSelector")?).ok()?;
    match selector.reqs.as_slice() {
        [only] if only.field == "metadata.name" && !only.negate => Some(only.value.clone()),
        _ => None,
    }
}

/// What a request on a resource asks, as RBAC sees it.
pub fn resource_attributes(
    registry: &Registry,
    method: &Method,
    target: &Target,
    query: &Query,
) -> Attributes {
    let rt = registry.get(target.rt_id);
    let verb = verb(method, target, query);
    let name = match (&target.name, verb.as_str()) {
        (Some(n), _) => n.clone(),
        (None, "list" | "watch") => selected_name(query).unwrap_or_default(),
        _ => String::new(),
    };
    Attributes::resource(
        &verb,
        &rt.group,
        &rt.plural,
        if target.status { "status" } else { "" },
        target.namespace.as_deref().unwrap_or(""),
        &name,
    )
}

/// Authorizes `a` for `user`, records the decision in the audit log, and
/// answers kube-apiserver's 403 when it is denied.
pub fn authorize(
    st: &Auth,
    store: &Store,
    user: &User,
    a: &Attributes,
    uri: &str,
) -> ApiResult<Decision> {
    let decision = if user.is_superuser() {
        // No snapshot needed (the admin's requests are most of a single host's).
        rbac::Snapshot::default().authorize(user, a)
    } else {
        st.authz.snapshot(store).authorize(user, a)
    };
    if let Some(log) = &st.audit {
        log.record(user, a, uri, &decision);
    }
    if decision.allowed {
        Ok(decision)
    } else {
        Err(rbac::forbidden(user, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_bearer_token_is_the_admin() {
        let admin = "s3cret-token";
        let presented = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(value).unwrap(),
            );
            headers
                .typed_get::<Authorization<Bearer>>()
                .is_some_and(|b| is_admin_token(admin, b.token()))
        };
        for (authorization, lets_in) in [
            ("Bearer s3cret-token", true),
            ("bearer s3cret-token", true),
            ("BEARER s3cret-token", true),
            ("Bearer s3cret-toke", false),
            ("Bearer s3cret-token2", false),
            ("Bearer ", false),
            ("Basic s3cret-token", false),
            ("s3cret-token", false),
            ("Bearers3cret-token", false),
        ] {
            assert_eq!(presented(authorization), lets_in, "{authorization}");
        }
    }

    #[test]
    fn service_account_user_names_parse_back() {
        let name = service_account_user("medforge-system", "medforge-agent");
        assert_eq!(name, "system:serviceaccount:medforge-system:medforge-agent");
        assert_eq!(
            User::service_account_of(&name),
            Some(("medforge-system", "medforge-agent"))
        );
        for not_one in [
            "medforge-admin",
            "system:serviceaccount:",
            "system:serviceaccount:ns",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:",
            "system:serviceaccount:ns:sa:extra",
        ] {
            assert_eq!(User::service_account_of(not_one), None, "{not_one}");
        }
    }
}
