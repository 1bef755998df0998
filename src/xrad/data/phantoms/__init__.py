"""Phantom radiographs in MURA's layout with pixel ground truth: xrad's embedded default data set.

:mod:`~xrad.data.phantoms.anatomy` draws patients and skeletons, :mod:`~xrad.data.phantoms.render`
the carrier geometry and the X-ray projection, :mod:`~xrad.data.phantoms.anomalies` the planted
anomalies, and :mod:`~xrad.data.phantoms.generate` the census and the files (``xrad synth``).
"""
