//! A linearizability checker for one key's history: the Wing-Gong search
//! with Lowe's memoization, as Porcupine does it.
//!
//! Model: a register holding one value or nothing. A put sets it; a get must
//! return what it holds; a delete empties it and must report whether there
//! was something to delete; a compare-and-swap sets a new value only if it
//! holds the expected one, and must report whether it did. Values are unique
//! per write, so a read names the one write it saw.
//!
//! An operation whose outcome is unknown (a timeout, a lost connection) may
//! have taken effect at any time after its invocation, or never: its return
//! is placed after every other event, and the search is done once every
//! operation with a known outcome is placed. The search only places an
//! unknown operation where it changes the state; anywhere else it could as
//! well have never happened. Both keep the search small when faults leave
//! many outcomes unknown.
//! The history is linearizable for a key-value map when each key's history
//! is (linearizability is compositional).

use std::collections::{HashMap, HashSet};

/// A value, interned: `None` is "no value".
pub type State = Option<u32>;

/// What an operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    Put(u32),
    Get,
    Delete,
    /// Compare-and-swap: if the register holds `expect`, it becomes `new`.
    Cas {
        expect: State,
        new: u32,
    },
}

/// What it answered, if it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Put,
    Get(State),
    /// Whether a key was deleted.
    Delete(bool),
    /// Whether the compare held (and the swap happened).
    Cas(bool),
    /// The outcome is unknown.
    Unknown,
}

/// One operation on the key.
#[derive(Debug, Clone)]
pub struct CheckOp {
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` when the outcome is unknown.
    pub ret: Option<u64>,
    pub input: Input,
    pub output: Output,
}

/// Applies `op` to `state`: the next state, or `None` if the op's output is
/// impossible from `state`.
fn step(state: State, op: &CheckOp) -> Option<State> {
    match (op.input, op.output) {
        (Input::Put(v), Output::Put | Output::Unknown) => Some(Some(v)),
        (Input::Get, Output::Get(seen)) => (seen == state).then_some(state),
        (Input::Get, Output::Unknown) => Some(state),
        (Input::Delete, Output::Delete(existed)) => (existed == state.is_some()).then_some(None),
        (Input::Delete, Output::Unknown) => Some(None),
        (Input::Cas { expect, new }, Output::Cas(swapped)) => match (state == expect, swapped) {
            (true, true) => Some(Some(new)),
            (false, false) => Some(state),
            _ => None,
        },
        // If it took effect, the compare held then.
        (Input::Cas { expect, new }, Output::Unknown) => (state == expect).then_some(Some(new)),
        _ => None,
    }
}

/// Why a history did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not linearizable: `op` is the operation whose completion the longest
    /// linearizable ordering the search found could not explain.
    Violation { op: usize },
    /// The search gave up after exploring this many states; the history is
    /// neither proven linearizable nor not.
    TooLarge { explored: usize },
}

/// States the search may remember before giving up (a few hundred MB).
const MAX_STATES: usize = 1_000_000;

const NIL: usize = usize::MAX;

/// A fixed-size set of op indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// Checks one key's history, starting from an empty register.
pub fn check(ops: &[CheckOp]) -> Result<(), Failure> {
    // Events: (time, is_return, op). Calls sort before returns at equal times,
    // which is the permissive choice.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort();
    // A doubly linked list over the events; node 0 is the head sentinel,
    // node k + 1 is events[k].
    let m = events.len();
    let mut next: Vec<usize> = (1..=m).chain([NIL]).collect();
    let mut prev: Vec<usize> = std::iter::once(NIL).chain(0..m).collect();
    let mut return_node = vec![0; ops.len()];
    for (k, (_, is_return, op)) in events.iter().enumerate() {
        if *is_return {
            return_node[*op] = k + 1;
        }
    }
    let unlink = |node: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, n) = (prev[node], next[node]);
        next[p] = n;
        if n != NIL {
            prev[n] = p;
        }
    };
    let relink = |node: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, n) = (prev[node], next[node]);
        next[p] = node;
        if n != NIL {
            prev[n] = node;
        }
    };

    // Only operations with a known outcome must be placed; an unknown one
    // may never have happened, so the search succeeds once every known one
    // is linearized.
    let mut remaining = ops.iter().filter(|op| op.ret.is_some()).count();
    if remaining == 0 {
        return Ok(());
    }
    // Unknown ops with the same input are interchangeable once both have
    // been invoked (neither has a return to respect), so the search only
    // tries the earliest-invoked one of each kind still unplaced.
    let mut twins: HashMap<Input, Vec<usize>> = HashMap::new();
    let mut by_call: Vec<usize> = (0..ops.len()).collect();
    by_call.sort_by_key(|&i| (ops[i].call, i));
    for &i in &by_call {
        if ops[i].ret.is_none() {
            twins.entry(ops[i].input).or_default().push(i);
        }
    }
    let mut linearized = Bits::new(ops.len());
    let mut state: State = None;
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut cache: HashSet<(Bits, State)> = HashSet::new();
    let mut blamed: Option<(usize, usize)> = None;
    let mut entry = next[0];
    loop {
        if entry == NIL {
            // Unreachable: every known op's return precedes the unknown ones'.
            return Err(Failure::Violation {
                op: ops.len().saturating_sub(1),
            });
        }
        let (_, is_return, op) = events[entry - 1];
        if !is_return {
            let known = ops[op].ret.is_some();
            let first_twin =
                known || twins[&ops[op].input].iter().find(|&&t| !linearized.get(t)) == Some(&op);
            // An unknown op that would not change the state is no use here:
            // any linearization placing it so works as well with it left out.
            let useful = step(state, &ops[op]).filter(|s| first_twin && (known || *s != state));
            if let Some(new_state) = useful {
                linearized.set(op);
                if cache.len() >= MAX_STATES {
                    return Err(Failure::TooLarge {
                        explored: cache.len(),
                    });
                }
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    unlink(entry, &mut next, &mut prev);
                    unlink(return_node[op], &mut next, &mut prev);
                    if known {
                        remaining -= 1;
                        if remaining == 0 {
                            return Ok(());
                        }
                    }
                    entry = next[0];
                    continue;
                }
                linearized.clear(op);
            }
            entry = next[entry];
        } else {
            // An operation completed that nothing linearized so far can
            // explain: undo the last choice. The blocked op reached with the
            // most ops linearized is the one to blame in a report.
            if blamed.is_none_or(|(depth, _)| stack.len() > depth) {
                blamed = Some((stack.len(), op));
            }
            let Some((call_node, saved)) = stack.pop() else {
                return Err(Failure::Violation {
                    op: blamed.map_or(op, |(_, op)| op),
                });
            };
            let undone = events[call_node - 1].2;
            if ops[undone].ret.is_some() {
                remaining += 1;
            }
            linearized.clear(undone);
            state = saved;
            relink(return_node[undone], &mut next, &mut prev);
            relink(call_node, &mut next, &mut prev);
            entry = next[call_node];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, input: Input, output: Output) -> CheckOp {
        CheckOp {
            call,
            ret: Some(ret),
            input,
            output,
        }
    }

    fn pending(call: u64, input: Input) -> CheckOp {
        CheckOp {
            call,
            ret: None,
            input,
            output: Output::Unknown,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            op(0, 1, Input::Get, Output::Get(None)),
            op(2, 3, Input::Put(1), Output::Put),
            op(4, 5, Input::Get, Output::Get(Some(1))),
            op(6, 7, Input::Delete, Output::Delete(true)),
            op(8, 9, Input::Delete, Output::Delete(false)),
            op(10, 11, Input::Get, Output::Get(None)),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [None, Some(1)] {
            let h = [
                op(0, 10, Input::Put(1), Output::Put),
                op(2, 5, Input::Get, Output::Get(seen)),
            ];
            assert_eq!(check(&h), Ok(()), "read saw {seen:?}");
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let h = [
            op(0, 1, Input::Put(1), Output::Put),
            op(2, 3, Input::Put(2), Output::Put),
            op(4, 5, Input::Get, Output::Get(Some(1))),
        ];
        assert_eq!(check(&h), Err(Failure::Violation { op: 2 }));
    }

    #[test]
    fn reads_may_not_go_back_in_time() {
        // The write is concurrent with both reads, but once one read has seen
        // the new value a later read may not see the old one.
        let h = [
            op(0, 100, Input::Put(2), Output::Put),
            op(10, 20, Input::Get, Output::Get(Some(2))),
            op(30, 40, Input::Get, Output::Get(None)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let h = [
            op(0, 1, Input::Put(7), Output::Put),
            op(5, 6, Input::Get, Output::Get(None)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_value_nobody_wrote_is_a_violation() {
        let h = [op(0, 1, Input::Get, Output::Get(Some(9)))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_wrong_delete_count_is_a_violation() {
        let h = [op(0, 1, Input::Delete, Output::Delete(true))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn an_unknown_write_may_have_happened_late_or_never() {
        // Seen long after its invocation.
        let h = [
            pending(0, Input::Put(1)),
            op(10, 11, Input::Get, Output::Get(None)),
            op(20, 21, Input::Get, Output::Get(Some(1))),
        ];
        assert_eq!(check(&h), Ok(()));
        // Never seen.
        let h = [
            pending(0, Input::Put(1)),
            op(10, 11, Input::Get, Output::Get(None)),
        ];
        assert_eq!(check(&h), Ok(()));
        // But not before it was invoked.
        let h = [
            op(0, 1, Input::Get, Output::Get(Some(1))),
            pending(5, Input::Put(1)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn an_unknown_write_explains_a_later_delete_that_found_the_key() {
        // Found by a campaign: nobody read the unknown write, but the delete
        // saw that something was there.
        let h = [
            op(0, 1, Input::Get, Output::Get(None)),
            pending(2, Input::Put(5)),
            op(10, 11, Input::Delete, Output::Delete(true)),
            op(12, 13, Input::Get, Output::Get(None)),
        ];
        assert_eq!(check(&h), Ok(()));
        // Without it, that delete is impossible.
        assert!(check(&[h[0].clone(), h[2].clone()]).is_err());
    }

    #[test]
    fn interchangeable_unknown_ops_are_each_usable_once() {
        // Two unknown deletes, each needed once: after each put a read
        // finds the key gone.
        let h = [
            pending(0, Input::Delete),
            op(1, 2, Input::Put(1), Output::Put),
            op(3, 4, Input::Get, Output::Get(None)),
            pending(5, Input::Delete),
            op(6, 7, Input::Put(2), Output::Put),
            op(8, 9, Input::Get, Output::Get(None)),
        ];
        assert_eq!(check(&h), Ok(()));
        // A third such read has no delete left to explain it.
        let mut h = h.to_vec();
        h.push(op(10, 11, Input::Put(3), Output::Put));
        h.push(op(12, 13, Input::Get, Output::Get(None)));
        assert!(check(&h).is_err());
    }

    #[test]
    fn many_unknown_ops_stay_tractable() {
        // 200 unknown deletes and writes of one unread value, interleaved
        // with known writes and reads that need some of them.
        let mut h = Vec::new();
        for i in 0..100u64 {
            let t = i * 10;
            h.push(pending(t, Input::Delete));
            h.push(pending(t + 1, Input::Put(999)));
            h.push(op(t + 2, t + 4, Input::Put(i as u32), Output::Put));
            h.push(op(t + 5, t + 6, Input::Get, Output::Get(None)));
        }
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn compare_and_swap() {
        let cas = |expect, new| Input::Cas { expect, new };
        let h = [
            op(0, 1, Input::Put(1), Output::Put),
            op(2, 3, cas(Some(1), 2), Output::Cas(true)),
            op(4, 5, cas(Some(1), 3), Output::Cas(false)),
            op(6, 7, Input::Get, Output::Get(Some(2))),
            op(8, 9, cas(None, 4), Output::Cas(false)),
        ];
        assert_eq!(check(&h), Ok(()));
        // Two swaps from the same value cannot both succeed.
        let h = [
            op(0, 1, Input::Put(1), Output::Put),
            op(2, 5, cas(Some(1), 2), Output::Cas(true)),
            op(3, 6, cas(Some(1), 3), Output::Cas(true)),
        ];
        assert!(check(&h).is_err());
        // A swap of an absent key, unknown outcome, explains a later read.
        let h = [
            pending(0, cas(None, 7)),
            op(5, 6, Input::Get, Output::Get(Some(7))),
        ];
        assert_eq!(check(&h), Ok(()));
        // A failed swap must have seen something other than what it expected.
        let h = [
            op(0, 1, Input::Put(1), Output::Put),
            op(2, 3, cas(Some(1), 2), Output::Cas(false)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn an_unknown_delete_explains_a_missing_key() {
        let h = [
            op(0, 1, Input::Put(1), Output::Put),
            pending(2, Input::Delete),
            op(10, 11, Input::Get, Output::Get(None)),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn many_overlapping_operations() {
        // 8 writers and readers overlapping heavily, 4000 ops, all consistent
        // with writes taking effect in call order.
        let mut h = Vec::new();
        let mut last = None;
        for i in 0..2000u64 {
            let t = i * 10;
            h.push(op(t, t + 35, Input::Put(i as u32), Output::Put));
            h.push(op(t + 1, t + 3, Input::Get, Output::Get(last)));
            last = Some(i as u32);
        }
        assert_eq!(check(&h), Ok(()));
    }
}
