//! Where the paper and the reference code (open_flamingo 2.0.1, HEAD `655f693`) evaluate
//! differently, and how `eval.protocol = "paper" | "code"` chooses between them (spec §0 item 8,
//! §5.5, §5.10). [`PROTOCOL_NOTES`] is the text the README shows.
//!
//! 1. Classification prompt ensembling. The paper (§3, "Prompts") averages the class
//!    log-likelihoods over 6 permutations of the in-context examples. At HEAD the code only wires
//!    `--classification_prompt_ensembling` to ImageNet, so HatefulMemes uses a single order.
//!    `paper`: min(6, k!) distinct orders of the k effective demonstrations (the sampled order
//!    first, then further distinct permutations drawn with the cell's seed); `code`: one order.
//! 2. 0-shot classification images. Both put two demonstrations in the context with their
//!    `<image>` tokens removed. For captioning and VQA the code passes only the query image, as
//!    the paper describes. For classification the code still passes the two demonstration images
//!    before the query image, so the single remaining `<image>` token (the query's) attends to the
//!    first demonstration's image and the query image is unused. `paper`: only the query image;
//!    `code`: demonstration images then the query image.

use rand::RngCore;

use super::datasets::Task;
use crate::config::schema::Protocol;

/// The paper-versus-code differences, for the README and `--help` texts.
pub const PROTOCOL_NOTES: &str = "\
Evaluation protocol: where the OpenFlamingo paper and its reference code differ
(`eval.protocol = \"paper\"`, the default, or `\"code\"`):

| | paper (default) | code (open_flamingo 2.0.1) |
|---|---|---|
| HatefulMemes prompt ensembling | class log-likelihoods averaged over min(6, k!) orders of the k demonstrations | one order (ensembling is only wired for ImageNet) |
| 0-shot HatefulMemes images | only the query image | the 2 text-only demonstrations' images, then the query image: the query's `<image>` attends to the first demonstration's image |

Both protocols follow the code where the paper's prose is only approximate: no space after
`Output:`, `Question:`, `Short answer:`, `Answer:`; captioning/VQA demonstrations followed by a
newline, classification demonstrations concatenated; 0-shot = 2 text-only demonstrations;
TextVQA generates up to 10 new tokens (the paper says 5 for VQA); random demonstrations come from
a query set of `eval.query_set_size` (2048) training examples per dataset and seed rather than
the whole training split. Random draws use ChaCha8 streams derived from (dataset, seed), not
numpy's/Python's generators, so the sampled demonstrations differ from the reference's.
";

/// Whether a 0-shot prompt passes the two text-only demonstrations' images before the query's.
pub fn zero_shot_passes_demo_images(protocol: Protocol, task: Task) -> bool {
    protocol == Protocol::Code && task == Task::Classification
}

/// Number of prompt orders averaged for a query with `k` effective demonstrations.
pub fn num_ensemble_orders(protocol: Protocol, task: Task, k: usize) -> usize {
    if protocol != Protocol::Paper || task != Task::Classification {
        return 1;
    }
    // min(6, k!) without overflowing for large k.
    let mut factorial = 1;
    for i in 2..=k {
        factorial *= i;
        if factorial >= 6 {
            return 6;
        }
    }
    factorial
}

/// The demonstration orders of one query: the identity order first, then distinct random
/// permutations of `0..k` drawn from `rng`, [`num_ensemble_orders`] in all.
pub fn ensemble_orders<R: RngCore>(
    protocol: Protocol,
    task: Task,
    k: usize,
    rng: &mut R,
) -> Vec<Vec<usize>> {
    let n = num_ensemble_orders(protocol, task, k);
    let identity: Vec<usize> = (0..k).collect();
    let mut orders = vec![identity.clone()];
    while orders.len() < n {
        let mut p = identity.clone();
        super::demos::shuffle(&mut p, rng);
        if !orders.contains(&p) {
            orders.push(p);
        }
    }
    orders
}
