//! Merge protection, one golden case per rule: what is refused, by which rule, with what
//! explanation, and that the rest of the row still counts.

use tideway_unify::graph::{Batch, Graph, Refusal};
use tideway_unify::rules::{Limit, Rules};

struct Case {
    g: Graph,
}

impl Case {
    fn new(rules: Rules) -> Case {
        let mut g = Graph::new(rules);
        g.source_index("t");
        Case { g }
    }

    fn rows(&mut self, rows: &[(i64, &[(&str, &str)])]) {
        let mut b = Batch::default();
        for (i, (ts, ids)) in rows.iter().enumerate() {
            let ids: Vec<(usize, &str)> = ids
                .iter()
                .map(|(k, v)| (self.g.type_index(k), *v))
                .collect();
            self.g.observe(&mut b, 0, &format!("r{i}"), *ts, &ids);
        }
        self.g.apply(b);
    }

    fn refused(&self) -> Vec<(String, String, String)> {
        self.g
            .refusals
            .iter()
            .map(|r: &Refusal| (r.rule.clone(), r.to.to_string(), r.detail.clone()))
            .collect()
    }

    fn profiles(&self) -> usize {
        self.g.profiles().len()
    }
}

#[test]
fn blocked_values_are_refused_and_the_row_still_counts() {
    let mut c = Case::new(Rules::default());
    c.rows(&[(
        1,
        &[
            ("anonymous_id", "a1"),
            ("user_id", "undefined"),
            ("email", "unknown"),
        ],
    )]);
    assert_eq!(
        c.refused(),
        [
            (
                "blocked_value".into(),
                "user_id:undefined".into(),
                "`undefined` is a blocked value (a placeholder, not an identifier)".into()
            ),
            (
                "invalid_value".into(),
                "email:unknown".into(),
                "`unknown` is not an e-mail address (expected local@domain.tld)".into()
            ),
        ]
    );
    assert_eq!(c.profiles(), 1, "a1 still gets its profile");
}

#[test]
fn user_lists_and_patterns_block_values() {
    let mut rules = Rules::default();
    rules.blocked.insert("test@test.com".into());
    rules
        .blocked_patterns
        .push(regex::Regex::new("^qa-").unwrap());
    let mut c = Case::new(rules);
    c.rows(&[
        (1, &[("anonymous_id", "a1"), ("email", "TEST@test.com")]),
        (2, &[("anonymous_id", "a2"), ("email", "test@test.com")]),
        (3, &[("anonymous_id", "a3"), ("user_id", "qa-7")]),
        (
            4,
            &[("anonymous_id", "00000000-0000-0000-0000-000000000000")],
        ),
    ]);
    let rules: Vec<String> = c.refused().into_iter().map(|r| r.0).collect();
    assert_eq!(
        rules,
        [
            "blocked_value",
            "blocked_value",
            "blocked_pattern",
            "blocked_pattern"
        ]
    );
    assert_eq!(c.profiles(), 3, "the shared junk e-mail joined nobody");
}

#[test]
fn one_user_id_per_profile_and_the_lower_priority_edge_loses() {
    let mut c = Case::new(Rules::default());
    // A shared device: anonymous id a1 is seen with two users.
    c.rows(&[
        (1, &[("user_id", "u1"), ("anonymous_id", "a1")]),
        (2, &[("user_id", "u2"), ("anonymous_id", "a1")]),
    ]);
    assert_eq!(
        c.refused(),
        [(
            "limit:user_id".into(),
            "anonymous_id:a1".into(),
            "the profile would hold 2 user_id identifiers; at most 1 allowed".into()
        )]
    );
    let r = &c.g.refusals[0];
    assert_eq!(
        r.from.as_ref().unwrap().to_string(),
        "user_id:u2",
        "the user id is kept"
    );
    assert_eq!(r.at.row, "r1");
    assert_eq!(c.profiles(), 2);
}

#[test]
fn windowed_limits_count_only_recent_identifiers() {
    let mut rules = Rules::default();
    let anon = rules.type_index("anonymous_id").unwrap();
    rules.types[anon].limit = Some(Limit {
        max: 2,
        window_ms: Some(100),
    });
    let mut c = Case::new(rules);
    c.rows(&[
        (0, &[("user_id", "u1"), ("anonymous_id", "a1")]),
        (10, &[("user_id", "u1"), ("anonymous_id", "a2")]),
        (20, &[("user_id", "u1"), ("anonymous_id", "a3")]), // a third within 100 ms: refused
        (500, &[("user_id", "u1"), ("anonymous_id", "a4")]), // a1, a2 are old by now
    ]);
    let refused = c.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "limit:anonymous_id");
    assert_eq!(refused[0].1, "anonymous_id:a3");
    assert!(
        refused[0]
            .2
            .contains("3 anonymous_id identifiers seen within"),
        "{}",
        refused[0].2
    );
    assert_eq!(c.profiles(), 2, "u1 with a1, a2, a4; a3 alone");
}

#[test]
fn the_identifier_cap_refuses_growth() {
    let rules = Rules {
        max_ids: 3,
        ..Rules::default()
    };
    let mut c = Case::new(rules);
    c.rows(&[
        (1, &[("user_id", "u1"), ("anonymous_id", "a1")]),
        (2, &[("user_id", "u1"), ("anonymous_id", "a2")]),
        (3, &[("user_id", "u1"), ("anonymous_id", "a3")]),
    ]);
    assert_eq!(
        c.refused(),
        [(
            "max_ids".into(),
            "anonymous_id:a3".into(),
            "the profile would hold 4 identifiers; at most 3 allowed".into()
        )]
    );
}

#[test]
fn the_merge_cap_refuses_a_profile_that_absorbed_too_many() {
    let rules = Rules {
        max_merges: 2,
        ..Rules::default()
    };
    let mut c = Case::new(rules);
    // Three separate anonymous profiles, then an e-mail seen with each in turn.
    c.rows(&[
        (1, &[("anonymous_id", "a1")]),
        (2, &[("anonymous_id", "a2")]),
        (3, &[("anonymous_id", "a3")]),
        (4, &[("anonymous_id", "a4")]),
    ]);
    c.rows(&[
        (5, &[("email", "e@x.io"), ("anonymous_id", "a1")]),
        (6, &[("email", "e@x.io"), ("anonymous_id", "a2")]),
        (7, &[("email", "e@x.io"), ("anonymous_id", "a3")]),
        (8, &[("email", "e@x.io"), ("anonymous_id", "a4")]),
    ]);
    let refused = c.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "max_merges");
    assert_eq!(
        refused[0].2,
        "the profile would have absorbed 3 profiles; at most 2 allowed"
    );
    assert_eq!(c.g.merges.len(), 2);
}
