"""P-tuning and prompt tuning: cloze questions with learned soft tokens."""
