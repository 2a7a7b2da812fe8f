//! A small label selector, the shape of Kubernetes' `LabelSelector`.
//!
//! Pools restrict which Services may draw from them by namespace labels and
//! Service labels. This crate must not depend on `k8s-openapi`, so it carries
//! its own copy of the type with the same YAML spelling (`matchLabels`,
//! `matchExpressions[].{key,operator,values}`) and the same semantics.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Selects a set of labels; empty selects everything, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Every pair must be present with exactly this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Every requirement must hold.
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
///
/// `operator` stays a string so that a misspelt operator is reported by
/// [`validate_pools`](super::validate_pools) with its key path next to every
/// other problem, instead of aborting deserialization of the whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values for `In`/`NotIn`; must be empty for `Exists`/`DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The operators Kubernetes defines for label selectors.
pub const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

impl LabelSelector {
    /// Whether the labels satisfy the selector. A requirement with an unknown
    /// operator never matches (validation rejects it before use).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no terms and so selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Problems with the selector as `(path suffix, message)` pairs, the
    /// suffix relative to the selector, e.g. `matchExpressions[0].operator`.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, r) in self.match_expressions.iter().enumerate() {
            if r.key.is_empty() {
                out.push((
                    format!("matchExpressions[{i}].key"),
                    "must not be empty: name the label to test".to_string(),
                ));
            }
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => out.push((
                    format!("matchExpressions[{i}].values"),
                    format!("operator {} needs at least one value", r.operator),
                )),
                "Exists" | "DoesNotExist" if !r.values.is_empty() => out.push((
                    format!("matchExpressions[{i}].values"),
                    format!(
                        "operator {} takes no values: remove them or use In/NotIn",
                        r.operator
                    ),
                )),
                op if !OPERATORS.contains(&op) => out.push((
                    format!("matchExpressions[{i}].operator"),
                    format!(
                        "unknown operator {op:?}: use one of {} (case matters)",
                        OPERATORS.join(", ")
                    ),
                )),
                _ => {}
            }
        }
        out
    }
}

impl LabelSelectorRequirement {
    /// Kubernetes semantics: `NotIn` and `DoesNotExist` hold when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.contains(v)),
            "NotIn" => !value.is_some_and(|v| self.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn semantics_follow_kubernetes() {
        let l = labels(&[("team", "a"), ("tier", "web")]);
        let none = BTreeMap::new();
        assert!(LabelSelector::default().matches(&l));
        assert!(LabelSelector::default().matches(&none));
        let cases = [
            (req("team", "In", &["a", "b"]), true, false),
            (req("team", "NotIn", &["a"]), false, true),
            (req("team", "NotIn", &["z"]), true, true),
            (req("team", "Exists", &[]), true, false),
            (req("team", "DoesNotExist", &[]), false, true),
            (req("team", "in", &["a"]), false, false),
        ];
        for (r, on_l, on_none) in cases {
            assert_eq!(r.matches(&l), on_l, "{r:?} on labels");
            assert_eq!(r.matches(&none), on_none, "{r:?} on no labels");
        }
        let s = LabelSelector {
            match_labels: labels(&[("tier", "web")]),
            match_expressions: vec![req("team", "In", &["a"])],
        };
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("tier", "web"), ("team", "b")])));
    }

    #[test]
    fn problems_name_the_entry() {
        let s = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![
                req("a", "Equals", &["x"]),
                req("b", "In", &[]),
                req("", "Exists", &["x"]),
            ],
        };
        let p = s.problems();
        let paths: Vec<&str> = p.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "matchExpressions[0].operator",
                "matchExpressions[1].values",
                "matchExpressions[2].key",
                "matchExpressions[2].values"
            ]
        );
        assert!(p[0].1.contains("In, NotIn, Exists, DoesNotExist"));
    }
}
