"""voiceface Gradio app: layout and event wiring over `voiceface.pipeline.VoiceFace`.

    python app.py [--bundle DIR_OR_REPO] [--encoder DIR_OR_REPO] [--generator PATH_OR_REPO]
                  [--host 127.0.0.1] [--port 7860] [--share]

Models load once per process, at start-up. On a ZeroGPU Space the model work runs inside
`spaces.GPU`; elsewhere it runs on whatever device the pipeline picked (CPU here).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Iterator

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

from voiceface.hub import WeightsNotFound
from voiceface.pipeline import VoiceFace, VoiceFaceResult, default_bundle
from voiceface.stylegan2_ops import reuse_freed_memory

PREVIEW_RESOLUTION = 256  # px, drawn first; the full-size face replaces it
TOP_K = 5  # people shown below the faces
FACE_HEIGHT = 320  # px of each face on the page
MAX_FILE_SIZE = "20mb"  # uploads larger than this are refused by the server
CONCURRENCY = 1  # requests computed at once: on 2 CPU cores one at a time is fastest
DELETE_CACHE = (600, 600)  # s: every 10 min, delete uploads and renders older than 10 min
BROWSER_SAMPLE_RATE = 16_000  # Hz requested from the browser's recorder

try:  # ZeroGPU Spaces provide `spaces`; everywhere else the work runs where it is
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

TEXT = {
    "en": {
        "title": "# voiceface: from a voice to a face",
        "intro": "Speak for 3-10 seconds (or upload a recording). You get the enrolled person "
                 "whose voice is nearest, and a face generated from your voice.",
        "note": "**Note:** the generated face is a statistical guess learned from a small "
                "gallery, not a reconstruction of the speaker. Do not use it to identify anyone. "
                "Your recording is not stored.",
        "test_banner": "**TEST WEIGHTS:** this app runs on a dev bundle of tiny random models; "
                       "its faces and matches mean nothing.",
        "personas_note": "**Synthetic personas:** the people in this gallery are made up: "
                         "text-to-speech voices paired with faces drawn by the generator. "
                         "Which voice goes with which face is arbitrary, so here the "
                         "generated face has nothing real to learn from. With a gallery of "
                         "real, consenting people (`python -m voiceface build`, see the "
                         "README) it learns what voices and faces share.",
        "tab_main": "Voice to face", "tab_gallery": "Gallery",
        "voice": "Your voice", "submit": "Make my face",
        "generated": "Generated face", "nearest": "Nearest enrolled person",
        "top": "Nearest people", "chart": "Voice similarity (cosine)",
        "examples": "Example recordings", "people": "Enrolled people",
        "gallery_intro": "The people enrolled in this gallery (read-only).",
        "no_audio": "Record or upload your voice first.",
        "gone": "That recording was used and then deleted (recordings are never kept). "
                "Record or upload it again.",
        "method_mapper": "generated from your voice by the trained mapper",
        "method_knn-blend": "a blend of the nearest people's faces (no trained mapper)",
        "method_average": "the average face (no latents in this gallery)",
        "preview": "preview, full resolution coming",
        "match": "**{name}**, similarity {score:.2f}",
        "no_match": "**No confident match**: the nearest voice ({name}) has similarity "
                    "{score:.2f}, below the threshold {threshold:.2f}.",
    },
    "ja": {
        "title": "# voiceface：声から顔へ",
        "intro": "3〜10秒ほど話してください（録音ファイルのアップロードも可）。声が最も近い登録者と、"
                 "あなたの声から生成した顔を表示します。",
        "note": "**注意：** 生成された顔は小さなギャラリーから学習した統計的な推測であり、話者の顔の"
                "再現ではありません。個人の特定には使わないでください。録音は保存されません。",
        "test_banner": "**テスト用の重み：** このアプリは小さなランダムモデルの開発用バンドルで動いています。"
                       "顔も照合結果も意味を持ちません。",
        "personas_note": "**合成ペルソナ：** このギャラリーの人たちは架空の人物です。音声合成の声と、"
                         "生成器が描いた顔を組み合わせています。声と顔の組み合わせは任意なので、"
                         "ここでは生成される顔が学べる本当の関係はありません。同意を得た実在の"
                         "人たちのギャラリー（`python -m voiceface build`、READMEを参照）なら、"
                         "声と顔に共通するものを学習します。",
        "tab_main": "声から顔へ", "tab_gallery": "ギャラリー",
        "voice": "あなたの声", "submit": "顔を生成",
        "generated": "生成された顔", "nearest": "最も近い登録者",
        "top": "近い人たち", "chart": "声の類似度（コサイン）",
        "examples": "録音の例", "people": "登録者",
        "gallery_intro": "このギャラリーに登録されている人たち（閲覧のみ）。",
        "no_audio": "まず声を録音するか、ファイルをアップロードしてください。",
        "gone": "この録音は使用後に削除されました（録音は保存されません）。もう一度録音するか、"
                "アップロードしてください。",
        "method_mapper": "学習済みマッパーで声から生成",
        "method_knn-blend": "近い人たちの顔のブレンド（学習済みマッパーなし）",
        "method_average": "平均顔（このギャラリーには潜在表現がありません）",
        "preview": "プレビュー、高解像度を生成中",
        "match": "**{name}**、類似度 {score:.2f}",
        "no_match": "**確かな一致なし：** 最も近い声（{name}）の類似度 {score:.2f} は"
                    "しきい値 {threshold:.2f} 未満です。",
    },
}
i18n = gr.I18n(**TEXT)


def language(request: gr.Request | None) -> str:
    """"ja" when the browser prefers Japanese, else "en" (for text built per request)."""
    header = (request.headers.get("accept-language", "") if request is not None else "")
    first = header.split(",")[0].strip().lower()
    return "ja" if first.startswith("ja") else "en"


def build(vf: VoiceFace) -> gr.Blocks:
    """The app's layout and events over one loaded pipeline."""
    people = vf.gallery.people
    # Gallery photos are served as files (allowed in `launch`), not re-encoded per request.
    portraits = {p.id: str(p.faces[0]) for p in people if p.faces}
    full = vf.generator.resolution
    preview = PREVIEW_RESOLUTION if full > PREVIEW_RESOLUTION else None

    example_digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in vf.example_voices()}

    def take_recording(path: str, lang: str) -> bytes:
        """The recording's bytes; the uploaded file is deleted at once (recordings are never
        kept), unless it is one of the bundle's public example voices."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise gr.Error(TEXT[lang]["gone"], print_exception=False) from None
        if hashlib.sha256(data).hexdigest() not in example_digests:
            Path(path).unlink(missing_ok=True)
        return data

    @gpu
    def analyse(audio: bytes, resolution: int | None) -> VoiceFaceResult:
        return vf(audio, k=TOP_K, resolution=resolution)

    @gpu
    def render(w: np.ndarray) -> Image.Image:
        return vf.render(torch.from_numpy(w)[None].to(vf.generator.w_avg.device))

    def outputs(result: VoiceFaceResult, lang: str, is_preview: bool):
        text = TEXT[lang]
        best = result.matches[0]
        caption = text[f"method_{result.method}"] + (f" ({text['preview']})" if is_preview else "")
        if result.confident:
            match_text = text["match"].format(name=best.name, score=best.score)
        else:
            match_text = text["no_match"].format(name=best.name, score=best.score,
                                                 threshold=vf.gallery.threshold)
        top = [(portraits[m.id], f"{m.rank}. {m.name} ({m.score:.2f})")
               for m in result.matches if m.id in portraits]
        chart = pd.DataFrame({"person": [f"{m.rank}. {m.name}" for m in result.matches],
                              "similarity": [round(m.score, 3) for m in result.matches]})
        nearest = portraits.get(best.id) if result.confident else None
        summary = {
            "matches": [{"id": m.id, "name": m.name, "score": round(m.score, 4)}
                        for m in result.matches],
            "confident": result.confident, "method": result.method,
            "threshold": vf.gallery.threshold, "test_weights": vf.test_weights,
            "timings": {k: round(v, 3) for k, v in result.timings.items()},
        }
        return result.face, caption, nearest, match_text, top, chart, summary

    def predict(audio: str | None, request: gr.Request) -> Iterator[tuple]:
        lang = language(request)
        if not audio:
            raise gr.Error(TEXT[lang]["no_audio"])
        recording = take_recording(audio, lang)
        try:
            result = analyse(recording, preview)
        except ValueError as err:  # AudioError and the library's other input errors
            raise gr.Error(str(err), print_exception=False) from None  # the user's, not a bug
        if preview is None:
            yield outputs(result, lang, is_preview=False)
            return
        yield outputs(result, lang, is_preview=True)
        result.face = render(result.w)
        yield outputs(result, lang, is_preview=False)

    with gr.Blocks(title="voiceface", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(i18n("title"))
        if vf.test_weights:
            gr.Markdown(i18n("test_banner"), elem_id="test-banner")
        if vf.synthetic_personas:
            gr.Markdown(i18n("personas_note"), elem_id="personas-note")
        with gr.Tab(i18n("tab_main")):
            gr.Markdown(i18n("intro"))
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath",
                             label=i18n("voice"), elem_id="voice",
                             waveform_options=gr.WaveformOptions(
                                 sample_rate=BROWSER_SAMPLE_RATE))
            submit = gr.Button(i18n("submit"), variant="primary", elem_id="submit")
            with gr.Row(equal_height=True):
                with gr.Column():
                    generated = gr.Image(label=i18n("generated"), elem_id="generated",
                                         type="pil", format="png", interactive=False,
                                         height=FACE_HEIGHT)
                    generated_caption = gr.Markdown(elem_id="generated-caption")
                with gr.Column():
                    nearest = gr.Image(label=i18n("nearest"), elem_id="nearest", type="pil",
                                       format="png", interactive=False, height=FACE_HEIGHT)
                    nearest_caption = gr.Markdown(elem_id="nearest-caption")
            gr.Markdown(i18n("note"))
            top = gr.Gallery(label=i18n("top"), columns=TOP_K, rows=1, height=200,
                             object_fit="contain", elem_id="top")
            chart = gr.BarPlot(x="person", y="similarity", label=i18n("chart"), sort="-y",
                               y_lim=[0, 1], elem_id="chart")
            summary = gr.JSON(visible=False)
            examples = sorted(vf.example_voices())
            if examples:
                gr.Examples([[str(e)] for e in examples], inputs=[audio],
                            label=i18n("examples"))
            submit.click(predict, inputs=[audio],
                         outputs=[generated, generated_caption, nearest, nearest_caption, top,
                                  chart, summary],
                         api_name="predict_ui", api_visibility="undocumented")
        with gr.Tab(i18n("tab_gallery")):
            gr.Markdown(i18n("gallery_intro"))
            gr.Gallery([(portraits[p.id], p.name) for p in people if p.id in portraits],
                       label=i18n("people"), columns=6, height="auto", elem_id="people")
        # The programmatic endpoint: audio file in; generated face, nearest face, summary out.
        api_faces = [gr.Image(type="pil", format="png", visible=False) for _ in range(2)]

        def api_predict(audio: str, request: gr.Request):
            *_, (face, _, near, _, _, _, report) = predict(audio, request)
            return face, near, report

        gr.Button(visible=False).click(api_predict, inputs=[audio],
                                       outputs=[*api_faces, summary], api_name="predict")
    demo.queue(default_concurrency_limit=CONCURRENCY)
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="voiceface: a voice in; the nearest enrolled "
                                     "person and a generated face out.")
    parser.add_argument("--bundle", default=None,
                        help="bundle directory or Hub repo id (default: $VOICEFACE_BUNDLE, "
                             f"else {default_bundle()})")
    parser.add_argument("--encoder", default=os.environ.get("VOICEFACE_ENCODER"),
                        help="voice encoder directory or Hub repo id instead of the bundle's "
                             "(default: $VOICEFACE_ENCODER)")
    parser.add_argument("--generator", default=os.environ.get("VOICEFACE_GENERATOR"),
                        help="StyleGAN2 generator (saved directory, rosinality .pt file, or Hub "
                             "repo id) instead of the bundle's, e.g. one trained on faces the "
                             "default does not draw well (default: $VOICEFACE_GENERATOR)")
    parser.add_argument("--generator-file", default=os.environ.get("VOICEFACE_GENERATOR_FILE"),
                        help="checkpoint file inside a --generator Hub repo")
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("VOICEFACE_THREADS", "0")) or None,
                        help="torch threads (default: $VOICEFACE_THREADS, else torch's choice); "
                             "1 is faster when other processes share the CPU cores")
    parser.add_argument("--quantize", action="store_true",
                        default=os.environ.get("VOICEFACE_QUANTIZE", "") in ("1", "true"),
                        help="int8 voice encoder on the CPU (faster; $VOICEFACE_QUANTIZE=1)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    args = parser.parse_args(argv)
    # A server renders again and again: keep freed activation memory for reuse instead of
    # faulting in fresh pages each time (about 20 % of a 1024 px render on 2 vCPUs).
    reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        vf = VoiceFace.from_pretrained(args.bundle, encoder=args.encoder,
                                       generator=args.generator,
                                       generator_file=args.generator_file,
                                       quantize=args.quantize or None)
    except (WeightsNotFound, ValueError) as err:
        print(f"voiceface cannot start: {err}", file=sys.stderr)
        return 2
    photo_dirs = sorted({str(Path(p.faces[0]).parent) for p in vf.gallery.people if p.faces})
    build(vf).launch(server_name=args.host, server_port=args.port, share=args.share,
                     allowed_paths=photo_dirs,
                     max_file_size=MAX_FILE_SIZE, i18n=i18n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
