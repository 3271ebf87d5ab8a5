"""Embedded default data: synthetic axial head CT/MRI phantoms with lesions, captions, masks and splits.

``generate_phantom_dataset(out_dir, num_train=..., num_val=..., num_test=...)``
writes a complete, deterministic image-caption dataset that a tiny ViT+BERT
can learn from on a CPU in minutes; ``python -m data.phantom --out DIR`` is
the same from the shell. See docs/phantom.md.
"""

from data.phantom.attributes import ImageSpec, Lesion, num_unique_specs
from data.phantom.generate import (
    GENERATOR_VERSION,
    PhantomParams,
    dataset_paths,
    generate_phantom_dataset,
    phantom_dataset_is_complete,
)

__all__ = [
    "GENERATOR_VERSION",
    "ImageSpec",
    "Lesion",
    "PhantomParams",
    "dataset_paths",
    "generate_phantom_dataset",
    "num_unique_specs",
    "phantom_dataset_is_complete",
]
