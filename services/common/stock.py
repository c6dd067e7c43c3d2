"""What stock-media libraries (Pexels, Pixabay) share: the search query, the choice of media, credits, rate limits."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import Field

from services.common.download import DownloadSettings, fetch_output
from services.common.errors import InvalidArgument, NotFound, ProviderUnavailable
from services.common.providers import JobT, Provider

_LOGGER = logging.getLogger(__name__)

# Words kept from a scene's visual description for the search. Stock libraries match words against their media's
# tags and titles, and Pixabay finds only media matching every word: each extra word narrows the search, so a few
# content words (the subject and its setting) find footage far more often than a whole sentence does.
MAX_QUERY_WORDS = 5
# Pixabay's limit for `q`, in characters (Pexels documents none).
MAX_QUERY_CHARS = 100
# Words that say nothing a library could match: articles, prepositions, and how a picture should be rendered
# ("cinematic", "4k") rather than what it shows.
_FILLER = frozenset(
    """a an the and or of in on at to into onto from by with without for over under above below near against along
    around among during after before toward towards inside outside beneath its their his
    her our your this that these those is are be being while as up down through across behind beside between
    some very just softly slowly gently there here it he she they we
    shot photo photograph picture image video clip footage scene view closeup close-up wide aerial cinematic
    realistic photorealistic hyperrealistic detailed highly high quality resolution hd 4k 8k style render rendered
    lighting light soft dramatic beautiful stunning background foreground shallow depth field bokeh""".split()
)
_CLAUSE_END = re.compile(r"[,.;:!?\n]")
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def search_query(prompt: str, title: str) -> str:
    """The search words for a scene: the content words of the first clause of its visual description that has any,
    at most MAX_QUERY_WORDS of them (else of its title). Descriptions name their subject first and add the look after
    commas ("a pine forest at dawn, soft light, cinematic"): a library can match the subject, rarely the look."""
    for text in (prompt, title):
        for clause in _CLAUSE_END.split(text):
            words = [w for w in _WORD.findall(clause.lower()) if w not in _FILLER and not w.isdigit()]
            if words:
                return " ".join(words[:MAX_QUERY_WORDS])[:MAX_QUERY_CHARS].strip()
    raise InvalidArgument(
        "the scene's visual_prompt and title hold no words a stock library could search for; describe what is shown"
    )


class StockSettings(DownloadSettings):
    """What every stock provider takes besides its vendor's key and address."""

    # Largest stock file downloaded, in bytes: a video is chosen at the output's size, so this only stops a runaway.
    stock_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    # Longest one search or download may take, in seconds.
    stock_timeout_seconds: float = Field(default=60.0, gt=0)


@dataclass(frozen=True)
class Credit:
    """Who made a piece of stock media, and the credit its library asks for; mirrors scenecast.v1.Credit."""

    vendor: str
    author: str
    author_url: str
    source_url: str
    attribution: str
    license: str


@dataclass(frozen=True)
class Rendition:
    """One downloadable size of a piece of media."""

    url: str
    width: int
    height: int


@dataclass(frozen=True)
class Candidate:
    """A search result: its renditions, its length in seconds (0 for a photo) and its credit."""

    media_id: str
    renditions: tuple[Rendition, ...]
    duration_s: float
    credit: Credit


@dataclass(frozen=True)
class Pick:
    """The chosen media and size, and what about it falls short of the output (said in the logs and the model)."""

    candidate: Candidate
    rendition: Rendition
    shortfalls: tuple[str, ...]

    @property
    def label(self) -> str:
        """What metadata reports as the model: the media's id, the size taken and, for a clip, its length."""
        length = f" {self.candidate.duration_s:g} s" if self.candidate.duration_s else ""
        return f"{self.candidate.media_id} {self.rendition.width}x{self.rendition.height}{length}"


def shape(width: int, height: int) -> str:
    """Square within 10% either way, so that a 1080x1080 frame takes a 1000x1080 photo as square."""
    ratio = width / height if height else 0.0
    return "square" if 0.9 <= ratio <= 1.1 else "landscape" if ratio > 1 else "portrait"


def choose(candidates: Sequence[Candidate], width: int, height: int, duration_s: float = 0.0) -> Pick | None:
    """The media to use for a width x height output, in the library's order of relevance.

    Media of the output's shape are preferred (the others only when none has it: the assembler crops or pads them).
    For a clip, those lasting at least `duration_s` are preferred, else the longest is taken (the assembler loops
    it). Then the first that has a rendition at least the output's size in both directions is taken, at the smallest
    such rendition (a 4K file for a 720p video would only cost time); when none is that large, the largest rendition
    of all is taken, upscaled, and the shortfall said.
    """
    usable = [c for c in candidates if c.renditions]
    shaped = [
        c for c in usable if shape(c.renditions[0].width, c.renditions[0].height) == shape(width, height)
    ] or usable
    if not shaped:
        return None
    shortfalls: list[str] = []
    if duration_s:
        long_enough = [c for c in shaped if c.duration_s >= duration_s]
        if not long_enough:
            longest = max(shaped, key=lambda c: c.duration_s)
            shortfalls.append(f"the longest is {longest.duration_s:g} s, under {duration_s:.1f} s, so it loops")
            long_enough = [longest]
        shaped = long_enough
    for candidate in shaped:
        covering = [r for r in candidate.renditions if r.width >= width and r.height >= height]
        if covering:
            return Pick(candidate, min(covering, key=lambda r: r.width * r.height), tuple(shortfalls))
    candidate, rendition = max(
        ((c, r) for c in shaped for r in c.renditions), key=lambda pair: pair[1].width * pair[1].height
    )
    shortfalls.append(f"the largest is {rendition.width}x{rendition.height}, under {width}x{height}, so it is upscaled")
    return Pick(candidate, rendition, tuple(shortfalls))


def pick(
    vendor: str,
    kind: str,
    query: str,
    found: Sequence[Candidate],
    width: int,
    height: int,
    scene_index: int,
    duration_s: float = 0.0,
) -> Pick:
    """`choose`, with NOT_FOUND when the search found nothing; what falls short in the media taken is logged, so an
    upscaled or looped picture is never a surprise."""
    chosen = choose(found, width, height, duration_s)
    if chosen is None:
        raise NotFound(
            f"{vendor} has no {kind} for the search {query!r} (made from the scene's visual_prompt); describe the "
            "visual in other, plainer words (a subject and a setting, such as 'city street at night') or choose "
            "another provider"
        )
    for shortfall in chosen.shortfalls:
        _LOGGER.warning("scene %d: %s %s for %r: %s", scene_index, vendor, chosen.candidate.media_id, query, shortfall)
    return chosen


def candidates(vendor: str, convert: Callable[[Any], Candidate], items: Iterable[Any]) -> list[Candidate]:
    """Search results as candidates; a result without the fields the vendor documents is the vendor's fault, and
    may be a passing one (UNAVAILABLE, retried), never an internal error."""
    try:
        return [convert(item) for item in items]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ProviderUnavailable(
            f"{vendor} answered with a search result missing what it documents ({error!r})"
        ) from error


class StockClient(Protocol):
    """A library's search, in candidates for `choose`."""

    async def images(self, query: str, width: int, height: int) -> list[Candidate]: ...

    async def videos(self, query: str, width: int, height: int) -> list[Candidate]: ...


class StockProvider(Provider[Any, JobT]):
    """A stock library's provider in a media service: its search client, and a price of 0 (the credits are the
    price). The library's mixin (pexels.PexelsProvider, pixabay.PixabayProvider) says which library."""

    vendor: ClassVar[str]
    client_class: ClassVar[type[Any]]

    def __init__(self, settings: StockSettings) -> None:
        super().__init__(settings)
        self._client: StockClient = self.client_class(settings, self.description.name)

    @classmethod
    def estimate_usd(cls, settings: StockSettings, job: JobT) -> float:
        return 0.0


async def search(client: httpx.AsyncClient, url: str, vendor: str, **kwargs: object) -> httpx.Response:
    """A search request; a failure to reach the library is retryable, and named without the URL (it may hold a key)."""
    try:
        return await client.get(url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"{vendor} could not be reached: {type(error).__name__}") from error


async def download(settings: StockSettings, rendition: Rendition) -> bytes:
    """The rendition's bytes, through the shared safe download (size cap, time limit, no private addresses)."""
    downloaded = await fetch_output(
        rendition.url,
        max_bytes=settings.stock_max_bytes,
        timeout_seconds=settings.stock_timeout_seconds,
        allow_private=settings.allow_private_output_urls,
    )
    return downloaded.data
