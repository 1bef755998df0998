"""Using a trained detector without the training stack: the artefact, input preparation, scoring,
heatmaps, calibration, ONNX export and the worklist."""
