"""Prebuilt persona caches: `publish-personas` writes them with their manifest, a start with
them installs them instead of building, and anything wrong with them falls back to building
with one warning saying why."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import PHOTO, REPO
from test_personas import write_personas_folder
from voiceface import cli, persona_cache, personas, prebuilt
from voiceface.bundle import BundleError, BundleSpec
from voiceface.enrolled import Enrolled
from voiceface.devbundle import (TINY_GENERATOR, write_random_backbone, write_random_encoder,
                                 write_random_face_traits)
from voiceface.pipeline import VoiceFace
from voiceface.publish import plan_persona_caches, plan_publish, publish_persona_caches
from voiceface.stylegan2 import Generator

PERSONAS_DIR = REPO / "assets" / "personas"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two personas and tiny random models, each in a folder: {"personas", "encoder", ...}."""
    root = tmp_path_factory.mktemp("prebuilt-models")
    folder = write_personas_folder(root / "personas", (0, 36, 46))
    Generator(TINY_GENERATOR, seed=3).save_pretrained(root / "generator")
    return {"personas": folder, "encoder": write_random_encoder(root / "encoder", seed=0),
            "generator": root / "generator",
            "backbone": write_random_backbone(root / "backbone", seed=0),
            "face_traits": write_random_face_traits(root / "face-traits", seed=0)}


def write_bundle(directory: Path, models: dict, persona_caches: dict | None = None) -> Path:
    """A personas bundle of `models`, naming `persona_caches` when given."""
    directory.mkdir(parents=True)
    spec = {"format_version": 1, "personas": str(models["personas"]), "truncation": 0.7,
            **{name: {"name_or_path": str(models[name])}
               for name in ("encoder", "generator", "backbone", "face_traits")}}
    if persona_caches is not None:
        spec["persona_caches"] = persona_caches
    (directory / "bundle.json").write_text(json.dumps(spec))
    return directory


@pytest.fixture(scope="module")
def published(models, tmp_path_factory):
    """`publish-personas --to-dir` run once: {"bundle", "cache" (where it built), "dir"}."""
    root = tmp_path_factory.mktemp("published")
    bundle = write_bundle(root / "bundle", models)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOICEFACE_CACHE", str(root / "cache"))
        assert cli.main(["publish-personas", "--bundle", str(bundle),
                         "--to-dir", str(root / "prebuilt")]) == 0
    (cache,) = (root / "cache" / "personas").glob("[!.]*")
    return {"bundle": bundle, "cache": cache, "dir": root / "prebuilt"}


def answers(vf: VoiceFace, models: dict) -> list:
    """What a pipeline answers for each persona's recording and for a photo."""
    voices = sorted((models["personas"] / personas.VOICES_DIR).iterdir())
    found = [[(m.id, round(m.score, 6)) for m in vf(v).matches] for v in voices]
    return found + [[m.id for m in vf.face2voice(PHOTO, k=3).matches]]


@pytest.mark.slow
def test_publish_personas_writes_the_cache_and_a_manifest_of_what_it_was_built_for(
        published, models):
    made = json.loads((published["dir"] / prebuilt.MANIFEST).read_text())
    assert made["key"] == published["cache"].name
    assert made["made_for"]["cache_format_version"] == persona_cache.CACHE_FORMAT_VERSION
    assert made["made_for"]["personas"] == personas.personas_fingerprint(models["personas"])
    assert made["made_for"]["backbone"] == str(models["backbone"])
    files = sorted(p.relative_to(published["dir"]).as_posix()
                   for p in published["dir"].rglob("*") if p.is_file())
    assert files == sorted([*made["files"], prebuilt.MANIFEST])
    assert {"gallery/manifest.json", "mapper/mapper.safetensors",
            "face2voice/features.npy"} <= set(made["files"])
    assert not [f for f in files if f.startswith(".") or "/." in f]  # no locks, no temp files
    for relative in made["files"]:
        assert (published["dir"] / relative).read_bytes() == \
            (published["cache"] / relative).read_bytes()
        assert str(published["cache"]).encode() not in \
            (published["dir"] / relative).read_bytes()


@pytest.mark.slow
def test_publish_to_the_hub_is_one_private_commit_of_the_plan_whose_sha_is_returned(published):
    calls = []

    class RecordingApi:  # stands in for huggingface_hub.HfApi: the Hub is not reachable here
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def create_commit(self, repo_id, operations, **kwargs):
            calls.append(("create_commit", repo_id, {op.path_in_repo for op in operations}))
            return SimpleNamespace(oid=SHA, commit_url=f"https://hub/{repo_id}/commit/{SHA}")

    plan = plan_persona_caches(published["cache"], "me/caches")
    assert publish_persona_caches(plan, api=RecordingApi()) == SHA
    assert calls[0] == ("create_repo", "me/caches",
                        {"repo_type": "model", "private": True, "exist_ok": True})
    made = json.loads((published["dir"] / prebuilt.MANIFEST).read_text())
    assert calls[1] == ("create_commit", "me/caches", {*made["files"], prebuilt.MANIFEST})


@pytest.mark.slow
def test_a_start_with_matching_prebuilt_caches_installs_them_and_builds_nothing(
        published, models, tmp_path, monkeypatch):
    with monkeypatch.context() as mp:
        mp.setenv("VOICEFACE_CACHE", str(published["cache"].parent.parent))
        built_here = VoiceFace.from_pretrained(published["bundle"], progress=False)
        expected = answers(built_here, models)
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "fresh-cache"))
    monkeypatch.setattr(persona_cache, "_build", lambda *a, **k: pytest.fail("built"))
    bundle = write_bundle(tmp_path / "bundle", models, {"repo": str(published["dir"])})
    vf = VoiceFace.from_pretrained(bundle, progress=False)
    (installed,) = (tmp_path / "fresh-cache" / "personas").glob("[!.]*")
    assert installed.name == published["cache"].name
    np.testing.assert_array_equal(vf.gallery.embeddings(), built_here.gallery.embeddings())
    assert vf.gallery.threshold == built_here.gallery.threshold
    assert answers(vf, models) == expected
    assert not list(installed.parent.glob(".*.tmp"))


DAMAGES = {
    "another encoder": lambda d: _edit_manifest(d, encoder="local:0000"),
    "another cache format": lambda d: _edit_manifest(
        d, cache_format_version=persona_cache.CACHE_FORMAT_VERSION + 1),
    "a missing folder": lambda d: shutil.rmtree(d),
    "a truncated file": lambda d: _truncate(d / "mapper" / "mapper.safetensors"),
    "a pickled array": lambda d: _pickle_embeddings(d),
    "a face outside the gallery": lambda d: _face_elsewhere(d, "/etc/hostname"),
    "a face up the tree": lambda d: _face_elsewhere(d, "faces/../../../../etc/hostname"),
    "face to voice for another revision": lambda d: _face2voice_backbone(d, revision="0" * 40),
    "face to voice without its ids": lambda d: _face2voice_backbone(d, ids=None),
}
WHY = {"another encoder": "built for another encoder",
       "another cache format": "cache format",
       "a missing folder": "Could not load the prebuilt persona caches",
       "a truncated file": "mapper/mapper.safetensors is missing or damaged",
       "a pickled array": "allow_pickle=False",
       "a face outside the gallery": "outside its faces/ folder",
       "a face up the tree": "outside its faces/ folder",
       "face to voice for another revision": "names another backbone than this start's",
       "face to voice without its ids": "ids do not match"}


def _edit_manifest(directory: Path, **made_for) -> None:
    path = directory / prebuilt.MANIFEST
    made = json.loads(path.read_text())
    made["made_for"].update(made_for)
    path.write_text(json.dumps(made))


class _Touch:
    """Unpickled, it would create the file `path`: proof that a pickle ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def _pickle_embeddings(directory: Path) -> None:
    """An attacker's cache: the gallery's embeddings replaced by a pickle that runs code when
    loaded, with a manifest whose sizes and hashes match, so only the loader stands between."""
    (path,) = directory.glob("gallery/data-*/embeddings.npy")
    np.save(path, np.array([_Touch(directory / "pwned")], dtype=object), allow_pickle=True)
    _rehash(directory, path)


def _face_elsewhere(directory: Path, face: str) -> None:
    """An attacker's cache: a person's face names a file elsewhere on the server (served or
    copied if believed), with a manifest whose sizes and hashes match."""
    (path,) = directory.glob("gallery/data-*/people.json")
    people = json.loads(path.read_text())
    people[0]["faces"] = [face]
    path.write_text(json.dumps(people))
    _rehash(directory, path)


def _face2voice_backbone(directory: Path, **change) -> None:
    """Caches whose face2voice/ names another backbone revision, or lacks its ids (a face
    query would fetch that revision, or fail), with a manifest whose hashes match."""
    path = directory / prebuilt.FACE2VOICE_CONFIG
    spec = json.loads(path.read_text())
    if "revision" in change:
        spec["backbone"]["revision"] = change["revision"]
    if "ids" in change:
        del spec["ids"]
    path.write_text(json.dumps(spec))
    _rehash(directory, path)


def _rehash(directory: Path, path: Path) -> None:
    """Record `path`'s size and hash in the caches' manifest, as an attacker would."""
    made = json.loads((directory / prebuilt.MANIFEST).read_text())
    made["files"][path.relative_to(directory).as_posix()] = {
        "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (directory / prebuilt.MANIFEST).write_text(json.dumps(made))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_unusable_prebuilt_caches_fall_back_to_building_with_one_warning(
        damage, published, models, tmp_path, monkeypatch, caplog):
    copy = shutil.copytree(published["dir"], tmp_path / "prebuilt")
    DAMAGES[damage](copy)
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "fresh-cache"))
    builds = []
    build = persona_cache._build
    monkeypatch.setattr(persona_cache, "_build", lambda *a: builds.append(1) or build(*a))
    bundle = write_bundle(tmp_path / "bundle", models, {"repo": str(copy)})
    with caplog.at_level(logging.WARNING, logger="voiceface.persona_cache"):
        vf = VoiceFace.from_pretrained(bundle, progress=False)
    assert builds == [1]
    (line,) = [r.getMessage() for r in caplog.records if "prebuilt" in r.getMessage()]
    assert WHY[damage] in line and "Building them instead" in line
    (built,) = (tmp_path / "fresh-cache" / "personas").glob("[!.]*")
    assert built.name == published["cache"].name
    np.testing.assert_allclose(vf.gallery.embeddings(),
                               Enrolled.load(published["cache"] / "gallery").gallery.embeddings(),
                               atol=1e-6)
    assert json.loads((built / prebuilt.MANIFEST).read_text())["key"] == built.name
    assert not (copy / "pwned").exists()


@pytest.mark.slow
def test_an_unreachable_hub_repo_falls_back_to_building(published, models, tmp_path,
                                                        monkeypatch, caplog, hub_cache):
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "fresh-cache"))
    bundle = write_bundle(tmp_path / "bundle", models, {"repo": "me/caches", "revision": SHA})
    with caplog.at_level(logging.WARNING, logger="voiceface.persona_cache"):
        vf = VoiceFace.from_pretrained(bundle, progress=False)
    assert len(vf.gallery.people) == 3
    (line,) = [r.getMessage() for r in caplog.records if "prebuilt" in r.getMessage()]
    assert f"me/caches@{SHA}" in line and "HF_HUB_OFFLINE" in line


def test_a_manifest_naming_files_outside_the_cache_is_refused(tmp_path):
    """An attacker's repo: a manifest whose file names climb out of the cache, or name a file
    of a kind the cache never holds, installs nothing."""
    made_for = {"cache_format_version": persona_cache.CACHE_FORMAT_VERSION, "encoder": "e"}
    for i, name in enumerate(("../escaped.json", "/etc/passwd.json", "gallery/evil.pkl")):
        source = tmp_path / f"repo{i}"
        source.mkdir()
        (source / prebuilt.MANIFEST).write_text(json.dumps(
            {"made_for": made_for, "files": {name: {"bytes": 2, "sha256": "0"}}}))
        work = tmp_path / f"work{i}"
        with pytest.raises(prebuilt.Unusable, match="not a cache file"):
            prebuilt.install(str(source), None, made_for, work, {})
        assert not work.exists() and not (tmp_path / "escaped.json").exists()


def test_a_manifest_announcing_more_than_caches_take_is_refused_before_downloading(
        tmp_path, monkeypatch):
    made_for = {"cache_format_version": persona_cache.CACHE_FORMAT_VERSION, "encoder": "e"}
    source = tmp_path / "repo"
    source.mkdir()
    (source / prebuilt.MANIFEST).write_text(json.dumps({"made_for": made_for, "files": {
        "gallery/faces/a.png": {"bytes": prebuilt.MAX_CACHE_BYTES, "sha256": "0"},
        "mapper/mapper.safetensors": {"bytes": 1, "sha256": "0"}}}))
    fetched = []
    resolve = prebuilt.hub.resolve_dir
    monkeypatch.setattr(prebuilt.hub, "resolve_dir", lambda *a, **k: fetched.append(
        k["allow_patterns"]) or resolve(*a, **k))
    with pytest.raises(prebuilt.Unusable, match="more than the 256 MiB"):
        prebuilt.install(str(source), None, made_for, tmp_path / "work", {})
    assert fetched == [(prebuilt.MANIFEST,)]  # the manifest alone was fetched
    assert not (tmp_path / "work").exists()


def test_bundle_json_names_prebuilt_caches_at_a_pinned_commit(tmp_path):
    base = {"format_version": 1, "personas": str(PERSONAS_DIR)}
    (tmp_path / "caches").mkdir()
    spec = BundleSpec.from_dict({**base, "persona_caches": {"repo": "me/c", "revision": SHA}})
    assert (spec.persona_caches.repo, spec.persona_caches.revision) == ("me/c", SHA)
    local = BundleSpec.from_dict({**base, "persona_caches": {"repo": "caches"}}, tmp_path)
    assert local.persona_caches.revision is None
    for folder in ("left-out", "../elsewhere/caches", "./caches"):  # folders missing now: the
        # start falls back to building (a missing folder, above) instead of refusing bundle.json
        assert BundleSpec.from_dict({**base, "persona_caches": {"repo": folder}},
                                    tmp_path).persona_caches.repo == folder
    refusals = {'without a "revision"': {"repo": "me/c"},
                "not a branch or tag": {"repo": "me/c", "revision": "main"},
                'no "repo"': {"revision": SHA},
                "unknown keys 'sha'": {"repo": "me/c", "sha": SHA}}
    for why, given in refusals.items():
        with pytest.raises(BundleError, match=why):
            BundleSpec.from_dict({**base, "persona_caches": given}, tmp_path)
    with pytest.raises(BundleError, match='names no "personas"'):
        BundleSpec.from_dict({"format_version": 1,
                              "persona_caches": {"repo": "me/c", "revision": SHA}})


def test_the_space_card_preloads_the_prebuilt_caches_the_bundle_names(tmp_path):
    spec = json.loads((REPO / "index" / "bundle.json").read_text())
    assert "persona_caches" not in spec  # none until one is really published
    spec.update(personas=str(PERSONAS_DIR),
                persona_caches={"repo": "me/caches", "revision": SHA})
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "bundle.json").write_text(json.dumps(spec))
    plan = plan_publish(tmp_path / "index", space="me/demo", app_dir=REPO)
    (card,) = [u.content.decode() for u in plan.uploads if u.path_in_repo == "README.md"]
    front = card.split("---\n")[1]
    preload = front.split("preload_from_hub:\n")[1].splitlines()
    models = front.split("models:\n")[1].splitlines()
    assert "  - me/caches" in preload[:2] and "  - me/caches" in models[:2]
    (bundle_json,) = [u.content for u in plan.uploads if u.path_in_repo == "index/bundle.json"]
    assert json.loads(bundle_json)["persona_caches"] == {"repo": "me/caches", "revision": SHA}


def test_publish_personas_refuses_unclear_targets_and_built_bundles(dev_bundle, capsys):
    for argv, why in ((["publish-personas"], "or --to-dir DIR"),
                      (["publish-personas", "caches"], "not a Hub repo id"),
                      (["publish-personas", "me/c", "--bundle", str(dev_bundle)],
                       "not a personas bundle")):
        assert cli.main(argv) == cli.EXIT_BAD_INPUT
        assert why in capsys.readouterr().err
