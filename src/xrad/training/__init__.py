"""Lightning pieces: image banks, augmentation, loaders, stage modules and the resumable ``fit``.

Nothing here knows which detectors exist or what a run folder holds: that is :mod:`xrad.jobs`.
"""
