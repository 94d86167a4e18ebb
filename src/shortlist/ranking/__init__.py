"""Ranking: features for (user, candidate) pairs, the LightGBM ranker, diversity re-ordering."""
