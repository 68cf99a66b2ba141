-- Scores of groups within a cell (VQA: per answer type and per question type, as the official
-- evaluation reports them): JSON {"answer_type": {"yes/no": {"score": 80.0, "count": 70}, ...},
-- "question_type": {...}}; NULL where the metric has no groups.
ALTER TABLE eval_cells ADD COLUMN groups TEXT;
