"""Explanations of model predictions: Grad-CAM (`gradcam`) for the CNNs, 2-D (printouts) and 1-D
(signals), with overlays of the map on the input (`overlay`, `thresholded`)."""

from ecgjax.explain.gradcam import feature_layer, gradcam, overlay, thresholded

__all__ = ["feature_layer", "gradcam", "overlay", "thresholded"]
