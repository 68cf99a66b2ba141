//! ROC AUC identical to scikit-learn's `roc_auc_score` for binary labels: thresholds at the distinct
//! scores (ties form one step), `drop_intermediate` on the curve, then numpy's trapezoidal rule.

use super::error::MetricError;
use super::python::np_pairwise_sum;

/// Area under the ROC curve of `scores` (higher = more positive) against `labels` (true = positive).
/// `context` names the data in errors (e.g. the annotations file).
pub fn roc_auc(labels: &[bool], scores: &[f64], context: &str) -> Result<f64, MetricError> {
    if labels.len() != scores.len() {
        return Err(MetricError::Mismatch(format!(
            "{context}: {} labels for {} scores",
            labels.len(),
            scores.len()
        )));
    }
    if let Some(&bad) = scores.iter().find(|s| !s.is_finite()) {
        return Err(MetricError::NonFinite {
            context: context.to_string(),
            value: bad,
        });
    }
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        return Err(MetricError::OneClass {
            context: context.to_string(),
            class: if positives == 0 {
                "0".to_string()
            } else {
                "1".to_string()
            },
        });
    }
    // Descending scores (the order within ties does not change the curve).
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // `_binary_clf_curve`: cumulative counts at the last index of each distinct score.
    let mut tps = Vec::new();
    let mut fps = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            tps.push(tp);
            fps.push(fp);
        }
    }
    // `drop_intermediate`: keep the ends and every point where either curve bends.
    let n = tps.len();
    let mut keep: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        let bends = i == 0
            || i == n - 1
            || (fps[i + 1] - 2.0 * fps[i] + fps[i - 1]) != 0.0
            || (tps[i + 1] - 2.0 * tps[i] + tps[i - 1]) != 0.0;
        if bends {
            keep.push(i);
        }
    }
    let mut fpr = vec![0.0];
    let mut tpr = vec![0.0];
    let (fp_total, tp_total) = (fps[n - 1], tps[n - 1]);
    for &i in &keep {
        fpr.push(fps[i] / fp_total);
        tpr.push(tps[i] / tp_total);
    }
    // `np.trapz(tpr, fpr)` = add.reduce(diff(x) * (y[1:] + y[:-1]) / 2.0).
    let terms: Vec<f64> = (1..fpr.len())
        .map(|i| (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2.0)
        .collect();
    Ok(np_pairwise_sum(&terms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_count_half() {
        let auc = roc_auc(&[false, true], &[0.5, 0.5], "t").unwrap();
        assert_eq!(auc, 0.5);
        let auc = roc_auc(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8], "t").unwrap();
        assert_eq!(auc, 0.75);
    }

    #[test]
    fn one_class_is_an_error() {
        let err = roc_auc(&[true, true], &[0.1, 0.2], "hm.jsonl").unwrap_err();
        assert!(err.to_string().contains("only one class"), "{err}");
    }
}
