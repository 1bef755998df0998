"""Evaluation: metrics, study/patient aggregation, bootstrap intervals, statistics, plots, reports,
benchmarks."""
