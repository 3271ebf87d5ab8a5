"""bench/phantom_attributes.py: agreement, chance and ceiling against hand-computed values."""

from bench.phantom_attributes import ATTRIBUTES, agreement, ceiling_recall, chance_agreement, figure_facts


def _figure(modality, *lesions):
    return figure_facts({"modality": modality, "num_lesions": len(lesions), "lesions": [
        dict(zip(("hemisphere", "lobe", "size", "shape", "intensity"), lesion)) for lesion in lesions]})


A = _figure("CT", ("left", "frontal", "small", "round", "hyper"))
B = _figure("CT", ("left", "frontal", "large", "round", "hyper"))  # A but for size
C = _figure("T1", ("right", "parietal", "small", "oval", "hypo"), ("left", "frontal", "small", "round", "hyper"))
C_SWAPPED = _figure("T1", ("left", "frontal", "small", "round", "hyper"), ("right", "parietal", "small", "oval", "hypo"))


def test_lesion_order_does_not_matter():
    assert C == C_SWAPPED


def test_agreement_per_attribute_and_all_at_once():
    scores = agreement([A, B, C], [B, B, A])  # A matched to B, B to itself, C to A
    assert scores["modality"] == 2 / 3 and scores["size"] == 1 / 3 and scores["all"] == 1 / 3
    assert scores["count"] == 2 / 3 and set(scores) == set(ATTRIBUTES) | {"all"}


def test_chance_is_the_mean_agreement_with_a_uniform_draw():
    figures = [A, B, C]
    by_hand = {name: sum(q[name] == m[name] for q in figures for m in figures) / 9 for name in ATTRIBUTES}
    chance = chance_agreement(figures)
    assert {name: chance[name] for name in ATTRIBUTES} == by_hand
    assert chance["all"] == 3 / 9 and chance["modality"] == 5 / 9


def test_ceiling_counts_figures_that_become_indistinguishable():
    assert ceiling_recall([A, B, C], ()) == 1.0
    assert ceiling_recall([A, B, C], ("size",)) == (1 / 2 + 1 / 2 + 1) / 3  # A and B tie without size
