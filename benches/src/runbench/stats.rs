//! Summary statistics over wall-time samples (milliseconds).

use serde::Serialize;

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (the mean of the two middle samples for an even count).
    pub median_ms: f64,
    /// Smallest sample.
    pub min_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Summary {
    /// Summarise `samples`; `None` when there are none or one is not a
    /// finite number.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mid = n / 2;
        let median_ms = if n % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Summary {
            n,
            median_ms,
            min_ms: sorted[0],
            max_ms: sorted[n - 1],
        })
    }
}

/// `value / base`, or `None` when the base is not a positive number.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    (base.is_finite() && base > 0.0 && value.is_finite()).then(|| value / base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count_takes_the_middle_sample() {
        let s = Summary::of(&[9.0, 1.0, 5.0]).unwrap();
        assert_eq!(s.n, 3);
        assert_eq!(s.median_ms, 5.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 9.0);
    }

    #[test]
    fn even_count_averages_the_two_middle_samples() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 100.0]).unwrap();
        assert_eq!(s.median_ms, 3.5);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 100.0);
    }

    #[test]
    fn single_sample_is_everything() {
        let s = Summary::of(&[7.25]).unwrap();
        assert_eq!((s.median_ms, s.min_ms, s.max_ms), (7.25, 7.25, 7.25));
    }

    #[test]
    fn empty_or_non_finite_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
        assert_eq!(Summary::of(&[f64::INFINITY]), None);
    }

    #[test]
    fn ratio_needs_a_positive_base() {
        assert_eq!(ratio(30.0, 10.0), Some(3.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, -2.0), None);
        assert_eq!(ratio(f64::NAN, 2.0), None);
    }
}
