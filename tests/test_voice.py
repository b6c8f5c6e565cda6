"""wav2vec2 voice encoder: both checkpoint kinds, real embedding properties, Hub loading."""

from __future__ import annotations

import numpy as np
import pytest

from voiceface.audio import SAMPLE_RATE, load_audio
from voiceface.hub import WeightsNotFound
from voiceface.voice import VoiceEncoder, split_windows

from conftest import put_in_hub_cache


@pytest.fixture(scope="module")
def xvector(tiny_xvector_dir):
    return VoiceEncoder.from_pretrained(tiny_xvector_dir)


@pytest.fixture(scope="module")
def meanpool(tiny_w2v2_dir):
    return VoiceEncoder.from_pretrained(tiny_w2v2_dir, layer=1)


def cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name,dim,pooling", [("xvector", 24, "xvector"), ("meanpool", 32, "mean")])
def test_both_checkpoint_kinds_give_unit_norm_embeddings(request, speech, name, dim, pooling):
    encoder = request.getfixturevalue(name)
    assert encoder.config.pooling == pooling
    emb = encoder.embed(speech(3.0))
    assert emb.shape == (dim,) and emb.dtype == np.float32 and encoder.dim == dim
    assert abs(np.linalg.norm(emb) - 1.0) < 1e-5


def test_deterministic(xvector, speech):
    assert np.array_equal(xvector.embed(speech(3.0)), xvector.embed(speech(3.0)))


def test_different_voices_give_different_embeddings(xvector, speech):
    a = xvector.embed(speech(3.0, f0=110.0, seed=1))
    b = xvector.embed(speech(3.0, f0=230.0, seed=2))
    assert cos(a, b) < 0.999


@pytest.mark.parametrize("name", ["xvector", "meanpool"])
def test_48k_stereo_int16_matches_16k_mono(request, speech, name):
    encoder = request.getfixturevalue(name)
    wav48 = speech(4.0, rate=48_000)
    stereo = (np.stack([wav48, 0.8 * wav48], axis=1) * 32767).astype(np.int16)
    from_browser = encoder.embed(load_audio((48_000, stereo)))
    reference = encoder.embed(load_audio((SAMPLE_RATE, speech(4.0))))
    assert cos(from_browser, reference) > 0.99


@pytest.mark.parametrize("name", ["xvector", "meanpool"])
def test_loudness_does_not_change_the_embedding(request, speech, name):
    encoder = request.getfixturevalue(name)
    wav = speech(3.0)
    assert cos(encoder.embed(0.05 * wav), encoder.embed(wav)) > 0.9999


def test_long_audio_is_windowed_and_averaged(xvector, speech):
    wav = speech(23.0)
    windows = xvector.embed_windows(wav)
    assert windows.shape == (4, xvector.dim)  # starts 0, 5, 10 s and the last at 13 s
    mean = windows.mean(axis=0)
    assert np.allclose(xvector.embed(wav), mean / np.linalg.norm(mean), atol=1e-6)
    assert len({tuple(np.round(w, 5)) for w in windows}) == 4


def test_split_windows_cover_the_recording_with_equal_lengths():
    wav = np.arange(int(23.5 * SAMPLE_RATE), dtype=np.float32)
    windows = split_windows(wav, 10.0, 5.0)
    assert {len(w) for w in windows} == {10 * SAMPLE_RATE}
    assert windows[0][0] == 0 and windows[-1][-1] == wav[-1]
    assert split_windows(wav[:SAMPLE_RATE], 10.0, 5.0)[0].shape == (SAMPLE_RATE,)


def test_batching_does_not_change_results(xvector, speech):
    wavs = [speech(2.0, seed=1), speech(12.0, seed=2), speech(3.5, seed=3)]
    batched = xvector.embed_many(wavs)
    one_by_one = np.stack([xvector.embed(w) for w in wavs])
    assert np.allclose(batched, one_by_one, atol=1e-5)


def test_fingerprint_names_pooling_and_changes_with_the_weights(
        xvector, meanpool, tiny_w2v2_dir):
    assert "xvector" in xvector.fingerprint and "mean@1" in meanpool.fingerprint
    assert xvector.fingerprint != meanpool.fingerprint
    last = VoiceEncoder.from_pretrained(tiny_w2v2_dir)
    assert last.fingerprint != meanpool.fingerprint
    assert VoiceEncoder.from_pretrained(tiny_w2v2_dir, layer=1).fingerprint == \
        meanpool.fingerprint


def test_loads_a_hub_repo_id_from_the_cache_with_its_commit(
        hub_cache, tiny_xvector_dir, xvector, speech):
    commit = "0123456789abcdef0123456789abcdef01234567"
    put_in_hub_cache(hub_cache, "someone/tiny-sv", tiny_xvector_dir, commit)
    encoder = VoiceEncoder.from_pretrained("someone/tiny-sv", revision="main")
    assert encoder.fingerprint.startswith(f"someone/tiny-sv@{commit}|xvector")
    assert np.allclose(encoder.embed(speech(2.0)), xvector.embed(speech(2.0)), atol=1e-6)


def test_unreachable_repo_names_it_and_says_how_to_use_a_local_copy(hub_cache):
    with pytest.raises(WeightsNotFound, match="nobody/missing-model") as info:
        VoiceEncoder.from_pretrained("nobody/missing-model")
    assert "local directory" in str(info.value)


def test_bad_arguments_are_refused(tiny_w2v2_dir, xvector):
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        VoiceEncoder.from_pretrained(tiny_w2v2_dir, layer=7)
    with pytest.raises(ValueError, match="hop_seconds"):
        VoiceEncoder.from_pretrained(tiny_w2v2_dir, hop_seconds=20.0)
    with pytest.raises(ValueError, match="expected non-empty"):
        xvector.embed(np.zeros((2, 100), np.float32))


def test_quantized_encoder_is_close_to_fp32_and_has_its_own_fingerprint(tiny_xvector_dir,
                                                                         tiny_w2v2_dir, speech):
    wav = speech(3.0, seed=4)
    for path in (tiny_xvector_dir, tiny_w2v2_dir):
        fp32 = VoiceEncoder.from_pretrained(path)
        int8 = VoiceEncoder.from_pretrained(path, quantize=True)
        assert int8.config.quantize and not fp32.config.quantize
        assert int8.fingerprint == fp32.fingerprint + "|int8"
        assert any(".quantized." in type(m).__module__ for m in int8.model.modules())
        emb = int8.embed(wav)
        assert emb.shape == (fp32.dim,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
        assert cos(emb, fp32.embed(wav)) > 0.99
    with pytest.raises(ValueError, match="CPU only"):
        VoiceEncoder.from_pretrained(tiny_xvector_dir, quantize=True, device="cuda")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_keeps_the_fingerprint_and_leaves_fp32_as_it_was(
        tiny_xvector_dir, tiny_w2v2_dir, speech, precision):
    """A serving copy in reduced precision embeds under the fp32 fingerprint (so it can query
    an fp32 gallery once checked), differs from fp32 a little, and leaves the fp32 encoder,
    which still embeds what galleries store, untouched."""
    wav = speech(3.0, seed=5)
    for path in (tiny_xvector_dir, tiny_w2v2_dir):
        fp32 = VoiceEncoder.from_pretrained(path)
        before = fp32.embed(wav)
        reduced = fp32.with_precision(precision)
        assert reduced.precision == precision and fp32.precision == "fp32"
        assert reduced.fingerprint == fp32.fingerprint and not reduced.config.quantize
        emb = reduced.embed(wav)
        assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
        assert 0.999 < cos(emb, before) and not np.array_equal(emb, before)
        assert np.array_equal(fp32.embed(wav), before)  # fp32 itself unchanged
        quantized = [m for m in fp32.model.modules() if ".quantized." in type(m).__module__]
        assert quantized == []  # int8 converted a copy, not the fp32 model
        assert fp32.with_precision("fp32") is fp32


def test_reduced_precision_is_taken_from_fp32_only(tiny_xvector_dir):
    fp32 = VoiceEncoder.from_pretrained(tiny_xvector_dir)
    with pytest.raises(ValueError, match="not one of fp32, bf16, int8"):
        fp32.with_precision("fp16")
    with pytest.raises(ValueError, match="already runs in bf16"):
        fp32.with_precision("bf16").with_precision("int8")
    with pytest.raises(ValueError, match=r"already runs in int8 \(quantize=True\)"):
        VoiceEncoder.from_pretrained(tiny_xvector_dir, quantize=True).with_precision("bf16")
