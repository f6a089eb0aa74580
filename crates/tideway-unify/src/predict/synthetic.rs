//! A deterministic synthetic churn table, for tests, demos and the comparison with
//! scikit-learn.
//!
//! Each customer is drawn from its own random stream (seeded by the seed and its row number),
//! so `synthetic(n, s)` is a prefix of `synthetic(m, s)` for `n < m`. Churn follows a
//! non-linear rule (a cliff in recency, a tickets-and-sentiment interaction, slow responses
//! that only developers mind, a risky first quarter) through a logistic link with an
//! unobserved term, so a good model reaches an AUC of about 0.85, not 1.

use super::Dataset;
use super::split::mix64;
use std::io::{self, Write};

/// Feature names, in column order.
pub const FEATURES: [&str; 13] = [
    "sessions_30d",
    "days_since_last_seen",
    "response_time_ms",
    "support_tickets_90d",
    "sentiment",
    "plan",
    "tenure_months",
    "seats",
    "monthly_spend",
    "persona_developer",
    "persona_marketer",
    "persona_analyst",
    "persona_founder",
];

/// `n` synthetic customers: ids `cust_0000000`…, the [`FEATURES`], churn labels (about 15%
/// churned). `response_time_ms` is missing for about 6% and `sentiment` for about 30%.
pub fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut columns = vec![Vec::with_capacity(n); FEATURES.len()];
    let mut labels = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (row, label) = customer(&mut Rng::new(seed, i as u64));
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
        labels.push(label);
        ids.push(format!("cust_{i:07}"));
    }
    Dataset {
        names: FEATURES.iter().map(|s| s.to_string()).collect(),
        columns,
        labels,
        ids,
    }
}

fn customer(rng: &mut Rng) -> ([f64; 13], f64) {
    // persona: 0 developer, 1 marketer, 2 analyst, 3 founder
    let persona = rng.pick(&[0.35, 0.25, 0.25, 0.15]);
    // plan: 0 free, 1 pro, 2 enterprise
    let plan = rng.pick(&[0.5, 0.35, 0.15]);
    let engagement = rng.normal();
    let tenure_months = (rng.exponential(14.0)).floor().min(120.0);
    let persona_activity = [0.3, -0.2, 0.1, 0.0][persona];
    let sessions_30d =
        (2.3 + 0.7 * engagement + 0.25 * plan as f64 + persona_activity + 0.3 * rng.normal())
            .exp()
            .round();
    let days_since_last_seen = rng
        .exponential(5.0 * (-0.8 * engagement).exp())
        .round()
        .min(90.0);
    let slow = rng.normal();
    let response_time_ms = if rng.uniform() < 0.06 {
        f64::NAN
    } else {
        (6.0 + 0.5 * slow).exp().round()
    };
    let support_tickets_90d =
        rng.poisson(0.6 + 0.5 * slow.max(0.0) + 0.3 * (-engagement).max(0.0)) as f64;
    let sentiment_missing = rng.uniform() < 0.2 + 0.15 * (-engagement).clamp(0.0, 1.0);
    let sentiment_value =
        (0.3 * engagement - 0.25 * support_tickets_90d + 0.4 * rng.normal() + 0.2).tanh();
    let sentiment = if sentiment_missing {
        f64::NAN
    } else {
        sentiment_value
    };
    let seats = match plan {
        0 => 1.0,
        1 => 1.0 + rng.poisson(3.0) as f64,
        _ => 10.0 + rng.poisson(40.0) as f64,
    };
    let monthly_spend = [0.0, 25.0, 60.0][plan] * seats;

    // The churn rule.
    let mut z = -1.7;
    z += 3.0 / (1.0 + (-(days_since_last_seen - 12.0) / 3.0).exp());
    z -= 0.6 * (1.0 + sessions_30d).ln();
    if support_tickets_90d >= 3.0 && sentiment_value < -0.2 {
        z += 1.2;
    }
    if persona == 0 && response_time_ms > 900.0 {
        z += 1.0;
    }
    z += [0.4, 0.0, -0.9][plan];
    if tenure_months < 3.0 {
        z += 0.7;
    }
    z += if sentiment_missing {
        0.2
    } else {
        -0.7 * sentiment_value
    };
    z += 0.3 * rng.normal(); // what the table does not show
    let label = if rng.uniform() < 1.0 / (1.0 + (-z).exp()) {
        1.0
    } else {
        0.0
    };

    let mut one_hot = [0.0; 4];
    one_hot[persona] = 1.0;
    (
        [
            sessions_30d,
            days_since_last_seen,
            response_time_ms,
            support_tickets_90d,
            sentiment,
            plan as f64,
            tenure_months,
            seats,
            monthly_spend,
            one_hot[0],
            one_hot[1],
            one_hot[2],
            one_hot[3],
        ],
        label,
    )
}

/// Writes `data` as CSV: `id`, the features, `label`, and `split` (`test` for the rows in
/// `test_rows`, else `train`). Missing values are empty fields; numbers round-trip exactly.
pub fn write_csv(data: &Dataset, test_rows: &[usize], mut out: impl Write) -> io::Result<()> {
    let mut is_test = vec![false; data.rows()];
    for &i in test_rows {
        is_test[i] = true;
    }
    writeln!(out, "id,{},label,split", data.names.join(","))?;
    let mut line = String::new();
    for i in 0..data.rows() {
        line.clear();
        line.push_str(&data.ids[i]);
        for column in &data.columns {
            line.push(',');
            if !column[i].is_nan() {
                line.push_str(&column[i].to_string());
            }
        }
        line.push_str(&format!(
            ",{},{}\n",
            data.labels[i],
            if is_test[i] { "test" } else { "train" }
        ));
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

/// splitmix64: small, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix64(
            seed ^ mix64(stream.wrapping_add(0x9e37_79b9_7f4a_7c15)),
        ))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Poisson by multiplication of uniforms (Knuth); fine for the small means used here.
    fn poisson(&mut self, mean: f64) -> u32 {
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.uniform();
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }

    /// An index drawn with the given weights (which sum to 1).
    fn pick(&mut self, weights: &[f64]) -> usize {
        let mut u = self.uniform();
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_is_deterministic_and_prefix_stable() {
        let a = synthetic(500, 3);
        let b = synthetic(1_000, 3);
        assert_eq!(a.ids[..], b.ids[..500]);
        assert_eq!(a.labels[..], b.labels[..500]);
        for (x, y) in a.columns.iter().zip(&b.columns) {
            let same = x
                .iter()
                .zip(y)
                .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()));
            assert!(same);
        }
        assert_ne!(synthetic(500, 4).labels, a.labels);
    }

    #[test]
    fn synthetic_has_a_plausible_churn_rate_and_missing_values() {
        let d = synthetic(20_000, 0);
        let rate = d.labels.iter().sum::<f64>() / 20_000.0;
        assert!((0.10..0.25).contains(&rate), "churn rate {rate}");
        let missing = |name| {
            d.column(name)
                .unwrap()
                .iter()
                .filter(|v| v.is_nan())
                .count()
        };
        assert!((800..1_600).contains(&missing("response_time_ms")));
        assert!(missing("sentiment") > 3_000);
    }

    #[test]
    fn csv_has_a_header_empty_missing_values_and_the_split() {
        let d = synthetic(3, 0);
        let mut out = Vec::new();
        write_csv(&d, &[1], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("id,sessions_30d,") && lines[0].ends_with(",label,split"));
        assert!(lines[1].starts_with("cust_0000000,") && lines[1].ends_with(",train"));
        assert!(lines[2].ends_with(",test"));
        assert_eq!(lines[1].split(',').count(), FEATURES.len() + 3);
    }
}
