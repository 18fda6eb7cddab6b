//! Tree rules (seed 004): where a partner sits, the cycle guard, the depth
//! cap, role ranking along a parent edge, and the ancestor-path rewrite of a
//! moved subtree.
//!
//! Paths are nearest first: a partner's `ancestor_ids` is `[parent,
//! grandparent, …, root]` and its depth is the path's length (a root has depth
//! 0 and an empty path).

use accrue_types::PartnerId;

/// Why a placement is refused (all map to FAILED_PRECONDITION).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The new parent is the partner itself or inside its subtree (reason CYCLE).
    #[error("partner {partner} cannot move under {parent}: {parent} is the partner or one of its descendants")]
    Cycle {
        /// The partner being moved.
        partner: PartnerId,
        /// The refused parent.
        parent: PartnerId,
    },
    /// The deepest partner would sit below the program's maximum tree depth
    /// (reason DEPTH_EXCEEDED).
    #[error("the deepest partner would be at depth {depth}, beyond the program's max_tree_depth of {cap}")]
    DepthExceeded {
        /// Depth the deepest affected partner would reach.
        depth: i32,
        /// The program's `max_tree_depth` (not its override depth cap: DESIGN §2).
        cap: i32,
    },
    /// The parent ranks below the child on the program's role ladder (reason ROLE_RANK).
    #[error("a {parent_role} partner cannot be the parent of a {child_role} partner: the parent may not rank below it")]
    RoleRank {
        /// The parent's role.
        parent_role: String,
        /// The child's role.
        child_role: String,
    },
}

impl TreeError {
    /// The ErrorInfo reason sent with FAILED_PRECONDITION.
    pub fn reason(&self) -> &'static str {
        match self {
            TreeError::Cycle { .. } => "CYCLE",
            TreeError::DepthExceeded { .. } => "DEPTH_EXCEEDED",
            TreeError::RoleRank { .. } => "ROLE_RANK",
        }
    }
}

/// Where a partner sits: its ancestors (nearest first) and depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Ancestors, nearest first.
    pub ancestor_ids: Vec<PartnerId>,
    /// Depth (0 for a root).
    pub depth: i32,
}

impl Placement {
    /// A root partner.
    pub fn root() -> Self {
        Placement { ancestor_ids: Vec::new(), depth: 0 }
    }

    /// The placement of a child of `parent_id`, whose own ancestors are
    /// `parent_ancestors` (nearest first).
    pub fn under(parent_id: PartnerId, parent_ancestors: &[PartnerId]) -> Self {
        let mut ancestor_ids = Vec::with_capacity(parent_ancestors.len() + 1);
        ancestor_ids.push(parent_id);
        ancestor_ids.extend_from_slice(parent_ancestors);
        let depth = i32::try_from(ancestor_ids.len()).unwrap_or(i32::MAX);
        Placement { ancestor_ids, depth }
    }
}

/// A prospective parent as stored.
#[derive(Debug, Clone, Copy)]
pub struct ParentNode<'a> {
    /// Its id.
    pub id: PartnerId,
    /// Its ancestors, nearest first.
    pub ancestor_ids: &'a [PartnerId],
}

/// Places a new partner under `parent` (or at the root), enforcing the
/// depth cap: the new partner's depth must be ≤ `cap`.
///
/// Errors: [`TreeError::DepthExceeded`].
pub fn place_new(parent: Option<ParentNode<'_>>, cap: i32) -> Result<Placement, TreeError> {
    let placement = match parent {
        None => Placement::root(),
        Some(parent) => Placement::under(parent.id, parent.ancestor_ids),
    };
    if placement.depth > cap {
        return Err(TreeError::DepthExceeded { depth: placement.depth, cap });
    }
    Ok(placement)
}

/// Plans moving `partner` (whose subtree is `subtree_height` levels tall: 0
/// for a leaf) under `new_parent`, or to the root when `None`.
///
/// Refuses a cycle — the new parent is the partner itself or has the partner
/// among its ancestors (it lies in the partner's subtree) — and a move after
/// which the deepest partner of the subtree would exceed `cap` (new depth +
/// subtree height > cap).
///
/// Errors: [`TreeError::Cycle`], [`TreeError::DepthExceeded`].
pub fn plan_move(
    partner: PartnerId,
    new_parent: Option<ParentNode<'_>>,
    subtree_height: i32,
    cap: i32,
) -> Result<Placement, TreeError> {
    let placement = match new_parent {
        None => Placement::root(),
        Some(parent) => {
            if parent.id == partner || parent.ancestor_ids.contains(&partner) {
                return Err(TreeError::Cycle { partner, parent: parent.id });
            }
            Placement::under(parent.id, parent.ancestor_ids)
        }
    };
    let deepest = placement.depth.saturating_add(subtree_height.max(0));
    if deepest > cap {
        return Err(TreeError::DepthExceeded { depth: deepest, cap });
    }
    Ok(placement)
}

/// The new path of a descendant of a moved partner: its path up to and
/// including the moved partner is kept, and the moved partner's old ancestors
/// are replaced with `moved_new_ancestors`. `None` when `moved` is not on
/// `path` (the partner is not a descendant).
///
/// The store applies the same rule in SQL, in bounded batches:
/// `ancestor_ids[1:array_position(ancestor_ids, moved)] || new_ancestors`.
pub fn rewrite_descendant_path(
    path: &[PartnerId],
    moved: PartnerId,
    moved_new_ancestors: &[PartnerId],
) -> Option<Vec<PartnerId>> {
    let position = path.iter().position(|id| *id == moved)?;
    let mut rewritten = Vec::with_capacity(position + 1 + moved_new_ancestors.len());
    rewritten.extend_from_slice(&path[..=position]);
    rewritten.extend_from_slice(moved_new_ancestors);
    Some(rewritten)
}

/// Checks the role ladder along a parent edge (DESIGN §4 "Scheme margins"):
/// in a program with a role ladder (highest first), a partner's parent may
/// not rank below it. Partners without a role, or with a role that is not on
/// the ladder, are not constrained.
///
/// Errors: [`TreeError::RoleRank`].
pub fn check_role_rank(
    ladder: &[String],
    parent_role: Option<&str>,
    child_role: Option<&str>,
) -> Result<(), TreeError> {
    let (Some(parent_role), Some(child_role)) = (parent_role, child_role) else {
        return Ok(());
    };
    let rank = |role: &str| ladder.iter().position(|rung| rung == role);
    match (rank(parent_role), rank(child_role)) {
        (Some(parent_rank), Some(child_rank)) if parent_rank > child_rank => {
            Err(TreeError::RoleRank { parent_role: parent_role.to_string(), child_role: child_role.to_string() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<PartnerId> {
        (0..n).map(|_| PartnerId::new_v7()).collect()
    }

    #[test]
    fn placement_under_a_parent_prepends_it() {
        let [root, mid] = ids(2).try_into().unwrap();
        let placement = Placement::under(mid, &[root]);
        assert_eq!(placement.ancestor_ids, vec![mid, root]);
        assert_eq!(placement.depth, 2);
        assert_eq!(Placement::root().depth, 0);
    }

    #[test]
    fn new_partner_respects_cap() {
        let [root, mid] = ids(2).try_into().unwrap();
        let parent_path = [root];
        let parent = ParentNode { id: mid, ancestor_ids: &parent_path };
        assert_eq!(place_new(Some(parent), 2).unwrap().depth, 2);
        assert_eq!(place_new(Some(parent), 1), Err(TreeError::DepthExceeded { depth: 2, cap: 1 }));
        assert_eq!(place_new(None, 1).unwrap(), Placement::root());
    }

    #[test]
    fn move_under_self_or_descendant_is_a_cycle() {
        let [a, b, c] = ids(3).try_into().unwrap();
        // Tree a → b → c; move a under c.
        let c_path = [b, a];
        let error = plan_move(a, Some(ParentNode { id: c, ancestor_ids: &c_path }), 2, 8).unwrap_err();
        assert_eq!(error, TreeError::Cycle { partner: a, parent: c });
        assert_eq!(error.reason(), "CYCLE");
        let error = plan_move(a, Some(ParentNode { id: a, ancestor_ids: &[] }), 2, 8).unwrap_err();
        assert_eq!(error.reason(), "CYCLE");
    }

    #[test]
    fn move_counts_subtree_height_against_cap() {
        let [x, y, a] = ids(3).try_into().unwrap();
        // Move a (subtree 2 levels tall) under y at depth 1: a → 2, deepest → 4.
        let y_path = [x];
        let parent = ParentNode { id: y, ancestor_ids: &y_path };
        assert_eq!(plan_move(a, Some(parent), 2, 4).unwrap().ancestor_ids, vec![y, x]);
        assert_eq!(plan_move(a, Some(parent), 2, 3), Err(TreeError::DepthExceeded { depth: 4, cap: 3 }));
        // To the root: only the subtree height counts.
        assert_eq!(plan_move(a, None, 3, 3).unwrap(), Placement::root());
        assert!(plan_move(a, None, 4, 3).is_err());
    }

    #[test]
    fn descendant_path_keeps_prefix_and_swaps_old_ancestors() {
        let [old_root, old_parent, moved, child, grandchild, new_parent, new_root] = ids(7).try_into().unwrap();
        let grandchild_path = vec![child, moved, old_parent, old_root];
        let rewritten = rewrite_descendant_path(&grandchild_path, moved, &[new_parent, new_root]).unwrap();
        assert_eq!(rewritten, vec![child, moved, new_parent, new_root]);
        let child_path = vec![moved, old_parent, old_root];
        assert_eq!(rewrite_descendant_path(&child_path, moved, &[]).unwrap(), vec![moved]);
        assert_eq!(rewrite_descendant_path(&[old_root], moved, &[]), None);
        let _ = grandchild;
    }

    #[test]
    fn parent_may_not_rank_below_child() {
        let ladder: Vec<String> = ["ADMIN", "DISTRIBUTOR", "RETAILER"].iter().map(|s| s.to_string()).collect();
        assert!(check_role_rank(&ladder, Some("ADMIN"), Some("RETAILER")).is_ok());
        assert!(check_role_rank(&ladder, Some("RETAILER"), Some("RETAILER")).is_ok());
        assert!(check_role_rank(&ladder, None, Some("ADMIN")).is_ok());
        assert!(check_role_rank(&ladder, Some("RETAILER"), None).is_ok());
        let error = check_role_rank(&ladder, Some("RETAILER"), Some("DISTRIBUTOR")).unwrap_err();
        assert_eq!(error.reason(), "ROLE_RANK");
    }
}
