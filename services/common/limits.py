"""The contract's limits on what a caller writes, in one place: every service that reads a field checks the same number.

Limits on the fields of a render request (and the scenes, cards and settings in it), which the gateway checks and each
service called directly checks again. Bounds a single service sets on what other services send it (asset metadata,
word timings, clip lengths, scene pads) stay with that service (services/assembler/limits.py, for one).
tests/unit/test_limits.py holds these numbers to the proto comments and refuses a second definition anywhere.
"""

from __future__ import annotations

# Scene ids and render ids: 1-64 characters of [A-Za-z0-9_-].
MAX_ID_CHARS = 64
# A scene's narration (`Scene.narration`, `SynthesizeSpeechRequest.text`).
MAX_NARRATION_CHARS = 4000
# Longer than any real word (German compounds and chemical names stay under 70): a run of 100+ characters without a
# space is a pasted blob, not narration, and a caption line cannot show it. Refused rather than split, because no
# split point would read right, and the writer is best placed to shorten it.
MAX_WORD_CHARS = 100
# A scene's `visual_prompt`.
MAX_PROMPT_CHARS = 4000
# The video's title and a scene's title.
MAX_TITLE_CHARS = 200
# A title or end card's two texts.
MAX_CARD_TITLE_CHARS = 200
MAX_CARD_SUBTITLE_CHARS = 400
# Voice names and ids are short ("en-US-AriaNeural", 32 hex digits); a longer one is a mistake, refused before any
# provider is paid to refuse it.
MAX_VOICE_CHARS = 200
# An avatar render's avatar, voice and background ids (a background may be a URL).
MAX_AVATAR_SETTING_CHARS = 2000
# Most scenes a render may have unless the gateway's MAX_SCENES says otherwise; drafts are held to the same number.
DEFAULT_MAX_SCENES = 50
# A draft's topic, and a document drafted from: a book chapter fits, a whole book is split first.
MAX_TOPIC_CHARS = 2000
MAX_DOCUMENT_CHARS = 100_000
# A draft's audience, tone and language.
MAX_DRAFT_OPTION_CHARS = 200
# Length of narration a draft may aim for, in seconds: an hour.
MAX_TARGET_SECONDS = 3600
