"""Publishing plans: what goes to the Hub, what never does, and who is refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from itertools import takewhile
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import DEV_PEOPLE, REPO
from voiceface import personas
from voiceface.bundle import BundleError
from voiceface.enrolled import Enrolled
from voiceface.publish import PublishError, plan_publish, publish

PERSONAS_DIR = REPO / "assets" / "personas"  # the app's personas, which index/ names


def materialise(plan, repo_id, directory):
    """Write the files a plan would upload to `repo_id` into `directory`."""
    for upload in plan.uploads:
        if upload.repo_id == repo_id:
            target = directory / upload.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            data = upload.data()
            target.write_bytes(data if isinstance(data, bytes) else data.read_bytes())
    return directory


def test_default_gallery_plan_is_a_self_contained_personas_bundle(tmp_path):
    plan = plan_publish(REPO / "index", repo="me/voices", space="me/demo", app_dir=REPO)
    model = {u.path_in_repo for u in plan.uploads if u.repo_type == "model"}
    shipped_voices = personas.load_personas(PERSONAS_DIR)
    assert model == {"bundle.json", "personas/personas.json",
                     *(f"personas/voices/{p['id']}.opus" for p in shipped_voices)}
    assert plan.private and plan.variables == {"VOICEFACE_BUNDLE": "me/voices"}
    repo = materialise(plan, "me/voices", tmp_path / "repo")
    spec = json.loads((repo / "bundle.json").read_text())
    shipped = json.loads((REPO / "index" / "bundle.json").read_text())
    assert spec == {**shipped, "personas": "personas"}
    assert personas.personas_fingerprint(repo / "personas") == \
        personas.personas_fingerprint(PERSONAS_DIR)
    text = plan.describe()
    assert "model repo me/voices (private): 50 files" in text and "synthetic" in text


def test_space_plan_carries_the_app_and_points_at_the_bundle(tmp_path):
    plan = plan_publish(REPO / "index", repo="me/voices", space="me/demo", private=False,
                        app_dir=REPO)
    space = materialise(plan, "me/demo", tmp_path / "space")
    assert (space / "app.py").read_bytes() == (REPO / "app.py").read_bytes()
    assert (space / "voiceface" / "pipeline.py").is_file()
    assert (space / "requirements.txt").is_file() and (space / "packages.txt").is_file()
    readme = (space / "README.md").read_text()
    front = readme.split("---\n")[1]
    assert "title: demo" in front and "  - me/voices" in front
    lines = front.splitlines()
    for key in ("models:", "preload_from_hub:"):  # an item of each of these YAML lists
        items = takewhile(lambda line: line.startswith("  - "), lines[lines.index(key) + 1:])
        assert "  - me/voices" in items, key
    assert readme.split("---\n", 2)[2] == (REPO / "README.md").read_text().split("---\n", 2)[2]
    assert not list(space.rglob("*.opus"))  # the Space reads the personas from the repo


@pytest.mark.slow
def test_a_space_gets_the_whole_package_from_the_app_directory(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(REPO / "voiceface", app / "voiceface")
    for name in ("app.py", "requirements.txt", "packages.txt", "README.md"):
        shutil.copy(REPO / name, app / name)
    (app / "voiceface" / "ui").mkdir(exist_ok=True)
    (app / "voiceface" / "ui" / "identify.py").write_text("TAB = 'identify'\n")
    (app / "voiceface" / "ui" / "__pycache__").mkdir(exist_ok=True)
    (app / "voiceface" / "ui" / "__pycache__" / "identify.cpython-311.pyc").write_bytes(b"x")
    plan = plan_publish(REPO / "index", repo="me/voices", space="me/demo", app_dir=app)
    paths = {u.path_in_repo for u in plan.uploads if u.repo_id == "me/demo"}
    assert {"app.py", "voiceface/__init__.py", "voiceface/ui/identify.py",
            "voiceface/data/astronaut.jpg"} <= paths
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in paths)
    (app / "app.py").unlink()
    with pytest.raises(PublishError, match="is not the app's directory: it has no app.py.*"
                                           "--app-dir"):
        plan_publish(REPO / "index", space="me/demo", app_dir=app)
    proc = subprocess.run([sys.executable, "-m", "voiceface", "publish", str(REPO / "index"),
                           "--space", "me/demo", "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "has no app.py" in proc.stderr


def test_space_alone_ships_the_default_personas(tmp_path):
    plan = plan_publish(REPO / "index", space="me/demo", app_dir=REPO)
    space = materialise(plan, "me/demo", tmp_path / "space")
    # the pages the Space card links to come along, so no link on the Space is broken
    card = (space / "README.md").read_text()
    linked = set(re.findall(r"\]\(((?:docs/|CONTRIBUTING|benchmarks/)[^)#]*)", card))
    assert linked and all((space / path).is_file() for path in linked), linked
    spec = json.loads((space / "index" / "bundle.json").read_text())
    assert (space / "index" / spec["personas"] / "personas.json").is_file()
    assert len(list((space / "assets" / "personas" / "voices").glob("*.opus"))) == 48
    assert plan.variables == {}


@pytest.fixture
def built_bundle(dev_bundle, tmp_path):
    """A copy of the dev bundle that claims to be real (publishing refuses test weights)."""
    root = shutil.copytree(dev_bundle, tmp_path / "built")
    (root / ".cache" / "voices").mkdir(parents=True)
    (root / ".cache" / "voices" / "x.npy").write_bytes(b"cached embeddings")
    (root / "windows.npy").write_bytes(b"per-window embeddings")
    (root / "build.json").write_text(json.dumps({  # as `build` writes it, with a refusal
        "enrolled": ["dev00"], "problems": [["/home/me/people/jane_doe", "no consent"]],
        "people_dir": "/home/me/people", "seconds": {"embed": 1.0}, "mapper": None,
        "some_later_key": "/home/me/elsewhere"}))
    spec = json.loads((root / "bundle.json").read_text())
    (root / "bundle.json").write_text(json.dumps({**spec, "test_weights": False}))
    return root


def test_built_bundle_plan_leaves_voice_recordings_out_unless_asked(built_bundle):
    plan = plan_publish(built_bundle, repo="me/gallery")
    paths = {u.path_in_repo for u in plan.uploads}
    assert "bundle.json" in paths and "gallery/manifest.json" in paths
    assert any(p.startswith("mapper/") for p in paths)
    assert any(p.startswith("gallery/faces/") for p in paths)
    assert not any(p.startswith(("voices/", ".cache")) for p in paths)
    assert "windows.npy" not in paths and "windows.npy" in plan.left_out
    assert any(p.startswith("voices/") for p in plan.left_out)
    assert "left out (voice recordings" in plan.describe()
    with_voices = plan_publish(built_bundle, repo="me/gallery", include_voices=True)
    assert {u.path_in_repo for u in with_voices.uploads} >= set(plan.left_out)


def test_build_report_is_published_without_local_paths_or_refused_people(built_bundle,
                                                                          tmp_path):
    plan = plan_publish(built_bundle, repo="me/gallery")
    report = json.loads((materialise(plan, "me/gallery", tmp_path / "repo") / "build.json")
                        .read_text())
    assert report == {"enrolled": ["dev00"], "seconds": {"embed": 1.0}, "mapper": None}
    assert "people_dir" in json.loads((built_bundle / "build.json").read_text())  # kept home
    assert any("build.json goes without" in note for note in plan.notes)


def with_local_details(bundle, people_dir):
    """The bundle as `build` and `eval` leave it for this people folder: a person.json's
    extra keys in the gallery, the folder's path in build.json and eval/report.json."""
    enrolled = Enrolled.load(bundle / "gallery")
    gallery = enrolled.gallery
    person = gallery.people[0]
    gallery.update(person.id, extra={"phone": "+81-90-SECRET"})  # build keeps other keys
    enrolled.save(bundle / "gallery")
    (bundle / "build.json").write_text(json.dumps({
        "enrolled": [p.id for p in gallery.people], "seconds": {"embed": 1.0}, "mapper": None,
        "problems": [[str(people_dir / "noconsent"), "no consent recorded"]],
        "people_dir": str(people_dir)}))
    (bundle / "eval").mkdir()
    (bundle / "eval" / "report.json").write_text(json.dumps({  # as `voiceface eval` writes it
        "people": len(gallery), "seed": 0, "folds": 5, "false_alarm_rate": 0.01,
        "identification": {"top1": 0.5}, "generation": {"note": "too few people"},
        "verification": {"mated_trials": 4}, "people_dir": str(people_dir)}))
    return person


@pytest.mark.parametrize("include_voices", [False, True], ids=["default", "with-voices"])
def test_nothing_uploaded_names_the_people_folder_or_other_person_keys(built_bundle, tmp_path,
                                                                       include_voices):
    people_dir = tmp_path / "people"
    (people_dir / "person01").mkdir(parents=True)
    (people_dir / "person01" / "person.json").write_text(json.dumps(
        {"name": "Dev person 1", "consent": True, "phone": "+81-90-SECRET"}))
    person = with_local_details(built_bundle, people_dir)
    plan = plan_publish(built_bundle, repo="me/gallery", space="me/demo",
                        include_voices=include_voices)
    uploaded = {}
    for repo_id in ("me/gallery", "me/demo"):
        root = materialise(plan, repo_id, tmp_path / repo_id)
        uploaded.update({f: f.read_bytes() for f in root.rglob("*") if f.is_file()})
    assert len(uploaded) == len(plan.uploads)
    for needle in (str(people_dir), str(built_bundle), "+81-90-SECRET", '"phone"'):
        assert not [f for f, data in uploaded.items() if needle.encode() in data], needle
    repo = tmp_path / "me/gallery"
    published = Enrolled.load(repo / "gallery").gallery
    assert [(p.id, p.name, p.consent, p.n_clips, p.extra) for p in published.people] == [
        (p.id, p.name, p.consent, p.n_clips, {}) for p in Enrolled.load(
            built_bundle / "gallery").gallery.people]
    assert published.person(person.id).faces[0].read_bytes() == \
        Enrolled.load(built_bundle / "gallery").gallery.person(person.id).faces[0].read_bytes()
    assert json.loads((repo / "eval" / "report.json").read_text()) == {
        "people": DEV_PEOPLE, "seed": 0, "folds": 5, "false_alarm_rate": 0.01,
        "identification": {"top1": 0.5}, "generation": {"note": "too few people"},
        "verification": {"mated_trials": 4}}
    assert "eval/report.json goes without the local people folder's path" in plan.describe()


def test_a_file_naming_the_people_folder_stops_the_publication(built_bundle, tmp_path):
    people_dir = tmp_path / "people"
    with_local_details(built_bundle, people_dir)
    (built_bundle / "eval" / "notes.md").write_text(f"built from {people_dir}/person01\n")
    with pytest.raises(PublishError, match=rf"eval/notes.md \(for me/gallery\) contains the "
                                           rf"local path {people_dir}; nothing was published"):
        plan_publish(built_bundle, repo="me/gallery")


@pytest.mark.slow
def test_people_without_consent_stop_the_whole_publication(built_bundle):
    enrolled = Enrolled.load(built_bundle / "gallery")
    gallery = enrolled.gallery
    person = gallery.people[2]
    gallery.remove(person.id)
    gallery.add(person.id, gallery_embedding(gallery), name=person.name, consent=False)
    enrolled.save(built_bundle / "gallery")
    with pytest.raises(PublishError, match=rf"no recorded consent: {person.id}\. Nothing was "):
        plan_publish(built_bundle, repo="me/gallery")
    proc = subprocess.run([sys.executable, "-m", "voiceface", "publish", str(built_bundle),
                           "--repo", "me/gallery", "--dry-run"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "no recorded consent" in proc.stderr
    assert "Traceback" not in proc.stderr


def gallery_embedding(gallery):
    e = np.random.default_rng(0).standard_normal(gallery.dim).astype(np.float32)
    return e / np.linalg.norm(e)


def test_test_bundles_and_bad_repo_ids_are_refused(dev_bundle):
    with pytest.raises(PublishError, match="tiny random test models"):
        plan_publish(dev_bundle, repo="me/gallery")
    with pytest.raises(PublishError, match="USER/NAME"):
        plan_publish(REPO / "index", repo="gallery")
    with pytest.raises(PublishError, match="Nothing to publish to"):
        plan_publish(REPO / "index")


@pytest.mark.slow
def test_cli_dry_run_lists_the_plan_and_uploads_nothing():
    proc = subprocess.run([sys.executable, "-m", "voiceface", "publish", "--repo", "me/voices",
                           "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0
    assert "personas/voices/persona48.opus" in proc.stdout
    assert proc.stdout.rstrip().endswith("dry run: nothing was uploaded")


def test_publish_creates_private_repos_commits_the_plan_and_sets_the_variable():
    calls = []

    class RecordingApi:  # stands in for huggingface_hub.HfApi: the Hub is not reachable here
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def create_commit(self, repo_id, operations, **kwargs):
            calls.append(("create_commit", repo_id, [op.path_in_repo for op in operations],
                          kwargs))
            return SimpleNamespace(commit_url=f"https://hub/{repo_id}/commit/1")

        def add_space_variable(self, repo_id, key, value):
            calls.append(("add_space_variable", repo_id, key, value))

    plan = plan_publish(REPO / "index", repo="me/voices", space="me/demo", app_dir=REPO)
    urls = publish(plan, api=RecordingApi())
    assert urls == ["https://hub/me/voices/commit/1", "https://hub/me/demo/commit/1"]
    assert calls[0] == ("create_repo", "me/voices",
                        {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[2][:2] == ("create_repo", "me/demo") and calls[2][2]["space_sdk"] == "gradio"
    model_commit = calls[1]
    assert sorted(model_commit[2]) == sorted(u.path_in_repo for u in plan.uploads
                                             if u.repo_id == "me/voices")
    assert calls[-1] == ("add_space_variable", "me/demo", "VOICEFACE_BUNDLE", "me/voices")


def test_a_bundle_naming_local_models_gets_a_warning(built_bundle):
    spec = json.loads((built_bundle / "bundle.json").read_text())
    spec["encoder"]["name_or_path"] = "/home/me/encoder"
    (built_bundle / "bundle.json").write_text(json.dumps(spec))
    notes = plan_publish(built_bundle, repo="me/gallery").notes
    assert any("local encoder (/home/me/encoder)" in n for n in notes)
    assert not any("generator" in n for n in notes)


def test_a_bad_bundle_json_is_refused_before_anything_is_planned(built_bundle):
    spec = json.loads((built_bundle / "bundle.json").read_text())
    (built_bundle / "bundle.json").write_text(json.dumps({**spec, "truncation": "high"}))
    with pytest.raises(BundleError, match="key 'truncation' is a string"):
        plan_publish(built_bundle, repo="me/gallery")
