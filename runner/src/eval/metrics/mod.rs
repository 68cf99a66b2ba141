//! Metrics identical to the reference implementations (pycocoevalcap CIDEr-D, open_flamingo VQA accuracy, scikit-learn ROC AUC).
