"""Mapper: learns a learnable relation, beats the kNN fallback there, saves and refuses; takes
voice traits beside the embedding where faces and voices share them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from voiceface import mapper as mapper_module
from voiceface.mapper import (CONFIG_FILE, WEIGHTS_FILE, VoiceToLatent, knn_blend,
                              train_mapper)
from voiceface.trait_inputs import TRAIT_FEATURES, voice_traits_fingerprint

D, W = 16, 12


def learnable_data(n_people=40, clips=5, seed=0):
    """Per-person voice centres; latents a fixed linear function of them plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, D))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    a = rng.standard_normal((W, D)) * 2
    w_avg = rng.standard_normal(W).astype(np.float32)
    person_latent = centres @ a.T + w_avg + 0.05 * rng.standard_normal((n_people, W))
    emb = centres[:, None] + 0.05 * rng.standard_normal((n_people, clips, D))
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    groups = np.repeat([f"p{i}" for i in range(n_people)], clips)
    return (emb.reshape(-1, D).astype(np.float32),
            np.repeat(person_latent, clips, axis=0).astype(np.float32), groups, w_avg,
            centres.astype(np.float32), person_latent.astype(np.float32))


@pytest.mark.slow
def test_training_learns_and_beats_knn_on_unseen_people():
    x, y, groups, w_avg, centres, person_latent = learnable_data()
    train = ~np.isin(groups, [f"p{i}" for i in range(32, 40)])  # people 32-39 never seen
    mapper, report = train_mapper(x[train], y[train], groups[train], w_avg, hidden=64,
                                  max_epochs=400, patience=40, progress=False)
    assert report.val_loss < 0.5 * report.baseline_val_loss
    assert report.history[0][2] > report.val_loss  # validation loss went down
    unseen = centres[32:]
    mapper_mse = np.mean((mapper.predict(unseen) - person_latent[32:]) ** 2)
    sims = unseen @ centres[:32].T
    knn = np.stack([knn_blend(s[np.argsort(-s)[:5]], person_latent[:32][np.argsort(-s)[:5]])
                    for s in sims])
    knn_mse = np.mean((knn - person_latent[32:]) ** 2)
    assert mapper_mse < 0.5 * knn_mse, (mapper_mse, knn_mse)


def test_validation_holds_out_whole_people_and_is_deterministic():
    x, y, groups, w_avg, *_ = learnable_data(n_people=10)
    kwargs = dict(hidden=32, max_epochs=30, patience=10, progress=False, seed=3)
    m1, r1 = train_mapper(x, y, groups, w_avg, **kwargs)
    m2, r2 = train_mapper(x, y, groups, w_avg, **kwargs)
    assert len(r1.val_people) == 2 and r1.val_people == r2.val_people
    assert np.array_equal(m1.predict(x), m2.predict(x))


def test_without_validation_everyone_trains_for_every_epoch():
    x, y, groups, w_avg, *_ = learnable_data(n_people=4)  # 20 rows: one batch per epoch
    _, report = train_mapper(x, y, groups, w_avg, hidden=8, dropout=0.0, max_epochs=3,
                             val_fraction=0, progress=False)
    assert report.val_people == [] and report.val_loss is None
    assert report.best_epoch == 3 and [epoch for epoch, *_ in report.history] == [1, 2, 3]
    # the first step's loss is the untrained mapper's: the squared error of the centre
    assert report.history[0][1] == pytest.approx(np.mean((y - w_avg) ** 2), rel=1e-5)


def test_training_stops_patience_epochs_after_the_best_validation_loss():
    x, y, groups, w_avg, *_ = learnable_data(n_people=10)
    y = np.random.default_rng(1).permutation(y)  # nothing to learn: validation soon worsens
    _, report = train_mapper(x, y, groups, w_avg, hidden=32, max_epochs=300, patience=5,
                             refit=False, progress=False)
    assert len(report.history) == report.best_epoch + 5 < 300
    assert min(val for *_, val in report.history) == report.val_loss


def test_no_person_has_rows_in_both_training_and_validation(monkeypatch):
    x, y, groups, w_avg, *_ = learnable_data(n_people=10)
    person_of = {row.tobytes(): g for row, g in zip(x, groups)}  # every row is distinct
    fits = []
    real_fit = mapper_module._fit

    def recording_fit(config, centre, x_train, y_train, x_val, y_val, *args, **kwargs):
        fits.append(({person_of[r.tobytes()] for r in x_train},
                     {person_of[r.tobytes()] for r in x_val}, len(x_val)))
        return real_fit(config, centre, x_train, y_train, x_val, y_val, *args, **kwargs)

    monkeypatch.setattr(mapper_module, "_fit", recording_fit)
    _, report = train_mapper(x, y, groups, w_avg, hidden=8, max_epochs=3, progress=False)
    trained, validated, val_rows = fits[0]
    assert validated == set(report.val_people) and len(validated) == 2
    assert not trained & validated and trained | validated == set(groups)
    assert val_rows == 2 * 5  # every row of the two validation people


def test_untrained_mapper_draws_its_centre():
    x, y, groups, w_avg, *_ = learnable_data(n_people=4)
    from voiceface.mapper import MapperConfig
    mapper = VoiceToLatent(MapperConfig(D, W), torch.from_numpy(w_avg))
    assert np.allclose(mapper.predict(x[:3]), w_avg)


def test_save_load_round_trip_and_fingerprint_refusal(tmp_path):
    x, y, groups, w_avg, *_ = learnable_data(n_people=6)
    mapper, _ = train_mapper(x, y, groups, w_avg, hidden=32, max_epochs=20, progress=False,
                             encoder_fingerprint="enc-A", generator_fingerprint="gen-A")
    mapper.save_pretrained(tmp_path / "m")
    loaded = VoiceToLatent.from_pretrained(tmp_path / "m", encoder_fingerprint="enc-A",
                                           generator_fingerprint="gen-A")
    assert np.array_equal(loaded.predict(x), mapper.predict(x))
    with pytest.raises(ValueError, match="trained for encoder 'enc-A'"):
        VoiceToLatent.from_pretrained(tmp_path / "m", encoder_fingerprint="enc-B")
    with pytest.raises(ValueError, match="takes 16"):
        loaded.predict(np.zeros(D + 1, np.float32))
    with pytest.raises(FileNotFoundError, match="No mapper"):
        VoiceToLatent.from_pretrained(tmp_path / "nothing")


def test_the_mapper_keeps_the_centre_it_was_trained_around(tmp_path):
    """Offsets are from the centre given at training; it is saved with the weights, and a
    mapper saved before the rename (its centre under "w_avg") loads the same."""
    x, y, groups, _, *_ = learnable_data(n_people=6)
    centre = y.mean(axis=0)
    mapper, _ = train_mapper(x, y, groups, centre, hidden=32, max_epochs=5, progress=False)
    assert torch.equal(mapper.centre, torch.from_numpy(centre))
    mapper.save_pretrained(tmp_path / "m")
    assert np.array_equal(VoiceToLatent.from_pretrained(tmp_path / "m").predict(x),
                          mapper.predict(x))
    state = load_file(tmp_path / "m" / WEIGHTS_FILE)
    state["w_avg"] = state.pop("centre")
    save_file(state, tmp_path / "m" / WEIGHTS_FILE)
    old = VoiceToLatent.from_pretrained(tmp_path / "m")
    assert torch.equal(old.centre, mapper.centre)
    assert np.array_equal(old.predict(x), mapper.predict(x))


def test_knn_blend_weights_the_nearest_most():
    latents = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    w = knn_blend(np.array([0.9, 0.5]), latents)
    assert w[0] > 0.99 and w[1] < 0.01
    assert np.allclose(knn_blend(np.array([0.7, 0.7]), latents), [0.5, 0.5])
    with pytest.raises(ValueError, match="k >= 1"):
        knn_blend(np.array([]), np.zeros((0, 2)))


def test_too_few_people_is_a_clear_error():
    x, y, groups, w_avg, *_ = learnable_data(n_people=1)
    with pytest.raises(ValueError, match="at least 2 people"):
        train_mapper(x, y, groups, w_avg, progress=False)


# -- voice traits beside the embedding -----------------------------------------------------
TD, TW = 32, 64  # embedding and latent sizes of the planted-traits world
SEX_SIZE, AGE_SIZE, OWN_SIZE = 1.0, 0.6, 0.5  # latent units along each part


def planted_world(seed: int, shared: bool):
    """Faces and voices sharing a sex sign s and an age scalar a (`shared`), or sharing
    nothing. A face's latent: centre + SEX_SIZE s u_sex + AGE_SIZE a u_age + a part of its own
    that no voice carries. A voice: an identity embedding that carries age only weakly and sex
    not at all, and traits per window: log pitch lower for s = +1, P(male) leaning to s."""
    rng = np.random.default_rng(seed)
    u_sex, u_age = np.linalg.qr(rng.standard_normal((TW, 2)))[0].T
    v_age = rng.standard_normal(TD)
    v_age /= np.linalg.norm(v_age)
    centre = rng.standard_normal(TW)

    def draw(n: int, windows: int):
        s, a = rng.choice([-1.0, 1.0], n), rng.standard_normal(n)
        face = SEX_SIZE * s[:, None] * u_sex + AGE_SIZE * a[:, None] * u_age if shared else 0
        w = centre + face + OWN_SIZE * rng.standard_normal((n, TW))
        e = (rng.standard_normal((n, 1, TD)) / np.sqrt(TD) + 0.05 * rng.standard_normal(
            (n, windows, TD)) + (0.3 * a[:, None, None] * v_age if shared else 0))
        e /= np.linalg.norm(e, axis=2, keepdims=True)
        voice_s = s if shared else rng.choice([-1.0, 1.0], n)  # unshared: another person's
        log_f0 = (np.log(165) - 0.35 * voice_s[:, None] + 0.08 * rng.standard_normal((n, 1))
                  + 0.05 * rng.standard_normal((n, windows)))
        p_male = 1 / (1 + np.exp(-(3 * voice_s[:, None] + rng.standard_normal((n, windows)))))
        traits = np.stack([log_f0, p_male - 0.5], axis=2)
        return s, a, w.astype(np.float32), e.astype(np.float32), traits

    return u_sex, u_age, draw


def train_planted(draw, with_traits: bool, enrolled: int = 48, windows: int = 6):
    _, _, w, e, traits = draw(enrolled, windows)
    groups = np.repeat([f"p{i}" for i in range(enrolled)], windows)
    centre = w.mean(axis=0)
    mapper, _ = train_mapper(e.reshape(-1, TD), np.repeat(w, windows, 0), groups, centre,
                             traits=traits.reshape(-1, 2) if with_traits else None, hidden=64,
                             max_epochs=500, patience=30, progress=False)
    return mapper, centre


@pytest.mark.usefixtures("one_torch_thread")
def test_shared_traits_reach_unseen_peoples_faces_through_the_voices_traits():
    """48 enrolled; 200 unseen people, one short clip (window) each. The embedding does not
    carry sex: only the traits do, and the mapper puts it on the right side for >= 95 % of
    the unseen, as spread along the sex direction as the shared trait makes faces (its
    planted part is SEX_SIZE: the ratio within 0.8-1.2), and age (carried weakly by the
    embedding) correlated and no more spread than planted. Without traits, as before: sex at
    chance, the population mean."""
    u_sex, u_age, draw = planted_world(0, shared=True)
    mapper, centre = train_planted(draw, with_traits=True)
    assert mapper.takes_traits and mapper.config.traits == TRAIT_FEATURES
    s, a, _, e, traits = draw(200, 1)
    predicted = mapper.predict(e[:, 0], traits[:, 0]) - centre
    sex, age = predicted @ u_sex, predicted @ u_age
    assert np.mean(np.sign(sex) == s) >= 0.95
    assert 0.8 <= sex.std() / SEX_SIZE <= 1.2, sex.std()
    assert np.corrcoef(age, a)[0, 1] >= 0.6
    assert 0.5 <= age.std() / (AGE_SIZE * a.std()) <= 1.1, age.std()

    blind, centre = train_planted(draw, with_traits=False)
    sex = (blind.predict(e[:, 0]) - centre) @ u_sex
    assert np.mean(np.sign(sex) == s) < 0.75  # the embedding alone does not carry it


@pytest.mark.usefixtures("one_torch_thread")
def test_without_a_shared_trait_the_mapper_draws_the_population_mean():
    _, _, draw = planted_world(1, shared=False)
    mapper, centre = train_planted(draw, with_traits=True)
    _, _, w, e, traits = draw(200, 1)
    predicted = mapper.predict(e[:, 0], traits[:, 0])
    spread = np.linalg.norm(predicted - predicted.mean(axis=0), axis=1).mean()
    people = np.linalg.norm(w - w.mean(axis=0), axis=1).mean()
    assert spread < 0.1 * people, (spread, people)


@pytest.mark.usefixtures("one_torch_thread")
def test_traits_travel_with_the_weights_and_unknown_traits_are_the_mean(tmp_path):
    _, _, draw = planted_world(2, shared=True)
    mapper, _ = train_planted(draw, with_traits=True, enrolled=8, windows=2)
    _, _, _, e, traits = draw(5, 1)
    e, traits = e[:, 0], traits[:, 0]
    mapper.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert saved["traits"] == list(TRAIT_FEATURES)
    assert len(saved["trait_mean"]) == len(saved["trait_scale"]) == 2
    assert saved["traits_fingerprint"] == voice_traits_fingerprint()
    loaded = VoiceToLatent.from_pretrained(tmp_path / "m")
    assert np.array_equal(loaded.predict(e, traits), mapper.predict(e, traits))
    # no voiced speech: the trained rows' mean traits, whether left out or NaN
    mean = np.tile(saved["trait_mean"], (5, 1))
    np.testing.assert_allclose(mapper.predict(e), mapper.predict(e, mean), atol=1e-6)
    assert np.array_equal(mapper.predict(e), mapper.predict(e, np.full((5, 2), np.nan)))
    assert not np.allclose(mapper.predict(e), mapper.predict(e, traits))
    saved["traits"] = ["log_pitch_hz", "vowel_space"]  # a newer voiceface's mapper
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"takes the voice traits .*vowel_space.*retrain it"):
        VoiceToLatent.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="Need trait features"):
        train_mapper(e, e, list("abcde"), e[0], traits=traits[:, :1], progress=False)


OLD_CONFIG_KEYS = {"in_dim", "out_dim", "hidden", "layers", "dropout", "encoder_fingerprint",
                   "generator_fingerprint", "people"}  # mapper.json before traits


def test_a_mapper_saved_before_traits_loads_and_predicts_as_before(tmp_path):
    x, y, groups, w_avg, *_ = learnable_data(n_people=6)
    mapper, _ = train_mapper(x, y, groups, w_avg, hidden=32, max_epochs=20, progress=False)
    assert not mapper.takes_traits
    mapper.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(
        {k: v for k, v in saved.items() if k in OLD_CONFIG_KEYS}))
    old = VoiceToLatent.from_pretrained(tmp_path / "m")
    assert not old.takes_traits and old.net[0].in_features == D
    traits = np.random.default_rng(0).standard_normal((len(x), 2))
    assert np.array_equal(old.predict(x), mapper.predict(x))
    assert np.array_equal(old.predict(x, traits), mapper.predict(x))  # traits ignored
