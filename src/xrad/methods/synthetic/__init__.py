"""xrad's own detector: a patch classifier trained to find local synthetic anomalies planted in normal
training images (:mod:`xrad.training.corruptions`); its patch map is both the score and the heatmap."""
