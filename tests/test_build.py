"""build: a people folder (with bad data in it) -> a bundle; eval: an honest report on it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from PIL import Image

from conftest import REPO, serve_app
from voiceface import build as build_module
from voiceface.audio import SAMPLE_RATE, load_audio
from voiceface.build import BuildConfig, BuildReport, Cache, PersonFolder, build, scan_people
from voiceface.calibration import WINDOWS_METHOD, best_non_mated, threshold_at_far
from voiceface.devbundle import (TINY_GENERATOR, synthetic_voice, write_people_folder,
                                 write_random_backbone)
from voiceface.evaluate import evaluate, markdown, score_range, write_report
from voiceface.enrolled import Enrolled
from voiceface.invert import InversionConfig, Inverter
from voiceface.pipeline import VoiceFace
from voiceface.stylegan2 import Generator
from voiceface.trait_inputs import trait_features
from voiceface.traits import measure
from voiceface.voice import VoiceEncoder, split_for_evaluation, window_bounds

GOOD_PEOPLE = 5  # in the people folder; person01 is then made ambiguous by "Person01"
ENROLLED = GOOD_PEOPLE - 1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_xvector_dir):
    root = tmp_path_factory.mktemp("build-models")
    Generator(TINY_GENERATOR, seed=1).save_pretrained(root / "generator")
    return BuildConfig(encoder=str(tiny_xvector_dir), encoder_revision=None,
                       generator=str(root / "generator"), generator_revision=None,
                       inversion=InversionConfig(steps=3, n_init=2, resolution=32,
                                                 backbone=str(write_random_backbone(
                                                     root / "backbone")), revision=None))


def no_face_photo(path):
    gradient = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    Image.fromarray(gradient).save(path)


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Good people and every kind of bad data beside them."""
    root = write_people_folder(tmp_path_factory.mktemp("people") / "people", GOOD_PEOPLE)
    good = root / "person01"
    # a good person with one broken recording and one photo without a face
    (root / "person02" / "voice3.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    no_face_photo(root / "person02" / "face0.png")
    (root / "person03" / "face9.jpg").write_text("not a photo")
    # people who cannot be enrolled
    shutil.copytree(good, root / "noconsent")
    (root / "noconsent" / "person.json").write_text(json.dumps({"name": "X", "consent": False}))
    shutil.copytree(good, root / "noface")
    for photo in (root / "noface").glob("face*"):
        no_face_photo(photo)
    shutil.copytree(good, root / "silent")
    for voice in (root / "silent").glob("voice*"):
        voice.unlink()
    sf.write(root / "silent" / "voice1.wav", np.zeros(32000, np.float32), 16000)
    shutil.copytree(good, root / "Person01")  # the same id as person01 but for letter case
    shutil.copytree(good, root / "bad name!")
    shutil.copytree(root / "person02", root / "samename")  # after person02: it keeps the name
    (root / "samename" / "person.json").write_text(json.dumps({"name": "DEV  person 2",
                                                               "consent": True}))
    (root / "brokenjson").mkdir()
    (root / "brokenjson" / "person.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def built(people, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "index"
    report = build(people, out, models, progress=False)
    return out, report


def reasons(report) -> dict[str, str]:
    return {path.split("/people/")[-1]: reason for path, reason in report.problems}


@pytest.mark.slow
def test_build_enrolls_the_good_people_and_reports_every_bad_file(built):
    out, report = built
    assert report.enrolled == [f"person{i:02d}" for i in range(2, GOOD_PEOPLE + 1)]
    why = reasons(report)
    assert "could not be decoded" in why["person02/voice3.wav"]
    assert "No face found in face0.png" in why["person02/face0.png"]
    assert "face9.jpg" in why["person03/face9.jpg"]
    assert "no consent recorded" in why["noconsent"]
    assert "No face found" in why["noface/face1.jpg"] and "no usable photo" in why["noface"]
    assert "silent" in why["silent/voice1.wav"] and "no usable recording" in why["silent"]
    assert "duplicate id" in why["person01"] and "duplicate id" in why["Person01"]
    assert "not a valid person id" in why["bad name!"]
    assert why["samename/person.json"] == (
        "DEV person 2 looks the same as Dev person 2, already enrolled (id person02); add a "
        "family name or initial to tell them apart. Skipped.")
    assert "unreadable" in why["brokenjson/person.json"]
    assert set(report.seconds) == {"embed", "align", "invert", "mapper", "face2voice"}


@pytest.mark.slow
def test_the_build_calibrates_the_threshold_on_every_window(built, people, models, tmp_path):
    out, report = built
    enrolled = Enrolled.load(out / "gallery")
    gallery = enrolled.gallery
    windows = np.load(out / "windows.npy")
    owners = [r["person"] for r in json.loads((out / "windows.json").read_text())]
    scores = best_non_mated(windows, owners, gallery.embeddings(), [p.id for p in gallery.people])
    threshold, accepted = threshold_at_far(scores, 0.01)
    c = enrolled.calibrations.open_set
    assert (c.threshold, c.trials, c.accepted, c.far_target, c.method) == \
        (threshold, len(windows), accepted, 0.01, WINDOWS_METHOD)
    assert c.far_achieved == accepted / len(windows) and gallery.threshold == threshold
    assert c.encoder_fingerprint == gallery.encoder_fingerprint
    assert report.calibration == c.to_dict() and "open set: threshold" in report.summary()

    # a rebuild with one person has nothing to calibrate on: the measured threshold stays
    copy = shutil.copytree(out, tmp_path / "index")
    alone = tmp_path / "alone"
    shutil.copytree(people / "person03", alone / "person03")
    build(alone, copy, models, progress=False)
    assert Enrolled.load(copy / "gallery").calibrations.open_set == c


@pytest.mark.slow
def test_a_single_recording_is_split_in_time_before_it_is_windowed(tiny_xvector_dir, tmp_path):
    n = 12 * SAMPLE_RATE
    parts = split_for_evaluation(n)
    assert parts == [("enroll", 0, 134_400), ("held_out", 134_400, n)]  # cut at 8.4 s
    enroll, held = ([(a + s, a + e) for s, e in window_bounds(b - a)] for _, a, b in parts)
    assert max(e for _, e in enroll) <= min(s for s, _ in held)  # no sample in both
    assert window_bounds(n) == [(0, 160_000), (32_000, n)]  # windowing first overlapped 8 s
    assert split_for_evaluation(3 * SAMPLE_RATE) == [("enroll", 0, 3 * SAMPLE_RATE)]

    # build embeds each part on its own
    path = tmp_path / "voice.flac"
    sf.write(path, synthetic_voice(12.0, seed=3), SAMPLE_RATE)
    encoder = VoiceEncoder.from_pretrained(tiny_xvector_dir)
    got = build_module._embed(encoder, path, Cache(tmp_path / "cache"), BuildReport(), True)
    wav = load_audio(path, max_seconds=None)
    (_, _, cut), _ = split_for_evaluation(len(wav))
    np.testing.assert_allclose(got["enroll"], encoder.embed_windows(wav[:cut]), atol=1e-6)
    np.testing.assert_allclose(got["held_out"], encoder.embed_windows(wav[cut:]), atol=1e-6)


@pytest.mark.slow
def test_a_person_left_with_one_usable_recording_has_it_split(tiny_xvector_dir, tmp_path):
    """Two recordings, one broken: the one left is split in time like a single recording."""
    good, broken = tmp_path / "voice1.flac", tmp_path / "voice2.wav"
    sf.write(good, synthetic_voice(12.0, seed=4), SAMPLE_RATE)
    broken.write_bytes(np.random.default_rng(1).bytes(3000))
    person = PersonFolder("p1", "P", [], [good, broken], {})
    report = BuildReport()
    encoder = VoiceEncoder.from_pretrained(tiny_xvector_dir)
    windows, traits, rows = build_module._embed_person(encoder, person, Cache(tmp_path / "c"),
                                                       report)
    assert {r["recording"] for r in rows} == {"voice1.flac"}
    assert [r["part"] for r in rows] == ["enroll", "held_out"]  # 8.4 s and 3.6 s: a window each
    assert sum(len(w) for w in windows) == len(rows)
    # each window's traits, measured on the same part as its embedding
    wav = load_audio(good, max_seconds=None)
    (_, _, cut), _ = split_for_evaluation(len(wav))
    np.testing.assert_array_equal(np.concatenate(traits), np.stack(
        [trait_features(measure(wav[:cut])), trait_features(measure(wav[cut:]))]))
    assert [path for path, _ in report.problems] == [str(broken)]  # reported once


@pytest.mark.slow
def test_the_built_bundle_serves_predictions(built, people):
    out, _ = built
    vf = VoiceFace.from_pretrained(out, progress=False)
    assert [p.id for p in vf.gallery.people] == [f"person{i:02d}" for i in range(2, GOOD_PEOPLE + 1)]
    assert vf.gallery.people[0].name == "Dev person 2"
    assert all(p.faces[0].is_file() and p.consent for p in vf.gallery.people)
    assert len(vf.state.latents) == ENROLLED and vf.mapper is not None
    assert np.array_equal(vf.mapper.centre.numpy(), vf.state.latents.centre)
    result = vf(people / "person03" / "voice2.flac")
    assert result.method == "mapper" and result.matches[0].id == "person03"
    # the mapper took each window's voice traits; each person keeps two numbers of them
    assert vf.mapper.takes_traits and result.voice_traits is not None
    assert all(set(p.extra["voice_traits"]) == {"pitch_hz", "sex_score"}
               for p in vf.gallery.people)
    windows = np.load(out / "windows.npy")
    rows = json.loads((out / "windows.json").read_text())
    assert len(windows) == len(rows) and {r["person"] for r in rows} == set(
        p.id for p in vf.gallery.people)


@pytest.mark.slow
def test_unchanged_people_are_not_recomputed(built, people, models, monkeypatch):
    out, first = built
    monkeypatch.setattr(Inverter, "invert", lambda *a, **k: pytest.fail("inverted again"))
    monkeypatch.setattr(build_module.faces, "align",
                        lambda *a, **k: pytest.fail("aligned a photo again"))
    monkeypatch.setattr(build_module, "window_trait_features",
                        lambda *a, **k: pytest.fail("measured a voice's traits again"))
    again = build(people, out, models, progress=False)
    assert again.enrolled == first.enrolled
    assert again.cached["latents"] == ENROLLED
    assert again.cached["voices"] >= 2 * ENROLLED


@pytest.mark.slow
def test_a_failed_build_loses_nothing_and_deletion_is_complete(built, people, models, tmp_path):
    out, _ = built
    copy = shutil.copytree(out, tmp_path / "index")
    before = Enrolled.load(copy / "gallery").gallery
    empty = tmp_path / "nobody"
    (empty / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="can be enrolled"):
        build(empty, copy, models, progress=False)
    after = Enrolled.load(copy / "gallery").gallery
    assert [p.id for p in after.people] == [p.id for p in before.people]

    fewer = shutil.copytree(people, tmp_path / "people")
    shutil.rmtree(fewer / "person05")
    cached_before = {p.name for p in (copy / ".cache").rglob("*") if p.is_file()}
    build(fewer, copy, models, progress=False)
    gallery = Enrolled.load(copy / "gallery").gallery
    assert "person05" not in gallery
    cached_after = {p.name for p in (copy / ".cache").rglob("*") if p.is_file()}
    assert cached_after < cached_before  # person05's embeddings, photos and latent are gone
    assert "person05.jpg" in cached_before and "person05.jpg" not in cached_after
    assert "person05" not in (copy / "windows.json").read_text()


@pytest.mark.slow
def test_with_one_person_no_mapper_of_the_old_bundle_survives(built, people, models, tmp_path):
    out, _ = built
    copy = shutil.copytree(out, tmp_path / "index")
    (copy / "voices").mkdir()
    (copy / "voices" / "example.flac").write_bytes(b"an example recording")
    (copy / "eval").mkdir()
    (copy / "eval" / "report.json").write_text("{}")  # a report on the old gallery
    one = tmp_path / "one"
    shutil.copytree(people / "person03", one / "person03")
    report = build(one, copy, models, progress=False)
    assert report.enrolled == ["person03"] and report.mapper is None
    assert report.cached["latents"] == 1 and report.cached["voices"] == 2  # the cache survived
    vf = VoiceFace.from_pretrained(copy, progress=False)
    assert vf.mapper is None and [p.id for p in vf.gallery.people] == ["person03"]
    assert sorted(p.name for p in copy.iterdir()) == [
        ".cache", "build.json", "bundle.json", "face2voice", "gallery", "voices",
        "windows.json", "windows.npy"]
    assert vf.face2voice(people / "person03" / "face1.jpg").method == "knn-blend"  # no mapper
    assert (copy / "voices" / "example.flac").read_bytes() == b"an example recording"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "one"]  # no leftovers


@pytest.mark.slow
def test_a_folder_that_is_not_a_bundle_is_not_replaced(people, models, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no bundle.json, and a build "
                                         "replaces the whole folder"):
        build(people, tmp_path, models, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


KILLED_BUILDS = """
import json, os, shutil, sys, traceback
from tests.crashes import KillAt
from voiceface import build, storage
from voiceface.invert import InversionConfig

people, config, runs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
config = build.BuildConfig(**{**config, "inversion": InversionConfig(**config["inversion"])})


def killed_build(out, kill_at):
    killer = KillAt(kill_at)
    # every change on disk: file writes, renames (gallery data, swap), the exchange, deletions
    storage.write_bytes = killer.wrap(storage.write_bytes)
    storage._exchange = killer.wrap(storage._exchange)
    os.rename = killer.wrap(os.rename)
    shutil.rmtree = killer.wrap(shutil.rmtree)
    build.build(people, out, config, progress=False)
    return killer.count


results = []
for out, kill_at in runs:  # a forked process per build: the imports are paid once
    read, write = os.pipe()
    if os.fork() == 0:
        try:
            os.write(write, str(killed_build(out, kill_at)).encode())
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    os.close(write)
    _, status = os.wait()
    calls = os.read(read, 64).decode()
    os.close(read)
    results.append({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "calls": int(calls) if calls else None})
print(json.dumps(results))
"""


def run_killed_builds(people, models, runs):
    """Build from `people` into each (bundle, k), killed by SIGKILL before its k-th change on
    disk (k = 0: never); the result of each: its signal, exit status and changes counted."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED_BUILDS, str(people),
                           json.dumps(build_module._jsonable(models)),
                           json.dumps([(str(out), k) for out, k in runs])],
                          cwd=REPO, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def tree_digest(root):
    """Every file of a bundle but its cache, by content."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.parts}


def bundle_state(root):
    """What a reader gets: the gallery, the windows, the report's people, the mapper."""
    gallery = Enrolled.load(root / "gallery").gallery
    return ([p.id for p in gallery.people], gallery.embeddings().tobytes(),
            (root / "windows.npy").read_bytes(), (root / "windows.json").read_text(),
            json.loads((root / "build.json").read_text())["enrolled"],
            (root / "mapper").is_dir(), (root / "bundle.json").read_text())


@pytest.mark.slow
def test_a_build_killed_at_any_step_leaves_the_old_bundle_or_the_new_one(built, people,
                                                                        models, tmp_path):
    """SIGKILL before each change the build makes on disk (kill points counted in a first,
    complete run): the bundle is the old one, byte for byte, or the complete new one."""
    out, _ = built
    one = tmp_path / "one"
    shutil.copytree(people / "person03", one / "person03")
    new = shutil.copytree(out, tmp_path / "new" / "index")
    (complete,) = run_killed_builds(one, models, [(new, 0)])
    assert complete["exit"] == 0
    steps = complete["calls"]
    new_state, old_digest = bundle_state(new), tree_digest(out)
    assert new_state[0] == ["person03"] and not new_state[5]
    runs = [(shutil.copytree(out, tmp_path / f"kill{k}" / "index"), k)
            for k in range(1, steps + 1)]
    outcomes, left_behind = [], []
    for (index, kill_at), killed in zip(runs, run_killed_builds(one, models, runs)):
        assert killed["signal"] == signal.SIGKILL, kill_at
        if tree_digest(index) == old_digest:
            outcomes.append("old")
        else:
            assert bundle_state(index) == new_state, f"kill {kill_at}: a mix of old and new"
            outcomes.append("new")
        if len(list(index.parent.iterdir())) > 1:
            left_behind.append(index)
    assert outcomes == sorted(outcomes, reverse=True)  # old ... old, new ... new
    assert "old" in outcomes and "new" in outcomes
    # the next build cleans up what a killed one left beside the bundle (the old tree, just
    # swapped out, from a kill before its deletion)
    index = left_behind[-1]
    build(one, index, models, progress=False)
    assert [p.name for p in index.parent.iterdir()] == ["index"]
    assert bundle_state(index)[0] == ["person03"]


@pytest.mark.slow
def test_eval_reports_identification_and_generation(built, tmp_path):
    out, _ = built
    report = evaluate(out, folds=2)
    ident, gen = report["identification"], report["generation"]
    assert report["people"] == ENROLLED and report["folds"] == 2
    assert ident["trials"] >= ENROLLED and ident["chance_top1"] == 1 / ENROLLED
    assert 0 <= ident["eer"] <= 1 and -1 <= ident["open_set_threshold"] <= 1
    assert set(gen) == {"mapper", "knn-blend", "population-mean", "w_avg"}
    generated = report["generated_latents"]
    assert generated["to_population_centre"] >= 0 and generated["to_w_avg"] >= 0
    low, high = gen["mapper"]["matching_1to2_ci95"]
    assert low <= gen["mapper"]["matching_1to2"] <= high
    paths = write_report(report, tmp_path / "eval")
    assert [p.name for p in paths] == ["report.json", "report.md", "report.png", "det.png"]
    assert Image.open(paths[2]).size[0] > 500
    assert f"N = {ENROLLED} people" in markdown(report)
    verification = report["verification"]  # the same held-out windows as 1:1 trials
    assert verification["mated_trials"] == ident["trials"]
    assert verification["non_mated_trials"] == ident["trials"] * (ENROLLED - 1)
    assert set(verification["scores"]) == {"raw-cosine", "as-norm"}
    assert verification["gallery_verification"] == \
        Enrolled.load(out / "gallery").calibrations.verification.to_dict()


@pytest.mark.slow
def test_eval_cli_checks_the_folder_and_sets_the_threshold(built, people, tmp_path):
    out, _ = built
    index = shutil.copytree(out, tmp_path / "index")
    run = [sys.executable, "-m", "voiceface", "eval"]
    wrong = subprocess.run([*run, str(tmp_path), "--bundle", str(index)], cwd=REPO,
                           capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and "was not built from" in wrong.stderr
    ok = subprocess.run([*run, str(people), "--bundle", str(index), "--folds", "2"], cwd=REPO,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    report = json.loads((index / "eval" / "report.json").read_text())
    threshold = report["identification"]["open_set_threshold"]
    enrolled = Enrolled.load(index / "gallery")
    assert enrolled.gallery.threshold == threshold
    assert enrolled.calibrations.open_set.to_dict() == report["identification"]["calibration"]
    assert f"the gallery now uses this threshold {threshold:.4f}: accepts" in ok.stdout


def synthetic_index(directory, n=16, dim=8, windows=4, seed=0, part=None, shuffle=False):
    """An index whose truth is known: clustered voices; latents a linear function of them
    (with `shuffle`, of someone else's voice: the voice says nothing about the latent)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mix = rng.standard_normal((dim, 6))
    latent_source = rng.permutation(centres) if shuffle else centres
    enrolled = Enrolled.new(dim, "enc", latent_dim=6, generator_fingerprint="gen")
    rows, all_windows = [], []
    for i, c in enumerate(centres):
        w = c + 0.05 * rng.standard_normal((windows, dim))
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        all_windows.append(w)
        rows += [{"person": f"p{i}", "recording": f"r{j // 2}.wav", "window": j % 2}
                 if part is None else
                 {"person": f"p{i}", "recording": "r.wav", "window": j, "part": part(j)}
                 for j in range(windows)]
        enrolled.gallery.add(f"p{i}", c, consent=True)
        enrolled.latents.set(f"p{i}", (latent_source[i] @ mix).astype(np.float32))
    enrolled.save(directory / "gallery")
    np.save(directory / "windows.npy", np.concatenate(all_windows).astype(np.float32))
    (directory / "windows.json").write_text(json.dumps(rows))
    return directory


@pytest.mark.slow
def test_eval_metrics_on_a_gallery_whose_answers_are_known(tmp_path):
    report = evaluate(synthetic_index(tmp_path), folds=4, w_avg=np.zeros(6, np.float32))
    ident, gen = report["identification"], report["generation"]
    assert ident["top1"] == 1.0 and ident["eer"] == 0.0
    assert ident["trials"] == 16 * 2  # each person's second recording held out
    assert ident["detection_and_identification_rate"] > 0.9
    c = ident["calibration"]  # 32 trials cannot measure 1 %: none is accepted, and it says so
    assert (c["trials"], c["accepted"], c["far_achieved"]) == (32, 0, 0.0)
    assert "32 trials cannot measure 1.0% (the finest rate is 3.1%)" in markdown(report)
    assert list(report) == ["people", "seed", "folds", "false_alarm_rate", "gallery_calibration",
                            "identification", "verification", "generation",
                            "generated_latents", "face2voice", "traits"]
    raw = report["verification"]["scores"]["raw-cosine"]  # 16 x 2 mated, x 15 non-mated
    assert (raw["threshold"]["mated_trials"], raw["threshold"]["non_mated_trials"]) == (32, 480)
    assert raw["eer"] == 0.0  # tight clusters: every mated cosine above every non-mated
    # a learnable voice -> latent relation: the mapper beats the mean face and chance
    assert gen["mapper"]["R@1"] > 2 * gen["mapper"]["chance_R@1"]
    assert gen["mapper"]["matching_1to2"] > gen["w_avg"]["matching_1to2"] + 0.2
    assert gen["mapper"]["matching_1to2_ci95"][0] > 0.5
    # w_avg = 0: each latent's distance to it is its norm, which differs from its distance to
    # its fold's centre by at most that centre's norm, a mean of latents (triangle inequality)
    generated = report["generated_latents"]
    _, truth = Enrolled.load(tmp_path / "gallery").latents.rows()
    assert abs(generated["to_w_avg"] - generated["to_population_centre"]) <= \
        np.linalg.norm(truth, axis=1).max()


@pytest.mark.slow
def test_eval_compares_the_mapper_with_the_population_mean(tmp_path):
    """The population mean is the guess to beat; the report says plainly whether the mapper
    does, and how far its latents lie from the population centre and from w_avg."""
    far_w_avg = np.full(6, 10.0, np.float32)  # the generator's average face, far away
    learnable = evaluate(synthetic_index(tmp_path / "a"), folds=4, w_avg=far_w_avg)
    gen, generated = learnable["generation"], learnable["generated_latents"]
    assert list(gen) == ["mapper", "knn-blend", "population-mean", "w_avg"]
    assert generated["better_than_guessing"] is True
    assert gen["mapper"]["matching_1to2_ci95"][0] > gen["population-mean"]["matching_1to2"]
    assert generated["to_w_avg"] > 5 * generated["to_population_centre"]
    text = markdown(learnable)
    assert "| population-mean |" in text and "**Better than guessing**" in text
    assert (f"lie on average {generated['to_population_centre']:.3f} from the population "
            f"centre and {generated['to_w_avg']:.3f} from the generator's w_avg.") in text
    noise = evaluate(synthetic_index(tmp_path / "b", shuffle=True), folds=4)
    assert noise["generated_latents"]["better_than_guessing"] is False
    assert "w_avg" not in noise["generation"] and noise["generated_latents"]["to_w_avg"] is None
    assert "**Not better than guessing**: the mapper's 1:2 matching" in markdown(noise)


@pytest.mark.slow
def test_eval_holds_out_the_held_out_part_of_a_single_recording(tmp_path):
    index = synthetic_index(tmp_path, part=lambda j: "held_out" if j == 3 else "enroll")
    assert evaluate(index, folds=4)["identification"]["trials"] == 16  # one window each
    rows = json.loads((index / "windows.json").read_text())
    (index / "windows.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "part"}
                                                   for r in rows]))
    assert "note" in evaluate(index, folds=4)["identification"]  # unsplit: nothing held out


def test_the_score_plot_zooms_to_the_scores_and_the_threshold():
    ident = {"genuine_scores": [0.91, 0.95], "impostor_scores_sample": [0.62, 0.8],
             "non_mated_best_scores": [0.7, 0.8], "calibration": {"threshold": 0.85}}
    assert score_range(ident) == pytest.approx((0.587, 0.983))  # 10 % of 0.62-0.95 added
    ident["calibration"]["threshold"] = 0.5
    assert score_range(ident) == pytest.approx((0.455, 0.995))
    same = {**ident, "genuine_scores": [1.0], "impostor_scores_sample": [1.0],
            "non_mated_best_scores": [1.0], "calibration": {"threshold": 1.0}}
    assert score_range(same) == pytest.approx((0.9999, 1.0))


def test_scan_refuses_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        scan_people(tmp_path / "missing")


@pytest.mark.slow
def test_the_app_serves_the_built_bundle(built, people, tmp_path):
    out, _ = built
    with serve_app(out, tmp_path / "app.log") as (url, _):
        _, nearest, summary = Client(url, verbose=False).predict(
            handle_file(str(people / "person04" / "voice1.flac")), api_name="/predict")
    assert summary["matches"][0] == {**summary["matches"][0], "id": "person04",
                                     "name": "Dev person 4"}
    assert summary["method"] == "mapper"
    # the calibrated threshold decides: the nearest face is shown exactly when it is reached
    confident = summary["matches"][0]["score"] >= summary["threshold"]
    assert summary["confident"] == confident and (nearest is not None) == confident
