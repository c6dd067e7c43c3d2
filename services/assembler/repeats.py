"""A held still at a constant frame rate without encoding its repeats: x264 encodes each distinct picture once, and
every frame that repeats the one before is written here as an H.264 picture whose macroblocks are all skipped.

A skipped macroblock with no coded neighbour moving is predicted from the same place in the reference picture (its
motion vector is zero), and an edge between two skipped macroblocks is not filtered, so such a picture decodes to an
exact copy of the previous one. It is a few bytes, costs no analysis, and x264's per-frame cost for a repeat (its
look-ahead and a skip decision for every macroblock, about 3 ms at 1080p) goes away.

The inserted pictures are reference pictures, so every picture after them gets its frame_num rewritten: a
fixed-width field near the start of the slice header, so the rest of the slice is kept byte for byte. This needs a
stream with one reference frame, every picture a reference (x264's veryfast and ultrafast presets without B-frames):
with more, a picture could refer past the inserted ones to an older picture that they would have pushed out of the
decoder's buffer. `fill` refuses any other stream.

A fade-out is written the same way, as pictures of skips with explicit weighted prediction (x264's veryfast
declares it in its PPS): each predicts the picture before it scaled by one weight and offset per plane,
((x * w + 64) >> 7) + o. Fading is a per-value map of the picture the fade starts from, and so is every picture of
the chain, so the weights are fitted on that picture's histograms (256 values per plane, milliseconds a fade) to land
on FFmpeg's fade filter's values, the decoder's integer arithmetic reproduced exactly; measured within a level or two
of the filter.

A fade-in starts from black, which nothing can be weighted into a picture from; so it is decoded out of order: x264
encodes its first frame (black, the IDR) and its last before the first caption shows (a scene cut from black, which
x264 makes an I picture), and the frames between follow that one in decoding order, as non-reference pictures of
skips each weighting it (frame_num then stays, as after any non-reference picture). Display order is no longer
decoding order, so the stream declares one frame of reordering and each slice header its picture order count
(h264.py), and so must every part of the video joined with it.

References: ITU-T H.264 (08/2021) 7.3 (syntax), 7.4.3.2 (pred_weight_table), 8.4.1.1 (P_Skip motion vector), 8.4.2.3
(weighted sample prediction), 8.7.2.1 (bS 0 between skipped macroblocks), 9.3 (CABAC: Tables 9-12/9-13 for
mb_skip_flag's context, 9-44 and 9-45 for the engine).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from services.assembler import h264
from services.common.errors import MediaError

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

    def __init__(self, params: h264.StreamParameters) -> None:
        self._params = params
        self._data = _cabac_skips(params.macroblocks, params.pic_init_qp) if params.cabac else None

    def picture(self, nal_ref_idc: int, frame_num: int, poc_lsb: int, weights: Weights | None = None) -> bytes:
        """A picture of skips: a copy of the last reference picture, or with `weights` that picture scaled.
        `poc_lsb` is written only in a stream with picture order count type 0."""
        params, header = self._params, h264.Writer()
        header.ue(0)  # first_mb_in_slice
        header.ue(_P_SLICE)
        header.ue(params.pps_id)
        header.u(params.log2_max_frame_num, frame_num)
        if params.poc_type == 0:
            header.u(params.log2_max_poc_lsb, poc_lsb)
        header.u(1, 1)  # num_ref_idx_active_override_flag: one reference, the last reference picture
        header.ue(0)
        header.u(1, 0)  # ref_pic_list_modification_flag_l0
        if params.weighted_prediction:  # fill refuses weights for a stream without it
            _weight_table(header, weights or Weights(None, None, None), params.has_chroma)
        if nal_ref_idc:
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
        return bytes([nal_ref_idc << 5 | h264.NAL_SLICE]) + h264.escape(header.rbsp())


@dataclass(frozen=True)
class Weights:
    """A weighted picture's weight and offset for each plane (None: the default, a copy of that plane)."""

    luma: Weight
    cb: Weight
    cr: Weight


def _weight_table(header: h264.Writer, weights: Weights, has_chroma: bool) -> None:
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


def fade_weights(
    histograms: tuple[np.ndarray, np.ndarray, np.ndarray],
    factors: list[int],
    *,
    chain: bool = True,
    reference_factor: int = 0xFFFF,
) -> list[Weights]:
    """Each picture's weights for a fade by `factors` (in 1/65536) of a picture whose Y, Cb and Cr planes have
    `histograms` (pixels per value): with `chain`, each picture predicted from the one before (a fade-out), else each
    from one reference picture (a fade-in, decoded after it). The first reference is the picture faded by
    `reference_factor` (65535 leaves every value as it is)."""
    values = np.arange(256, dtype=np.int64)
    # What each plane's value v has become in the reference.
    levels = [_fade_target(values, reference_factor, chroma=plane > 0) for plane in range(3)]
    weights_by_picture = []
    for factor in factors:
        targets = [_fade_target(values, factor, chroma=plane > 0) for plane in range(3)]
        weights = [
            _fit(counts, level, target) for counts, level, target in zip(histograms, levels, targets, strict=True)
        ]
        if (weights[1] is None) != (weights[2] is None):
            # One flag covers both chroma planes, and the default weight (1 << 7) is out of an explicit one's range.
            weights[1:] = [_fit(histograms[plane], levels[plane], targets[plane], default=False) for plane in (1, 2)]
        if chain:
            levels = [_predicted(level, weight) for level, weight in zip(levels, weights, strict=True)]
        weights_by_picture.append(Weights(*weights))
    return weights_by_picture


@dataclass(frozen=True)
class Fade:
    """A still's fade: frames with FFmpeg's fade factor (in 1/65536) of the picture the fade is of, `base`, raw
    yuv420p as the encoder got it before fading (its histograms are all the weights need, and reading them costs far
    less than decoding the stream)."""

    factors: Mapping[int, int]
    base: Path


def fill(
    source: Path,
    encoded: list[int],
    frames: int,
    fps: int,
    target: Path,
    *,
    fade_ins: Sequence[Fade] = (),
    fade_out: Fade | None = None,
    variable: bool = False,
    reordering: bool = False,
) -> None:
    """Writes `target`, a body `frames` long at `fps`, from `source`, whose pictures are its frames `encoded`
    (ascending, the first 0).

    Every frame that repeats the one before is a picture of skips; at a `variable` frame rate it is left out
    instead, and each picture lasts until the next. `fade_out` frames run from after the last encoded frame to the
    end of the body, each the one before weighted. With `reordering` the stream declares one frame of it
    (h264.reordering_avcc), as every part of a video whose stills fade in so: each of `fade_ins` (one per picture
    the fade-in shows, before any caption and with each caption after) runs to an encoded frame, and its other frames
    are decoded after that one as non-reference pictures, each that picture weighted.

    `source` must be H.264 in MP4 with one reference frame and no B-frames, one picture per packet (x264's output),
    and for fades, weighted prediction. On any error no `target` is left.
    """
    if not encoded or encoded[0] != 0 or encoded[-1] >= frames or sorted(set(encoded)) != encoded:
        raise ValueError(f"encoded frames {encoded[:5]}... do not start at 0 and rise within {frames} frames")
    fading_out = sorted(fade_out.factors) if fade_out else []
    if fading_out and (fading_out[0] <= encoded[-1] or fading_out != list(range(fading_out[0], frames))):
        raise ValueError(f"faded frames {fading_out[:5]}... do not run from after the last encoded to {frames}")
    for fade_in in fade_ins:
        *fading, last = sorted(fade_in.factors)
        if last not in encoded or not fading or set(fading) & set(encoded) or fading != list(range(fading[0], last)):
            raise ValueError(f"fade-in frames {fading[:5]}... do not run to an encoded frame, {last}")
    if fade_ins and not reordering:
        raise ValueError("a fade-in decoded after the picture it fades into needs a reordering stream")
    try:
        _fill(source, encoded, frames, fps, target, fade_ins, fade_out, variable, reordering)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class _Picture:
    """A frame of the body as written: x264's next picture, or a picture of skips (weighted, or a reference)."""

    frame: int
    encoded: bool
    weights: Weights | None = None
    reference: bool = True


def _fill(
    source: Path,
    encoded: list[int],
    frames: int,
    fps: int,
    target: Path,
    fade_ins: Sequence[Fade],
    fade_out: Fade | None,
    variable: bool,
    reordering: bool,
) -> None:
    with av.open(str(source)) as inputs, av.open(str(target), "w", format="mp4") as output:
        stream = inputs.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        params = h264.StreamParameters.from_avcc(extradata)
        if params.max_reference_frames != 1:
            raise MediaError(f"repeats need one reference frame; the stream has {params.max_reference_frames}")
        if (fade_ins or fade_out) and not params.weighted_prediction:
            raise MediaError("the H.264 stream's PPS has no weighted prediction; a fade needs it")
        size = stream.codec_context.width, stream.codec_context.height
        weights = {}
        held_back: dict[int, int] = {}  # a fade-in's frame: the frame of the picture it weights, decoded before it
        for fade_in in fade_ins:
            *fading, weighed = sorted(fade_in.factors)
            factors = [fade_in.factors[frame] for frame in fading]
            histograms = _histograms(fade_in.base, *size)
            fitted = fade_weights(histograms, factors, chain=False, reference_factor=fade_in.factors[weighed])
            weights.update(zip(fading, fitted, strict=True))
            held_back.update(dict.fromkeys(fading, weighed))
        if fade_out is not None:
            fading = sorted(fade_out.factors)
            fitted = fade_weights(_histograms(fade_out.base, *size), [fade_out.factors[frame] for frame in fading])
            weights.update(zip(fading, fitted, strict=True))
        copy = output.add_stream_from_template(stream)
        copy.time_base = Fraction(1, fps)
        written = params
        if reordering:
            copy.codec_context.extradata = h264.reordering_avcc(extradata)
            written = params.reordering()
        order = _decoding_order(encoded, frames, held_back, weights, variable)
        durations = _durations([picture.frame for picture in order], frames, variable)
        decoded = h264.decode_times([picture.frame for picture in order]) if reordering else None
        shown_order = sorted(picture.frame for picture in order)
        positions = {frame: index for index, frame in enumerate(shown_order)}
        skips = _SkipPictures(written)
        pictures = (packet for packet in inputs.demux(stream) if packet.size)
        frame_num = count = reference = idr_position = 0
        for index, picture in enumerate(order):
            frame = picture.frame
            key = False
            if picture.encoded:
                packet = next(pictures, None)
                if packet is None:
                    raise MediaError(f"the H.264 stream has {count} pictures; {len(encoded)} were encoded")
                units = h264.nal_units(bytes(packet), params.length_size)
                slices = [unit for unit in units if unit[0] & 0x1F in (h264.NAL_SLICE, h264.NAL_IDR)]
                if not slices or not slices[0][0] >> 5:
                    raise MediaError(f"picture {count} of the H.264 stream is not a reference picture")
                reference = slices[0][0] >> 5
                if slices[0][0] & 0x1F == h264.NAL_IDR:
                    if frame in held_back.values():
                        raise MediaError("a picture a fade-in weights is an IDR, which nothing shown before may follow")
                    frame_num, idr_position = 0, positions[frame]
                poc_lsb = _poc_lsb(positions[frame], idr_position)
                units = [
                    _rewritten(unit, params, frame_num, poc_lsb, reordering) if unit in slices else unit
                    for unit in units
                ]
                data, key = h264.sample(units, params.length_size), packet.is_keyframe
                count += 1
            else:
                nal_ref_idc = reference if picture.reference else 0
                skip = skips.picture(nal_ref_idc, frame_num, _poc_lsb(positions[frame], idr_position), picture.weights)
                data = h264.sample([skip], params.length_size)
            decode_time = frame if decoded is None else decoded[index]
            h264.write_packet(output, copy, data, frame, decode_time, durations[frame], fps, key)
            if picture.reference:
                frame_num = (frame_num + 1) % (1 << params.log2_max_frame_num)
        if next(pictures, None) is not None:
            raise MediaError(f"the H.264 stream has more pictures than the {len(encoded)} encoded")


def _decoding_order(
    encoded: list[int], frames: int, held_back: Mapping[int, int], weights: Mapping[int, Weights], variable: bool
) -> list[_Picture]:
    """The body's pictures in decoding order: each fade-in frame of `held_back` (a non-reference picture weighting
    the picture it fades into) right after that picture, every other frame in display order; at a `variable` rate
    no repeats."""
    shown = set(encoded)
    frames_written = sorted(shown | set(weights)) if variable else range(frames)
    order: list[_Picture] = []
    waiting: dict[int, list[_Picture]] = {}
    for frame in frames_written:
        if frame in held_back:
            waiting.setdefault(held_back[frame], []).append(_Picture(frame, False, weights[frame], reference=False))
            continue
        order.append(_Picture(frame, frame in shown, weights.get(frame)))
        order += waiting.pop(frame, [])
    return order


def _durations(written: list[int], frames: int, variable: bool) -> dict[int, int]:
    """Each written frame's duration in frames: until the next written, at a variable rate; else one."""
    if not variable:
        return dict.fromkeys(written, 1)
    shown = sorted(written)
    return {frame: end - frame for frame, end in zip(shown, [*shown[1:], frames], strict=True)}


def _poc_lsb(position: int, idr_position: int) -> int:
    """pic_order_cnt_lsb of the picture at `position` in display order: counted in twos from the last IDR's."""
    return (2 * (position - idr_position)) % (1 << h264.POC_LSB_BITS)


def _rewritten(unit: bytes, params: h264.StreamParameters, frame_num: int, poc_lsb: int, reordering: bool) -> bytes:
    if reordering:
        return h264.reordered_slice(unit, params, poc_lsb, frame_num)
    return h264.renumbered(unit, params, frame_num)


def _histograms(picture: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels per value in each plane of a raw yuv420p picture (Pillow's histogram: a fifth of numpy's bincount's
    time at 1080p, which widens every sample to 64 bits first)."""
    chroma_size = (width + 1) // 2, (height + 1) // 2
    luma, chroma = width * height, chroma_size[0] * chroma_size[1]
    samples = memoryview(picture.read_bytes())
    if len(samples) != luma + 2 * chroma:
        raise MediaError(f"the fade's picture has {len(samples)} bytes, not a {width}x{height} yuv420p picture")
    planes = ((0, (width, height)), (luma, chroma_size), (luma + chroma, chroma_size))
    y, cb, cr = (
        np.array(Image.frombuffer("L", size, samples[start : start + size[0] * size[1]]).histogram(), np.int64)
        for start, size in planes
    )
    return y, cb, cr
