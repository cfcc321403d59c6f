"""Across experiments: loading runs (git + DVC), leaderboard, significance and importance,
recommendations, error analysis, the HTML report, the notebook monitor, using a trained adapter."""
