//! The requests that are answered rather than stored: a
//! `SelfSubjectAccessReview` (may I do this? what `kubectl auth can-i`
//! asks), a `SelfSubjectRulesReview` (what may I do here? `kubectl auth
//! can-i --list`) and a `TokenRequest` (a token for a ServiceAccount,
//! `kubectl create token`).

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::{
    NonResourceRule, ResourceRule, SelfSubjectAccessReview, SelfSubjectRulesReview,
};
use serde_json::{Value, json};

use super::Auth;
use super::rbac::Attributes;
use super::token::{self, Claims};
use super::{User, now_unix};
use crate::registry::{Builtin, Registry, ResourceType};
use crate::status::{ApiError, ApiResult};
use crate::store::Store;

fn parse<T: serde::de::DeserializeOwned>(kind: &str, v: Value) -> ApiResult<T> {
    serde_json::from_value(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {e}"
        ))
    })
}

/// Answers a review of kind `rt` (already decoded from the body) for `user`.
pub fn answer(
    st: &Auth,
    store: &Store,
    rt: &ResourceType,
    user: &User,
    body: Value,
) -> ApiResult<Value> {
    let snapshot = st.authz.snapshot(store);
    match rt.builtin {
        Some(Builtin::SelfSubjectAccessReview) => {
            let mut review: SelfSubjectAccessReview = parse(&rt.kind, body)?;
            let spec = &review.spec;
            let a = match (&spec.resource_attributes, &spec.non_resource_attributes) {
                (Some(r), None) => Attributes::resource(
                    r.verb.as_deref().unwrap_or(""),
                    r.group.as_deref().unwrap_or(""),
                    r.resource.as_deref().unwrap_or(""),
                    r.subresource.as_deref().unwrap_or(""),
                    r.namespace.as_deref().unwrap_or(""),
                    r.name.as_deref().unwrap_or(""),
                ),
                (None, Some(n)) => Attributes::non_resource(
                    n.verb.as_deref().unwrap_or(""),
                    n.path.as_deref().unwrap_or(""),
                ),
                _ => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        vec![crate::status::Cause::new(
                            "FieldValueInvalid",
                            "spec.resourceAttributes",
                            "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                        )],
                    ));
                }
            };
            let decision = snapshot.authorize(user, &a);
            review.status = Some(
                k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus {
                    allowed: decision.allowed,
                    reason: (!decision.reason.is_empty()).then_some(decision.reason),
                    ..Default::default()
                },
            );
            Ok(to_value(&review, rt))
        }
        Some(Builtin::SelfSubjectRulesReview) => {
            let mut review: SelfSubjectRulesReview = parse(&rt.kind, body)?;
            let ns = review.spec.namespace.clone().unwrap_or_default();
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            for r in snapshot.rules_for(user, &ns) {
                match r.non_resource_urls {
                    Some(urls) if !urls.is_empty() => non_resource_rules.push(NonResourceRule {
                        verbs: r.verbs,
                        non_resource_urls: Some(urls),
                    }),
                    _ => resource_rules.push(ResourceRule {
                        verbs: r.verbs,
                        api_groups: r.api_groups,
                        resources: r.resources,
                        resource_names: r.resource_names,
                    }),
                }
            }
            review.status = Some(
                k8s_openapi::api::authorization::v1::SubjectRulesReviewStatus {
                    resource_rules,
                    non_resource_rules,
                    incomplete: false,
                    evaluation_error: None,
                },
            );
            Ok(to_value(&review, rt))
        }
        _ => Err(ApiError::method_not_allowed_here()),
    }
}

fn to_value<T: serde::Serialize>(v: &T, rt: &ResourceType) -> Value {
    let mut out = serde_json::to_value(v).unwrap_or(Value::Null);
    out["apiVersion"] = json!(rt.api_version());
    out["kind"] = json!(rt.kind);
    out
}

/// Mints a token for an existing ServiceAccount, bound to its uid.
pub fn mint(
    st: &Auth,
    store: &Store,
    registry: &Registry,
    namespace: &str,
    name: &str,
    lifetime_secs: i64,
) -> ApiResult<(String, i64)> {
    let sa = registry
        .types
        .iter()
        .find(|t| t.builtin == Some(Builtin::ServiceAccount))
        .expect("ServiceAccounts are served");
    let uid = store
        .get(sa.id, namespace, name)
        .filter(|o| !o.deleting)
        .map(|o| o.uid.clone())
        .ok_or_else(|| ApiError::not_found(sa, name))?;
    let iat = now_unix();
    let exp = iat + lifetime_secs;
    let token = st.signer.mint(&Claims {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid,
        iat,
        exp,
    });
    Ok((token, exp))
}

/// Answers `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`.
pub fn token_request(
    st: &Auth,
    store: &Store,
    registry: &Registry,
    namespace: &str,
    name: &str,
    v: Value,
) -> ApiResult<Value> {
    let mut request: TokenRequest = parse("TokenRequest", v)?;
    if request
        .spec
        .bound_object_ref
        .as_ref()
        .is_some_and(|r| !r.name.as_deref().unwrap_or("").is_empty())
    {
        return Err(ApiError::bad_request(
            "spec.boundObjectRef is not supported by this server: a token is bound to its ServiceAccount only",
        ));
    }
    // Refused, not ignored: a token this server gives is not bound to an
    // audience, so one asked for one would be accepted anywhere.
    if !request.spec.audiences.is_empty() {
        return Err(ApiError::bad_request(format!(
            "spec.audiences {:?} is not supported by this server: its tokens carry no audience (leave it empty)",
            request.spec.audiences
        )));
    }
    let lifetime = token::lifetime(request.spec.expiration_seconds).map_err(|why| {
        ApiError::invalid_kind(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![crate::status::Cause::new(
                "FieldValueInvalid",
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {}: {why}",
                    request.spec.expiration_seconds.unwrap_or(0)
                ),
            )],
        )
    })?;
    let (token, exp) = mint(st, store, registry, namespace, name, lifetime)?;
    request.spec.expiration_seconds = Some(lifetime);
    request.metadata.name = Some(name.to_string());
    request.metadata.namespace = Some(namespace.to_string());
    request.metadata.creation_timestamp = None;
    request.status = Some(k8s_openapi::api::authentication::v1::TokenRequestStatus {
        token,
        expiration_timestamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(exp).unwrap_or(jiff::Timestamp::now()),
        ),
    });
    let mut out = serde_json::to_value(&request).unwrap_or(Value::Null);
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["kind"] = json!("TokenRequest");
    Ok(out)
}
