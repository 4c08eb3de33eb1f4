//! A span tree over indices into a slice of spans, built in linear time (plus the sort of
//! each sibling list). The formatters and the analysis share it; `tree::span_tree` is the
//! owned, nested form the REST API returns.

use rustc_hash::FxHashMap as HashMap;

use crate::model::Span;
use crate::SpanId;

/// Parent and children of every span, by index into the slice it was built from.
pub(crate) struct SpanIndex {
    /// Spans without a parent in the slice (no parent, an absent parent, or themselves).
    pub roots: Vec<usize>,
    /// Children of each span, by start time then id.
    pub children: Vec<Vec<usize>>,
    /// The parent of each span, when it is in the slice.
    pub parent: Vec<Option<usize>>,
}

impl SpanIndex {
    /// Links every span to its parent. A span whose parent is missing is a root, as in
    /// `span_tree`; members of a parent cycle are reachable from no root (`preorder`
    /// leaves them out, as `span_tree` does).
    pub fn new(spans: &[Span]) -> SpanIndex {
        let mut by_id: HashMap<SpanId, usize> =
            HashMap::with_capacity_and_hasher(spans.len(), Default::default());
        for (i, s) in spans.iter().enumerate() {
            by_id.entry(s.span_id).or_insert(i);
        }
        let mut roots = Vec::new();
        let mut children = vec![Vec::new(); spans.len()];
        let mut parent = vec![None; spans.len()];
        for (i, s) in spans.iter().enumerate() {
            match s
                .parent_span_id
                .and_then(|p| by_id.get(&p).copied())
                .filter(|&p| p != i)
            {
                Some(p) => {
                    parent[i] = Some(p);
                    children[p].push(i);
                }
                None => roots.push(i),
            }
        }
        let key = |&i: &usize| (spans[i].start_time, spans[i].span_id);
        roots.sort_by_key(key);
        for c in &mut children {
            c.sort_by_key(key);
        }
        SpanIndex {
            roots,
            children,
            parent,
        }
    }

    /// Every span reachable from a root, depth first, siblings by start time, with its
    /// depth. Iterative, so a very deep chain cannot overflow the stack.
    pub fn preorder(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.parent.len());
        let mut stack: Vec<(usize, usize)> = self.roots.iter().rev().map(|&r| (r, 0)).collect();
        while let Some((i, d)) = stack.pop() {
            out.push((i, d));
            stack.extend(self.children[i].iter().rev().map(|&c| (c, d + 1)));
        }
        out
    }
}
