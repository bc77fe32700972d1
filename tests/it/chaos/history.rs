//! What a campaign records: every client operation with its invocation and
//! completion times and its outcome, written out as JSON lines.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Nanoseconds since the campaign started.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Self {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Put,
    Get,
    Delete,
    /// A Txn: if the key holds `expect`, put `value`.
    Cas,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened, with the recorded result.
    Ok,
    /// It certainly did not happen (refused before it was proposed).
    Fail,
    /// Unknown: it may or may not have happened (timeout, lost connection).
    Info,
}

/// One client operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub worker: usize,
    /// Index of the node the request went to.
    pub node: usize,
    pub key: String,
    pub kind: Kind,
    /// Put: the value written (unique per put).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Get: the value read (`null` for an absent key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<Option<String>>,
    /// Get: the value's mod_revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<i64>,
    /// Delete: whether a key was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// Cas: the value the key must hold (`null`: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Option<String>>,
    /// Cas: whether the compare held and the put happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapped: Option<bool>,
    /// The response header's revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    pub fn describe(&self) -> String {
        let what = match self.kind {
            Kind::Put => format!("put {}={}", self.key, self.value.as_deref().unwrap_or("?")),
            Kind::Get => match &self.read {
                Some(Some(v)) => format!(
                    "get {} -> {v} (mod_revision {})",
                    self.key,
                    self.mod_revision.unwrap_or(0)
                ),
                Some(None) => format!("get {} -> (absent)", self.key),
                None => format!("get {}", self.key),
            },
            Kind::Delete => match self.deleted {
                Some(d) => format!("delete {} -> deleted {}", self.key, d as u8),
                None => format!("delete {}", self.key),
            },
            Kind::Cas => {
                let expect = match &self.expect {
                    Some(Some(v)) => v.clone(),
                    _ => "(absent)".to_string(),
                };
                let outcome = match self.swapped {
                    Some(true) => " -> swapped",
                    Some(false) => " -> compare failed",
                    None => "",
                };
                format!(
                    "cas {} {expect} => {}{outcome}",
                    self.key,
                    self.value.as_deref().unwrap_or("?")
                )
            }
        };
        let outcome = match self.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Fail => format!("fail: {}", self.error.as_deref().unwrap_or("")),
            Outcome::Info => format!("unknown: {}", self.error.as_deref().unwrap_or("")),
        };
        format!(
            "[{:>9.3}s .. {:>9.3}s] worker {} via node {}: {what} [{outcome}]",
            self.invoke_ns as f64 / 1e9,
            self.complete_ns as f64 / 1e9,
            self.worker,
            self.node + 1,
        )
    }
}
