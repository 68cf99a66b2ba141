//! From a generated continuation to the prediction that is stored and scored (spec §5.8): the
//! metrics module's exact ports of the reference's post-processing, chosen per dataset.

use super::datasets::{DatasetInfo, Task};
use super::metrics::{okvqa_stem, vqa};

/// The prediction for `generated` (new tokens decoded without special tokens):
/// captioning cuts at `"Output"` and drops `"`; VQA cuts at `Question`/`Answer`/`Short`, then at
/// the first `", "`; OK-VQA then stems the answer (the manual table only: see
/// [`okvqa_stem::OKVQA_STEMMING_NOTE`]).
pub fn prediction(info: &DatasetInfo, generated: &str) -> String {
    match info.task {
        Task::Captioning => vqa::postprocess_caption(generated),
        Task::Vqa if info.stem_predictions => okvqa_stem::postprocess_generation(generated),
        Task::Vqa => vqa::postprocess_generation(generated),
        Task::Classification => generated.to_string(),
    }
}

/// P("yes") of a query from its class log-likelihoods `[no, yes]`, as the reference derives it:
/// softmax over the classes, the probability of the predicted (argmax, first on ties) class, and
/// `1 - p` when that class is "no". Returns (predicted class index, P(yes)).
pub fn p_yes(class_logprobs: &[f64; 2]) -> (usize, f64) {
    let m = class_logprobs[0].max(class_logprobs[1]);
    let e = [(class_logprobs[0] - m).exp(), (class_logprobs[1] - m).exp()];
    let z = e[0] + e[1];
    let probs = [e[0] / z, e[1] / z];
    let predicted = if probs[1] > probs[0] { 1 } else { 0 };
    let p = probs[predicted];
    (predicted, if predicted == 1 { p } else { 1.0 - p })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::datasets::dataset_info;

    #[test]
    fn captions_cut_at_output_and_lose_quotes() {
        let coco = dataset_info("coco").unwrap();
        assert_eq!(
            prediction(&coco, "a \"red\" bus\nOutput:a dog"),
            "a red bus\n"
        );
    }

    #[test]
    fn vqa_cuts_at_markers_then_at_the_first_clause() {
        let vqa = dataset_info("vqav2").unwrap();
        assert_eq!(prediction(&vqa, "two, maybe three"), "two");
        assert_eq!(prediction(&vqa, "yes Question:what"), "yes ");
        assert_eq!(prediction(&vqa, "blue Short answer:red"), "blue ");
        let ok = dataset_info("okvqa").unwrap();
        assert_eq!(
            prediction(&ok, "running dogs"),
            okvqa_stem::stem("running dogs")
        );
    }

    #[test]
    fn p_yes_is_the_softmax_of_yes() {
        let (c, p) = p_yes(&[-2.0, -1.0]);
        assert_eq!(c, 1);
        assert!((p - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        let (c, p) = p_yes(&[-1.0, -3.0]);
        assert_eq!(c, 0);
        assert!((p - 1.0 / (1.0 + 2.0f64.exp())).abs() < 1e-12);
    }
}
