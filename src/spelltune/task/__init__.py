"""The spelling task: words, questions, splits, prompts, parsing and scoring. Pure Python, no torch."""
