"""Subfigure splitter: compound figure -> panels with OCR'd labels, caption -> subcaptions, aligned pairs.

Public API (see docs/subfigures.md)::

    split_caption(text) -> [(label, subcaption), ...]      # [] when not compound
    split_caption_detailed(text) -> [Subcaption(label, text, sublabels), ...]
    split_figure(image, labels=None) -> [Panel(box, label, confidence)]  # reading order
    split_dataset(input_json, out_dir, *, image_root=None, workers=1, progress=True) -> report dict
"""

from data.subfigure.captions import Subcaption, split_caption, split_caption_detailed
from data.subfigure.dataset import split_dataset
from data.subfigure.figure import Panel, split_figure

__all__ = ["split_caption", "split_caption_detailed", "Subcaption", "split_figure", "split_dataset", "Panel"]
