//! Minimum-cost one-to-one assignment of a rectangular matrix, as
//! `scipy.optimize.linear_sum_assignment` computes it (spec §4.2 uses it on `-similarity`).
//!
//! This is the shortest-augmenting-path method of Crouse (2016), the algorithm scipy implements,
//! with scipy's conventions so that ties resolve the same way: a tall matrix is solved transposed,
//! unvisited columns are scanned from the last to the first, a zero-cost tie prefers a free column,
//! and the result is returned sorted by row.

/// Why no assignment exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// The matrix holds NaN or -inf (scipy: "matrix contains invalid numeric entries").
    #[error("cost matrix contains invalid numeric entries")]
    Invalid,
    /// No finite-cost complete assignment exists (scipy: "cost matrix is infeasible").
    #[error("cost matrix is infeasible")]
    Infeasible,
    /// The data does not have `rows * cols` entries.
    #[error("cost matrix of {rows}x{cols} needs {} values, got {got}", rows * cols)]
    Shape {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Values given.
        got: usize,
    },
}

/// Solves min-cost assignment on a row-major `rows x cols` matrix. Returns `(row, col)` pairs,
/// `min(rows, cols)` of them, sorted by row.
pub fn linear_sum_assignment(
    cost: &[f64],
    rows: usize,
    cols: usize,
) -> Result<Vec<(usize, usize)>, AssignmentError> {
    if cost.len() != rows * cols {
        return Err(AssignmentError::Shape {
            rows,
            cols,
            got: cost.len(),
        });
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let transpose = cols < rows;
    let (nr, nc) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let c: Vec<f64> = if transpose {
        let mut t = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = cost[i * cols + j];
            }
        }
        t
    } else {
        cost.to_vec()
    };
    if c.iter().any(|&x| x.is_nan() || x == f64::NEG_INFINITY) {
        return Err(AssignmentError::Invalid);
    }

    let mut u = vec![0.0; nr];
    let mut v = vec![0.0; nc];
    let mut dist = vec![f64::INFINITY; nc];
    let mut path = vec![usize::MAX; nc];
    let mut col4row = vec![usize::MAX; nr];
    let mut row4col = vec![usize::MAX; nc];
    let mut seen_rows = vec![false; nr];
    let mut seen_cols = vec![false; nc];

    for cur in 0..nr {
        // Dijkstra-like search for the shortest augmenting path from row `cur`.
        seen_rows.fill(false);
        seen_cols.fill(false);
        dist.fill(f64::INFINITY);
        let mut remaining: Vec<usize> = (0..nc).rev().collect();
        let mut min_val = 0.0;
        let mut i = cur;
        let sink = loop {
            seen_rows[i] = true;
            let mut best: Option<usize> = None;
            let mut lowest = f64::INFINITY;
            for (it, &j) in remaining.iter().enumerate() {
                let r = min_val + c[i * nc + j] - u[i] - v[j];
                if r < dist[j] {
                    path[j] = i;
                    dist[j] = r;
                }
                if dist[j] < lowest || (dist[j] == lowest && row4col[j] == usize::MAX) {
                    lowest = dist[j];
                    best = Some(it);
                }
            }
            min_val = lowest;
            let Some(it) = best.filter(|_| min_val != f64::INFINITY) else {
                return Err(AssignmentError::Infeasible);
            };
            let j = remaining[it];
            seen_cols[j] = true;
            remaining.swap_remove(it);
            if row4col[j] == usize::MAX {
                break j;
            }
            i = row4col[j];
        };

        // Update the dual variables.
        u[cur] += min_val;
        for r in 0..nr {
            if seen_rows[r] && r != cur {
                u[r] += min_val - dist[col4row[r]];
            }
        }
        for j in 0..nc {
            if seen_cols[j] {
                v[j] -= min_val - dist[j];
            }
        }

        // Augment along the path back to `cur`.
        let mut j = sink;
        loop {
            let r = path[j];
            row4col[j] = r;
            std::mem::swap(&mut col4row[r], &mut j);
            if r == cur {
                break;
            }
        }
    }

    let mut out: Vec<(usize, usize)> = if transpose {
        // Rows of the transposed problem are the original columns.
        col4row
            .iter()
            .enumerate()
            .map(|(col, &row)| (row, col))
            .collect()
    } else {
        col4row
            .iter()
            .enumerate()
            .map(|(row, &col)| (row, col))
            .collect()
    };
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(cost: &[f64], cols: usize, a: &[(usize, usize)]) -> f64 {
        a.iter().map(|&(r, c)| cost[r * cols + c]).sum()
    }

    /// Exhaustive minimum over all injective row->column maps (rows <= cols).
    fn brute(cost: &[f64], rows: usize, cols: usize) -> f64 {
        fn go(cost: &[f64], rows: usize, cols: usize, r: usize, used: &mut Vec<bool>) -> f64 {
            if r == rows {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[r * cols + c] + go(cost, rows, cols, r + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, rows, cols, 0, &mut vec![false; cols])
    }

    #[test]
    fn scipy_examples() {
        // scipy docs: cost = [[4,1,3],[2,0,5],[3,2,2]] -> rows [0,1,2], cols [1,0,2].
        let cost = [4., 1., 3., 2., 0., 5., 3., 2., 2.];
        assert_eq!(
            linear_sum_assignment(&cost, 3, 3).unwrap(),
            vec![(0, 1), (1, 0), (2, 2)]
        );
        // Constant matrix -> identity (scipy issue #11602).
        assert_eq!(
            linear_sum_assignment(&[1.0; 9], 3, 3).unwrap(),
            vec![(0, 0), (1, 1), (2, 2)]
        );
        // Tall: 3 rows, 2 columns -> 2 pairs sorted by row.
        let tall = [-0.1, -0.9, -0.8, -0.2, -0.5, -0.5];
        assert_eq!(
            linear_sum_assignment(&tall, 3, 2).unwrap(),
            vec![(0, 1), (1, 0)]
        );
        assert_eq!(
            linear_sum_assignment(&[f64::NAN, 1.0], 1, 2),
            Err(AssignmentError::Invalid)
        );
        assert_eq!(
            linear_sum_assignment(&[f64::INFINITY, f64::INFINITY], 1, 2),
            Err(AssignmentError::Infeasible)
        );
        assert!(linear_sum_assignment(&[], 0, 4).unwrap().is_empty());
    }

    #[test]
    fn optimal_against_brute_force() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 1000) as f64 / 1000.0
        };
        for rows in 1..=5 {
            for cols in 1..=6 {
                for _ in 0..5 {
                    let cost: Vec<f64> = (0..rows * cols).map(|_| -next()).collect();
                    let a = linear_sum_assignment(&cost, rows, cols).unwrap();
                    assert_eq!(a.len(), rows.min(cols));
                    let mut rs: Vec<_> = a.iter().map(|p| p.0).collect();
                    let mut cs: Vec<_> = a.iter().map(|p| p.1).collect();
                    rs.dedup();
                    cs.sort_unstable();
                    cs.dedup();
                    assert_eq!((rs.len(), cs.len()), (a.len(), a.len()));
                    let best = if rows <= cols {
                        brute(&cost, rows, cols)
                    } else {
                        let t: Vec<f64> = (0..cols * rows)
                            .map(|k| cost[(k % rows) * cols + k / rows])
                            .collect();
                        brute(&t, cols, rows)
                    };
                    assert!((total(&cost, cols, &a) - best).abs() < 1e-9);
                }
            }
        }
    }
}
