//! Properties of stitching: independent of the order rows are read in and of batch
//! boundaries (incremental = full rebuild), and profile ids stable across runs.

use proptest::prelude::*;
use tideway_unify::graph::{Batch, Graph, Identity, ProfileRow};
use tideway_unify::rules::{Limit, Rules};

/// One source row: its time and its identifiers as (type, value number).
type Row = (i64, Vec<(usize, u8)>);

const TYPES: [&str; 4] = ["user_id", "email", "phone", "anonymous_id"];

fn rules() -> Rules {
    // Small caps, so that random graphs hit every rule.
    let mut r = Rules {
        max_ids: 7,
        max_merges: 3,
        ..Rules::default()
    };
    let anon = r.type_index("anonymous_id").unwrap();
    r.types[anon].limit = Some(Limit {
        max: 3,
        window_ms: Some(5),
    });
    r
}

fn value(kind: usize, n: u8) -> String {
    match TYPES[kind] {
        "email" => format!("e{n}@example.com"),
        "phone" => format!("+1415555{:04}", n),
        "user_id" if n == 0 => "null".into(), // a blocked value now and then
        t => format!("{t}-{n}"),
    }
}

fn observe(g: &mut Graph, batch: &mut Batch, rows: &[Row], offset: usize) {
    let src = g.source_index("web.identifies");
    for (i, (ts, ids)) in rows.iter().enumerate() {
        let ids: Vec<(usize, String)> = ids
            .iter()
            .map(|&(k, n)| (g.type_index(TYPES[k]), value(k, n)))
            .collect();
        let ids: Vec<(usize, &str)> = ids.iter().map(|(k, v)| (*k, v.as_str())).collect();
        g.observe(batch, src, &format!("row-{}", i + offset), *ts, &ids);
    }
}

fn apply(g: &mut Graph, rows: &[Row], offset: usize) {
    let mut batch = Batch::default();
    observe(g, &mut batch, rows, offset);
    g.apply(batch);
}

/// The graph's tables, in a canonical order.
fn tables(g: &mut Graph) -> (Vec<Identity>, Vec<ProfileRow>) {
    let mut ids = g.identities();
    ids.sort_by(|a, b| a.id.cmp(&b.id));
    let mut profiles = g.profiles();
    profiles.sort_by_key(|p| p.id);
    (ids, profiles)
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (0i64..30, prop::collection::vec((0usize..4, 0u8..10), 1..4)),
        1..40,
    )
}

/// Rows in time order, so that a cut anywhere between two times splits a history the way
/// two consecutive runs would see it.
fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| r.0);
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn stitching_is_independent_of_row_order(rows in rows(), seed in any::<u64>()) {
        let mut shuffled = rows.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        // Row keys follow the rows, so each row keeps its identity whatever the order.
        let keyed: Vec<(usize, Row)> = rows.iter().cloned().enumerate().collect();
        let mut by_order = keyed.clone();
        let mut s2 = seed | 1;
        for i in (1..by_order.len()).rev() {
            s2 ^= s2 << 13; s2 ^= s2 >> 7; s2 ^= s2 << 17;
            by_order.swap(i, (s2 % (i as u64 + 1)) as usize);
        }
        let mut a = Graph::new(rules());
        apply(&mut a, &rows, 0);
        let mut b = Graph::new(rules());
        let mut batch = Batch::default();
        let src = b.source_index("web.identifies");
        for (i, (ts, ids)) in &by_order {
            let ids: Vec<(usize, String)> = ids.iter().map(|&(k, n)| (b.type_index(TYPES[k]), value(k, n))).collect();
            let ids: Vec<(usize, &str)> = ids.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.observe(&mut batch, src, &format!("row-{i}"), *ts, &ids);
        }
        b.apply(batch);
        prop_assert_eq!(tables(&mut a), tables(&mut b));
        let mut ra = a.refusals.clone();
        let mut rb = b.refusals.clone();
        ra.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        rb.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        prop_assert_eq!(ra, rb);
        let _ = shuffled;
    }

    #[test]
    fn incremental_runs_equal_a_full_rebuild(rows in rows().prop_map(sorted), cut in any::<prop::sample::Index>()) {
        // Cut only between two different times.
        let cut = cut.index(rows.len() + 1);
        let t = rows.get(cut).map(|r| r.0);
        let cut = rows.iter().position(|r| Some(r.0) == t).unwrap_or(rows.len());
        let (first, second) = rows.split_at(cut);

        let mut full = Graph::new(rules());
        apply(&mut full, &rows, 0);

        // Run 1, then save and restore the state as the lake does, then run 2.
        let mut one = Graph::new(rules());
        apply(&mut one, first, 0);
        let (ids, profiles) = tables(&mut one);
        let before: Vec<Identity> = ids.clone();
        let mut two = Graph::restore(
            rules(),
            ids,
            profiles.iter().map(|p| (p.id, p.created_at, p.updated_at, p.merges)),
        );
        apply(&mut two, second, cut);
        prop_assert_eq!(tables(&mut full), tables(&mut two));

        // Stable ids: an identifier keeps its profile id unless its profile was absorbed,
        // and then the merge says into which.
        let (after, _) = tables(&mut two);
        for old in before {
            let now = after.iter().find(|i| i.id == old.id).unwrap();
            if now.profile != old.profile {
                prop_assert!(
                    two.merges.iter().any(|m| m.absorbed == old.profile),
                    "{} moved from {} to {} without a merge", old.id, old.profile, now.profile
                );
            }
        }
    }
}

#[test]
fn the_older_profile_survives_a_merge_and_the_merge_is_recorded() {
    let mut g = Graph::new(Rules::default());
    let src = g.source_index("web.identifies");
    let (anon, email) = (g.type_index("anonymous_id"), g.type_index("email"));
    let mut b = Batch::default();
    g.observe(&mut b, src, "m1", 10, &[(anon, "a1")]);
    g.observe(&mut b, src, "m2", 20, &[(email, "ann@example.com")]);
    g.apply(b);
    let (old, young) = {
        let p = g.profiles();
        (p[0].id, p[1].id)
    };
    let mut b = Batch::default();
    g.observe(
        &mut b,
        src,
        "m3",
        30,
        &[(anon, "a1"), (email, "Ann@Example.com")],
    );
    g.apply(b);
    let p = g.profiles();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].id, old);
    assert_eq!(p[0].merges, 1);
    assert_eq!(g.merges.len(), 1);
    assert_eq!(g.merges[0].survivor, old);
    assert_eq!(g.merges[0].absorbed, young);
    assert_eq!(g.merges[0].at.row, "m3");
}
