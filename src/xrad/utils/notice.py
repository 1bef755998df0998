"""The research-use notice shown wherever a score is shown (CLI, worklist, report, service page).

One text in one place, at the bottom layer, so the evaluation report and the service say exactly what the
command line says.
"""

from __future__ import annotations

__all__ = ["PHANTOM_TRAINED", "RESEARCH_NOTICE"]

RESEARCH_NOTICE = (
    "Research use only: xrad is not a medical device and its scores are not a diagnosis. A score ranks how "
    "unusual an image is compared with the normal images the detector was trained on; check the detector's "
    "measured test AUROC before trusting it."
)

# Shown with every score of an artefact trained on generated phantoms only (readout) and in its report.
PHANTOM_TRAINED = "trained on generated phantoms only: a score of a real radiograph means nothing"
