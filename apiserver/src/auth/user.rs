//! An authenticated user: a name and groups, as kube-apiserver names them.

/// The user the admin token authenticates as.
pub const ADMIN_USER: &str = "medforge-admin";
/// Members are allowed everything, as on kube-apiserver.
pub const MASTERS: &str = "system:masters";
/// Every authenticated user's group.
pub const AUTHENTICATED: &str = "system:authenticated";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl User {
    /// The admin token's user.
    pub fn admin() -> User {
        User {
            name: ADMIN_USER.into(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }

    /// A ServiceAccount's user and groups, as kube-apiserver names them.
    pub fn service_account(namespace: &str, name: &str) -> User {
        User {
            name: service_account_user(namespace, name),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// `(namespace, name)` when this is a ServiceAccount's user name.
    pub fn service_account_of(name: &str) -> Option<(&str, &str)> {
        let rest = name.strip_prefix("system:serviceaccount:")?;
        let (ns, sa) = rest.split_once(':')?;
        (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
    }
}
