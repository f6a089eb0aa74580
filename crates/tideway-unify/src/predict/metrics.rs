//! Metrics for a binary classifier, computed as scikit-learn computes them.
//!
//! `labels` are 0/1 and `scores` are probabilities of label 1 (for [`auc`] and [`pr_auc`] any
//! score that orders the rows will do). Each function returns `None` when the metric is
//! undefined (no rows, or a class missing where one is needed), where scikit-learn would
//! raise or warn.

use serde::Serialize;
use std::cmp::Ordering;

/// Area under the ROC curve, equal to `sklearn.metrics.roc_auc_score`: a tied pair of a
/// positive and a negative counts one half. `None` without both classes.
pub fn auc(labels: &[f64], scores: &[f64]) -> Option<f64> {
    let groups = tie_groups(labels, scores);
    let positives: f64 = groups.iter().map(|g| g.positives).sum();
    let negatives: f64 = groups.iter().map(|g| g.negatives).sum();
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Walk thresholds from the highest score down; the trapezoid under each step of the ROC
    // curve is exactly the half credit for the ties within a group.
    let (mut tp, mut area) = (0.0, 0.0);
    for g in &groups {
        area += g.negatives * (tp + g.positives / 2.0);
        tp += g.positives;
    }
    Some(area / (positives * negatives))
}

/// Average precision, equal to `sklearn.metrics.average_precision_score`:
/// `Σ (Rₙ − Rₙ₋₁) · Pₙ` over the distinct scores from the highest down, without
/// interpolation. `None` without a positive label.
pub fn pr_auc(labels: &[f64], scores: &[f64]) -> Option<f64> {
    let groups = tie_groups(labels, scores);
    let positives: f64 = groups.iter().map(|g| g.positives).sum();
    if positives == 0.0 {
        return None;
    }
    let (mut tp, mut fp, mut ap) = (0.0, 0.0, 0.0);
    for g in &groups {
        tp += g.positives;
        fp += g.negatives;
        ap += (g.positives / positives) * (tp / (tp + fp));
    }
    Some(ap)
}

/// Mean log loss, equal to `sklearn.metrics.log_loss` (probabilities clipped to
/// `[ε, 1 − ε]` with `ε` the `f64` machine epsilon). `None` without rows.
pub fn log_loss(labels: &[f64], probabilities: &[f64]) -> Option<f64> {
    if labels.is_empty() {
        return None;
    }
    let eps = f64::EPSILON;
    let total: f64 = labels
        .iter()
        .zip(probabilities)
        .map(|(&y, &p)| {
            let p = p.clamp(eps, 1.0 - eps);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum();
    Some(total / labels.len() as f64)
}

/// Brier score, the mean squared difference between probability and label, equal to
/// `sklearn.metrics.brier_score_loss`. `None` without rows.
pub fn brier(labels: &[f64], probabilities: &[f64]) -> Option<f64> {
    if labels.is_empty() {
        return None;
    }
    let total: f64 = labels
        .iter()
        .zip(probabilities)
        .map(|(&y, &p)| (p - y) * (p - y))
        .sum();
    Some(total / labels.len() as f64)
}

/// One bin of a calibration curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// Lowest probability in the bin (exclusive, except 0 in the first bin).
    pub lower: f64,
    /// Highest probability in the bin (inclusive).
    pub upper: f64,
    /// Mean predicted probability of the rows in the bin.
    pub mean_predicted: f64,
    /// Share of the rows in the bin whose label is 1.
    pub observed_rate: f64,
    /// Rows in the bin.
    pub count: usize,
}

/// A calibration curve over `bins` equal-width bins of `[0, 1]`, binned exactly as
/// `sklearn.calibration.calibration_curve(strategy="uniform")` bins (inner edges `k · (1/bins)`
/// as numpy's `linspace` computes them; a probability on an edge goes to the bin below it,
/// 0 to the first bin).
/// Empty bins are left out, as scikit-learn does.
pub fn calibration(labels: &[f64], probabilities: &[f64], bins: usize) -> Vec<Bin> {
    let bins = bins.max(1);
    let edge = |i: usize| i as f64 / bins as f64;
    let step = 1.0 / bins as f64;
    let mut sums = vec![(0.0, 0.0, 0usize); bins];
    for (&y, &p) in labels.iter().zip(probabilities) {
        // The number of inner edges below p, as numpy's searchsorted(side="left").
        let i = (1..bins).take_while(|&k| (k as f64) * step < p).count();
        let s = &mut sums[i];
        s.0 += p;
        s.1 += y;
        s.2 += 1;
    }
    sums.into_iter()
        .enumerate()
        .filter(|(_, s)| s.2 > 0)
        .map(|(i, (p, y, n))| Bin {
            lower: edge(i),
            upper: edge(i + 1),
            mean_predicted: p / n as f64,
            observed_rate: y / n as f64,
            count: n,
        })
        .collect()
}

/// The rank percentile (0–100) of each score: 0 for the lowest, 100 for the highest, evenly
/// spaced by rank in between; tied scores share their average rank, so equal scores get equal
/// percentiles. A lone score gets 100. `NaN` scores get `NaN` and are not ranked.
pub fn percentiles(scores: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| !scores[i].is_nan()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n = order.len();
    let mut out = vec![f64::NAN; scores.len()];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..end (0-based) share their mean.
        let rank = (start + end - 1) as f64 / 2.0;
        let pct = if n == 1 {
            100.0
        } else {
            100.0 * rank / (n - 1) as f64
        };
        for &i in &order[start..end] {
            out[i] = pct;
        }
        start = end;
    }
    out
}

/// Rows sharing one score, from the highest score down.
struct TieGroup {
    positives: f64,
    negatives: f64,
}

fn tie_groups(labels: &[f64], scores: &[f64]) -> Vec<TieGroup> {
    let mut order: Vec<usize> = (0..labels.len().min(scores.len())).collect();
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal));
    let mut groups: Vec<TieGroup> = Vec::new();
    let mut last = f64::NAN;
    for i in order {
        if groups.is_empty() || scores[i] != last {
            groups.push(TieGroup {
                positives: 0.0,
                negatives: 0.0,
            });
            last = scores[i];
        }
        let g = groups.last_mut().expect("a group was pushed above");
        if labels[i] == 1.0 {
            g.positives += 1.0;
        } else {
            g.negatives += 1.0;
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn auc_matches_sklearn_docs_example() {
        // roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        close(
            auc(&[0., 0., 1., 1.], &[0.1, 0.4, 0.35, 0.8]).unwrap(),
            0.75,
        );
    }

    #[test]
    fn auc_counts_tied_pairs_as_half() {
        // Positives 0.4, 0.4, 0.9 against negatives 0.1, 0.4:
        // (1 + 0.5) + (1 + 0.5) + (1 + 1) = 5 of 6 pairs.
        let y = [0., 1., 1., 0., 1.];
        let s = [0.1, 0.4, 0.4, 0.4, 0.9];
        close(auc(&y, &s).unwrap(), 5.0 / 6.0);
        // All scores equal: every pair is a tie.
        close(auc(&[0., 1., 0., 1.], &[0.5; 4]).unwrap(), 0.5);
        // Perfectly reversed.
        close(auc(&[1., 1., 0.], &[0.1, 0.2, 0.3]).unwrap(), 0.0);
    }

    #[test]
    fn auc_is_undefined_with_one_class() {
        assert_eq!(auc(&[1., 1.], &[0.2, 0.3]), None);
        assert_eq!(auc(&[], &[]), None);
    }

    #[test]
    fn average_precision_matches_sklearn() {
        // average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333…
        close(
            pr_auc(&[0., 0., 1., 1.], &[0.1, 0.4, 0.35, 0.8]).unwrap(),
            5.0 / 6.0,
        );
        // A tie at the top: threshold 0.5 gives P = 1/2, R = 1/2; threshold 0.2 gives
        // P = 2/3, R = 1: 0.5 · 0.5 + 0.5 · 2/3 = 7/12.
        close(pr_auc(&[1., 0., 1.], &[0.5, 0.5, 0.2]).unwrap(), 7.0 / 12.0);
        assert_eq!(pr_auc(&[0., 0.], &[0.5, 0.2]), None);
    }

    #[test]
    fn log_loss_and_brier_by_hand() {
        // -(ln 0.8 + ln 0.7) / 2
        close(
            log_loss(&[1., 0.], &[0.8, 0.3]).unwrap(),
            -(0.8f64.ln() + 0.7f64.ln()) / 2.0,
        );
        // (0.2² + 0.3²) / 2
        close(brier(&[1., 0.], &[0.8, 0.3]).unwrap(), 0.065);
        // Certain and wrong is clipped, not infinite: -ln(ε).
        close(log_loss(&[1.], &[0.0]).unwrap(), -f64::EPSILON.ln());
        assert_eq!(log_loss(&[], &[]), None);
        assert_eq!(brier(&[], &[]), None);
    }

    #[test]
    fn calibration_bins_like_sklearn() {
        let y = [0., 1., 1., 0., 1.];
        let p = [0.0, 0.1, 0.15, 0.95, 1.0];
        let bins = calibration(&y, &p, 10);
        // 0 and 0.1 (on an edge) go to the first bin, 1.0 to the last.
        assert_eq!(bins.len(), 3);
        assert_eq!((bins[0].lower, bins[0].upper, bins[0].count), (0.0, 0.1, 2));
        close(bins[0].mean_predicted, 0.05);
        close(bins[0].observed_rate, 0.5);
        assert_eq!((bins[1].lower, bins[1].count), (0.1, 1));
        assert_eq!((bins[2].lower, bins[2].upper, bins[2].count), (0.9, 1.0, 2));
        close(bins[2].observed_rate, 0.5);
    }

    #[test]
    fn matches_sklearn_on_a_sample_with_ties() {
        // Values from scikit-learn 1.9.1 on the same vectors (numpy default_rng(3)).
        let y = [
            1., 0., 0., 0., 0., 1., 1., 1., 0., 0., 0., 0., 1., 0., 0., 0., 1., 1., 0., 0.,
        ];
        let p = [
            0.4, 0.5, 0.4, 0.6, 0.7, 1.0, 0.3, 0.6, 0.7, 0.3, 0.0, 1.0, 0.3, 0.3, 0.9, 0.6, 0.5,
            0.8, 0.0, 0.7,
        ];
        close(auc(&y, &p).unwrap(), 0.510989010989011);
        close(pr_auc(&y, &p).unwrap(), 0.3954648526077097);
        close(log_loss(&y, &p).unwrap(), 2.5229706873603446);
        close(brier(&y, &p).unwrap(), 0.319);
        // calibration_curve(y, p, n_bins=10): a probability on an edge goes to the bin below.
        let bins = calibration(&y, &p, 10);
        let observed: Vec<f64> = bins.iter().map(|b| b.observed_rate).collect();
        let predicted: Vec<f64> = bins.iter().map(|b| b.mean_predicted).collect();
        let expected_observed = [0., 0.5, 0.5, 0.5, 1. / 3., 0., 1., 0., 0.5];
        let expected_predicted = [0., 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.];
        for (a, b) in observed.iter().zip(expected_observed) {
            close(*a, b);
        }
        for (a, b) in predicted.iter().zip(expected_predicted) {
            close(*a, b);
        }
        assert_eq!(bins.len(), 9);
        assert_eq!(
            bins[1].lower, 0.2,
            "0.3 sits in (0.2, 0.3] as in scikit-learn"
        );
    }

    #[test]
    fn percentiles_rank_with_ties() {
        assert_eq!(percentiles(&[0.3, 0.1, 0.2]), vec![100.0, 0.0, 50.0]);
        // The two 0.2s hold ranks 1 and 2 of 0..=3: both get rank 1.5 → 50.
        assert_eq!(
            percentiles(&[0.1, 0.2, 0.2, 0.9]),
            vec![0.0, 50.0, 50.0, 100.0]
        );
        assert_eq!(percentiles(&[0.7]), vec![100.0]);
        assert!(percentiles(&[]).is_empty());
        let p = percentiles(&[f64::NAN, 0.5, 0.4]);
        assert!(p[0].is_nan());
        assert_eq!(&p[1..], &[100.0, 0.0]);
    }
}
