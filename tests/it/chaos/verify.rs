//! The checks run on a recorded history: each key's operations are
//! linearizable (`checker`), each client's revisions never go backwards, and
//! revisions agree with the writes that produced them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::checker::{self, CheckOp, Input, Output};
use super::history::{Kind, Op, Outcome};

/// What the checks found.
pub struct Analysis {
    /// Operations the linearizability check considered.
    pub checked_ops: usize,
    pub keys: usize,
    pub check_time: Duration,
    /// One line per problem found.
    pub violations: Vec<String>,
    /// The smallest key history that is not linearizable, around the
    /// failure, one operation per line.
    pub failing_ops: Option<String>,
}

/// The value given to unknown writes whose value no read returned (no real
/// value looks like it).
const UNREAD_VALUE: &str = "\0unread";

/// The check's view of one key: its ops and, for each, the index of the op
/// in the history.
fn key_history(ops: &[(usize, &Op)]) -> (Vec<CheckOp>, Vec<usize>) {
    // Values a successful read saw. An unknown write nobody read can still
    // be observed, by a delete that finds the key present; all such writes
    // put one shared, anonymous value, which keeps the search small.
    let seen: std::collections::HashSet<&str> = ops
        .iter()
        .filter(|(_, op)| op.kind == Kind::Get && op.outcome == Outcome::Ok)
        .filter_map(|(_, op)| op.read.as_ref().and_then(|r| r.as_deref()))
        .collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut intern = |v: &str| -> u32 {
        let next = ids.len() as u32;
        *ids.entry(v.to_string()).or_insert(next)
    };
    let mut check_ops = Vec::new();
    let mut origin = Vec::new();
    for &(index, op) in ops {
        let ret = Some(op.complete_ns);
        let entry = match (op.kind, op.outcome) {
            (_, Outcome::Fail) | (Kind::Get, Outcome::Info) => None,
            (Kind::Put, Outcome::Ok) => {
                let v = intern(op.value.as_deref().unwrap_or_default());
                Some(CheckOp {
                    call: op.invoke_ns,
                    ret,
                    input: Input::Put(v),
                    output: Output::Put,
                })
            }
            (Kind::Put, Outcome::Info) => {
                let value = op.value.as_deref().unwrap_or_default();
                let value = if seen.contains(value) {
                    value
                } else {
                    UNREAD_VALUE
                };
                Some(CheckOp {
                    call: op.invoke_ns,
                    ret: None,
                    input: Input::Put(intern(value)),
                    output: Output::Unknown,
                })
            }
            (Kind::Get, Outcome::Ok) => {
                let read = op.read.as_ref().and_then(|r| r.as_deref()).map(&mut intern);
                Some(CheckOp {
                    call: op.invoke_ns,
                    ret,
                    input: Input::Get,
                    output: Output::Get(read),
                })
            }
            (Kind::Delete, Outcome::Ok) => Some(CheckOp {
                call: op.invoke_ns,
                ret,
                input: Input::Delete,
                output: Output::Delete(op.deleted.unwrap_or(false)),
            }),
            (Kind::Delete, Outcome::Info) => Some(CheckOp {
                call: op.invoke_ns,
                ret: None,
                input: Input::Delete,
                output: Output::Unknown,
            }),
            (Kind::Cas, outcome) => {
                let expect = op
                    .expect
                    .as_ref()
                    .and_then(|e| e.as_deref())
                    .map(&mut intern);
                let value = op.value.as_deref().unwrap_or_default();
                let known = outcome == Outcome::Ok;
                let value = if known || seen.contains(value) {
                    value
                } else {
                    UNREAD_VALUE
                };
                Some(CheckOp {
                    call: op.invoke_ns,
                    ret: known.then_some(op.complete_ns),
                    input: Input::Cas {
                        expect,
                        new: intern(value),
                    },
                    output: if known {
                        Output::Cas(op.swapped.unwrap_or(false))
                    } else {
                        Output::Unknown
                    },
                })
            }
        };
        if let Some(e) = entry {
            check_ops.push(e);
            origin.push(index);
        }
    }
    (check_ops, origin)
}

/// The operations around a failure: those on the key that overlap the two
/// seconds before the failing op ended, and the write of the value it read.
fn describe_failure(history: &[Op], key_ops: &[(usize, &Op)], failing: usize) -> String {
    let f = &history[failing];
    let from = f.invoke_ns.saturating_sub(2_000_000_000);
    let mut shown: Vec<&Op> = key_ops
        .iter()
        .map(|(_, op)| *op)
        .filter(|op| {
            op.outcome != Outcome::Fail && op.invoke_ns <= f.complete_ns && op.complete_ns >= from
        })
        .collect();
    if let Some(Some(v)) = &f.read {
        if let Some((_, w)) = key_ops
            .iter()
            .find(|(_, op)| op.value.as_deref() == Some(v))
        {
            if !shown.iter().any(|op| std::ptr::eq(*op, *w)) {
                shown.push(w);
            }
        }
    }
    shown.sort_by_key(|op| op.invoke_ns);
    let mut out = format!(
        "the operation no linearization explains:\n  {}\nalongside:\n",
        f.describe()
    );
    for op in shown.iter().rev().take(40).rev() {
        let mark = if std::ptr::eq(*op, f) { "=>" } else { "  " };
        out.push_str(&format!("{mark} {}\n", op.describe()));
    }
    out
}

/// Runs every check on `history`.
pub fn analyze(history: &[Op]) -> Analysis {
    let mut violations = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<(usize, &Op)>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(&op.key).or_default().push((i, op));
    }
    let started = Instant::now();
    let mut checked_ops = 0;
    let mut failing: Option<(usize, String)> = None;
    for (key, ops) in &mut by_key {
        ops.sort_by_key(|(_, op)| op.invoke_ns);
        let (check_ops, origin) = key_history(ops);
        checked_ops += check_ops.len();
        match checker::check(&check_ops) {
            Ok(()) => {}
            Err(checker::Failure::TooLarge { explored }) => violations.push(format!(
                "key {key}: the checker gave up after {explored} states ({} operations); it proves nothing",
                check_ops.len()
            )),
            Err(checker::Failure::Violation { op }) => {
            let op = origin[op];
            violations.push(format!("key {key} is not linearizable at: {}", history[op].describe()));
            let report = describe_failure(history, ops, op);
            if failing.as_ref().is_none_or(|(n, _)| check_ops.len() < *n) {
                failing = Some((check_ops.len(), format!("key {key} ({} operations)\n{report}", check_ops.len())));
            }
            }
        }
    }
    let check_time = started.elapsed();

    // Each client's revisions never go backwards.
    let mut by_worker: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for op in history.iter().filter(|op| op.outcome == Outcome::Ok) {
        by_worker.entry(op.worker).or_default().push(op);
    }
    for (worker, ops) in &mut by_worker {
        ops.sort_by_key(|op| op.invoke_ns);
        for pair in ops.windows(2) {
            if pair[1].revision < pair[0].revision {
                violations.push(format!(
                    "worker {worker} saw the revision go back from {:?} to {:?}:\n  {}\n  {}",
                    pair[0].revision,
                    pair[1].revision,
                    pair[0].describe(),
                    pair[1].describe()
                ));
            }
        }
    }

    // Acknowledged writes have distinct revisions, and a read's mod_revision
    // is the revision of the write it saw.
    let mut put_revisions: HashMap<i64, &Op> = HashMap::new();
    let mut by_value: HashMap<(&str, &str), &Op> = HashMap::new();
    let acknowledged_write = |op: &&Op| {
        op.outcome == Outcome::Ok
            && (op.kind == Kind::Put || (op.kind == Kind::Cas && op.swapped == Some(true)))
    };
    for op in history.iter().filter(acknowledged_write) {
        if let Some(rev) = op.revision {
            if let Some(other) = put_revisions.insert(rev, op) {
                violations.push(format!(
                    "two acknowledged writes share revision {rev}:\n  {}\n  {}",
                    other.describe(),
                    op.describe()
                ));
            }
        }
        by_value.insert(
            (op.key.as_str(), op.value.as_deref().unwrap_or_default()),
            op,
        );
    }
    for op in history
        .iter()
        .filter(|op| op.kind == Kind::Get && op.outcome == Outcome::Ok)
    {
        if let (Some(Some(v)), Some(mod_rev)) = (&op.read, op.mod_revision) {
            if let Some(put) = by_value.get(&(op.key.as_str(), v.as_str())) {
                if put.revision != Some(mod_rev) {
                    violations.push(format!(
                        "a read's mod_revision {mod_rev} is not its write's revision {:?}:\n  {}\n  {}",
                        put.revision,
                        put.describe(),
                        op.describe()
                    ));
                }
            }
        }
    }

    Analysis {
        checked_ops,
        keys: by_key.len(),
        check_time,
        violations,
        failing_ops: failing.map(|(_, report)| report),
    }
}
