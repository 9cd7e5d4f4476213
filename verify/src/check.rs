//! [`Check`]: one verdict of a sale, named for the guarantee it checks.

use serde::Serialize;

/// One verdict.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// The coupon it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<i64>,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &'static str, coupon: Option<i64>, pass: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            coupon,
            pass,
            detail: detail.into(),
        }
    }
}

/// The names of the checks that failed, in order.
pub fn failed(checks: &[Check]) -> Vec<&'static str> {
    checks.iter().filter(|c| !c.pass).map(|c| c.name).collect()
}
