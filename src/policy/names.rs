//! What a policy mentions, for features that follow it (the groups filter of identity headers).

use super::{Criterion, Expr, Policy};

impl Policy {
    /// Every group name the policy's `groups` criteria (and `claim/groups`) mention: the groups
    /// that can make a difference to it (`jwt_groups_filter_infer_from_ppl`).
    pub fn group_names(&self) -> std::collections::BTreeSet<String> {
        fn walk(e: &Expr, out: &mut std::collections::BTreeSet<String>) {
            match e {
                Expr::And(v) | Expr::Or(v) | Expr::Not(v) | Expr::Nor(v) => {
                    v.iter().for_each(|x| walk(x, out))
                }
                Expr::Criterion(Criterion::Groups(m)) => m.values(out),
                Expr::Criterion(Criterion::Claim { name, matcher }) if name == "groups" => {
                    matcher.values(out)
                }
                Expr::Criterion(_) => {}
            }
        }
        let mut out = std::collections::BTreeSet::new();
        for r in &self.rules {
            for e in r.allow.iter().chain(r.deny.iter()) {
                walk(e, &mut out);
            }
        }
        out
    }
}
