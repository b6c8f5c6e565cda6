"""The app's interface text in English and Japanese (the first users are Japanese students).

Keys are the same in every language; the interface hands the table to Gradio's i18n and
formats per-request text (captions, match lines) from it by the browser's language.
LIBRARY_ERRORS words the library's errors that name a reason (`AudioError`, `FaceError`, a
name's `InputError`: `voiceface.errors.InputError.reason`) in the languages other than the library's English,
with the figures of the error's `values`.
"""

TEXT = {
    "en": {
        "title": "# voiceface: from a voice to a face",
        "intro": "Record 3-10 seconds of speech: the answer comes when you stop recording (or "
                 "upload a recording and press the button). You get the enrolled person whose "
                 "voice is nearest, and a face generated from your voice.",
        "note": "**Note:** the generated face is a statistical guess learned from a small "
                "gallery, not a reconstruction of the speaker. Do not use it to identify anyone. "
                "Your recording is deleted from the server within minutes and never kept.",
        "test_banner": "**TEST WEIGHTS:** this app runs on a dev bundle of tiny random models; "
                       "its faces and matches mean nothing.",
        "personas_note": "**Synthetic personas:** the people in this gallery are made up: "
                         "text-to-speech voices paired with faces drawn by the generator, each "
                         "face chosen to agree with its voice in apparent sex and in nothing "
                         "else, so here the generated face can learn only that. With a gallery "
                         "of real, consenting people (`python -m voiceface build`, see the "
                         "README) it learns what voices and faces share.",
        "tab_main": "Voice to face", "tab_gallery": "Gallery",
        "voice": "Your voice", "submit": "Make my face",
        "generated": "Generated face", "nearest": "Nearest enrolled person",
        "top": "Nearest people", "chart": "Voice similarity (cosine)",
        "examples": "Example recordings", "people": "Enrolled people",
        "verify_examples": "Example recordings and claims (the last claims someone else)",
        "gallery_intro": "The people enrolled in this gallery.",
        "threshold_measured": "A match counts as confident from similarity **{threshold:.4f}**. "
                              "It was measured on {trials} trials, each a voice compared with "
                              "everyone else in the gallery: it accepts {accepted} of them "
                              "({achieved:.1%}; target {target:.1%}). Set on {date}.",
        "threshold_few": "{trials} trials are too few to measure {target:.1%}: the finest rate "
                         "they can show is {finest:.1%}, so the threshold accepts none of them.",
        "threshold_default": "A match counts as confident from similarity **{threshold:.4f}**, "
                             "a default never measured for this voice model: rebuild the "
                             "gallery to calibrate it.",
        "tab_enroll": "Enroll",
        "enroll_intro": "Add a person who agrees to it, or delete one. Needs the admin "
                        "password. The recording is used for the voice embedding and then "
                        "deleted; the aligned photo is kept for display.",
        "password": "Admin password", "enroll_voice": "Their voice",
        "voice_hint": "Read aloud or talk freely: 20-90 s suggested (at least 5 s, at most "
                      "2 min).",
        "photo": "Their face (one person, front-facing)", "name": "Display name",
        "consent": "This person agrees that their voice and face are stored and searched "
                   "here, and knows they can ask to be deleted at any time.",
        "enroll": "Enroll", "delete_title": "### Delete a person",
        "person": "Person", "confirm_delete": "Yes, delete this person completely",
        "delete": "Delete",
        "bad_password": "Wrong admin password.",
        "password_wait": "Too many wrong admin passwords; try again in {seconds} s.",
        "no_voice": "Record or upload their voice first.",
        "no_photo": "Take or upload their photo first.",
        "no_person": "Choose the person to delete.",
        "not_confirmed": "Tick the confirmation box to delete.",
        "enrolled": "Enrolled **{name}** (`{id}`): searchable by voice now; their face "
                    "latent is being computed.",
        "deleted": "Deleted **{name}** (`{id}`): voice embedding, photo and latent are gone "
                   "and the mapper no longer uses them.",
        "duration": "{seconds:.1f} s of sound",
        "duration_password": "Enter the admin password first to see how long a recording is.",
        "latents": "**Face latents:** {people}",
        "st_queued": "queued", "st_inverting": "computing", "st_ready": "ready",
        "st_failed": "failed",
        "no_audio": "Record or upload your voice first.",
        "gone": "That file is no longer on the server (uploads are deleted after a few "
                "minutes). Record or upload it again.",
        "method_mapper": "generated from your voice by the trained mapper",
        "method_knn-blend": "a blend of the nearest people's faces (no trained mapper)",
        "method_average": "the centre face (no mapper, no latents nearby)",
        "centre_population": "pulled toward the enrolled people's average",
        "centre_generator": "pulled toward the generator's average face (FFHQ)",
        "generated_caption": "{method}; {centre}",
        "preview": "preview, full resolution coming",
        "voice_traits": "**Your voice:** pitch about {pitch} Hz, {register}; {sex}. The "
                        "generated face is learnt from the enrolled people whose voices are "
                        "like yours (pitch, apparent sex); it is not your likeness. Apparent "
                        "sex is how a voice tends to be heard, not a statement about anyone's "
                        "identity.",
        "register_lower": "a lower register",
        "register_middle": "a middle register",
        "register_higher": "a higher register",
        "sex_female": "it sounds female ({confidence} sure)",
        "sex_male": "it sounds male ({confidence} sure)",
        "sex_unsure": "its apparent sex is unclear",
        "drawing": "Drawing the face…",
        "download_png": "Download PNG",
        "match": "**{name}**, similarity {score:.2f}",
        "no_match": "**No confident match**: the nearest voice ({name}) has similarity "
                    "{score:.4f}, below the threshold {threshold:.4f}.",
        "verify_intro": "Is this voice really who it claims to be? Choose who you claim to "
                        "be, then speak for 3-10 seconds: the answer comes when you stop "
                        "recording (or upload a recording and press the button). Your voice "
                        "is compared with that person's enrolled voice, and accepted or "
                        "rejected.",
        "verify_then_choose": "Now choose who you claim to be and press **Check my voice**.",
        "tab_verify": "Verify", "verify_claim": "I claim to be", "verify_voice": "Your voice",
        "verify_submit": "Check my voice", "verify_gauge": "Score against the threshold",
        "verify_warning": "**A demonstration, not a lock.** A voice check alone can be fooled "
                          "by a recording of the person's voice or by a cloned voice: recent "
                          "research fooled commercial voiceprint logins with voices "
                          "synthesised from a single photo of a face. Do not protect anything "
                          "with a voice alone. Your recording is deleted from the server "
                          "within minutes and never kept.",
        "no_claim": "Choose who you claim to be first.",
        "verify_accepted": "### Accepted\nThis voice passes as **{name}** ({id}).",
        "verify_rejected": "### Rejected\nThis voice does not pass as **{name}** ({id}).",
        "verify_rates": "Error rates at this threshold, measured on this gallery:",
        "verify_far": "false accepts (another person's voice passes)",
        "verify_frr": "false rejects (the person's own voice fails)",
        "verify_side_rejected": "← rejected", "verify_side_accepted": "accepted →",
        "verify_rate": "{rate:.1%} of {trials} trials", "verify_unmeasured": "unmeasured",
        "verify_score": "score {score:.2f}", "verify_threshold": "threshold {threshold:.2f}",
        "verify_score_label": "Voice score",
        "verify_kind_as-norm": "AS-norm score: how far the voice stands above the other "
                               "enrolled people's voices, in their standard deviations.",
        "verify_kind_raw-cosine": "Cosine similarity, not normalised: too few people are "
                                  "enrolled to normalise against.",
        "tab_face2voice": "Face to voice",
        "f2v_intro": "Upload a photo of one person's face, or take one with your webcam. You "
                     "get the enrolled people whose voices suit that face best.",
        "f2v_photo": "A face (one person, front-facing)", "f2v_submit": "Find voices",
        "f2v_voices": "Voices that suit this face (similarity to the predicted voice)",
        "f2v_play": "Play the voice of {name}",
        "f2v_method": "Method: {method}.",
        "f2v_method_mapper": "mapper (trained on the enrolled people's faces and voices)",
        "f2v_method_knn-blend": "kNN blend (the voices of the people whose faces look most "
                                "alike; no trained mapper)",
        "face_traits": "**Your photo:** {sex}; {age}. {voices}The voices are those that went "
                       "with faces like this one among the enrolled people: they follow its "
                       "apparent sex and age only as far as those people's voices did. "
                       "Apparent sex and age are how a face or voice tends to be seen or "
                       "heard, not a statement about anyone's identity.",
        "face_sex_female": "the face looks female ({confidence} sure)",
        "face_sex_male": "the face looks male ({confidence} sure)",
        "face_sex_unsure": "the face's apparent sex is unclear",
        "face_age_child": "it looks like a child's, under about 13 ({confidence} sure)",
        "face_age_young_adult": "it looks about 13-35 years old ({confidence} sure)",
        "face_age_adult": "it looks about 35-60 years old ({confidence} sure)",
        "face_age_older": "it looks over about 60 ({confidence} sure)",
        "face_age_unsure": "its age is unclear",
        "f2v_voice_sexes": "The suggested voices by apparent sex: {female} female, {male} "
                           "male, {unsure} unclear. ",
        "f2v_note": "**Note:** the answer is a statistical guess, learned from the enrolled "
                    "people, about which voices suit a face: it is not anyone's real voice, "
                    "nor that of the person in the photo. A play button plays a recording of "
                    "that enrolled person where the gallery has one (the recordings of people "
                    "enrolled here are never kept). Your photo is deleted from the server "
                    "within minutes and never kept.",
        "f2v_no_photo": "Upload or take a photo first.",
        "f2v_unavailable": "This gallery has no face-to-voice model (it was built before face "
                           "to voice), so this tab cannot answer. Rebuilding it "
                           "(`python -m voiceface build`) adds one.",
        "busy_visitor": "You already have {events} requests waiting or running. Wait for "
                        "their answers, then try again in a moment.",
        "queue_full": "The server is busy: {waiting} requests are waiting. Try again in a "
                      "moment.",
        "unknown_event": "This app has no event \"{event}\"; its API page (\"Use via API\" "
                         "at the bottom of the page) lists the events it has.",
        "not_a_file": "Input {position} must be a file: upload it first (gradio_client's "
                      "handle_file does this), then name it.",
        "upload_too_large": "This upload is over {limit_mb:.0f} MB; send one recording or "
                            "photo at a time (each at most 20 MB).",
        "upload_too_many_files": "One upload may carry at most {files} files; send one "
                                 "recording or photo at a time.",
        "upload_budget": "You have uploaded the most one visitor may within {minutes:.0f} "
                         "minutes ({limit_mb:.0f} MB). Uploads are deleted after that time; "
                         "try again in a few minutes.",
        "body_too_large": "This request is over {limit_mb:.0f} MB; upload files first and "
                          "name them in the request.",
        "precision_switched": "Voice encoder: **{precision}**, checked at this start on "
                              "{voices} of the gallery's voices: cosine to full precision "
                              "(fp32) at least {cosine:.5f} (needs {required}), the same "
                              "nearest person for {agree} of {voices}, {speedup:.1f}x as fast.",
        "precision_kept": "Voice encoder: **full precision (fp32)**. {precision} was checked "
                          "at this start on {voices} of the gallery's voices and not used: "
                          "cosine to fp32 down to {cosine:.5f} (needs {required}), the same "
                          "nearest person for {agree} of {voices}, {speedup:.1f}x as fast "
                          "(needs {min_speedup:g}x).",
        "precision_set": "Voice encoder: **{precision}**, as configured (not checked).",
        "precision_unchecked": "Voice encoder: **full precision (fp32)**; the gallery has no "
                               "voices to check a faster precision on.",
        "precision_checking": "Voice encoder: **full precision (fp32)** for now; whether a "
                              "faster precision agrees with it is checked once the people "
                              "are prepared.",
        "precision_failed": "Voice encoder: **full precision (fp32)**; the check of a faster "
                            "precision failed (the app's log says why).",
        "preparing_waiting": "Preparing the people for this start (their voices, faces and "
                             "models; a few minutes on a fresh start)...",
        "preparing_faces": "Preparing the {total} people: choosing faces that agree with "
                           "their voices, {done}/{total}.",
        "preparing_people": "Preparing the {total} people: voices and faces, {done}/{total}.",
        "preparing_models": "Preparing the {total} people: training the models (the last "
                            "step).",
        "preparing_failed": "The people could not be prepared: {error} The app's log has the "
                            "details; fix the cause and restart the app.",
        "preparing_retry": "Voices and faces can be matched once this is done: try again in "
                           "a minute.",
    },
    "ja": {
        "title": "# voiceface：声から顔へ",
        "intro": "3〜10秒ほど話してください。録音を止めると結果が表示されます（録音ファイルは"
                 "アップロードしてボタンを押してください）。声が最も近い登録者と、"
                 "あなたの声から生成した顔を表示します。",
        "note": "**注意：** 生成された顔は小さなギャラリーから学習した統計的な推測であり、話者の顔の"
                "再現ではありません。個人の特定には使わないでください。録音は数分以内にサーバーから"
                "削除され、保存されません。",
        "test_banner": "**テスト用の重み：** このアプリは小さなランダムモデルの開発用バンドルで動いています。"
                       "顔も照合結果も意味を持ちません。",
        "personas_note": "**合成ペルソナ：** このギャラリーの人たちは架空の人物です。音声合成の声と、"
                         "生成器が描いた顔を組み合わせています。顔は見かけの性別だけが声と一致する"
                         "ように選ばれ、それ以外は任意なので、ここで生成される顔が学べるのはそれだけ"
                         "です。同意を得た実在の人たちのギャラリー（`python -m voiceface build`、"
                         "READMEを参照）なら、声と顔に共通するものを学習します。",
        "tab_main": "声から顔へ", "tab_gallery": "ギャラリー",
        "voice": "あなたの声", "submit": "顔を生成",
        "generated": "生成された顔", "nearest": "最も近い登録者",
        "top": "近い人たち", "chart": "声の類似度（コサイン）",
        "examples": "録音の例", "people": "登録者",
        "verify_examples": "録音と名乗る人の例（最後の例は別人を名乗っています）",
        "gallery_intro": "このギャラリーに登録されている人たち。",
        "threshold_measured": "類似度 **{threshold:.4f}** 以上を確かな一致とします。このしきい値は、"
                              "声を本人以外の登録者と比べた {trials} 回の試行で測定しました。そのうち "
                              "{accepted} 回を受け入れます（{achieved:.1%}、目標 {target:.1%}）。"
                              "設定日 {date}。",
        "threshold_few": "{trials} 回では {target:.1%} を測定するには少なすぎます（測定できる最小の"
                         "割合は {finest:.1%}）。そのため、しきい値はどれも受け入れません。",
        "threshold_default": "類似度 **{threshold:.4f}** 以上を確かな一致とします。この値はこの音声"
                             "モデルで測定していない既定値です。ギャラリーを再構築すると校正されます。",
        "tab_enroll": "登録",
        "enroll_intro": "同意した人を登録、または削除します。管理者パスワードが必要です。録音は声の"
                        "埋め込みの計算に使った後に削除し、位置合わせした顔写真を表示用に保存します。",
        "password": "管理者パスワード", "enroll_voice": "その人の声",
        "voice_hint": "音読または自由に話してください：20〜90秒を推奨（5秒以上、2分以内）。",
        "photo": "その人の顔（一人、正面向き）", "name": "表示名",
        "consent": "この人は、声と顔がここに保存・検索されることに同意し、いつでも削除を求め"
                   "られることを知っています。",
        "enroll": "登録", "delete_title": "### 登録者の削除",
        "person": "登録者", "confirm_delete": "はい、この人を完全に削除します",
        "delete": "削除",
        "bad_password": "管理者パスワードが違います。",
        "password_wait": "管理者パスワードの誤りが多すぎます。{seconds} 秒後にもう一度お試しください。",
        "no_voice": "まずその人の声を録音するか、アップロードしてください。",
        "no_photo": "まずその人の写真を撮るか、アップロードしてください。",
        "no_person": "削除する人を選んでください。",
        "not_confirmed": "削除するには確認のチェックを入れてください。",
        "enrolled": "**{name}**（`{id}`）を登録しました。声で今すぐ検索できます。顔の潜在表現を"
                    "計算中です。",
        "deleted": "**{name}**（`{id}`）を削除しました。声の埋め込み、写真、潜在表現は消去され、"
                   "マッパーももう使いません。",
        "duration": "音声 {seconds:.1f} 秒",
        "duration_password": "録音の長さを表示するには、先に管理者パスワードを入力してください。",
        "latents": "**顔の潜在表現：** {people}",
        "st_queued": "待機中", "st_inverting": "計算中", "st_ready": "完了",
        "st_failed": "失敗",
        "no_audio": "まず声を録音するか、ファイルをアップロードしてください。",
        "gone": "このファイルはもうサーバーにありません（アップロードは数分後に削除されます）。"
                "もう一度録音するか、アップロードしてください。",
        "method_mapper": "学習済みマッパーで声から生成",
        "method_knn-blend": "近い人たちの顔のブレンド（学習済みマッパーなし）",
        "method_average": "中心の顔（マッパーも近い潜在表現もなし）",
        "centre_population": "登録者の平均へ寄せています",
        "centre_generator": "生成器の平均顔（FFHQ）へ寄せています",
        "generated_caption": "{method}。{centre}",
        "preview": "プレビュー、高解像度を生成中",
        "voice_traits": "**あなたの声：** 高さ約{pitch} Hz（{register}）、{sex}。生成された顔は、"
                        "登録された人々のうち声の似た人（声の高さ・見かけの性別）から学んだもので、"
                        "あなたの顔に似せたものではありません。見かけの性別は声の聞こえ方であり、"
                        "誰かのアイデンティティを述べるものではありません。",
        "register_lower": "低め",
        "register_middle": "中くらい",
        "register_higher": "高め",
        "sex_female": "女性の声に聞こえます（確信度{confidence}）",
        "sex_male": "男性の声に聞こえます（確信度{confidence}）",
        "sex_unsure": "見かけの性別ははっきりしません",
        "drawing": "顔を描いています…",
        "download_png": "PNGをダウンロード",
        "match": "**{name}**、類似度 {score:.2f}",
        "no_match": "**確かな一致なし：** 最も近い声（{name}）の類似度 {score:.4f} は"
                    "しきい値 {threshold:.4f} 未満です。",
        "verify_intro": "その声は本当に名乗った本人のものでしょうか。誰として確認するかを選び、"
                        "3〜10秒ほど話してください。録音を止めると、その人の登録された声と比べて、"
                        "受け入れるか拒否するかを判定します（録音ファイルをアップロードした場合は"
                        "ボタンを押してください）。",
        "verify_then_choose": "誰として確認するかを選び、**声で確認** を押してください。",
        "tab_verify": "本人確認", "verify_claim": "名乗る人", "verify_voice": "あなたの声",
        "verify_submit": "声で確認", "verify_gauge": "スコアとしきい値",
        "verify_warning": "**これはデモであり、鍵ではありません。** 声だけの確認は、本人の声の録音や"
                          "複製された声でだませることがあります。最近の研究では、顔写真1枚から"
                          "合成した声で市販の声紋ログインが突破されました。声だけで何かを守らない"
                          "でください。録音は数分以内にサーバーから削除され、保存されません。",
        "no_claim": "まず、誰として確認するかを選んでください。",
        "verify_accepted": "### 受け入れ\nこの声は **{name}**（{id}）本人の声と判定されました。",
        "verify_rejected": "### 拒否\nこの声は **{name}**（{id}）本人の声とは判定されませんでした。",
        "verify_rates": "このしきい値での誤り率（このギャラリーで測定）：",
        "verify_far": "他人受け入れ（別の人の声が通る）",
        "verify_frr": "本人拒否（本人の声が通らない）",
        "verify_side_rejected": "← 拒否", "verify_side_accepted": "受け入れ →",
        "verify_rate": "{trials} 回の試行中 {rate:.1%}", "verify_unmeasured": "未測定",
        "verify_score": "スコア {score:.2f}", "verify_threshold": "しきい値 {threshold:.2f}",
        "verify_score_label": "声のスコア",
        "verify_kind_as-norm": "AS-normスコア：ほかの登録者たちの声と比べてどれだけ抜きん出て"
                               "いるかを、その標準偏差を単位に表したもの。",
        "verify_kind_raw-cosine": "正規化していないコサイン類似度：登録者が少なすぎて正規化でき"
                                  "ません。",
        "tab_face2voice": "顔から声へ",
        "f2v_intro": "一人の顔写真をアップロードするか、カメラで撮影してください。その顔に最も合う声の"
                     "登録者を表示します。",
        "f2v_photo": "顔写真（一人、正面向き）", "f2v_submit": "声を探す",
        "f2v_voices": "この顔に合う声（予測した声との類似度）",
        "f2v_play": "{name}の声を再生",
        "f2v_method": "推定方法：{method}。",
        "f2v_method_mapper": "マッパー（登録者の顔と声で学習）",
        "f2v_method_knn-blend": "kNNブレンド（顔が最も似ている人たちの声の合成。学習済みマッパーなし）",
        "face_traits": "**あなたの写真：** {sex}。{age}。{voices}提案された声は、登録者のうち"
                       "この顔に似た顔の人たちの声です。見かけの性別や年齢が合うのは、その人たちの"
                       "声が合っていた範囲に限られます。見かけの性別や年齢は顔や声の見え方・聞こえ方"
                       "であり、誰かのアイデンティティを述べるものではありません。",
        "face_sex_female": "女性の顔に見えます（確信度{confidence}）",
        "face_sex_male": "男性の顔に見えます（確信度{confidence}）",
        "face_sex_unsure": "見かけの性別ははっきりしません",
        "face_age_child": "13歳未満くらいの子どもに見えます（確信度{confidence}）",
        "face_age_young_adult": "13〜35歳くらいに見えます（確信度{confidence}）",
        "face_age_adult": "35〜60歳くらいに見えます（確信度{confidence}）",
        "face_age_older": "60歳以上くらいに見えます（確信度{confidence}）",
        "face_age_unsure": "年齢ははっきりしません",
        "f2v_voice_sexes": "提案された声の見かけの性別：女性{female}、男性{male}、不明{unsure}。",
        "f2v_note": "**注意：** 結果は、登録者から学習した「どんな声がその顔に合うか」の統計的な推測"
                    "です。誰かの本当の声ではなく、写真の人の声でもありません。再生ボタンは、録音が"
                    "ある登録者の声を再生します（ここで登録した人の録音は保存されません）。写真は"
                    "数分以内にサーバーから削除され、保存されません。",
        "f2v_no_photo": "まず写真をアップロードするか、撮影してください。",
        "f2v_unavailable": "このギャラリーには顔から声を推定するモデルがありません（この機能より前に"
                           "構築されました）。そのため、このタブは使えません。`python -m voiceface "
                           "build` で再構築すると使えるようになります。",
        "busy_visitor": "処理待ちまたは処理中のリクエストがすでに{events}件あります。結果が出るのを"
                        "待ってから、少ししてもう一度お試しください。",
        "queue_full": "サーバーが混み合っています（{waiting}件が順番待ち）。少ししてからもう一度"
                      "お試しください。",
        "unknown_event": "このアプリに「{event}」というイベントはありません。使えるイベントはAPI"
                         "ページ（ページ下部の「Use via API」）をご覧ください。",
        "not_a_file": "入力{position}はファイルでなければなりません。先にアップロードしてから"
                      "（gradio_client の handle_file が行います）、その名前を送ってください。",
        "upload_too_large": "このアップロードは{limit_mb:.0f} MBを超えています。録音や写真は1つずつ"
                            "送ってください（それぞれ20 MBまで）。",
        "upload_too_many_files": "1回のアップロードで送れるファイルは{files}個までです。録音や写真は"
                                 "1つずつ送ってください。",
        "upload_budget": "{minutes:.0f}分間にアップロードできる上限（{limit_mb:.0f} MB）に"
                         "達しました。アップロードはその時間が過ぎると削除されます。数分後に"
                         "もう一度お試しください。",
        "body_too_large": "このリクエストは{limit_mb:.0f} MBを超えています。ファイルは先に"
                          "アップロードし、リクエストではその名前を送ってください。",
        "precision_switched": "声のエンコーダー：**{precision}**。今回の起動時にギャラリーの声"
                              "{voices}件で確認済み：完全精度（fp32）とのコサインは最低"
                              "{cosine:.5f}（基準 {required}）、最も近い人は{voices}件中{agree}件で"
                              "同じ、速さは{speedup:.1f}倍。",
        "precision_kept": "声のエンコーダー：**完全精度（fp32）**。{precision}を今回の起動時に"
                          "ギャラリーの声{voices}件で確認し、使いませんでした：fp32との"
                          "コサインは最低{cosine:.5f}（基準 {required}）、最も近い人は{voices}件中"
                          "{agree}件で同じ、速さは{speedup:.1f}倍（基準 {min_speedup:g}倍）。",
        "precision_set": "声のエンコーダー：**{precision}**（設定どおり、確認なし）。",
        "precision_unchecked": "声のエンコーダー：**完全精度（fp32）**。ギャラリーに、より速い"
                               "精度を確認するための声がありません。",
        "precision_checking": "声のエンコーダー：今は**完全精度（fp32）**です。より速い精度が"
                              "一致するかどうかは、人物の準備が済んでから確認します。",
        "precision_failed": "声のエンコーダー：**完全精度（fp32）**。より速い精度の確認に失敗"
                            "しました（理由はアプリのログにあります）。",
        "preparing_waiting": "今回の起動のために人物（声・顔・モデル）を準備しています。"
                             "初めての起動では数分かかります…",
        "preparing_faces": "{total}人を準備しています：声に合う顔を選んでいます（{done}/{total}）。",
        "preparing_people": "{total}人を準備しています：声と顔（{done}/{total}）。",
        "preparing_models": "{total}人を準備しています：モデルを学習しています（最後の段階）。",
        "preparing_failed": "人物を準備できませんでした：{error} 詳しくはアプリのログを見て、"
                            "原因を直してからアプリを再起動してください。",
        "preparing_retry": "準備が済むと声と顔を照合できます。1分ほどしてからもう一度お試し"
                           "ください。",
    },
}

# What a visitor's own recording or photo, or an enrolled person's name, can get wrong, by the
# error's `reason` (voiceface.errors.InputError: AudioError, FaceError, voiceface.names)
LIBRARY_ERRORS = {
    "ja": {
        "too_short": "聞き取れた音声が短すぎます（{seconds:.2f}秒）。{min_seconds:g}秒以上"
                     "話してください。",
        "too_long": "録音は{seconds:.1f}秒あり、上限の{max_seconds:g}秒を超えています。短く録音し"
                    "直すか、不要な部分を切り取ってください。",
        "too_long_with_silence": "録音が長すぎます。上限は話す部分で{max_seconds:g}秒（前後の"
                                 "無音を含めて{raw_seconds:g}秒）です。短く録音し直すか、"
                                 "不要な部分を切り取ってください。",
        "too_many_minutes": "録音が上限の{minutes:.0f}分を超えています。声の部分だけを残して"
                            "切り取ってください。",
        "empty": "録音が空です。もう一度、数秒間話して録音してください。",
        "silent": "録音が無音です。マイクがオンになっていて、ミュートされていないか確かめてから、"
                  "録音し直してください。",
        "damaged": "このファイルは壊れていて、音声として読み込めません。録音し直すか、もう一度"
                   "書き出してください。",
        "unreadable": "このファイルは音声として読み込めません。壊れているか、録音ではありません。"
                      "WAV、FLAC、OGG/Opus、MP3、M4A/AAC、WebM のいずれかを使ってください。",
        "no_audio_track": "このファイルには音声トラックがありません。音の入った録音（WAV、FLAC、"
                          "OGG/Opus、MP3、M4A/AAC、WebM）をアップロードするか、マイクで録音して"
                          "ください。",
        "too_large": "ファイルが大きすぎます（{megabytes:.1f} MB、上限は{limit_megabytes:.0f} "
                     "MB）。短い録音か、圧縮した形式（FLAC、Opus、MP3）でアップロードしてください。",
        "not_audio": "このファイルは音声ではありません。声の録音（WAV、FLAC、OGG/Opus、MP3、"
                     "M4A/AAC、WebM）をアップロードしてください。",
        "photo_is_audio": "これは音声ファイルのようで、写真ではありません。ここには顔写真を、"
                          "録音は声の欄に入れてください。",
        "photo_too_many_pixels": "写真の画素数が多すぎます（上限は{limit_megapixels:.0f}メガ"
                                 "ピクセル）。縮小してからアップロードしてください（長辺2000"
                                 "ピクセルで十分です）。",
        "photo_not_image": "読み込める画像ではありません。JPEG、PNG、WebP のいずれかの写真を"
                           "使ってください。",
        "photo_damaged": "写真が壊れているか途中で切れていて、読み込めません。もう一度書き出すか、"
                         "ダウンロードし直してください。",
        "photo_empty": "写真が空です（0バイト）。もう一度選んでください。",
        "photo_too_large": "写真は{megabytes:.0f} MBあり、上限の{limit_megabytes:.0f} MBを超えて"
                           "います。JPEGで保存するか、縮小してください。",
        "photo_too_small": "写真が{width}×{height}ピクセルしかありません。各辺{min_side}ピクセル"
                           "以上の写真を使ってください（顔が256ピクセル以上あると最適です）。",
        "no_face": "写真に顔が見つかりません。明るい場所で撮った正面向きの写真で、顔が写真の高さの"
                   "5分の1以上あるものを使ってください。",
        "several_faces": "写真に{faces}人の顔が写っています。1人だけの写真を使ってください（ほかの"
                         "人は切り取ってください）。",
        "name_not_text": "名前は文字列で指定してください（{kind}は使えません）。その人の表示名を"
                         "入力してください。",
        "name_empty": "その人の表示名を入力してください。",
        "name_too_long": "名前が{chars}文字あります。{max_chars}文字以内にしてください。",
        "name_invisible": "名前に見えない文字または制御文字（{code} {what}）が含まれています。"
                          "書式付きの文章からコピーせず、1行で入力し直してください。",
        "name_no_letters": "名前に文字も数字もないため、記号だけか何も表示されません。その人の"
                           "名前を文字で入力してください。",
        "name_mixed_scripts": "名前に別の文字体系の文字「{char}」（{code} {what}）が混ざっています。"
                              "これでは別の人の名前に見せかけられます。一つの文字体系で書いて"
                              "ください（漢字・ひらがな・カタカナとローマ字は混ぜて使えます）。",
        "name_taken": "{name}はすでに登録されています（ID {id}）。姓やイニシャルを加えて区別"
                      "できるようにしてください。",
        "name_lookalike": "{name}は登録済みの{existing}（ID {id}）と見分けがつきません。姓や"
                          "イニシャルを加えて区別できるようにしてください。",
    },
}
