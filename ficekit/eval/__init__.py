"""Evaluation of garment edits: metrics, dataset runner, baselines."""
