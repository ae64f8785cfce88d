//! Which funnel stages a lead counts at, read from its line's script as a
//! graph ([`Program::successors`]): a lead counts at step S when it reached
//! S (an answer there, or it hung up in it: `Lead::steps_reached`), or when
//! it reached a step, or the end of the script (`completed`), that S
//! *dominates*: every path from the script's start to it passes S.
//!
//! So a branching script counts honestly: in the plumber's script
//! (`when` → `greeting` by day, `closed` by night → `name` ...) a daytime
//! caller who gave a name counts at `name`, not at the night's `closed`
//! menu, since `name` is reached either way; and a caller who answered the
//! urgency question of a straight script counts at every question before
//! it. Each line is read from its own script; the report adds the lines'
//! counts up by step name afterwards.

use backstop_core::intake::lead::{Lead, Outcome};
use backstop_core::intake::program::Program;
use std::collections::BTreeSet;

/// One line's script, as the funnel reads it.
#[derive(Debug, Clone)]
pub struct LineScript {
    /// The line's name (`default`, or a `[[line]]` name): leads with this `line` are read by it.
    pub line: String,
    pub program: Program,
    /// For each node (the steps, then the end at `steps.len()`), the nodes
    /// that dominate it; `None` for a node the start never reaches.
    dominators: Vec<Option<Vec<bool>>>,
}

impl LineScript {
    pub fn new(line: impl Into<String>, program: Program) -> LineScript {
        let dominators = dominators(&program);
        LineScript { line: line.into(), program, dominators }
    }

    /// The steps `lead` counts at, by name: those it reached, and every step
    /// that dominates one of them or, when it completed, the end. Steps it
    /// reached that this script does not have count as reached only.
    pub fn counted_at<'a>(&'a self, lead: &'a Lead) -> BTreeSet<&'a str> {
        let steps = &self.program.steps;
        let mut out = BTreeSet::new();
        let mut reached: Vec<usize> = Vec::new();
        for name in lead.steps_reached() {
            match steps.iter().position(|s| s.name == name) {
                Some(i) => reached.push(i),
                None => {
                    out.insert(name);
                }
            }
        }
        if lead.outcome == Outcome::Completed {
            reached.push(steps.len());
        }
        for r in reached {
            match &self.dominators[r] {
                Some(dom) => {
                    out.extend(dom.iter().enumerate().filter(|(_, d)| **d).filter_map(|(i, _)| step_name(steps, i)))
                }
                None => out.extend(step_name(steps, r)),
            }
        }
        out
    }
}

fn step_name(steps: &[backstop_core::intake::program::Step], i: usize) -> Option<&str> {
    steps.get(i).map(|s| s.name.as_str())
}

/// The dominator sets of every node of the script's graph (the steps, then
/// the end), by the plain iterative data-flow: dom(start) = {start}, and
/// dom(n) = {n} ∪ the intersection of dom(p) over n's predecessors p,
/// repeated until nothing changes (at most once per node: the sets only shrink).
fn dominators(program: &Program) -> Vec<Option<Vec<bool>>> {
    let n = program.steps.len() + 1;
    let succ: Vec<Vec<usize>> = (0..n).map(|i| program.successors(i)).collect();
    let mut reachable = vec![false; n];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if i < n && !reachable[i] {
            reachable[i] = true;
            stack.extend(succ[i].iter().copied());
        }
    }
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, next) in succ.iter().enumerate().filter(|(i, _)| reachable[*i]) {
        for &j in next {
            preds[j].push(i);
        }
    }
    let mut dom: Vec<Vec<bool>> =
        (0..n).map(|i| if i == 0 { (0..n).map(|j| j == 0).collect() } else { vec![true; n] }).collect();
    for _ in 0..=n {
        let mut changed = false;
        for v in 1..n {
            if !reachable[v] {
                continue;
            }
            let mut d = vec![true; n];
            for &p in &preds[v] {
                for (x, y) in d.iter_mut().zip(&dom[p]) {
                    *x &= *y;
                }
            }
            d[v] = true;
            if d != dom[v] {
                dom[v] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    dom.into_iter().zip(reachable).map(|(d, r)| r.then_some(d)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The plumber example's script (`config/examples/plumber.toml`): by
    /// day `greeting`, by night the `closed` menu (1: the on-call tech), then
    /// name, need, callback number, goodbye.
    pub(crate) fn plumber_steps() -> Vec<backstop_core::intake::program::StepConfig> {
        let example: toml::Value = toml::from_str(include_str!("../../config/examples/plumber.toml")).unwrap();
        example["line"][0]["step"].clone().try_into().unwrap()
    }

    pub(crate) fn plumber() -> LineScript {
        LineScript::new("acme-plumbing", Program::compile(&plumber_steps()).unwrap())
    }

    fn names(script: &LineScript, node: usize) -> Vec<&str> {
        let dom = script.dominators[node].as_ref().unwrap();
        (0..dom.len()).filter(|&i| dom[i]).map(|i| step_name(&script.program.steps, i).unwrap_or("end")).collect()
    }

    #[test]
    fn a_step_reached_by_either_branch_is_dominated_by_neither() {
        let s = plumber();
        let at = |n: &str| s.program.steps.iter().position(|x| x.name == n).unwrap();
        assert_eq!(names(&s, at("name")), ["hours", "name"]);
        assert_eq!(names(&s, at("need")), ["hours", "name", "need"]);
        assert_eq!(names(&s, at("missed_tech")), ["hours", "closed", "oncall", "missed_tech"]);
        assert_eq!(names(&s, s.program.steps.len()), ["hours", "name", "need", "callback_number", "goodbye", "end"]);
    }
}
