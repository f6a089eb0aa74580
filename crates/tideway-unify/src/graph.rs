//! The identity graph: identifiers interned to dense node numbers, profiles as connected
//! components kept by union-find, and the merge protection rules applied to every edge.
//!
//! Input arrives as *observations*: one source row, its identifiers, its time. A row links
//! each of its identifiers to its highest-priority one (a star), so when an edge must be
//! refused the lower-priority identifier is the one left out. Each batch of observations is
//! applied in a canonical order (time, then a hash of the row's content), which makes the
//! result independent of the order rows were read in; a batch that follows another in time
//! gives the same graph as one batch of both (incremental = full rebuild).
//!
//! Profile ids are stable: a profile is named after the identifier that created it, keeps
//! its id as identifiers join it, and when two profiles merge the older one (earlier
//! `created_at`, then the smaller id) survives.
//!
//! Identifiers are interned by a 128-bit hash of their type and value (the same hash that
//! names the profiles they create): a lookup touches one table slot and never the text. Two
//! different identifiers would have to share 128 hash bits to be confused; among 10^10
//! identifiers the chance of that is below 10^-18.
//!
//! Memory: about 70 bytes per identifier plus its text, so 10 M identifiers fit in about a
//! gigabyte.

use std::fmt;

use hashbrown::HashTable;
use rayon::slice::ParallelSliceMut;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::rules::{Rejection, Rules};

/// A dense identifier number.
pub type Node = u32;
const NONE: u32 = u32::MAX;

/// A profile's id: 80 bits of the hash of the identifier that created it, shown as
/// `prof_` and 20 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProfileId(pub u128);

/// The 128-bit hash of the identifier `kind:value`, written into `buf`'s space.
fn key128(buf: &mut Vec<u8>, kind: &str, value: &str) -> u128 {
    buf.clear();
    buf.extend_from_slice(kind.as_bytes());
    buf.push(0);
    buf.extend_from_slice(value.as_bytes());
    xxh3_128(buf)
}

impl ProfileId {
    /// The id of a profile created by the identifier `kind:value`.
    pub fn of(kind: &str, value: &str) -> ProfileId {
        ProfileId::from_key(key128(&mut Vec::new(), kind, value))
    }

    fn from_key(key: u128) -> ProfileId {
        ProfileId(key >> 48)
    }

    /// Appends the `prof_...` form to `out` (what `to_string` gives, without formatting
    /// machinery: a run writes millions of them).
    pub fn push_to(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push_str("prof_");
        for i in (0..20).rev() {
            out.push(HEX[((self.0 >> (4 * i)) & 0xf) as usize] as char);
        }
    }

    /// Parses the `prof_...` form.
    pub fn parse(s: &str) -> Option<ProfileId> {
        let hex = s.strip_prefix("prof_")?;
        (hex.len() == 20)
            .then(|| u128::from_str_radix(hex, 16).ok())
            .flatten()
            .map(ProfileId)
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prof_{:020x}", self.0)
    }
}

/// Where an observation came from: a source table, the row's key (if the table has one) and
/// its time (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The source table.
    pub source: String,
    /// The row's key (`message_id`, `id`, ...), empty if the table has none.
    pub row: String,
    /// When the row happened.
    pub ts: i64,
}

/// One identifier, as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident {
    /// Its type.
    pub kind: String,
    /// Its normalized value.
    pub value: String,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Two profiles became one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The profile that lives on.
    pub survivor: ProfileId,
    /// The profile absorbed into it.
    pub absorbed: ProfileId,
    /// The edge that joined them.
    pub from: Ident,
    /// The edge's other end.
    pub to: Ident,
    /// The row that carried the edge.
    pub at: Provenance,
}

/// An edge (or a lone identifier) the rules refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The identifier kept (the higher-priority end), if the refusal is of an edge.
    pub from: Option<Ident>,
    /// The identifier refused.
    pub to: Ident,
    /// The rule: `limit:<type>`, `max_ids`, `max_merges`, `blocked_value`, ...
    pub rule: String,
    /// What the rule saw, in words.
    pub detail: String,
    /// The row that carried it.
    pub at: Provenance,
}

/// An edge that joined an identifier to a profile (a spanning-tree edge); with provenance,
/// the path `unify explain` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The higher-priority end.
    pub from: Ident,
    /// The other end.
    pub to: Ident,
    /// The row that carried it.
    pub at: Provenance,
}

/// A link borrowed from the graph (see [`Graph::link_rows`]).
#[derive(Debug, Clone, Copy)]
pub struct LinkView<'a> {
    /// The higher-priority end: type and value.
    pub from: (&'a str, &'a str),
    /// The other end.
    pub to: (&'a str, &'a str),
    /// The source table of the row that carried it.
    pub source: &'a str,
    /// The row's key, empty if the table has none.
    pub row: &'a str,
    /// The row's time.
    pub ts: i64,
}

/// One identifier of the identity map, borrowed from the graph (see
/// [`Graph::identity_rows`]).
#[derive(Debug, Clone, Copy)]
pub struct IdentityView<'a> {
    /// Its type.
    pub kind: &'a str,
    /// Its normalized value.
    pub value: &'a str,
    /// Its profile.
    pub profile: ProfileId,
    /// First and last time it was seen.
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
    /// The table it was first seen in.
    pub source: &'a str,
}

/// One identifier of the identity map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identifier.
    pub id: Ident,
    /// Its profile.
    pub profile: ProfileId,
    /// First and last time it was seen.
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
    /// The table it was first seen in.
    pub source: String,
}

/// One profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRow {
    /// Its id.
    pub id: ProfileId,
    /// When its first identifier was seen.
    pub created_at: i64,
    /// When it last gained an identifier or absorbed a profile.
    pub updated_at: i64,
    /// How many profiles it absorbed.
    pub merges: u32,
    /// Identifiers per type, in the order of [`Rules::types`].
    pub counts: Vec<u32>,
    /// The most recently seen value of each type, in the order of [`Rules::types`].
    pub latest: Vec<Option<String>>,
}

#[derive(Debug, Clone)]
struct Profile {
    id: ProfileId,
    created_at: i64,
    updated_at: i64,
    size: u32,
    merges: u32,
    /// Identifiers per limited type (see `Graph::limited`).
    counts: Vec<u32>,
    root: Node,
    alive: bool,
}

/// A batch of observations, read before it is applied.
#[derive(Debug, Default)]
pub struct Batch {
    obs: Vec<Obs>,
    nodes: Vec<Node>,
    rows: String,
    /// Values refused before they became identifiers (blocked, invalid).
    refusals: Vec<Refusal>,
}

#[derive(Debug, Clone, Copy)]
struct Obs {
    ts: i64,
    hash: u64,
    nodes: u32,
    len: u16,
    source: u16,
    row: u32,
    row_len: u32,
}

impl Batch {
    /// How many observations the batch holds.
    pub fn len(&self) -> usize {
        self.obs.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.obs.is_empty()
    }
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Observations applied.
    pub observations: u64,
    /// Identifiers seen for the first time.
    pub new_ids: u64,
    /// Profiles created.
    pub new_profiles: u64,
    /// Profiles absorbed by merges.
    pub merges: u64,
    /// Edges and values refused.
    pub refused: u64,
}

/// The identity graph.
#[derive(Debug)]
pub struct Graph {
    rules: Rules,
    /// How many types the configuration declared (types added later rank after them, by name).
    configured: usize,
    /// Limited type index → column in `Profile::counts`.
    limited: Vec<Option<usize>>,
    sources: Vec<String>,
    /// Interned identifiers by their 128-bit key: `(low 64 bits, high 64 bits, node)`.
    index: HashTable<(u64, u64, Node)>,
    /// Scratch space for building keys.
    scratch: Vec<u8>,
    /// Per identifier, everything the stitch reads together (one cache line's half).
    nodes: Vec<NodeData>,
    ends: Vec<usize>,
    arena: String,
    profiles: Vec<Profile>,
    /// This run's merges, refusals and links.
    pub merges: Vec<Merge>,
    /// See `merges`.
    pub refusals: Vec<Refusal>,
    /// Links of this run, compact (materialized by [`Graph::links`]).
    links: Vec<LinkRef>,
    link_rows: String,
    /// Hashes of the source and type names (for the canonical order).
    source_hash: Vec<u64>,
}

/// One identifier's state: 32 bytes, so the stitch pays one cache miss per identifier it
/// touches instead of one per field.
#[derive(Debug, Clone, Copy)]
struct NodeData {
    first_seen: i64,
    last_seen: i64,
    parent: Node,
    /// Members of a component as a circular list.
    next: Node,
    /// Profile slot of a root; `NONE` for identifiers interned but not yet seen.
    slot: u32,
    kind: u16,
    first_source: u16,
}

/// A link as stored: nodes and where the row's key sits in `Graph::link_rows`.
#[derive(Debug, Clone, Copy)]
struct LinkRef {
    from: Node,
    to: Node,
    ts: i64,
    source: u16,
    row: u32,
    row_len: u32,
}

impl Graph {
    /// An empty graph under `rules`.
    pub fn new(rules: Rules) -> Graph {
        let mut g = Graph {
            configured: rules.types.len(),
            rules,
            limited: Vec::new(),
            sources: Vec::new(),
            index: HashTable::new(),
            scratch: Vec::new(),
            nodes: Vec::new(),
            ends: vec![0],
            arena: String::new(),
            profiles: Vec::new(),
            merges: Vec::new(),
            refusals: Vec::new(),
            links: Vec::new(),
            link_rows: String::new(),
            source_hash: Vec::new(),
        };
        g.index_limits();
        g
    }

    fn index_limits(&mut self) {
        let mut n = 0;
        self.limited = self
            .rules
            .types
            .iter()
            .map(|t| {
                t.limit.filter(|l| l.window_ms.is_none()).map(|_| {
                    n += 1;
                    n - 1
                })
            })
            .collect();
        let width = n;
        for p in &mut self.profiles {
            p.counts.resize(width, 0);
        }
    }

    /// The rules in force (types may have been added by tables that carry the type as data).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The index of type `name`, declaring it if new (see [`Rules::type_index_or_add`]).
    pub fn type_index(&mut self, name: &str) -> usize {
        let before = self.rules.types.len();
        let i = self.rules.type_index_or_add(name);
        if self.rules.types.len() != before {
            self.limited.push(None);
        }
        i
    }

    /// The index of source table `name`.
    pub fn source_index(&mut self, name: &str) -> u16 {
        match self.sources.iter().position(|s| s == name) {
            Some(i) => i as u16,
            None => {
                self.sources.push(name.to_string());
                self.source_hash.push(xxh3_64(name.as_bytes()));
                (self.sources.len() - 1) as u16
            }
        }
    }

    /// How many identifiers the graph holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn value(&self, n: Node) -> &str {
        &self.arena[self.ends[n as usize]..self.ends[n as usize + 1]]
    }

    fn ident(&self, n: Node) -> Ident {
        Ident {
            kind: self.rules.types[self.nodes[n as usize].kind as usize]
                .name
                .clone(),
            value: self.value(n).to_string(),
        }
    }

    fn key(&mut self, kind: usize, value: &str) -> u128 {
        key128(&mut self.scratch, &self.rules.types[kind].name, value)
    }

    fn find_key(&self, key: u128) -> Option<Node> {
        let (lo, hi) = (key as u64, (key >> 64) as u64);
        self.index
            .find(lo, |&(l, h, _)| l == lo && h == hi)
            .map(|&(_, _, n)| n)
    }

    /// The node of `kind:value`, if the graph has it.
    pub fn lookup(&self, kind: usize, value: &str) -> Option<Node> {
        let key = key128(&mut Vec::new(), &self.rules.types[kind].name, value);
        self.find_key(key)
    }

    /// The node of `kind:value`, made if new, and the identifier's 128-bit key.
    fn intern(&mut self, kind: u16, value: &str) -> (Node, u128) {
        let key = self.key(kind as usize, value);
        if let Some(n) = self.find_key(key) {
            return (n, key);
        }
        let n = self.nodes.len() as Node;
        self.arena.push_str(value);
        self.ends.push(self.arena.len());
        let (lo, hi) = (key as u64, (key >> 64) as u64);
        self.index.insert_unique(lo, (lo, hi, n), |&(l, _, _)| l);
        self.nodes.push(NodeData {
            first_seen: i64::MAX,
            last_seen: i64::MIN,
            parent: n,
            next: n,
            slot: NONE,
            kind,
            first_source: 0,
        });
        (n, key)
    }

    /// Adds one source row to `batch`: its identifiers as `(type index, raw value)`, its
    /// source table (from [`Graph::source_index`]), its key and time. Values the rules refuse
    /// are recorded as refusals and left out.
    pub fn observe(
        &mut self,
        batch: &mut Batch,
        source: u16,
        row: &str,
        ts: i64,
        ids: &[(usize, &str)],
    ) {
        let start = batch.nodes.len();
        // Content only (never a number given in reading order), so the canonical order does
        // not depend on the order tables and rows were read in.
        let mut hash = xxh3_64(row.as_bytes()) ^ self.source_hash[source as usize];
        for &(kind, raw) in ids {
            match self.rules.accept(kind, raw) {
                Ok(value) => {
                    // The interning key hashes the type and the value already.
                    let (n, key) = self.intern(kind as u16, &value);
                    hash = hash.rotate_left(5) ^ key as u64;
                    batch.nodes.push(n);
                }
                Err(Rejection { rule, detail }) => batch.refusals.push(Refusal {
                    from: None,
                    to: Ident {
                        kind: self.rules.types[kind].name.clone(),
                        value: raw.to_string(),
                    },
                    rule: rule.to_string(),
                    detail,
                    at: Provenance {
                        source: self.sources[source as usize].clone(),
                        row: row.to_string(),
                        ts,
                    },
                }),
            }
        }
        let len = batch.nodes.len() - start;
        if len == 0 {
            return;
        }
        batch.obs.push(Obs {
            ts,
            hash,
            nodes: start as u32,
            len: len.min(u16::MAX as usize) as u16,
            source,
            row: batch.rows.len() as u32,
            row_len: row.len() as u32,
        });
        batch.rows.push_str(row);
    }

    /// Applies `batch` in canonical order.
    pub fn apply(&mut self, mut batch: Batch) -> Applied {
        let mut applied = Applied {
            refused: batch.refusals.len() as u64,
            ..Applied::default()
        };
        self.refusals.append(&mut batch.refusals);
        // The observations themselves are sorted (then read in order), not indexes to them:
        // at millions of rows each indirection is a cache miss. Ties keep reading order.
        let mut obs = std::mem::take(&mut batch.obs);
        let key = |o: &Obs| (o.ts, o.hash, o.nodes);
        if obs.len() > 100_000 {
            obs.par_sort_unstable_by_key(key);
        } else {
            obs.sort_unstable_by_key(key);
        }
        let mut ids: Vec<Node> = Vec::new();
        for o in obs {
            ids.clear();
            ids.extend_from_slice(
                &batch.nodes[o.nodes as usize..o.nodes as usize + o.len as usize],
            );
            let row = &batch.rows[o.row as usize..(o.row + o.row_len) as usize];
            self.apply_one(&mut ids, o.ts, o.source, row, &mut applied);
            applied.observations += 1;
        }
        applied
    }

    /// Declared types by their priority; types added from data after them, by name; then
    /// the value. The text is read only when the types tie.
    fn priority_order(&self, a: Node, b: Node) -> std::cmp::Ordering {
        let (ka, kb) = (
            self.nodes[a as usize].kind as usize,
            self.nodes[b as usize].kind as usize,
        );
        let rank = |k: usize| k.min(self.configured);
        let name = |k: usize| {
            if k < self.configured {
                ""
            } else {
                self.rules.types[k].name.as_str()
            }
        };
        rank(ka)
            .cmp(&rank(kb))
            .then_with(|| name(ka).cmp(name(kb)))
            .then_with(|| self.value(a).cmp(self.value(b)))
    }

    fn apply_one(
        &mut self,
        ids: &mut Vec<Node>,
        ts: i64,
        source: u16,
        row: &str,
        applied: &mut Applied,
    ) {
        ids.sort_unstable();
        ids.dedup();
        ids.sort_by(|&a, &b| self.priority_order(a, b));
        // See every identifier first: fresh ones get their first sight, known ones count as
        // seen now for windowed limits.
        for &n in ids.iter() {
            let i = n as usize;
            if self.nodes[i].first_seen == i64::MAX {
                self.nodes[i].first_source = source;
                applied.new_ids += 1;
            }
            self.nodes[i].first_seen = self.nodes[i].first_seen.min(ts);
            self.nodes[i].last_seen = self.nodes[i].last_seen.max(ts);
        }
        let top = ids[0];
        for &b in &ids[1..] {
            self.join(top, b, ts, source, row, applied);
        }
        for &n in ids.iter() {
            let root = self.find(n);
            if self.nodes[root as usize].slot == NONE {
                self.create(n, ts);
                applied.new_profiles += 1;
            }
        }
    }

    fn find(&mut self, mut n: Node) -> Node {
        let mut root = n;
        while self.nodes[root as usize].parent != root {
            root = self.nodes[root as usize].parent;
        }
        while self.nodes[n as usize].parent != root {
            let up = self.nodes[n as usize].parent;
            self.nodes[n as usize].parent = root;
            n = up;
        }
        root
    }

    fn create(&mut self, n: Node, ts: i64) -> u32 {
        let kind = self.nodes[n as usize].kind as usize;
        let (start, end) = (self.ends[n as usize], self.ends[n as usize + 1]);
        let id = ProfileId::from_key(key128(
            &mut self.scratch,
            &self.rules.types[kind].name,
            &self.arena[start..end],
        ));
        let mut counts = vec![0; self.limited.iter().flatten().count()];
        if let Some(c) = self.limited[kind] {
            counts[c] = 1;
        }
        self.profiles.push(Profile {
            id,
            created_at: ts,
            updated_at: ts,
            size: 1,
            merges: 0,
            counts,
            root: n,
            alive: true,
        });
        let s = (self.profiles.len() - 1) as u32;
        self.nodes[n as usize].slot = s;
        s
    }

    fn members(&self, root: Node) -> impl Iterator<Item = Node> + '_ {
        let mut cur = root;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let n = cur;
            cur = self.nodes[n as usize].next;
            done = cur == root;
            Some(n)
        })
    }

    /// How many identifiers of `kind` the component of `root` holds, counting for a windowed
    /// limit only those seen since `since`.
    fn count(&self, root: Node, kind: usize, since: Option<i64>) -> u32 {
        let slot = self.nodes[root as usize].slot;
        match (since, self.limited[kind]) {
            (None, Some(c)) if slot != NONE => self.profiles[slot as usize].counts[c],
            _ => self
                .members(root)
                .filter(|&m| {
                    self.nodes[m as usize].kind as usize == kind
                        && since.is_none_or(|s| self.nodes[m as usize].last_seen >= s)
                })
                .count() as u32,
        }
    }

    fn size(&self, root: Node) -> u32 {
        match self.nodes[root as usize].slot {
            NONE => 1,
            s => self.profiles[s as usize].size,
        }
    }

    /// The rule that refuses joining the components of `ra` and `rb`, if any.
    fn check(&self, ra: Node, rb: Node, ts: i64) -> Option<(String, String)> {
        for (kind, rule) in self.rules.types.iter().enumerate() {
            let Some(limit) = rule.limit else { continue };
            let since = limit.window_ms.map(|w| ts.saturating_sub(w));
            let b = self.count(rb, kind, since);
            if b == 0 {
                continue;
            }
            let total = self.count(ra, kind, since) + b;
            if total > limit.max {
                let window = limit
                    .window_ms
                    .map(|w| format!(" seen within {}", human_ms(w)))
                    .unwrap_or_default();
                return Some((
                    format!("limit:{}", rule.name),
                    format!(
                        "the profile would hold {total} {} identifiers{window}; at most {} allowed",
                        rule.name, limit.max
                    ),
                ));
            }
        }
        let size = self.size(ra) + self.size(rb);
        if size > self.rules.max_ids {
            return Some((
                "max_ids".into(),
                format!(
                    "the profile would hold {size} identifiers; at most {} allowed",
                    self.rules.max_ids
                ),
            ));
        }
        let (sa, sb) = (self.nodes[ra as usize].slot, self.nodes[rb as usize].slot);
        if sa != NONE && sb != NONE {
            let merges = self.profiles[sa as usize].merges + self.profiles[sb as usize].merges + 1;
            if merges > self.rules.max_merges {
                return Some((
                    "max_merges".into(),
                    format!(
                        "the profile would have absorbed {merges} profiles; at most {} allowed",
                        self.rules.max_merges
                    ),
                ));
            }
        }
        None
    }

    fn join(&mut self, a: Node, b: Node, ts: i64, source: u16, row: &str, applied: &mut Applied) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        if let Some((rule, detail)) = self.check(ra, rb, ts) {
            applied.refused += 1;
            self.refusals.push(Refusal {
                from: Some(self.ident(a)),
                to: self.ident(b),
                rule,
                detail,
                at: self.provenance(source, row, ts),
            });
            return;
        }
        let link = LinkRef {
            from: a,
            to: b,
            ts,
            source,
            row: self.link_rows.len() as u32,
            row_len: row.len() as u32,
        };
        self.link_rows.push_str(row);
        let (mut sa, sb) = (self.nodes[ra as usize].slot, self.nodes[rb as usize].slot);
        if sa == NONE && sb == NONE {
            sa = self.create(a, ts);
            applied.new_profiles += 1;
        }
        // The survivor: an existing profile over a fresh identifier; between two profiles the
        // older, then the smaller id.
        let (keep, gone) = match (sa, sb) {
            (NONE, _) => (rb, ra),
            (_, NONE) => (ra, rb),
            _ => {
                let (pa, pb) = (&self.profiles[sa as usize], &self.profiles[sb as usize]);
                if (pa.created_at, pa.id) <= (pb.created_at, pb.id) {
                    (ra, rb)
                } else {
                    (rb, ra)
                }
            }
        };
        let (sk, sg) = (
            self.nodes[keep as usize].slot,
            self.nodes[gone as usize].slot,
        );
        let gone_kind = self.nodes[gone as usize].kind as usize;
        let (size, merges, counts) = match sg {
            NONE => {
                let mut counts = vec![0; self.profiles[sk as usize].counts.len()];
                if let Some(c) = self.limited[gone_kind] {
                    counts[c] = 1;
                }
                (1, 0, counts)
            }
            s => {
                let g = &mut self.profiles[s as usize];
                g.alive = false;
                applied.merges += 1;
                let merge = Merge {
                    survivor: self.profiles[sk as usize].id,
                    absorbed: self.profiles[s as usize].id,
                    from: self.ident(a),
                    to: self.ident(b),
                    at: self.provenance(source, row, ts),
                };
                self.merges.push(merge);
                let g = &self.profiles[s as usize];
                (g.size, g.merges + 1, g.counts.clone())
            }
        };
        let k = &mut self.profiles[sk as usize];
        k.size += size;
        k.merges += merges;
        k.updated_at = k.updated_at.max(ts);
        for (c, add) in k.counts.iter_mut().zip(counts) {
            *c += add;
        }
        self.nodes[gone as usize].parent = keep;
        self.swap_next(keep, gone);
        self.nodes[gone as usize].slot = NONE;
        self.links.push(link);
    }

    /// Splices the member lists of `a` and `b` (two lists become one; see `next`).
    fn swap_next(&mut self, a: Node, b: Node) {
        let (a, b) = (a as usize, b as usize);
        let t = self.nodes[a].next;
        self.nodes[a].next = self.nodes[b].next;
        self.nodes[b].next = t;
    }

    fn provenance(&self, source: u16, row: &str, ts: i64) -> Provenance {
        Provenance {
            source: self.sources[source as usize].clone(),
            row: row.to_string(),
            ts,
        }
    }

    /// Orders this run's links by their ends' nodes, so that [`Graph::link_rows`] reads the
    /// identifiers' text nearly in order instead of at random (the links table's row order
    /// means nothing).
    pub fn sort_links(&mut self) {
        let key = |l: &LinkRef| (l.from, l.to);
        if self.links.len() > 100_000 {
            self.links.par_sort_unstable_by_key(key);
        } else {
            self.links.sort_unstable_by_key(key);
        }
    }

    /// How many links this run made.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// This run's links `range`, with provenance.
    pub fn links(&self, range: std::ops::Range<usize>) -> Vec<Link> {
        let mut out = Vec::new();
        self.link_rows(range, |l| {
            out.push(Link {
                from: Ident {
                    kind: l.from.0.to_string(),
                    value: l.from.1.to_string(),
                },
                to: Ident {
                    kind: l.to.0.to_string(),
                    value: l.to.1.to_string(),
                },
                at: Provenance {
                    source: l.source.to_string(),
                    row: l.row.to_string(),
                    ts: l.ts,
                },
            })
        });
        out
    }

    /// Calls `f` with each of this run's links `range`, borrowed from the graph (what a
    /// writer of millions of links wants instead of [`Graph::links`]).
    pub fn link_rows(&self, range: std::ops::Range<usize>, mut f: impl FnMut(LinkView<'_>)) {
        let end = range.end.min(self.links.len());
        for l in &self.links[range.start.min(end)..end] {
            f(LinkView {
                from: (self.kind_name(l.from), self.value(l.from)),
                to: (self.kind_name(l.to), self.value(l.to)),
                source: &self.sources[l.source as usize],
                row: &self.link_rows[l.row as usize..(l.row + l.row_len) as usize],
                ts: l.ts,
            });
        }
    }

    fn kind_name(&self, n: Node) -> &str {
        &self.rules.types[self.nodes[n as usize].kind as usize].name
    }

    /// The profile of node `n`, if it has been seen.
    pub fn profile_of(&mut self, n: Node) -> Option<ProfileId> {
        let r = self.find(n);
        let s = self.nodes[r as usize].slot;
        (s != NONE).then(|| self.profiles[s as usize].id)
    }

    /// Every seen identifier with its profile, in node order.
    pub fn identities(&mut self) -> Vec<Identity> {
        self.identities_in(0..self.len())
    }

    /// The seen identifiers among nodes `range`, with their profiles.
    pub fn identities_in(&mut self, range: std::ops::Range<usize>) -> Vec<Identity> {
        let mut out = Vec::new();
        self.identity_rows(range, |i| {
            out.push(Identity {
                id: Ident {
                    kind: i.kind.to_string(),
                    value: i.value.to_string(),
                },
                profile: i.profile,
                first_seen: i.first_seen,
                last_seen: i.last_seen,
                source: i.source.to_string(),
            })
        });
        out
    }

    /// Calls `f` with each seen identifier among nodes `range` and its profile, borrowed
    /// from the graph.
    pub fn identity_rows(
        &mut self,
        range: std::ops::Range<usize>,
        mut f: impl FnMut(IdentityView<'_>),
    ) {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        let roots: Vec<Node> = (start..end).map(|n| self.find(n as Node)).collect();
        for (n, root) in (start..end).zip(roots) {
            if self.nodes[n].first_seen == i64::MAX {
                continue;
            }
            let slot = self.nodes[root as usize].slot;
            debug_assert!(slot != NONE, "a seen identifier has a profile");
            f(IdentityView {
                kind: self.kind_name(n as Node),
                value: self.value(n as Node),
                profile: self.profiles[slot as usize].id,
                first_seen: self.nodes[n].first_seen,
                last_seen: self.nodes[n].last_seen,
                source: &self.sources[self.nodes[n].first_source as usize],
            });
        }
    }

    /// Every live profile, in creation order.
    pub fn profiles(&self) -> Vec<ProfileRow> {
        let types = self.rules.types.len();
        self.profiles
            .iter()
            .filter(|p| p.alive)
            .map(|p| {
                let mut counts = vec![0u32; types];
                let mut latest: Vec<Option<(i64, Node)>> = vec![None; types];
                for m in self.members(p.root) {
                    let k = self.nodes[m as usize].kind as usize;
                    counts[k] += 1;
                    let t = self.nodes[m as usize].last_seen;
                    // Later wins; at the same time the greater value (read only then).
                    let later = latest[k]
                        .is_none_or(|(lt, n)| t > lt || (t == lt && self.value(m) > self.value(n)));
                    if later {
                        latest[k] = Some((t, m));
                    }
                }
                ProfileRow {
                    id: p.id,
                    created_at: p.created_at,
                    updated_at: p.updated_at,
                    merges: p.merges,
                    counts,
                    latest: latest
                        .into_iter()
                        .map(|l| l.map(|(_, n)| self.value(n).to_string()))
                        .collect(),
                }
            })
            .collect()
    }

    /// Rebuilds the graph from a saved identity map and its profiles (`created_at`,
    /// `updated_at`, `merges` by id): the state a later batch is applied to.
    pub fn restore(
        rules: Rules,
        identities: impl IntoIterator<Item = Identity>,
        profiles: impl IntoIterator<Item = (ProfileId, i64, i64, u32)>,
    ) -> Graph {
        let mut r = Restore::new(rules, profiles);
        for i in identities {
            r.add(
                &i.id.kind,
                &i.id.value,
                i.profile,
                i.first_seen,
                i.last_seen,
                &i.source,
            );
        }
        r.finish()
    }
}

/// A graph being rebuilt from saved state, one identity-map row at a time (so a large map
/// is never held as rows).
#[derive(Debug)]
pub struct Restore {
    graph: Graph,
    by_id: hashbrown::HashMap<ProfileId, u32>,
    /// The last type and source names seen, with their indexes (rows come sorted by neither,
    /// but runs of one name are common).
    last_kind: Option<(String, usize)>,
    last_source: Option<(String, u16)>,
}

impl Restore {
    /// Starts from the saved profiles: `(id, created_at, updated_at, merges)`.
    pub fn new(
        rules: Rules,
        profiles: impl IntoIterator<Item = (ProfileId, i64, i64, u32)>,
    ) -> Restore {
        let mut r = Restore {
            graph: Graph::new(rules),
            by_id: Default::default(),
            last_kind: None,
            last_source: None,
        };
        for (id, created_at, updated_at, merges) in profiles {
            r.push(id, created_at, updated_at, merges);
        }
        r
    }

    fn push(&mut self, id: ProfileId, created_at: i64, updated_at: i64, merges: u32) -> u32 {
        let g = &mut self.graph;
        g.profiles.push(Profile {
            id,
            created_at,
            updated_at,
            size: 0,
            merges,
            counts: vec![0; g.limited.iter().flatten().count()],
            root: NONE,
            alive: true,
        });
        let s = (g.profiles.len() - 1) as u32;
        self.by_id.insert(id, s);
        s
    }

    /// Adds one identity-map row.
    pub fn add(
        &mut self,
        kind: &str,
        value: &str,
        profile: ProfileId,
        first_seen: i64,
        last_seen: i64,
        source: &str,
    ) {
        let s = match self.by_id.get(&profile) {
            Some(&s) => s,
            None => self.push(profile, first_seen, last_seen, 0),
        };
        let g = &mut self.graph;
        let kind = match &self.last_kind {
            Some((name, k)) if name == kind => *k,
            _ => {
                let k = g.type_index(kind);
                self.last_kind = Some((kind.to_string(), k));
                k
            }
        };
        let source = match &self.last_source {
            Some((name, i)) if name == source => *i,
            _ => {
                let i = g.source_index(source);
                self.last_source = Some((source.to_string(), i));
                i
            }
        };
        let (n, _) = g.intern(kind as u16, value);
        g.nodes[n as usize].first_seen = first_seen;
        g.nodes[n as usize].last_seen = last_seen;
        g.nodes[n as usize].first_source = source;
        let p = &mut g.profiles[s as usize];
        p.size += 1;
        if let Some(c) = g.limited[kind] {
            p.counts[c] += 1;
        }
        if p.root == NONE {
            p.root = n;
        } else {
            let root = p.root;
            g.nodes[n as usize].parent = root;
            g.swap_next(root, n);
        }
    }

    /// The rebuilt graph.
    pub fn finish(self) -> Graph {
        let mut g = self.graph;
        g.profiles.retain(|p| p.root != NONE);
        for (s, p) in g.profiles.iter().enumerate() {
            g.nodes[p.root as usize].slot = s as u32;
        }
        g
    }
}

fn human_ms(ms: i64) -> String {
    const DAY: i64 = 86_400_000;
    if ms % DAY == 0 {
        format!("{} days", ms / DAY)
    } else if ms % 3_600_000 == 0 {
        format!("{} hours", ms / 3_600_000)
    } else {
        format!("{} seconds", ms / 1000)
    }
}
