//! Learning-rate schedules as HF `get_*_schedule_with_warmup` compute them: the multiplier for
//! optimizer step `k` (0-based; the scheduler steps after the optimizer, so step 0 uses k = 0).

use crate::config::schema::Schedule;

/// The learning rate of optimizer step `step` (0-based).
pub fn lr_at(schedule: Schedule, peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    let s = step as f64;
    let w = warmup as f64;
    if step < warmup {
        return peak * s / w.max(1.0);
    }
    let after = (total.saturating_sub(warmup)).max(1) as f64;
    let mult = match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => ((total as f64 - s) / after).max(0.0),
        Schedule::Cosine => {
            let progress = (s - w) / after;
            (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    };
    peak * mult
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_constant_linear_cosine() {
        assert_eq!(lr_at(Schedule::Constant, 1.0, 0, 4, 10), 0.0);
        assert_eq!(lr_at(Schedule::Constant, 1.0, 2, 4, 10), 0.5);
        assert_eq!(lr_at(Schedule::Constant, 1.0, 9, 4, 10), 1.0);
        assert_eq!(lr_at(Schedule::Linear, 1.0, 4, 4, 10), 1.0);
        assert!((lr_at(Schedule::Linear, 1.0, 7, 4, 10) - 0.5).abs() < 1e-12);
        assert!((lr_at(Schedule::Cosine, 1.0, 7, 4, 10) - 0.5).abs() < 1e-12);
        assert_eq!(
            lr_at(Schedule::Constant, 2.0, 0, 0, 10),
            2.0,
            "no warmup: full lr at once"
        );
    }
}
