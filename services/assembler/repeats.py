"""A held still at a constant frame rate without encoding its repeats: x264 encodes each distinct picture once, and
every frame that repeats the one before is written here as an H.264 picture whose macroblocks are all skipped.

A skipped macroblock with no coded neighbour moving is predicted from the same place in the reference picture (its
motion vector is zero), and an edge between two skipped macroblocks is not filtered, so such a picture decodes to an
exact copy of the previous one. It is a few bytes, costs no analysis, and x264's per-frame cost for a repeat (its
look-ahead and a skip decision for every macroblock, about 3 ms at 1080p) goes away.

The inserted pictures are reference pictures, so every picture after them gets its frame_num rewritten in place: a
fixed-width field near the start of the slice header, so the rest of the slice is kept byte for byte. Picture order
follows frame_num (picture order count type 2, which x264 writes without B-frames). This needs a stream with one
reference frame, every picture a reference (x264's veryfast and ultrafast presets without B-frames): with more, a
picture could refer past the inserted ones to an older picture that they would have pushed out of the decoder's
buffer. `fill` refuses any other stream.

A fade-out is written the same way, as pictures of skips with explicit weighted prediction (x264's veryfast
declares it in its PPS): each predicts the picture before it scaled by one weight and offset per plane,
((x * w + 64) >> 7) + o. Fading is a per-value map of the picture the fade starts from, and so is every picture of
the chain, so the weights are fitted on that picture's histograms (256 values per plane, milliseconds a fade) to land
on FFmpeg's fade filter's values, the decoder's integer arithmetic reproduced exactly; measured within a level or two
of the filter. A fade-in cannot be written so: without B-frames nothing can predict from the picture it ends on.

References: ITU-T H.264 (08/2021) 7.3 (syntax), 7.4.3.2 (pred_weight_table), 8.4.1.1 (P_Skip motion vector), 8.4.2.3
(weighted sample prediction), 8.7.2.1 (bS 0 between skipped macroblocks), 9.3 (CABAC: Tables 9-12/9-13 for
mb_skip_flag's context, 9-44 and 9-45 for the engine).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from services.common.errors import MediaError

_NAL_SLICE, _NAL_IDR = 1, 5
_P_SLICE = 5  # slice_type 5: P, and every other slice of the picture P too
# Table 9-44: rangeTabLPS by pStateIdx and (codIRange >> 6) & 3.
_RANGE_LPS = (
    (128, 176, 208, 240), (128, 167, 197, 227), (128, 158, 187, 216), (123, 150, 178, 205),
    (116, 142, 169, 195), (111, 135, 160, 185), (105, 128, 152, 175), (100, 122, 144, 166),
    (95, 116, 137, 158), (90, 110, 130, 150), (85, 104, 123, 142), (81, 99, 117, 135),
    (77, 94, 111, 128), (73, 89, 105, 122), (69, 85, 100, 116), (66, 80, 95, 110),
    (62, 76, 90, 104), (59, 72, 86, 99), (56, 69, 81, 94), (53, 65, 77, 89),
    (51, 62, 73, 85), (48, 59, 69, 80), (46, 56, 66, 76), (43, 53, 63, 72),
    (41, 50, 59, 69), (39, 48, 56, 65), (37, 45, 54, 62), (35, 43, 51, 59),
    (33, 41, 48, 56), (32, 39, 46, 53), (30, 37, 43, 50), (29, 35, 41, 48),
    (27, 33, 39, 45), (26, 31, 37, 43), (24, 30, 35, 41), (23, 28, 33, 39),
    (22, 27, 32, 37), (21, 26, 30, 35), (20, 24, 29, 33), (19, 23, 27, 31),
    (18, 22, 26, 30), (17, 21, 25, 28), (16, 20, 23, 27), (15, 19, 22, 25),
    (14, 18, 21, 24), (14, 17, 20, 23), (13, 16, 19, 22), (12, 15, 18, 21),
    (12, 14, 17, 20), (11, 14, 16, 19), (11, 13, 15, 18), (10, 12, 15, 17),
    (10, 12, 14, 16), (9, 11, 13, 15), (9, 11, 12, 14), (8, 10, 12, 14),
    (8, 9, 11, 13), (7, 9, 11, 12), (7, 9, 10, 12), (7, 8, 10, 11),
    (6, 8, 9, 11), (6, 7, 9, 10), (6, 7, 8, 9), (2, 2, 2, 2),
)  # fmt: skip
# Table 9-45: transIdxLPS by pStateIdx (transIdxMPS is pStateIdx + 1, at most 62).
_TRANS_LPS = (
    0, 0, 1, 2, 2, 4, 4, 5, 6, 7, 8, 9, 9, 11, 11, 12, 13, 13, 15, 15, 16, 16, 18, 18, 19, 19, 21, 21, 22, 22, 23,
    24, 24, 25, 26, 26, 27, 27, 28, 29, 29, 30, 30, 30, 31, 32, 32, 33, 33, 33, 34, 34, 35, 35, 35, 36, 36, 36, 37,
    37, 37, 38, 38, 63,
)  # fmt: skip
# Table 9-13, cabac_init_idc 0: (m, n) of mb_skip_flag in a P slice when neither neighbour is coded (ctxIdx 11),
# the only context a picture of skips uses.
_SKIP_CONTEXT = (23, 33)
# Weights in 1/128 (the finest denominator, 7.4.3.2), for luma and chroma alike.
_WEIGHT_DENOM = 7
# Weights and offsets are 8-bit signed (7.4.3.2, for 8-bit samples).
_WEIGHT_RANGE = (-128, 127)
# A plane's weight and offset: None for the default, which copies the reference as it is.
Weight = tuple[int, int] | None
# Emulation prevention (7.4.1): within a NAL unit, 0x000003 stands for 0x0000 where the next byte is 0 to 3.
_ESCAPED = re.compile(b"\x00\x00\x03")
_NEEDS_ESCAPE = re.compile(b"\x00\x00(?=[\x00-\x03])")


class _Reader:
    """Reads an RBSP bit by bit: fixed-width fields and Exp-Golomb codes (7.2, 9.1)."""

    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._size = len(rbsp) * 8
        self.position = 0

    def u(self, width: int) -> int:
        if self.position + width > self._size:
            raise MediaError("an H.264 header ended early")
        self.position += width
        return (self._value >> (self._size - self.position)) & ((1 << width) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise MediaError("an H.264 header has an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


class _Writer:
    def __init__(self) -> None:
        self._bits: list[str] = []

    def u(self, width: int, value: int) -> None:
        if width:
            self._bits.append(format(value, f"0{width}b"))

    def ue(self, value: int) -> None:
        code = format(value + 1, "b")
        self._bits.append("0" * (len(code) - 1) + code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def bits(self, text: str) -> None:
        self._bits.append(text)

    def length(self) -> int:
        return sum(map(len, self._bits))

    def rbsp(self) -> bytes:
        text = "".join(self._bits)
        text += "0" * (-len(text) % 8)
        return int(text, 2).to_bytes(len(text) // 8, "big")


def _unescape(nal: bytes) -> bytes:
    return _ESCAPED.sub(b"\x00\x00", nal)


def _escape(rbsp: bytes) -> bytes:
    escaped = _NEEDS_ESCAPE.sub(b"\x00\x00\x03", rbsp)
    # An RBSP ending in a zero byte (a slice's cabac_zero_words) takes a final 0x03: a NAL unit cannot end in 0x00.
    return escaped + b"\x03" if escaped.endswith(b"\x00") else escaped


@dataclass(frozen=True)
class StreamParameters:
    """What a slice header's layout depends on, from the stream's one SPS and one PPS."""

    log2_max_frame_num: int
    pps_id: int
    max_reference_frames: int
    macroblocks: int
    has_chroma: bool
    cabac: bool
    weighted_prediction: bool
    pic_init_qp: int
    deblocking_control: bool
    length_size: int

    @classmethod
    def from_avcc(cls, extradata: bytes) -> StreamParameters:
        """Reads an MP4's avcC box body (ISO/IEC 14496-15 5.3.3.1): exactly one SPS and one PPS, as x264 writes."""
        if len(extradata) < 7 or extradata[0] != 1:
            raise MediaError("the H.264 stream has no avcC parameter sets")
        length_size = (extradata[4] & 3) + 1
        position, sets = 5, []
        for _ in range(2):
            count = extradata[position] & (0x1F if not sets else 0xFF)
            position += 1
            if count != 1:
                raise MediaError(f"the H.264 stream has {count} parameter sets of a kind; one is supported")
            size = int.from_bytes(extradata[position : position + 2], "big")
            sets.append(extradata[position + 2 : position + 2 + size])
            position += 2 + size
        return cls._parse(sets[0], sets[1], length_size)

    @classmethod
    def _parse(cls, sps_nal: bytes, pps_nal: bytes, length_size: int) -> StreamParameters:
        sps = _Reader(_unescape(sps_nal[1:]))
        profile = sps.u(8)
        sps.u(16)  # constraint flags, level
        sps.ue()  # seq_parameter_set_id
        chroma_format = 1
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma_format = sps.ue()
            if chroma_format == 3 and sps.u(1):
                raise MediaError("separate colour planes are not supported")
            sps.ue()  # bit depths
            sps.ue()
            sps.u(1)
            if sps.u(1):
                raise MediaError("H.264 scaling matrices are not supported")
        log2_max_frame_num = sps.ue() + 4
        if (poc_type := sps.ue()) != 2:
            raise MediaError(f"picture order count type {poc_type} is not supported (type 2: no B-frames)")
        max_reference_frames = sps.ue()
        sps.u(1)  # gaps_in_frame_num_value_allowed_flag
        width, height = sps.ue() + 1, sps.ue() + 1
        if not sps.u(1):
            raise MediaError("interlaced H.264 is not supported")
        pps = _Reader(_unescape(pps_nal[1:]))
        pps_id = pps.ue()
        pps.ue()
        cabac = bool(pps.u(1))
        if pps.u(1):
            raise MediaError("bottom_field_pic_order_in_frame_present_flag is not supported")
        if pps.ue():
            raise MediaError("slice groups are not supported")
        pps.ue()  # num_ref_idx_l0_default_active_minus1: every stand-in overrides it
        pps.ue()
        weighted_prediction = bool(pps.u(1))
        pps.u(2)
        pic_init_qp = 26 + pps.se()
        pps.se()
        pps.se()
        deblocking_control = bool(pps.u(1))
        pps.u(1)
        if pps.u(1):
            raise MediaError("redundant pictures are not supported")
        return cls(
            log2_max_frame_num,
            pps_id,
            max_reference_frames,
            width * height,
            chroma_format != 0,
            cabac,
            weighted_prediction,
            pic_init_qp,
            deblocking_control,
            length_size,
        )


def _nal_units(sample: bytes, length_size: int) -> list[bytes]:
    units, position = [], 0
    while position < len(sample):
        size = int.from_bytes(sample[position : position + length_size], "big")
        units.append(sample[position + length_size : position + length_size + size])
        position += length_size + size
    return units


def _sample(units: list[bytes], length_size: int) -> bytes:
    return b"".join(len(unit).to_bytes(length_size, "big") + unit for unit in units)


def _renumbered(nal: bytes, params: StreamParameters, frame_num: int) -> bytes:
    """A slice with its frame_num set: only its bits change (the escaped NAL is unescaped, the field replaced,
    escaped again)."""
    rbsp = bytearray(_unescape(nal[1:]))
    header = _Reader(bytes(rbsp[:64]))
    header.ue()  # first_mb_in_slice
    header.ue()  # slice_type
    header.ue()  # pic_parameter_set_id
    start, width = header.position, params.log2_max_frame_num
    for bit in range(width):
        index, shift = divmod(start + bit, 8)
        if (frame_num >> (width - 1 - bit)) & 1:
            rbsp[index] |= 0x80 >> shift
        else:
            rbsp[index] &= ~(0x80 >> shift)
    return nal[:1] + _escape(bytes(rbsp))


@functools.lru_cache(maxsize=8)
def _cabac_skips(macroblocks: int, slice_qp: int) -> str:
    """The slice data of `macroblocks` skipped macroblocks, as bits: each mb_skip_flag 1 and end_of_slice_flag,
    the last 1, then the arithmetic coder's flush (9.3.4.5), whose last bit is the RBSP's stop bit."""
    m, n = _SKIP_CONTEXT
    state = max(1, min(126, ((m * max(0, min(51, slice_qp))) >> 4) + n))
    state, mps = (63 - state, 0) if state <= 63 else (state - 64, 1)
    low, span, outstanding, first = 0, 510, 0, True
    bits: list[str] = []

    def put(bit: int) -> None:
        nonlocal first, outstanding
        if first:
            first = False
        else:
            bits.append(str(bit))
        bits.append(str(1 - bit) * outstanding)
        outstanding = 0

    def renormalise() -> None:
        nonlocal low, span, outstanding
        while span < 256:
            if low < 256:
                put(0)
            elif low >= 512:
                low -= 512
                put(1)
            else:
                low -= 256
                outstanding += 1
            span <<= 1
            low <<= 1

    for index in range(macroblocks):
        lps = _RANGE_LPS[state][(span >> 6) & 3]
        span -= lps
        if mps == 1:  # mb_skip_flag 1 is the more probable symbol
            state = min(state + 1, 62)
        else:
            low += span
            span = lps
            if state == 0:
                mps = 1
            state = _TRANS_LPS[state]
        renormalise()
        span -= 2  # end_of_slice_flag, a terminating bin
        if index < macroblocks - 1:
            renormalise()
    low += span
    span = 2
    renormalise()
    put((low >> 9) & 1)
    bits.append(format(((low >> 7) & 3) | 1, "02b"))
    return "".join(bits)


class _SkipPictures:
    """Builds a stream's all-skip P pictures; the slice data depends only on the picture size and QP, so it is built
    once for all of a process's segments of one size."""

    def __init__(self, params: StreamParameters) -> None:
        self._params = params
        self._data = _cabac_skips(params.macroblocks, params.pic_init_qp) if params.cabac else None

    def picture(self, nal_ref_idc: int, frame_num: int, weights: Weights | None = None) -> bytes:
        """A picture of skips: a copy of the picture before, or with `weights` that picture scaled."""
        params, header = self._params, _Writer()
        header.ue(0)  # first_mb_in_slice
        header.ue(_P_SLICE)
        header.ue(params.pps_id)
        header.u(params.log2_max_frame_num, frame_num)
        header.u(1, 1)  # num_ref_idx_active_override_flag: one reference, the picture just before
        header.ue(0)
        header.u(1, 0)  # ref_pic_list_modification_flag_l0
        if params.weighted_prediction:  # fill refuses weights for a stream without it
            _weight_table(header, weights or Weights(None, None, None), params.has_chroma)
        header.u(1, 0)  # adaptive_ref_pic_marking_mode_flag: the sliding window, as x264's own pictures
        if params.cabac:
            header.ue(0)  # cabac_init_idc
        header.se(0)  # slice_qp_delta: the slice QP is pic_init_qp, which _cabac_skips started from
        if params.deblocking_control:
            header.ue(1)  # disable_deblocking_filter_idc: nothing to filter
        if self._data is not None:
            header.bits("1" * (-header.length() % 8))  # cabac_alignment_one_bit
            header.bits(self._data)
        else:
            header.ue(params.macroblocks)  # mb_skip_run: the whole picture
            header.bits("1")  # rbsp_stop_one_bit
        return bytes([nal_ref_idc << 5 | _NAL_SLICE]) + _escape(header.rbsp())


@dataclass(frozen=True)
class Weights:
    """A weighted picture's weight and offset for each plane (None: the default, a copy of that plane)."""

    luma: Weight
    cb: Weight
    cr: Weight


def _weight_table(header: _Writer, weights: Weights, has_chroma: bool) -> None:
    """pred_weight_table (7.3.3.2) for the one reference."""
    header.ue(_WEIGHT_DENOM)  # luma_log2_weight_denom
    if has_chroma:
        header.ue(_WEIGHT_DENOM)  # chroma_log2_weight_denom
    planes = [[weights.luma]] + ([[weights.cb, weights.cr]] if has_chroma else [])
    for pair in planes:
        explicit = [weight for weight in pair if weight is not None]
        if explicit and len(explicit) != len(pair):
            raise ValueError("both chroma planes take an explicit weight, or neither")
        header.u(1, bool(explicit))  # luma_weight_l0_flag, then chroma_weight_l0_flag
        for w, o in explicit:
            header.se(w)
            header.se(o)


def _fade_target(values: np.ndarray, factor: int, chroma: bool) -> np.ndarray:
    """FFmpeg's fade filter on 8-bit studio-range YUV: luma towards 16 and chroma towards 128, `factor` in 1/65536
    (its integer arithmetic, rounding included; checked against the filter for every value)."""
    if chroma:
        return ((values - 128) * factor + 8421367) >> 16
    return np.clip(((values - 16) * factor + (16 << 16) + 32768) >> 16, 0, 255)


def _predicted(levels: np.ndarray, weight: Weight) -> np.ndarray:
    """What the decoder makes of reference samples `levels` with `weight` (8.4.2.3.2, logWD >= 1)."""
    if weight is None:
        return levels
    w, o = weight
    return np.clip(((levels * w + (1 << (_WEIGHT_DENOM - 1))) >> _WEIGHT_DENOM) + o, 0, 255)


def _fit(counts: np.ndarray, levels: np.ndarray, target: np.ndarray, default: bool = True) -> Weight:
    """The weight taking reference samples `levels` closest to `target` (both by the value v each pixel had in the
    picture the fade starts from, `counts[v]` pixels): the best explicit one near the least-squares line, or if
    `default` may be and is no worse, the default, by squared error."""
    total = counts.sum()
    mean_x, mean_y = (counts * levels).sum() / total, (counts * target).sum() / total
    spread = (counts * (levels - mean_x) ** 2).sum()
    slope = (counts * (levels - mean_x) * (target - mean_y)).sum() / spread if spread else 1.0
    low, high = _WEIGHT_RANGE
    center = min(high - 2, max(low + 2, round(slope * (1 << _WEIGHT_DENOM))))
    weights = np.arange(center - 2, center + 3)[:, None]
    scaled = (levels * weights + (1 << (_WEIGHT_DENOM - 1))) >> _WEIGHT_DENOM
    # Each weight's best offset is near the mean of what it leaves to make up.
    nearest = np.rint((counts * (target - scaled)).sum(axis=1) / total).astype(np.int64)
    offsets = np.clip(nearest[:, None] + np.arange(-1, 2), low, high)
    predicted = np.clip(scaled[:, None, :] + offsets[..., None], 0, 255)
    errors = (counts * (predicted - target) ** 2).sum(axis=-1)
    best = np.unravel_index(np.argmin(errors), errors.shape)
    if default and (counts * (levels - target) ** 2).sum() <= errors[best]:
        return None
    return int(weights[best[0], 0]), int(offsets[best])


def fade_weights(histograms: tuple[np.ndarray, np.ndarray, np.ndarray], factors: list[int]) -> list[Weights]:
    """Each picture's weights for a fade by `factors` (in 1/65536) of a picture whose Y, Cb and Cr planes have
    `histograms` (pixels per value), each picture predicted from the one before."""
    values = np.arange(256, dtype=np.int64)
    levels = [values.copy() for _ in histograms]  # what each plane's value v has become in the picture before
    chain = []
    for factor in factors:
        targets = [_fade_target(values, factor, chroma=plane > 0) for plane in range(3)]
        weights = [
            _fit(counts, level, target) for counts, level, target in zip(histograms, levels, targets, strict=True)
        ]
        if (weights[1] is None) != (weights[2] is None):
            # One flag covers both chroma planes, and the default weight (1 << 7) is out of an explicit one's range.
            weights[1:] = [_fit(histograms[plane], levels[plane], targets[plane], default=False) for plane in (1, 2)]
        levels = [_predicted(level, weight) for level, weight in zip(levels, weights, strict=True)]
        chain.append(Weights(*weights))
    return chain


def fill(
    source: Path,
    encoded: list[int],
    frames: int,
    fps: int,
    target: Path,
    *,
    faded: Mapping[int, int] | None = None,
    fade_base: Path | None = None,
    variable: bool = False,
) -> None:
    """Writes `target`, a body `frames` long at `fps`, from `source`, whose pictures are its frames `encoded`
    (ascending, the first 0).

    The frames of `faded` (frame: FFmpeg's fade factor, in 1/65536, of the picture before the fade) run to the end of
    the body after the last encoded frame; each is a picture of weighted skips. Every other frame repeats the one
    before it as a picture of skips; at a `variable` frame rate it is left out instead, and each picture lasts until
    the next.

    `source` must be H.264 in MP4 with one reference frame and no B-frames, one picture per packet (x264's output),
    and for `faded`, weighted prediction; `fade_base` is then the picture the fade starts from, raw yuv420p as the
    encoder got it (its histograms are all the weights need, and reading them costs far less than decoding the
    stream). On any error no `target` is left.
    """
    faded = dict(faded or {})
    if not encoded or encoded[0] != 0 or encoded[-1] >= frames or sorted(set(encoded)) != encoded:
        raise ValueError(f"encoded frames {encoded[:5]}... do not start at 0 and rise within {frames} frames")
    if faded and (min(faded) <= encoded[-1] or sorted(faded) != list(range(min(faded), frames))):
        raise ValueError(f"faded frames {sorted(faded)[:5]}... do not run from after the last encoded to {frames}")
    if faded and fade_base is None:
        raise ValueError("a fade needs the picture it starts from")
    try:
        _fill(source, encoded, frames, fps, target, faded, fade_base, variable)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _fill(
    source: Path,
    encoded: list[int],
    frames: int,
    fps: int,
    target: Path,
    faded: dict[int, int],
    fade_base: Path | None,
    variable: bool,
) -> None:
    with av.open(str(source)) as inputs, av.open(str(target), "w", format="mp4") as output:
        stream = inputs.streams.video[0]
        params = StreamParameters.from_avcc(bytes(stream.codec_context.extradata or b""))
        if params.max_reference_frames != 1:
            raise MediaError(f"repeats need one reference frame; the stream has {params.max_reference_frames}")
        if faded and not params.weighted_prediction:
            raise MediaError("the H.264 stream's PPS has no weighted prediction; a fade needs it")
        fading = sorted(faded)
        chain = []
        if fade_base is not None and fading:
            histograms = _histograms(fade_base, stream.codec_context.width, stream.codec_context.height)
            chain = fade_weights(histograms, [faded[frame] for frame in fading])
        weights = dict(zip(fading, chain, strict=True))
        skips = _SkipPictures(params)
        copy = output.add_stream_from_template(stream)
        copy.time_base = Fraction(1, fps)
        written = sorted([*encoded, *fading]) if variable else list(range(frames))
        pictures = (packet for packet in inputs.demux(stream) if packet.size)
        pending = set(encoded)
        frame_num = count = reference = 0
        for frame, end in zip(written, [*written[1:], frames], strict=True):
            if frame in pending:
                packet = next(pictures, None)
                if packet is None:
                    raise MediaError(f"the H.264 stream has {count} pictures; {len(encoded)} were encoded")
                units = _nal_units(bytes(packet), params.length_size)
                slices = [unit for unit in units if unit[0] & 0x1F in (_NAL_SLICE, _NAL_IDR)]
                if not slices or not slices[0][0] >> 5:
                    raise MediaError(f"picture {count} of the H.264 stream is not a reference picture")
                reference = slices[0][0] >> 5
                if slices[0][0] & 0x1F == _NAL_IDR:
                    frame_num = 0
                units = [_renumbered(unit, params, frame_num) if unit in slices else unit for unit in units]
                _write(output, copy, _sample(units, params.length_size), frame, end - frame, fps, packet.is_keyframe)
                count += 1
            else:
                picture = skips.picture(reference, frame_num, weights.get(frame))
                _write(output, copy, _sample([picture], params.length_size), frame, end - frame, fps, False)
            frame_num = (frame_num + 1) % (1 << params.log2_max_frame_num)
        if next(pictures, None) is not None:
            raise MediaError(f"the H.264 stream has more pictures than the {len(encoded)} encoded")


def _histograms(picture: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels per value in each plane of a raw yuv420p picture."""
    luma, chroma = width * height, ((width + 1) // 2) * ((height + 1) // 2)
    samples = np.fromfile(picture, np.uint8)
    if samples.size != luma + 2 * chroma:
        raise MediaError(f"the fade's first picture has {samples.size} bytes, not a {width}x{height} yuv420p picture")
    y, cb, cr = (
        np.bincount(plane, minlength=256).astype(np.int64) for plane in np.split(samples, [luma, luma + chroma])
    )
    return y, cb, cr


def _write(
    output: av.container.OutputContainer,
    stream: av.stream.Stream,
    data: bytes,
    frame: int,
    duration: int,
    fps: int,
    key: bool,
) -> None:
    packet = av.Packet(data)
    packet.stream = stream
    packet.time_base = Fraction(1, fps)
    packet.pts = packet.dts = frame
    packet.duration = duration
    packet.is_keyframe = key
    output.mux(packet)
