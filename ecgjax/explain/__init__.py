"""Explanations of model predictions: Grad-CAM (`gradcam`) for the CNNs, 2-D (printouts) and 1-D
(signals), with overlays of the map on the input (`overlay`, `thresholded`); input attributions
of any model (`gradient_x_input`, `integrated_gradients`, `occlusion`); attention rollout of
the transformer encoders (`attention_rollout`); R peaks and R-aligned beats of a record
(`detect_r_peaks`, `aligned_beats`, `match_peaks`); median beats per group (`group_beats`) and
beat-annotated stress records (`stress`)."""

from ecgjax.explain.attention import NoAttentionError, Rollout, attention_rollout
from ecgjax.explain.attributions import gradient_x_input, integrated_gradients, occlusion
from ecgjax.explain.beats import aligned_beats, detect_r_peaks, match_peaks
from ecgjax.explain.gradcam import feature_layer, gradcam, overlay, thresholded

__all__ = ["NoAttentionError", "Rollout", "aligned_beats", "attention_rollout", "detect_r_peaks",
           "feature_layer", "gradcam", "gradient_x_input", "integrated_gradients", "match_peaks",
           "occlusion", "overlay", "thresholded"]
