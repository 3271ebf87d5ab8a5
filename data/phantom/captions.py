"""Clinical-style captions for phantom images: varied wording, always the complete attribute tuple.

Every caption names the modality, the number of lesions (implicitly: each
lesion is described once) and, for every lesion, its size, intensity, shape,
hemisphere and lobe. So a caption is correct for an image exactly when the
image's :class:`ImageSpec` equals the one the caption was written from; this
is what lets val/test captions identify one image each.

"Left"/"right" are the PATIENT's sides (radiological convention: the
patient's left is on the image's right). Density words are used for CT
(hyperdense/hypodense), signal words for MRI (hyperintense/hypointense).

Grammar rules that keep captions machine-checkable: two lesion phrases are
joined only by " and " or "; ", and no lesion phrase contains either.
"""

from __future__ import annotations

import numpy as np

from data.captions import pre_caption
from data.phantom.attributes import ImageSpec, Lesion

__all__ = ["MAX_CAPTION_WORDS", "MAX_CAPTIONS_PER_IMAGE", "VOCABULARY", "write_captions"]

MAX_CAPTION_WORDS = 30  # BLIP's max_words for pretraining and retrieval: longer captions would be cut
MAX_CAPTIONS_PER_IMAGE = 20

MODALITY_PHRASES = {
    "CT": ("CT", "head CT", "non-contrast head CT", "axial CT of the head", "unenhanced CT of the brain",
           "axial non-contrast CT", "CT of the head", "CT image of the brain"),
    "T1": ("T1-weighted MRI", "axial T1-weighted MRI", "T1-weighted MR image", "axial T1-weighted image",
           "T1-weighted brain MRI", "T1 MRI"),
    "T2": ("T2-weighted MRI", "axial T2-weighted MRI", "T2-weighted MR image", "axial T2-weighted image",
           "T2-weighted brain MRI", "T2 MRI"),
    "FLAIR": ("FLAIR image", "axial FLAIR MRI", "FLAIR MR image", "axial FLAIR image of the brain",
              "fluid-attenuated inversion recovery (FLAIR) image", "FLAIR MRI"),
}
INTENSITY_WORDS = {
    ("CT", "hyper"): ("hyperdense", "high-attenuation", "high-density"),
    ("CT", "hypo"): ("hypodense", "low-attenuation", "low-density"),
    ("MR", "hyper"): ("hyperintense", "high-signal", "bright"),
    ("MR", "hypo"): ("hypointense", "low-signal", "dark"),
}
SIZE_WORDS = {"small": ("small", "tiny"), "medium": ("medium-sized", "moderate-sized", "intermediate-sized"),
              "large": ("large", "sizeable")}
SHAPE_WORDS = {"round": ("round", "rounded", "circular"), "oval": ("oval", "ovoid", "elliptical"),
               "irregular": ("irregular", "lobulated", "irregularly shaped")}
LESION_NOUNS = ("lesion", "mass", "focus", "abnormality")

# Lesion phrases. {art} is "a"/"an" for the next word; "telegraphic" ones have no article.
_LOCATIONS = ("in the {side} {lobe} lobe", "in the {side} {lobe} region", "within the {side} {lobe} lobe",
              "involving the {side} {lobe} lobe", "in the {lobe} lobe of the {side} hemisphere")
_WITH_ARTICLE = ("{art} {size} {intensity} {shape} {noun} {location}",
                 "{art} {size} {shape} {intensity} {noun} {location}",
                 "{art} {intensity}, {size} {shape} {noun} {location}")
_TELEGRAPHIC = ("{size} {intensity} {shape} {noun}, {side} {lobe} region",
                "{size} {intensity} {shape} {noun}, {side} {lobe} lobe",
                "{side} {lobe} lobe, {size} {shape} {intensity} {noun}")

# Sentences: (template, lesion phrase kinds allowed). {Mod} = capitalised modality phrase.
_NORMAL = ("{Mod} shows no focal lesion.", "No focal lesion on this {mod}.", "{Mod} without focal abnormality.",
           "Normal {mod}: no lesion is seen.", "Unremarkable {mod} with no focal lesion.",
           "No lesion is identified on {mod}.")
_ONE = (("{Mod} shows {l1}.", "article"), ("{Mod}: {l1}.", "any"), ("{Mod} demonstrates {l1}.", "article"),
        ("{L1} on {mod}.", "article"), ("There is {l1} on this {mod}.", "article"),
        ("Solitary lesion on {mod}: {l1}.", "any"))
_TWO = (("{Mod} shows two lesions: {l1} and {l2}.", "article"), ("{Mod} demonstrates {l1} and {l2}.", "article"),
        ("Two lesions on {mod}: {l1}; {l2}.", "any"), ("{Mod}: {l1}; {l2}.", "any"),
        ("There are two lesions on this {mod}: {l1} and {l2}.", "article"),
        ("Two focal lesions on {mod}: {l1} and {l2}.", "article"))

VOCABULARY = {
    "modality": MODALITY_PHRASES,
    "intensity": INTENSITY_WORDS,
    "size": SIZE_WORDS,
    "shape": SHAPE_WORDS,
    "noun": LESION_NOUNS,
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lesion_phrase(lesion: Lesion, modality: str, kind: str, rng: np.random.Generator) -> str:
    family = "CT" if modality == "CT" else "MR"
    words = {
        "size": _pick(rng, SIZE_WORDS[lesion.size]),
        "intensity": _pick(rng, INTENSITY_WORDS[(family, lesion.intensity)]),
        "shape": _pick(rng, SHAPE_WORDS[lesion.shape]),
        "noun": _pick(rng, LESION_NOUNS),
        "side": lesion.hemisphere,
        "lobe": lesion.lobe,
    }
    use_article = kind == "article" or (kind == "any" and rng.random() < 0.5)
    if not use_article:
        return _pick(rng, _TELEGRAPHIC).format(**words)
    template = _pick(rng, _WITH_ARTICLE)
    words["location"] = _pick(rng, _LOCATIONS).format(**words)
    first_word = template.split()[1].strip("{},")
    words["art"] = "an" if words[first_word][0] in "aeiou" else "a"
    return template.format(**words)


def _one_caption(spec: ImageSpec, rng: np.random.Generator) -> str:
    mod = _pick(rng, MODALITY_PHRASES[spec.modality])
    fields = {"mod": mod, "Mod": _capitalise(mod)}
    if not spec.lesions:
        return _capitalise(_pick(rng, _NORMAL).format(**fields))
    templates = _ONE if len(spec.lesions) == 1 else _TWO
    template, kind = templates[int(rng.integers(len(templates)))]
    order = rng.permutation(len(spec.lesions))
    for slot, index in enumerate(order, start=1):
        phrase = _lesion_phrase(spec.lesions[int(index)], spec.modality, kind, rng)
        fields[f"l{slot}"], fields[f"L{slot}"] = phrase, _capitalise(phrase)
    return _capitalise(template.format(**fields))


def write_captions(spec: ImageSpec, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct captions for ``spec``, each at most MAX_CAPTION_WORDS words after BLIP's pre_caption."""
    if not 1 <= count <= MAX_CAPTIONS_PER_IMAGE:
        raise ValueError(f"captions_per_image must be in [1, {MAX_CAPTIONS_PER_IMAGE}], got {count}")
    captions: list[str] = []
    for _ in range(200 * count):
        caption = _one_caption(spec, rng)
        if len(pre_caption(caption, 0).split()) <= MAX_CAPTION_WORDS and caption not in captions:
            captions.append(caption)
            if len(captions) == count:
                return captions
    # Unreachable with the phrase tables above (even a normal image has 36+ distinct captions).
    raise RuntimeError(f"could only write {len(captions)} distinct captions for {spec}")
