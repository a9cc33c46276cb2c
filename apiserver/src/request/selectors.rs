//! The label and field selectors of a list, watch or deletecollection.

use super::query::Query;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::store::StoredObject;

/// The label and field selectors of a request, checked against the kind.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(rt: &ResourceType, q: &Query) -> ApiResult<Selectors> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        for r in &fields.reqs {
            let known = r.field == "metadata.name"
                || r.field == "metadata.namespace"
                || rt.selectable_fields.iter().any(|(l, _)| *l == r.field);
            if !known {
                return Err(ApiError::bad_request(if rt.builtin.is_some() {
                    format!("field label not supported: {}", r.field)
                } else {
                    let mut names: Vec<String> =
                        vec!["metadata.name".into(), "metadata.namespace".into()];
                    names.extend(rt.selectable_fields.iter().map(|(l, _)| l.clone()));
                    format!(
                        "{:?} is not a known field selector: only {}",
                        r.field,
                        names
                            .iter()
                            .map(|n| format!("{n:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }));
            }
        }
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, rt: &ResourceType, o: &StoredObject) -> bool {
        self.labels.matches(&o.labels) && self.fields.matches(|f| o.field(rt, f))
    }
}
