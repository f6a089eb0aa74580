//! Which rows train the model and which test it.

use super::{Dataset, PredictError, Result};

/// How rows are divided between training and test.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Split {
    /// Each customer goes to test when a hash of its id and the seed falls below the test
    /// fraction: deterministic, independent of row order and of the other rows, so a customer
    /// stays on the same side as the table grows. The test share is close to, not exactly,
    /// the fraction.
    #[default]
    Seeded,
    /// One timestamp per row (any unit); the latest `test_fraction` of the rows (rounded) go to
    /// test, so the model is tested on the future of what it learned from. Equal timestamps are
    /// ordered by id.
    ByTime(Vec<i64>),
}

/// Row indices of each side, ascending.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SplitRows {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Splits the rows of `data` as [`train`](super::train()) does with the same `split`, `seed`
/// and `test_fraction`.
pub fn split_rows(
    data: &Dataset,
    split: &Split,
    seed: u64,
    test_fraction: f64,
) -> Result<SplitRows> {
    check_fraction("test_fraction", test_fraction)?;
    let n = data.rows();
    let is_test: Vec<bool> = match split {
        Split::Seeded => data
            .ids
            .iter()
            .map(|id| unit_hash(seed, b"test", id) < test_fraction)
            .collect(),
        Split::ByTime(times) => {
            if times.len() != n {
                return Err(PredictError::Shape(format!(
                    "the time split has {} timestamps but there are {n} rows",
                    times.len()
                )));
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| {
                times[a]
                    .cmp(&times[b])
                    .then_with(|| data.ids[a].cmp(&data.ids[b]))
            });
            let n_test = ((n as f64) * test_fraction).round() as usize;
            let mut is_test = vec![false; n];
            for &i in &order[n - n_test.min(n)..] {
                is_test[i] = true;
            }
            is_test
        }
    };
    let (test, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| is_test[i]);
    Ok(SplitRows { train, test })
}

/// Refuses a fraction outside (0, 1).
pub(crate) fn check_fraction(option: &'static str, value: f64) -> Result<()> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(PredictError::InvalidOption {
            option,
            value: value.to_string(),
            expected: "between 0 and 1, both excluded",
        })
    }
}

/// A number in [0, 1) from a stable hash (FNV-1a, then the splitmix64 finalizer) of the seed,
/// a purpose tag and the id. Stable across Rust versions and platforms, unlike `std`'s hasher.
pub(crate) fn unit_hash(seed: u64, tag: &[u8], id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in seed
        .to_le_bytes()
        .iter()
        .chain(tag)
        .chain([0u8].iter())
        .chain(id.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (mix64(h) >> 11) as f64 / (1u64 << 53) as f64
}

/// The splitmix64 finalizer: spreads every input bit over the output.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Dataset {
        Dataset {
            ids: (0..n).map(|i| format!("cust_{i}")).collect(),
            ..Dataset::default()
        }
    }

    #[test]
    fn seeded_split_is_deterministic_and_close_to_the_fraction() {
        let data = ids(10_000);
        let a = split_rows(&data, &Split::Seeded, 7, 0.2).unwrap();
        let b = split_rows(&data, &Split::Seeded, 7, 0.2).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.train.len() + a.test.len(), 10_000);
        assert!((1_850..2_150).contains(&a.test.len()), "{}", a.test.len());
        // Another seed gives another split.
        let c = split_rows(&data, &Split::Seeded, 8, 0.2).unwrap();
        assert_ne!(a.test, c.test);
    }

    #[test]
    fn seeded_split_keeps_a_customer_on_its_side_regardless_of_the_other_rows() {
        let small = ids(1_000);
        let mut big = ids(5_000);
        big.ids.reverse();
        let small_split = split_rows(&small, &Split::Seeded, 1, 0.3).unwrap();
        let big_split = split_rows(&big, &Split::Seeded, 1, 0.3).unwrap();
        let big_test: std::collections::HashSet<&str> = big_split
            .test
            .iter()
            .map(|&i| big.ids[i].as_str())
            .collect();
        for i in 0..1_000 {
            assert_eq!(
                small_split.test.contains(&i),
                big_test.contains(small.ids[i].as_str())
            );
        }
    }

    #[test]
    fn pinned_hash_values_do_not_drift() {
        // A change here moves customers between train and test in stored reports. The values
        // were computed independently (Python) from the algorithm's description.
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(unit_hash(0, b"test", "cust_1"), 0.7645101923898214);
        assert_ne!(
            unit_hash(1, b"test", "cust_1"),
            unit_hash(0, b"test", "cust_1")
        );
    }

    #[test]
    fn time_split_puts_the_latest_rows_in_test() {
        let data = ids(10);
        let times = vec![5, 1, 9, 3, 7, 2, 8, 4, 6, 10];
        let rows = split_rows(&data, &Split::ByTime(times), 0, 0.3).unwrap();
        // The three latest: times 10, 9, 8 at rows 9, 2, 6.
        assert_eq!(rows.test, vec![2, 6, 9]);
        assert_eq!(rows.train, vec![0, 1, 3, 4, 5, 7, 8]);
    }

    #[test]
    fn time_split_needs_one_timestamp_per_row() {
        let err = split_rows(&ids(3), &Split::ByTime(vec![1, 2]), 0, 0.2).unwrap_err();
        assert!(
            err.to_string()
                .contains("2 timestamps but there are 3 rows"),
            "{err}"
        );
    }

    #[test]
    fn fraction_must_be_inside_zero_one() {
        for f in [0.0, 1.0, -0.1, f64::NAN] {
            let err = split_rows(&ids(3), &Split::Seeded, 0, f).unwrap_err();
            assert!(err.to_string().contains("test_fraction"), "{err}");
        }
    }
}
