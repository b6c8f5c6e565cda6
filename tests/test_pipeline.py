"""The pipeline end to end on a dev bundle: one call, the CLI, Hub bundles, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from voiceface import traits
from voiceface.audio import AudioError, load_audio
from voiceface.enrolled import Enrolled
from voiceface.gallery import GalleryError
from voiceface.hub import WeightsNotFound
from voiceface.bundle import BundleError, BundleSpec
from voiceface.derived import GalleryState, load_derived
from voiceface.loading import load_generator, load_models, prepare_derived
from voiceface.mapper import CONFIG_FILE as MAPPER_CONFIG
from voiceface.mapper import VoiceToLatent, train_mapper
from voiceface.pipeline import VoiceFace
from voiceface.provenance import mark
from voiceface.stylegan2 import Generator, GeneratorConfig, to_pil
from voiceface.trait_inputs import TRAITS_KEY, trait_features

from conftest import DEV_PEOPLE, REPO, put_in_hub_cache


@pytest.fixture(scope="session")
def vf(dev_bundle):
    return VoiceFace.from_pretrained(dev_bundle)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "voiceface", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_one_call_returns_both_faces_matches_and_timings(vf, dev_bundle):
    start = time.perf_counter()
    result = vf(dev_bundle / "voices" / "dev02.flac", k=3)
    elapsed = time.perf_counter() - start
    assert [m.rank for m in result.matches] == [1, 2, 3]
    assert result.matches[0].id == "dev02" and result.confident and result.best.id == "dev02"
    assert result.method == "mapper" and vf.spec.test_weights
    assert result.face.size == (64, 64) and result.w.shape == (64,)
    assert set(result.timings) == {"load_audio", "embed", "search", "map", "synthesise",
                                   "traits", "total"}
    assert result.voice_traits == traits.measure(load_audio(dev_bundle / "voices" / "dev02.flac"))
    assert 0 < result.timings["total"] <= elapsed  # the stages took no longer than the call
    assert Image.open(result.matches[0].face).size == (64, 64)


def test_every_example_voice_finds_its_person(vf, dev_bundle):
    for i in range(DEV_PEOPLE):
        assert vf(dev_bundle / "voices" / f"dev{i:02d}.flac").matches[0].id == f"dev{i:02d}"


def test_preview_resolution_and_fallbacks(dev_bundle, vf):
    preview = vf(dev_bundle / "voices" / "dev01.flac", resolution=16)
    assert preview.face.size == (16, 16)
    no_mapper = VoiceFace(vf.encoder, vf.generator, vf.state.enrolled, None)
    blended = no_mapper(dev_bundle / "voices" / "dev01.flac")
    assert blended.method == "knn-blend"
    no_latents = Enrolled.new(vf.gallery.dim, vf.gallery.encoder_fingerprint)
    for person in vf.gallery.people:  # people without latents: the average face
        no_latents.gallery.add(person.id, vf.gallery.embedding(person.id), name=person.name)
    average = VoiceFace(vf.encoder, vf.generator, no_latents, None)
    result = average(dev_bundle / "voices" / "dev01.flac", truncation=1.0)
    assert result.method == "average" and result.centre == "generator"
    assert torch.allclose(torch.from_numpy(result.w), vf.generator.w_avg)


def test_without_a_mapper_or_a_neighbour_with_a_latent_the_population_centre_is_drawn(
        vf, dev_bundle):
    only_others = Enrolled.new(vf.gallery.dim, vf.gallery.encoder_fingerprint)
    for person in vf.gallery.people:  # everyone but the nearest person has a latent
        only_others.gallery.add(person.id, vf.gallery.embedding(person.id), name=person.name)
        if person.id != "dev01":
            only_others.latents.set(person.id, vf.state.latents.get(person.id))
    result = VoiceFace(vf.encoder, vf.generator, only_others, None)(
        dev_bundle / "voices" / "dev01.flac", k=1)
    assert (result.method, result.centre) == ("average", "population")
    assert np.array_equal(result.w, only_others.latents.centre)  # the centre truncated: itself


def test_stream_gives_the_preview_then_the_same_face_as_a_full_call(vf, dev_bundle):
    voice = dev_bundle / "voices" / "dev01.flac"
    stream = vf.stream(voice, resolutions=[16, 64])
    preview = next(stream)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()  # nothing leaks
    full = next(stream)
    assert preview.face.size == (16, 16) and full.face.size == (64, 64)
    assert np.array_equal(np.asarray(preview.face), np.asarray(vf(voice, resolution=16).face))
    assert np.array_equal(np.asarray(full.face), np.asarray(vf(voice).face))
    assert preview.matches == full.matches and np.array_equal(preview.w, full.w)
    assert preview.timings["embed"] == full.timings["embed"]
    assert 0 < preview.timings["synthesise"] < full.timings["synthesise"]


def test_matches_first_come_before_any_face_and_match_the_faces_results(vf, dev_bundle):
    stream = vf.stream(dev_bundle / "voices" / "dev02.flac", resolutions=[16, 64],
                       matches_first=True)
    first, preview, full = list(stream)
    assert first.face is None and "synthesise" not in first.timings
    assert first.matches == full.matches and first.matches[0].id == "dev02"
    assert np.array_equal(first.w, full.w) and first.confident == full.confident
    assert first.timings["embed"] == full.timings["embed"]
    assert preview.face.size == (16, 16) and full.face.size == (64, 64)


def test_stream_refuses_bad_audio_and_resolutions_at_the_call(vf):
    with pytest.raises(AudioError):
        vf.stream(b"not audio at all")
    with pytest.raises(ValueError, match="resolutions must be levels of"):  # before decoding
        vf.stream(b"not audio at all", resolutions=[64, 16])


def test_truncation_zero_draws_the_centre_and_one_the_latent_itself(vf, dev_bundle):
    voice = dev_bundle / "voices" / "dev03.flac"
    g = vf.generator
    untruncated = vf(voice, truncation=1.0)
    assert np.array_equal(untruncated.w, vf.mapper.predict(
        untruncated.embedding, trait_features(untruncated.voice_traits)))
    population = np.mean(np.stack([vf.state.latents.get(p.id) for p in vf.gallery.people]),
                         axis=0, dtype=np.float64).astype(np.float32)
    centre = vf(voice, truncation=0.0)
    assert np.array_equal(centre.w, population) and centre.centre == "population"
    with torch.inference_mode():
        centre_face = mark(to_pil(g.synthesis(torch.from_numpy(population)[None],
                                              noise="const"))[0])
    assert np.array_equal(np.asarray(centre.face), np.asarray(centre_face))
    default = vf(voice)  # the bundle's 0.7
    np.testing.assert_allclose(default.w, population + 0.7 * (untruncated.w - population),
                               atol=1e-6)
    drawn = [np.asarray(r.face) for r in (centre, default, untruncated)]
    assert not any(np.array_equal(drawn[i], drawn[j]) for i, j in ((0, 1), (1, 2), (0, 2)))


def test_a_bundle_may_truncate_toward_the_generators_average_face(vf, dev_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(dev_bundle, bundle)
    spec = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**spec, "truncation_centre": "generator"}))
    generator_centred = VoiceFace.from_pretrained(bundle)
    result = generator_centred(bundle / "voices" / "dev03.flac", truncation=0.0)
    assert result.centre == "generator" and np.array_equal(result.w, vf.generator.w_avg.numpy())
    (bundle / "bundle.json").write_text(json.dumps({**spec, "truncation_centre": "class"}))
    with pytest.raises(ValueError, match="truncation_centre is 'class'; use one of "
                                         "'population', 'generator'"):
        VoiceFace.from_pretrained(bundle)


def test_a_dev_persons_latent_redraws_their_gallery_face(vf, dev_bundle, monkeypatch):
    """Stored latents are untruncated: the pipeline's one truncation redraws the shown face."""
    for person in vf.gallery.people:
        stored = torch.from_numpy(vf.state.latents.get(person.id))[None]
        monkeypatch.setattr(vf, "latent", lambda embedding, matches, state=None, traits=None:
                            (stored, "mapper"))
        drawn = vf(dev_bundle / "voices" / "dev00.flac")
        shown = mark(Image.open(person.faces[0]))
        assert np.array_equal(np.asarray(drawn.face), np.asarray(shown)), person.id


def test_open_set_says_no_confident_match(vf, dev_bundle):
    strict = VoiceFace.from_pretrained(dev_bundle)
    strict.gallery.threshold = 1.01  # nobody can reach it
    result = strict(dev_bundle / "voices" / "dev00.flac")
    assert not result.confident and result.best is None and result.matches


@pytest.mark.slow
def test_cli_predict_json(dev_bundle, tmp_path, vf):
    out = tmp_path / "face.png"
    proc = run_cli("predict", dev_bundle / "voices" / "dev03.flac", "--bundle", dev_bundle,
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["matches"][0] == {"id": "dev03", "name": "Test person 4",
                                    "score": report["matches"][0]["score"]}
    assert report["confident"] is True and report["method"] == "mapper" \
        and report["centre"] == "population"
    assert report["face"] == str(out) and Image.open(out).size == (64, 64)
    assert report["timings"]["total"] >= report["timings"]["embed"] > 0
    library = vf(dev_bundle / "voices" / "dev03.flac").summary(test_weights=True)
    assert set(report) == set(library) | {"face"}  # the app's /predict has the same keys
    assert [m["id"] for m in report["matches"]] == [m["id"] for m in library["matches"]]
    assert report["threshold"] == library["threshold"] == round(vf.gallery.threshold, 6)
    assert report["voice_traits"] == library["voice_traits"] == traits.voice_traits(
        dev_bundle / "voices" / "dev03.flac").summary()


@pytest.mark.parametrize("content,message", [
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image, not audio"),
    (b"", "empty"),
])
@pytest.mark.slow
def test_cli_bad_audio_exits_2_with_one_clear_line(dev_bundle, tmp_path, content, message):
    bad = tmp_path / "clip.wav"
    bad.write_bytes(content)
    proc = run_cli("predict", bad, "--bundle", dev_bundle, "--out", tmp_path / "f.png")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "f.png").exists()


@pytest.mark.slow
def test_cli_missing_bundle_is_a_clear_error(tmp_path):
    proc = run_cli("predict", tmp_path / "x.wav", "--bundle", tmp_path / "nowhere")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bundle_from_the_hub_cache(dev_bundle, hub_cache, vf):
    put_in_hub_cache(hub_cache, "someone/voiceface-dev", dev_bundle, "a" * 40)
    from_hub = VoiceFace.from_pretrained("someone/voiceface-dev")
    result = from_hub(dev_bundle / "voices" / "dev04.flac")
    assert result.matches[0].id == "dev04"
    with pytest.raises(WeightsNotFound, match="nobody/none.*local directory"):
        VoiceFace.from_pretrained("nobody/none")


def test_encoder_mismatch_is_refused(dev_bundle, tmp_path):
    from voiceface.devbundle import write_random_encoder

    other = shutil.copytree(dev_bundle, tmp_path / "other")
    shutil.rmtree(other / "encoder")
    write_random_encoder(other / "encoder", seed=99)  # same shape, other weights
    with pytest.raises(GalleryError, match="Rebuild"):
        VoiceFace.from_pretrained(other)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a voiceface bundle.*dev-bundle"):
        VoiceFace.from_pretrained(tmp_path)


def test_loading_step_by_step_gives_the_pipeline_from_pretrained_gives(vf, dev_bundle,
                                                                      tmp_path, monkeypatch):
    spec = BundleSpec.read(dev_bundle)
    assert spec.test_weights and not spec.synthetic_personas and spec.root == dev_bundle
    assert [p.name for p in spec.examples] == [f"dev{i:02d}.flac" for i in range(DEV_PEOPLE)]
    encoder, generator, fingerprint = load_models(spec)
    assert encoder.fingerprint == vf.encoder.fingerprint and fingerprint == \
        vf.generator_fingerprint
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "cache"))
    assert prepare_derived(spec, encoder, generator, fingerprint) == dev_bundle  # no caches
    assert not (tmp_path / "cache").exists()
    state = load_derived(dev_bundle, encoder.fingerprint, fingerprint)
    assembled = VoiceFace(encoder, generator, state.enrolled, state.mapper, spec=spec,
                          generator_fingerprint=fingerprint)
    voice = dev_bundle / "voices" / "dev05.flac"
    assert np.array_equal(np.asarray(assembled(voice).face), np.asarray(vf(voice).face))
    assert assembled.example_voices() == list(spec.examples)


def test_overrides_and_their_spec(dev_bundle, tmp_path):
    from voiceface.devbundle import write_random_encoder

    other = write_random_encoder(tmp_path / "other-encoder", seed=5)
    spec = BundleSpec.read(dev_bundle).with_models(encoder=str(other), encoder_revision="v2")
    assert spec.encoder.name_or_path == str(other) and spec.encoder.revision == "v2"
    assert spec.locate(spec.encoder.name_or_path) == str(other)
    assert spec.locate("encoder") == str(dev_bundle / "encoder")  # inside the bundle first
    assert spec.locate("someone/model") == "someone/model"
    with pytest.raises(GalleryError, match="Rebuild"):  # the gallery was made with another
        VoiceFace.from_pretrained(dev_bundle, encoder=str(other))


def test_a_live_gallery_swaps_state_through_the_pipeline(dev_bundle, vf):
    two = VoiceFace.from_pretrained(dev_bundle)
    before = two.state
    with pytest.raises(AttributeError):
        two.state = GalleryState(vf.state.enrolled, None)  # no rebinding from outside
    two.swap(GalleryState(before.enrolled, None))
    assert two.state is not before and two.mapper is None and two.gallery is before.gallery
    assert two(dev_bundle / "voices" / "dev01.flac").method == "knn-blend"


def test_the_latent_comes_from_the_state_the_request_searched(vf, dev_bundle):
    """A request maps the voice with the version of the gallery and mapper it read at its
    start, even when another version is served by then; by default, the current one."""
    result = vf(dev_bundle / "voices" / "dev02.flac", truncation=1.0)
    w, method = vf.latent(result.embedding, result.matches, traits=result.voice_traits)
    assert method == "mapper" and np.array_equal(w[0].numpy(), result.w)
    _, method = vf.latent(result.embedding, result.matches,
                          GalleryState(vf.state.enrolled, None))
    assert method == "knn-blend"


def test_rosinality_checkpoint_is_converted_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "cache"))
    g = Generator(GeneratorConfig(size=8, style_dim=8, n_mlp=1, channels={4: 8, 8: 8}), seed=1)
    pt = tmp_path / "tiny.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.w_avg.clone()}, pt)
    first, fingerprint = load_generator(pt)
    converted = list((tmp_path / "cache" / "generators").glob("*/generator.safetensors"))
    assert len(converted) == 1 and fingerprint.startswith("local:")
    mtime = converted[0].stat().st_mtime_ns
    second, again = load_generator(pt)
    assert again == fingerprint and converted[0].stat().st_mtime_ns == mtime
    w = torch.randn(1, 8)
    with torch.no_grad():
        assert torch.equal(first.synthesis(w), second.synthesis(w))


def test_the_voices_traits_reach_the_mapper_before_the_first_face(vf, dev_bundle):
    """The dev bundle's mapper takes traits (the recipe measured each window's): the query's
    are measured once, before the map step, and every result carries them."""
    assert vf.mapper.takes_traits
    assert all(set(p.extra[TRAITS_KEY]) == {"pitch_hz", "sex_score"} and all(
        isinstance(v, float) for v in p.extra[TRAITS_KEY].values()) for p in vf.gallery.people)
    voice = dev_bundle / "voices" / "dev04.flac"
    measured = traits.measure(load_audio(voice))
    first, preview, full = vf.stream(voice, resolutions=[16, 64], matches_first=True)
    assert first.voice_traits == preview.voice_traits == full.voice_traits == measured
    assert list(first.timings)[:5] == ["load_audio", "embed", "search", "traits", "map"]
    assert preview.timings["traits"] == full.timings["traits"]  # measured once
    expected = vf.mapper.predict(full.embedding, trait_features(measured))
    w, _ = vf.latent(full.embedding, full.matches, traits=measured)
    assert np.array_equal(w[0].numpy(), expected)
    assert not np.allclose(expected, vf.mapper.predict(full.embedding))  # the traits count


def test_a_voice_without_voiced_speech_draws_with_the_populations_mean_traits(vf):
    noise = 0.2 * np.random.default_rng(0).standard_normal(3 * 16_000).astype(np.float32)
    with pytest.raises(AudioError, match="voiced speech"):
        traits.measure(noise)
    result = vf((16_000, noise), truncation=1.0)
    assert result.method == "mapper" and result.voice_traits is None
    np.testing.assert_allclose(result.w, vf.mapper.predict(result.embedding), atol=1e-6)


def test_a_bundle_built_before_traits_serves_as_before(vf, dev_bundle, tmp_path):
    """A mapper.json without trait keys (as saved before them): the mapper takes the
    embedding alone, and the traits are measured after the first face, for the last result."""
    bundle = tmp_path / "old"
    shutil.copytree(dev_bundle, bundle)
    ids, latents = vf.state.latents.rows()
    old, _ = train_mapper(np.stack([vf.gallery.embedding(i) for i in ids]), latents, ids,
                          vf.state.latents.centre, hidden=16, max_epochs=5, progress=False,
                          encoder_fingerprint=vf.encoder.fingerprint,
                          generator_fingerprint=vf.generator_fingerprint)
    old.save_pretrained(bundle / "mapper")
    config = json.loads((bundle / "mapper" / MAPPER_CONFIG).read_text())
    (bundle / "mapper" / MAPPER_CONFIG).write_text(json.dumps({k: v for k, v in config.items()
                                                               if not k.startswith("trait")}))
    served = VoiceFace.from_pretrained(bundle)
    assert not served.mapper.takes_traits
    preview, full = served.stream(bundle / "voices" / "dev04.flac", resolutions=[16, 64],
                                  truncation=1.0)
    assert preview.voice_traits is None and "traits" not in preview.timings
    assert list(full.timings) == ["load_audio", "embed", "search", "map", "synthesise",
                                  "traits", "total"]
    assert full.voice_traits == traits.measure(load_audio(bundle / "voices" / "dev04.flac"))
    assert full.method == "mapper"
    assert np.array_equal(full.w, VoiceToLatent.from_pretrained(bundle / "mapper").predict(
        full.embedding))
    assert np.array_equal(full.w, old.predict(full.embedding))
