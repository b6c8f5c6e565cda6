"""Reading a bundle's bundle.json: typed values, and a clear error for each way it goes wrong."""

from __future__ import annotations

import json

import pytest

from voiceface.bundle import (BUNDLE_FORMAT_VERSION, DEFAULT_BACKBONE, DEFAULT_BACKBONE_REVISION,
                              DEFAULT_ENCODER, DEFAULT_GENERATOR, DEFAULT_GENERATOR_FILE,
                              DEFAULT_TRUNCATION, BackboneSpec, BundleError, BundleSpec,
                              EncoderSpec, GeneratorSpec)

from conftest import REPO


def write(root, spec):
    root.mkdir(exist_ok=True)
    (root / "bundle.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return root


def test_every_key_is_read_typed(tmp_path):
    (tmp_path / "b" / "voices").mkdir(parents=True)
    (tmp_path / "b" / "voices" / "b.flac").write_bytes(b"")
    (tmp_path / "b" / "voices" / "a.flac").write_bytes(b"")
    spec = BundleSpec.read(write(tmp_path / "b", {
        "format_version": 1, "description": "mine", "test_weights": True, "far": 0.05,
        "encoder": {"name_or_path": "encoder", "revision": None, "layer": 6, "quantize": True},
        "generator": {"name_or_path": "me/gan", "filename": "g.pt", "revision": "abc"},
        "truncation": 0.5, "truncation_centre": "generator",
        "backbone": {"name_or_path": "backbone", "revision": "r3"}}))
    assert spec.encoder == EncoderSpec("encoder", None, 6, True)
    assert spec.backbone == BackboneSpec("backbone", "r3")
    assert spec.generator == GeneratorSpec("me/gan", "g.pt", "abc")
    assert (spec.truncation, spec.truncation_centre, spec.far) == (0.5, "generator", 0.05)
    assert spec.test_weights and not spec.synthetic_personas and spec.description == "mine"
    assert [p.name for p in spec.examples] == ["a.flac", "b.flac"]
    with pytest.raises(AttributeError):
        spec.truncation = 0.9  # frozen


def test_the_old_spelling_of_the_truncation_centre_is_still_read(tmp_path):
    old = {"format_version": 1, "truncation_center": "generator"}
    assert BundleSpec.read(write(tmp_path / "old", old)).truncation_centre == "generator"
    with pytest.raises(BundleError, match='both "truncation_centre" and its old spelling'):
        BundleSpec.read(write(tmp_path / "both", {**old, "truncation_centre": "population"}))


def test_what_is_left_out_is_the_default(tmp_path):
    spec = BundleSpec.read(write(tmp_path / "b", {"format_version": 1,
                                                  "generator": {"filename": None}}))
    assert spec.encoder.name_or_path == DEFAULT_ENCODER
    assert spec.generator == GeneratorSpec(DEFAULT_GENERATOR, DEFAULT_GENERATOR_FILE, None)
    assert spec.truncation == DEFAULT_TRUNCATION and spec.truncation_centre == "population"
    assert not spec.test_weights and spec.examples == () and spec.personas_dir is None
    assert spec.backbone == BackboneSpec(DEFAULT_BACKBONE, DEFAULT_BACKBONE_REVISION)


def test_another_backbone_without_a_revision_is_not_given_the_default_ones(tmp_path):
    spec = BundleSpec.read(write(tmp_path / "b", {"format_version": 1,
                                                  "backbone": {"name_or_path": "me/vit"}}))
    assert spec.backbone == BackboneSpec("me/vit", None)


def test_the_apps_personas_bundle():
    spec = BundleSpec.read(REPO / "index")
    assert spec.synthetic_personas
    assert spec.personas_dir.resolve() == (REPO / "assets" / "personas").resolve()
    assert 1 <= len(spec.examples) and all(p.suffix == ".opus" for p in spec.examples)
    assert spec.backbone == BackboneSpec(DEFAULT_BACKBONE, DEFAULT_BACKBONE_REVISION)


@pytest.mark.parametrize("content,message", [
    ("{\"format_version\": 1,", r"is not JSON \(Expecting .* at line 1, column \d+\)\. Correct "
                                r"it, or write the bundle again"),
    ("[1, 2]", r"bundle.json is a list \(\[1, 2\]\); it must be an object"),
    ({"format_version": 1, "truncaton": 0.5}, r"unknown keys 'truncaton'; the keys it may hold "
                                              r"are format_version, .*truncation.*spelling"),
    ({"format_version": 1, "encoder": {"name": "x"}},
     r"bundle.json \"encoder\" has unknown keys 'name'; .* name_or_path"),
    ({"format_version": 1, "truncation": "0.7"},
     r"key 'truncation' is a string \(\"0.7\"\); it must be a number\."),
    ({"format_version": 1, "test_weights": "false"},
     r"key 'test_weights' is a string \(\"false\"\); it must be true or false\."),
    ({"format_version": 1, "encoder": {"layer": 1.5}},
     r"\"encoder\" key 'layer' is a number \(1.5\); it must be an integer\."),
    ({"format_version": 1, "generator": "me/gan"},
     r"key 'generator' is a string \(\"me/gan\"\); it must be an object\."),
    ({"format_version": 1, "truncation": 1.5}, r"truncation is 1.5; give a psi between 0"),
    ({"format_version": 1, "truncation_centre": "class"},
     r"truncation_centre is 'class'; use one of 'population', 'generator'\."),
    ({"format_version": 1, "far": 0}, r"far is 0; give a false-alarm rate between 0 and 1"),
    ({"format_version": 1, "backbone": {"name_or_path": "me/vit", "file": "x"}},
     r"bundle.json \"backbone\" has unknown keys 'file'; .* name_or_path, revision"),
    ({"truncation": 0.7}, r"has no \"format_version\"; add \"format_version\": 1"),
    ({"format_version": BUNDLE_FORMAT_VERSION + 1}, r"A newer voiceface wrote this bundle: "
                                                    r"upgrade voiceface\."),
    ({"format_version": 0}, r"format_version is 0, .* build the bundle again"),
], ids=["truncated", "not-an-object", "unknown-key", "unknown-encoder-key", "truncation-type",
        "bool-type", "layer-type", "section-type", "truncation-range", "center", "far-range",
        "backbone-key", "no-version", "newer-version", "older-version"])
def test_a_bad_bundle_json_says_what_is_wrong_and_what_to_do(tmp_path, content, message):
    root = write(tmp_path / "b", content)
    with pytest.raises(BundleError, match=message) as info:
        BundleSpec.read(root)
    assert str(info.value).startswith(str(root))  # names the bundle


def test_no_bundle_json(tmp_path):
    with pytest.raises(BundleError, match=r"is not a voiceface bundle \(no bundle.json\).*"
                                          r"dev-bundle DIR"):
        BundleSpec.read(tmp_path)


def test_overrides_replace_the_models_and_keep_the_rest(tmp_path):
    spec = BundleSpec.read(write(tmp_path / "b", {
        "format_version": 1, "truncation": 0.5,
        "encoder": {"name_or_path": "a/enc", "revision": "r1", "layer": 3},
        "generator": {"name_or_path": "a/gan", "filename": "x.pt", "revision": "r2"}}))
    assert spec.with_models() == spec
    new = spec.with_models(encoder="b/enc", generator="b/gan", quantize=True)
    assert new.encoder == EncoderSpec("b/enc", None, 3, True)  # the bundle's layer stays
    assert new.generator == GeneratorSpec("b/gan", DEFAULT_GENERATOR_FILE, None)
    assert new.truncation == 0.5 and new.root == spec.root
