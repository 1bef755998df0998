"""The jobs a user runs end to end: training one detector (:mod:`~xrad.jobs.train`), the main pipeline
(:mod:`~xrad.jobs.pipeline`) and benchmark grids (:mod:`~xrad.jobs.benchmark`)."""
