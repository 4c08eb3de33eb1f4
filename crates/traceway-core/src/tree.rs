//! The span tree of a trace.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::Span;
use crate::SpanId;

/// A span with its children, as `GET /api/v1/traces/{id}` returns it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanNode {
    /// The span's fields.
    #[serde(flatten)]
    pub span: Span,
    /// Distance from its root (0 for a root).
    pub depth: usize,
    /// Its children, by start time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(required = false, no_recursion))]
    pub children: Vec<SpanNode>,
    /// Set on a span shown as a root because its parents lead back to itself (a parent
    /// cycle, which is bad input): the cycle is broken there so that no span is lost.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub in_parent_cycle: bool,
}

/// Spans nested deeper than this are shown at this depth.
pub const MAX_DEPTH: usize = 256;

/// Builds the forest of spans: roots are spans without a parent and spans whose parent is
/// not (yet) in the trace, so a step whose parent has not arrived is still shown. Siblings
/// are ordered by start time, then id. Spans in a parent cycle, which no root reaches, are
/// shown too: each cycle is broken at its earliest span, which becomes a root marked
/// [`SpanNode::in_parent_cycle`], after the other roots.
pub fn span_tree(mut spans: Vec<Span>) -> Vec<SpanNode> {
    spans.sort_by_key(|s| (s.start_time, s.span_id));
    let present: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<SpanId, Vec<Span>> = HashMap::new();
    let mut roots = Vec::new();
    for s in spans {
        match s
            .parent_span_id
            .filter(|p| present.contains(p) && *p != s.span_id)
        {
            Some(p) => children.entry(p).or_default().push(s),
            None => roots.push(s),
        }
    }
    // Each span is taken out of `children` once, so a parent cycle (bad input) leaves its
    // members out rather than looping. Depth is bounded by MAX_DEPTH; deeper spans are
    // attached at that depth so a pathological chain cannot overflow the stack.
    fn build(span: Span, depth: usize, children: &mut HashMap<SpanId, Vec<Span>>) -> SpanNode {
        let mut node = SpanNode {
            depth,
            children: Vec::new(),
            span,
            in_parent_cycle: false,
        };
        let mut kids = children.remove(&node.span.span_id).unwrap_or_default();
        if depth >= MAX_DEPTH {
            // Flatten the rest of the chain under this node.
            let mut i = 0;
            while i < kids.len() {
                let more = children.remove(&kids[i].span_id).unwrap_or_default();
                kids.extend(more);
                i += 1;
            }
            node.children = kids
                .into_iter()
                .map(|k| SpanNode {
                    depth: depth + 1,
                    children: Vec::new(),
                    span: k,
                    in_parent_cycle: false,
                })
                .collect();
            return node;
        }
        node.children = kids
            .into_iter()
            .map(|k| build(k, depth + 1, children))
            .collect();
        node
    }
    let mut forest: Vec<SpanNode> = roots
        .into_iter()
        .map(|r| build(r, 0, &mut children))
        .collect();
    // What is left hangs off parent cycles. Follow the parents of the earliest span left
    // until one repeats: that one is on a cycle. Its earliest member becomes a root, which
    // takes the rest of the cycle (and what hangs off it) with it; repeat.
    while !children.is_empty() {
        let parent_of: HashMap<SpanId, SpanId> = children
            .iter()
            .flat_map(|(p, kids)| kids.iter().map(move |k| (k.span_id, *p)))
            .collect();
        let start = children
            .values()
            .flatten()
            .min_by_key(|s| (s.start_time, s.span_id))
            .map(|s| s.span_id);
        let Some(mut at) = start else { break };
        let mut path = Vec::new();
        while !path.contains(&at) {
            path.push(at);
            match parent_of.get(&at) {
                Some(p) => at = *p,
                None => break,
            }
        }
        let cycle = &path[path.iter().position(|x| *x == at).unwrap_or(0)..];
        let key = |id: &SpanId| {
            let p = parent_of.get(id).copied();
            p.and_then(|p| children.get(&p))
                .and_then(|kids| kids.iter().find(|k| k.span_id == *id))
                .map(|s| (s.start_time, s.span_id))
        };
        let Some(root) = cycle.iter().min_by_key(|id| key(id)).copied() else {
            break;
        };
        let Some(parent) = parent_of.get(&root).copied() else {
            break;
        };
        let Some(kids) = children.get_mut(&parent) else {
            break;
        };
        let Some(i) = kids.iter().position(|k| k.span_id == root) else {
            break;
        };
        let span = kids.remove(i);
        if kids.is_empty() {
            children.remove(&parent);
        }
        let mut node = build(span, 0, &mut children);
        node.in_parent_cycle = true;
        forest.push(node);
    }
    forest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SpanKind, Timestamp};

    fn span(id: u64, parent: Option<u64>, start_ms: i64) -> Span {
        let mut s = Span::new(
            SpanId::from_u64(id).unwrap(),
            SpanKind::Chain,
            format!("s{id}"),
            Timestamp::from_unix_millis(start_ms),
        );
        s.parent_span_id = parent.and_then(SpanId::from_u64);
        s
    }

    fn shape(nodes: &[SpanNode]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for n in nodes {
            out.push((n.span.name.clone(), n.depth));
            out.extend(shape(&n.children));
        }
        out
    }

    #[test]
    fn builds_nested_tree_in_start_order_with_orphans_as_roots() {
        let spans = vec![
            span(3, Some(1), 30),
            span(2, Some(1), 20),
            span(1, None, 10),
            span(4, Some(2), 25),
            span(5, Some(99), 5),
        ];
        let tree = span_tree(spans);
        assert_eq!(
            shape(&tree),
            vec![
                ("s5".into(), 0),
                ("s1".into(), 0),
                ("s2".into(), 1),
                ("s4".into(), 2),
                ("s3".into(), 1)
            ]
        );
    }

    /// 3.9: spans in a parent cycle were counted but missing from the tree.
    #[test]
    fn spans_in_a_parent_cycle_are_shown_as_a_flagged_root_without_looping() {
        let tree = span_tree(vec![
            span(1, Some(2), 1),
            span(2, Some(1), 2),
            span(3, None, 3),
            span(4, Some(2), 4),
            // A second cycle of three, and a self-parent (a root as it is).
            span(5, Some(7), 7),
            span(6, Some(5), 6),
            span(7, Some(6), 5),
            span(8, Some(8), 8),
        ]);
        assert_eq!(
            shape(&tree),
            vec![
                ("s3".into(), 0),
                ("s8".into(), 0),
                ("s1".into(), 0),
                ("s2".into(), 1),
                ("s4".into(), 2),
                ("s7".into(), 0),
                ("s5".into(), 1),
                ("s6".into(), 2),
            ]
        );
        let flagged: Vec<&str> = tree
            .iter()
            .filter(|n| n.in_parent_cycle)
            .map(|n| n.span.name.as_str())
            .collect();
        assert_eq!(flagged, ["s1", "s7"]);
        let v = serde_json::to_value(&tree[0]).unwrap();
        assert!(v.get("in_parent_cycle").is_none(), "absent unless set");
        assert_eq!(
            serde_json::to_value(&tree[2]).unwrap()["in_parent_cycle"],
            true
        );
    }

    #[test]
    fn a_very_deep_chain_keeps_every_span_without_overflowing() {
        let n = 5_000u64;
        let spans: Vec<Span> = (1..=n)
            .map(|i| span(i, (i > 1).then(|| i - 1), i as i64))
            .collect();
        let tree = span_tree(spans);
        let flat = shape(&tree);
        assert_eq!(flat.len(), n as usize);
        assert!(flat.iter().all(|(_, d)| *d <= MAX_DEPTH + 1));
    }
}
