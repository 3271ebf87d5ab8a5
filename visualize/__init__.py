"""What ``vis.py`` draws and measures: Grad-CAM figures, the HTML index over a list, localisation scores.

The Grad-CAM maths lives in :mod:`models.gradcam`, the lists and their ground truth in
:mod:`data.caption_lists` and :mod:`data.grounding`; :mod:`visualize.runner` ties them together.
"""
