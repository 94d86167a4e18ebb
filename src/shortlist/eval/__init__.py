"""Evaluation: the H&M last-week protocol, ranking metrics and the baselines to beat."""
