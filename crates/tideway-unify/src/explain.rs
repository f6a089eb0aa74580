//! Why a profile holds the identifiers it holds (`tideway unify explain`), and the shape of
//! the whole graph (`tideway unify report`), read from the `profiles` tables.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use tideway_lake::{Lake, SqlOutput};

use crate::config::UnifyConfig;
use crate::error::{Result, UnifyError};
use crate::graph::{Ident, ProfileId};
use crate::run::{IDENTITY_MAP, LINKS, MERGES, PROFILES, REFUSED, table};

/// Every row of a query, each value as text (`None` for null).
pub async fn text_rows(lake: &Lake, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let SqlOutput::Rows(result) = lake.sql(sql).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for b in &result.batches {
        let columns = b
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            out.push(
                columns
                    .iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        s.is_valid(i).then(|| s.value(i).to_string())
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// An edge as explained: the other end, source table, row key, time.
type Edge = (Ident, String, Option<String>, String);

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One identifier of an explained profile: where it was first seen, and the edge that joined
/// it (none for the identifier that created the profile).
#[derive(Debug, Clone)]
pub struct Member {
    /// The identifier.
    pub id: Ident,
    /// First and last seen, as stored.
    pub first_seen: String,
    /// See `first_seen`.
    pub last_seen: String,
    /// The table it was first seen in.
    pub source: String,
    /// The path of identifiers from the profile's first identifier to this one.
    pub path: Vec<Ident>,
    /// The edge that joined it: the other end and where the edge came from.
    pub joined_by: Option<(Ident, String, Option<String>, String)>,
}

/// A profile, explained.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The profile.
    pub profile: String,
    /// What was asked, when it was an absorbed profile: the profile it was merged into.
    pub redirected_from: Option<String>,
    /// Its identifiers, in path order from the first.
    pub members: Vec<Member>,
    /// Profiles it absorbed: (absorbed id, edge from, edge to, source, row, at).
    pub merges: Vec<Vec<Option<String>>>,
    /// Edges touching its identifiers that were refused: (from, to, rule, detail, source, at).
    pub refused: Vec<Vec<Option<String>>>,
}

/// Explains `query`: a profile id (`prof_...`) or an identifier `type:value`.
pub async fn explain(lake: &Lake, config: &UnifyConfig, query: &str) -> Result<Explanation> {
    let map = table(IDENTITY_MAP);
    if lake.load(&map).await?.is_none() {
        return Err(UnifyError::User(
            "no identity map yet: run `tideway unify` first".into(),
        ));
    }
    let (mut profile, asked_profile) = if ProfileId::parse(query).is_some() {
        (query.to_string(), true)
    } else {
        let Some((kind, raw)) = query.split_once(':') else {
            return Err(UnifyError::User(format!(
                "`{query}` is neither a profile id (prof_ and 20 hex digits) nor an identifier \
                 `type:value` such as `email:ann@example.com`"
            )));
        };
        let value = match config.rules.type_index(kind) {
            Some(k) => config
                .rules
                .accept(k, raw)
                .map(|v| v.into_owned())
                .unwrap_or_else(|_| raw.to_string()),
            None => raw.trim().to_string(),
        };
        let rows = text_rows(
            lake,
            &format!(
                "SELECT profile_id FROM {map} WHERE id_type = {} AND id_value = {}",
                literal(kind),
                literal(&value)
            ),
        )
        .await?;
        match rows.first().and_then(|r| r[0].clone()) {
            Some(p) => (p, false),
            None => {
                let refused = text_rows(
                    lake,
                    &format!(
                        "SELECT rule, detail FROM {} WHERE to_type = {} AND to_value = {} LIMIT 1",
                        table(REFUSED),
                        literal(kind),
                        literal(raw)
                    ),
                )
                .await
                .unwrap_or_default();
                let why = refused
                    .first()
                    .map(|r| format!(" (it was refused: {})", r[1].clone().unwrap_or_default()))
                    .unwrap_or_default();
                return Err(UnifyError::User(format!(
                    "no profile holds `{kind}:{value}`{why}"
                )));
            }
        }
    };
    // An absorbed profile: follow the merges to the survivor.
    let mut redirected_from = None;
    if asked_profile {
        let mut seen = HashSet::new();
        loop {
            let here = text_rows(
                lake,
                &format!(
                    "SELECT count(*) FROM {map} WHERE profile_id = {}",
                    literal(&profile)
                ),
            )
            .await?;
            if here.first().and_then(|r| r[0].as_deref()) != Some("0") {
                break;
            }
            let next = if lake.load(&table(MERGES)).await?.is_some() {
                text_rows(
                    lake,
                    &format!(
                        "SELECT profile_id FROM {} WHERE absorbed_profile_id = {} LIMIT 1",
                        table(MERGES),
                        literal(&profile)
                    ),
                )
                .await?
            } else {
                Vec::new()
            };
            match next.first().and_then(|r| r[0].clone()) {
                Some(survivor) if seen.insert(survivor.clone()) => {
                    redirected_from.get_or_insert_with(|| query.to_string());
                    profile = survivor;
                }
                _ => {
                    return Err(UnifyError::User(format!("no profile `{query}`")));
                }
            }
        }
    }
    let rows = text_rows(
        lake,
        &format!(
            "SELECT id_type, id_value, first_seen, last_seen, source_table FROM {map} \
             WHERE profile_id = {} ORDER BY first_seen, id_type, id_value",
            literal(&profile)
        ),
    )
    .await?;
    let ids: Vec<(Ident, String, String, String)> = rows
        .into_iter()
        .map(|r| {
            let s = |i: usize| r[i].clone().unwrap_or_default();
            (
                Ident {
                    kind: s(0),
                    value: s(1),
                },
                s(2),
                s(3),
                s(4),
            )
        })
        .collect();
    let members: HashSet<&Ident> = ids.iter().map(|(i, ..)| i).collect();
    let values = ids
        .iter()
        .map(|(i, ..)| literal(&i.value))
        .collect::<Vec<_>>()
        .join(", ");
    let links = if values.is_empty() || lake.load(&table(LINKS)).await?.is_none() {
        Vec::new()
    } else {
        text_rows(
            lake,
            &format!(
                "SELECT from_type, from_value, to_type, to_value, source_table, row_key, at \
                 FROM {} WHERE from_value IN ({values}) OR to_value IN ({values})",
                table(LINKS)
            ),
        )
        .await?
    };
    // Adjacency over the profile's spanning edges.
    let mut adjacent: HashMap<Ident, Vec<Edge>> = HashMap::new();
    for l in links {
        let s = |i: usize| l[i].clone().unwrap_or_default();
        let a = Ident {
            kind: s(0),
            value: s(1),
        };
        let b = Ident {
            kind: s(2),
            value: s(3),
        };
        if !members.contains(&a) || !members.contains(&b) {
            continue;
        }
        adjacent
            .entry(a.clone())
            .or_default()
            .push((b.clone(), s(4), l[5].clone(), s(6)));
        adjacent
            .entry(b)
            .or_default()
            .push((a, s(4), l[5].clone(), s(6)));
    }
    // The profile's creator: the identifier whose hash names it; else the first seen.
    let pid = ProfileId::parse(&profile);
    let root = ids
        .iter()
        .find(|(i, ..)| Some(ProfileId::of(&i.kind, &i.value)) == pid)
        .or(ids.first())
        .map(|(i, ..)| i.clone());
    let mut path: HashMap<Ident, (Vec<Ident>, Option<Edge>)> = HashMap::new();
    let mut order = Vec::new();
    if let Some(root) = root {
        path.insert(root.clone(), (vec![root.clone()], None));
        let mut queue = VecDeque::from([root]);
        while let Some(a) = queue.pop_front() {
            order.push(a.clone());
            let here = path[&a].0.clone();
            let mut next = adjacent.get(&a).cloned().unwrap_or_default();
            next.sort_by(|x, y| (&x.3, &x.0).cmp(&(&y.3, &y.0)));
            for (b, source, row, at) in next {
                if path.contains_key(&b) {
                    continue;
                }
                let mut p = here.clone();
                p.push(b.clone());
                path.insert(b.clone(), (p, Some((a.clone(), source, row, at))));
                queue.push_back(b);
            }
        }
    }
    let info: HashMap<&Ident, &(Ident, String, String, String)> =
        ids.iter().map(|r| (&r.0, r)).collect();
    let mut out_members = Vec::new();
    for id in order.iter().chain(
        ids.iter()
            .map(|(i, ..)| i)
            .filter(|i| !path.contains_key(*i)),
    ) {
        let (_, first, last, source) = info[id];
        let (p, joined) = path.get(id).cloned().unwrap_or((vec![id.clone()], None));
        out_members.push(Member {
            id: id.clone(),
            first_seen: first.clone(),
            last_seen: last.clone(),
            source: source.clone(),
            path: p,
            joined_by: joined,
        });
    }
    let merges = if lake.load(&table(MERGES)).await?.is_some() {
        text_rows(
            lake,
            &format!(
                "SELECT absorbed_profile_id, from_type || ':' || from_value, to_type || ':' || to_value, \
                 source_table, row_key, at FROM {} WHERE profile_id = {} ORDER BY at",
                table(MERGES),
                literal(&profile)
            ),
        )
        .await?
    } else {
        Vec::new()
    };
    let refused = if values.is_empty() || lake.load(&table(REFUSED)).await?.is_none() {
        Vec::new()
    } else {
        text_rows(
            lake,
            &format!(
                "SELECT from_type || ':' || from_value, to_type || ':' || to_value, rule, detail, \
                 source_table, at FROM {} WHERE from_value IN ({values}) OR to_value IN ({values}) \
                 ORDER BY at LIMIT 50",
                table(REFUSED)
            ),
        )
        .await?
    };
    Ok(Explanation {
        profile,
        redirected_from,
        members: out_members,
        merges,
        refused,
    })
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(from) = &self.redirected_from {
            writeln!(f, "{from} was merged into {}", self.profile)?;
        }
        writeln!(
            f,
            "profile {} ({} identifiers)",
            self.profile,
            self.members.len()
        )?;
        for m in &self.members {
            let depth = m.path.len().saturating_sub(1);
            let indent = "  ".repeat(depth + 1);
            match &m.joined_by {
                None => writeln!(
                    f,
                    "{indent}{}  first seen {} in {}",
                    m.id, m.first_seen, m.source
                )?,
                Some((other, source, row, at)) => writeln!(
                    f,
                    "{indent}{}  joined via {other} by {source}{} at {at}",
                    m.id,
                    row.as_ref()
                        .map(|r| format!(" row {r}"))
                        .unwrap_or_default()
                )?,
            }
        }
        if !self.merges.is_empty() {
            writeln!(f, "merges ({}):", self.merges.len())?;
            for m in &self.merges {
                let s = |i: usize| m[i].clone().unwrap_or_default();
                writeln!(
                    f,
                    "  absorbed {} by edge {} - {} from {} at {}",
                    s(0),
                    s(1),
                    s(2),
                    s(3),
                    s(5)
                )?;
            }
        }
        if !self.refused.is_empty() {
            writeln!(f, "refused edges ({}):", self.refused.len())?;
            for r in &self.refused {
                let s = |i: usize| r[i].clone().unwrap_or_default();
                let from = r[0].clone().map(|v| format!("{v} - ")).unwrap_or_default();
                writeln!(
                    f,
                    "  {from}{} by {}: {} ({} at {})",
                    s(1),
                    s(2),
                    s(3),
                    s(4),
                    s(5)
                )?;
            }
        }
        Ok(())
    }
}

/// The shape of the graph.
#[derive(Debug, Clone, Default)]
pub struct GraphReport {
    /// Identifiers and profiles.
    pub identifiers: u64,
    /// See `identifiers`.
    pub profiles: u64,
    /// Profiles by how many identifiers they hold: (bucket, profiles).
    pub sizes: Vec<(String, u64)>,
    /// The largest profiles: (profile, identifiers, merges).
    pub largest: Vec<(String, u64, u64)>,
    /// Identifiers that joined the most other identifiers (likely shared or junk values):
    /// (identifier, edges).
    pub bridges: Vec<(String, u64)>,
    /// Refusals by rule.
    pub refused: BTreeMap<String, u64>,
    /// Merges recorded.
    pub merges: u64,
}

fn num(v: &Option<String>) -> u64 {
    v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The graph's report.
pub async fn report(lake: &Lake) -> Result<GraphReport> {
    let profiles = table(PROFILES);
    if lake.load(&profiles).await?.is_none() {
        return Err(UnifyError::User(
            "no profiles yet: run `tideway unify` first".into(),
        ));
    }
    let mut r = GraphReport::default();
    let total = text_rows(
        lake,
        &format!("SELECT count(*), sum(identifiers) FROM {profiles}"),
    )
    .await?;
    r.profiles = num(&total[0][0]);
    r.identifiers = num(&total[0][1]);
    let buckets = text_rows(
        lake,
        &format!(
            "SELECT CASE WHEN identifiers = 1 THEN '1' WHEN identifiers = 2 THEN '2' \
             WHEN identifiers <= 5 THEN '3-5' WHEN identifiers <= 10 THEN '6-10' \
             WHEN identifiers <= 50 THEN '11-50' WHEN identifiers <= 100 THEN '51-100' \
             ELSE '>100' END AS bucket, count(*) FROM {profiles} GROUP BY 1"
        ),
    )
    .await?;
    let order = ["1", "2", "3-5", "6-10", "11-50", "51-100", ">100"];
    for b in order {
        let n = buckets
            .iter()
            .find(|r| r[0].as_deref() == Some(b))
            .map_or(0, |r| num(&r[1]));
        r.sizes.push((b.to_string(), n));
    }
    r.largest = text_rows(
        lake,
        &format!(
            "SELECT profile_id, identifiers, merges FROM {profiles} \
             ORDER BY identifiers DESC, profile_id LIMIT 10"
        ),
    )
    .await?
    .into_iter()
    .map(|row| {
        (
            row[0].clone().unwrap_or_default(),
            num(&row[1]),
            num(&row[2]),
        )
    })
    .collect();
    if lake.load(&table(LINKS)).await?.is_some() {
        r.bridges = text_rows(
            lake,
            &format!(
                "SELECT id, count(*) AS edges FROM ( \
                   SELECT from_type || ':' || from_value AS id FROM {0} \
                   UNION ALL SELECT to_type || ':' || to_value FROM {0}) \
                 GROUP BY id HAVING count(*) > 2 ORDER BY edges DESC, id LIMIT 10",
                table(LINKS)
            ),
        )
        .await?
        .into_iter()
        .map(|row| (row[0].clone().unwrap_or_default(), num(&row[1])))
        .collect();
    }
    if lake.load(&table(REFUSED)).await?.is_some() {
        for row in text_rows(
            lake,
            &format!(
                "SELECT rule, count(*) FROM {} GROUP BY rule",
                table(REFUSED)
            ),
        )
        .await?
        {
            r.refused
                .insert(row[0].clone().unwrap_or_default(), num(&row[1]));
        }
    }
    if lake.load(&table(MERGES)).await?.is_some() {
        r.merges =
            num(&text_rows(lake, &format!("SELECT count(*) FROM {}", table(MERGES))).await?[0][0]);
    }
    Ok(r)
}

impl fmt::Display for GraphReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} identifiers in {} profiles; {} merges",
            self.identifiers, self.profiles, self.merges
        )?;
        writeln!(f, "profiles by size:")?;
        for (bucket, n) in &self.sizes {
            writeln!(f, "  {bucket:>7} identifiers  {n}")?;
        }
        writeln!(f, "largest profiles:")?;
        for (p, n, m) in &self.largest {
            writeln!(f, "  {p}  {n} identifiers, {m} merges")?;
        }
        if !self.bridges.is_empty() {
            writeln!(f, "bridge identifiers (most edges):")?;
            for (id, n) in &self.bridges {
                writeln!(f, "  {id}  {n} edges")?;
            }
        }
        if self.refused.is_empty() {
            writeln!(f, "refused: none")?;
        } else {
            writeln!(f, "refused by rule:")?;
            for (rule, n) in &self.refused {
                writeln!(f, "  {rule}  {n}")?;
            }
        }
        Ok(())
    }
}
