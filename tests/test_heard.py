"""The one "heard" policy (core.heard) on AudioSet's real ontology, with real YAMNet output on
synthesized sounds: a confident child hides its parent, a parent is shown when no child is confident,
ambiguous labels never show, and a short event survives pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.audio import decode_audio
from core.heard import CONFIDENT, MAX_HEARD, Ontology, clip_scores, heard
from core.index.labels import load_labels
from core.yamnet import YamnetModel
from tests.media import make_media, make_voice_note


@pytest.fixture(scope="module")
def ontology(audioset_meta: Path) -> Ontology:
    return Ontology.from_labelset(load_labels(audioset_meta), audioset_meta / "ontology.json")


@pytest.fixture(scope="module")
def yamnet(yamnet_model_path: Path, audioset_meta: Path) -> YamnetModel:
    return YamnetModel(yamnet_model_path, audioset_labels_path=audioset_meta / "class_labels_indices.csv")


def _clip(ontology: Ontology, **scores: float) -> np.ndarray:
    p = np.zeros(len(ontology), np.float32)
    for name, s in scores.items():
        p[ontology.names.index(name.replace("_", " "))] = s
    return p


def _labels(hs) -> list[str]:
    return [h.label for h in hs]


# -- the rule on the ontology --------------------------------------------------------------------


def test_ancestors_invert_descendants_on_the_real_ontology(ontology: Ontology):
    """The bridge's "a label implies its parents" reads ``ancestors``: a bark is a dog, an animal."""
    bark = ontology.names.index("Bark")
    up = {ontology.names[i] for i in ontology.ancestors[bark]}
    assert {"Dog", "Domestic animals, pets", "Animal"} <= up
    assert all(bark in ontology.descendants[a] for a in ontology.ancestors[bark])
    pairs = {(a, c) for a, below in enumerate(ontology.descendants) for c in below}
    assert pairs == {(a, c) for c, above in enumerate(ontology.ancestors) for a in above}
def test_a_confident_child_hides_its_ancestors(ontology: Ontology):
    # What YAMNet says of a dog recording: the whole branch, strongest at the top.
    clip = _clip(ontology, Animal=0.8, Dog=0.6, Bark=0.5, Speech=0.1)
    clip[ontology.names.index("Domestic animals, pets")] = 0.7
    assert _labels(heard(clip, ontology)) == ["Bark"]


def test_an_ancestor_is_shown_when_no_descendant_is_confident(ontology: Ontology):
    clip = _clip(ontology, Animal=0.8, Dog=0.1, Bark=0.05)
    assert _labels(heard(clip, ontology)) == ["Animal"]


def test_specific_sounds_come_before_branches_shown_for_want_of_a_child(ontology: Ontology):
    # A sneeze in a room where someone talks: Speech scores higher, but names less.
    hs = heard(_clip(ontology, Speech=0.8, Sneeze=0.3, Sniff=0.25), ontology)
    assert _labels(hs) == ["Sneeze", "Sniff", "Speech"]
    assert [h.score for h in hs] == pytest.approx([0.3, 0.25, 0.8])


def test_ambiguous_labels_are_never_heard(ontology: Ontology):
    patter = ontology.names.index("Patter")
    assert patter in ontology.ambiguous  # ontology.json restricts it as "blacklist"
    assert _labels(heard(_clip(ontology, Patter=0.7, Fire=0.3), ontology)) == ["Fire"]


def test_the_sound_comes_before_the_room_it_was_recorded_in(ontology: Ontology):
    # What YAMNet said of a quiet ticking clock: the room first, though it names no sound.
    env = {ontology.names[i] for i in ontology.environment}
    assert env == {"Inside, small room", "Inside, large room or hall", "Inside, public space",
                   "Outside, urban or manmade", "Outside, rural or natural", "Reverberation", "Echo"}
    clip = _clip(ontology, Tick=0.23, Clock=0.3)
    clip[ontology.names.index("Inside, small room")] = 0.39
    assert _labels(heard(clip, ontology)) == ["Tick", "Inside, small room"]
    room_only = np.zeros(len(ontology), np.float32)
    room_only[ontology.names.index("Inside, small room")] = 0.4
    assert _labels(heard(room_only, ontology)) == ["Inside, small room"]  # still said when it is all there is


def test_nothing_confident_still_names_the_best_specific_guess(ontology: Ontology):
    hs = heard(_clip(ontology, Dog=0.12, Bark=0.1, Music=0.03), ontology)
    assert _labels(hs) == ["Bark"] and hs[0].score == pytest.approx(0.1)
    assert heard(np.zeros(len(ontology), np.float32), ontology) == []


def test_contract_at_most_five_scores_in_0_1(ontology: Ontology):
    clip = np.linspace(0.0, 1.2, len(ontology)).astype(np.float32)
    hs = heard(clip, ontology)
    assert 1 <= len(hs) <= MAX_HEARD and all(0.0 <= h.score <= 1.0 for h in hs)
    with pytest.raises(ValueError):
        heard(clip[:10], ontology)


def test_pooling_keeps_a_short_event_that_a_mean_would_fade():
    windows = np.zeros((20, 3), np.float32)  # a 10 s note
    windows[:, 0] = 0.3                     # a steady background
    windows[8:11, 1] = 0.9                  # a bark of about a second and a half
    windows[15, 2] = 0.9                    # one stray window
    clip = clip_scores(windows)
    assert clip[1] == pytest.approx(0.9) and windows[:, 1].mean() < 0.15
    assert clip[2] == pytest.approx(0.3) and clip[0] == pytest.approx(0.3)
    assert np.array_equal(clip_scores(windows[:2]), windows[:2].mean(axis=0))


# -- real YAMNet output on synthesized sounds ------------------------------------------------------
def _check_policy(clip: np.ndarray, hs, ontology: Ontology) -> tuple[list[int], list[int]]:
    """Assert the policy against YAMNet's real clip scores; return (hidden parents, shown parents)."""
    sure = {i for i in np.flatnonzero(clip >= CONFIDENT).tolist() if i not in ontology.ambiguous}
    shown = [ontology.names.index(h.label) for h in hs]
    hidden_parents, shown_parents = [], []
    for i in sure:
        if ontology.descendants[i] & sure:
            assert i not in shown, (ontology.names[i], _labels(hs))
            hidden_parents.append(i)
        elif ontology.descendants[i]:
            shown_parents.append(i)
    most_specific = [i for i in sure if not ontology.descendants[i] & sure]
    assert set(shown) <= set(most_specific)
    assert len(shown) == min(MAX_HEARD, len(most_specific))
    return hidden_parents, shown_parents


def test_yamnet_on_white_noise_names_the_kind_of_noise_not_noise(yamnet: YamnetModel, ontology: Ontology,
                                                                  tmp_path: Path):
    samples = decode_audio(make_media(tmp_path / "noise.wav", "wav", 3.0, "noise")).samples
    clip = clip_scores(yamnet.to_audioset(yamnet.phased_scores(samples)))
    hs = yamnet.listen(samples, ontology=ontology).heard
    hidden, _ = _check_policy(clip, hs, ontology)
    assert hidden, "YAMNet was expected to be confident of a parent and its child on white noise"
    noise = ontology.names.index("Noise")
    if noise in hidden:  # "Noise" hidden by the kind of noise it is
        assert {ontology.names[i] for i in ontology.descendants[noise]} & set(_labels(hs))


def test_yamnet_on_speech_shows_speech_when_no_kind_of_speech_is_confident(yamnet: YamnetModel,
                                                                         ontology: Ontology, tmp_path: Path):
    note = make_voice_note(tmp_path / "note.ogg", seconds=5.0, kind="speech")
    samples = decode_audio(note).samples
    clip = clip_scores(yamnet.to_audioset(yamnet.phased_scores(samples)))
    hs = yamnet.heard(samples)  # the model's own ontology, found beside the AudioSet label list
    _, shown_parents = _check_policy(clip, hs, ontology)
    speech = ontology.names.index("Speech")
    family = {ontology.names[i] for i in ontology.descendants[speech] | {speech}}
    assert hs[0].label in family, _labels(hs)
    if speech in shown_parents:  # no kind of speech confident: the parent names it
        assert "Speech" in _labels(hs)
