"""The H.264 syntax the assembler reads and rewrites in x264's streams: parameter sets, slice headers, NAL units.

x264 without B-frames writes picture order count type 2 (pictures shown in decoding order). A still's fade-in is
decoded after the picture it fades into (repeats.py), which needs type 0, where each slice header carries its
picture's place in display order (pic_order_cnt_lsb), and an SPS declaring one frame of reordering. A video's parts
are joined by stream copy under the first part's SPS, so every part of such a video is written that way: x264's
slices keep their data and gain the field in their header, and decoding times run one frame ahead of display.

References: ITU-T H.264 (08/2021) 7.3.2.1.1 (SPS), 7.3.2.2 (PPS), 7.3.3 (slice header), 7.4.1 (emulation
prevention), 7.4.3 (frame_num), 8.2.1 (picture order count), E.1.1 (VUI), E.2.1 (num_reorder_frames); ISO/IEC
14496-15 5.3.3.1 (avcC).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from services.common.errors import MediaError

NAL_SLICE, NAL_IDR = 1, 5
# slice_type % 5: P, B, I (SP and SI are refused).
_P, _B, _I = 0, 1, 2
# The widest pic_order_cnt_lsb (log2_max_pic_order_cnt_lsb_minus4 is at most 12): a picture's order is counted in
# twos from the last IDR, so a part wraps it only after 32768 pictures, and the wrap is followed (8.2.1.1).
POC_LSB_BITS = 16
# Profiles whose SPS carries chroma_format_idc and bit depths (7.3.2.1.1).
_HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)
# Emulation prevention (7.4.1): within a NAL unit, 0x000003 stands for 0x0000 where the next byte is 0 to 3.
_ESCAPED = re.compile(b"\x00\x00\x03")
_NEEDS_ESCAPE = re.compile(b"\x00\x00(?=[\x00-\x03])")
# A slice header is far shorter: 32 weights of a table at most, for one reference.
_HEADER_BYTES = 512


class Reader:
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


class Writer:
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

    def text(self) -> str:
        return "".join(self._bits)

    def rbsp(self) -> bytes:
        """The bits written, padded with zeros to a whole byte."""
        text = self.text()
        text += "0" * (-len(text) % 8)
        return int(text, 2).to_bytes(len(text) // 8, "big")


def unescape(nal: bytes) -> bytes:
    return _ESCAPED.sub(b"\x00\x00", nal)


def escape(rbsp: bytes) -> bytes:
    escaped = _NEEDS_ESCAPE.sub(b"\x00\x00\x03", rbsp)
    # An RBSP ending in a zero byte (a slice's cabac_zero_words) takes a final 0x03: a NAL unit cannot end in 0x00.
    return escaped + b"\x03" if escaped.endswith(b"\x00") else escaped


def nal_units(sample: bytes, length_size: int) -> list[bytes]:
    units, position = [], 0
    while position < len(sample):
        size = int.from_bytes(sample[position : position + length_size], "big")
        units.append(sample[position + length_size : position + length_size + size])
        position += length_size + size
    return units


def sample(units: list[bytes], length_size: int) -> bytes:
    return b"".join(len(unit).to_bytes(length_size, "big") + unit for unit in units)


class _Fields:
    """A header read element by element and kept in order, to be written again with some elements changed."""

    def __init__(self, rbsp: bytes) -> None:
        self._reader = Reader(rbsp)
        self.elements: list[list] = []  # [name, kind ("ue", "se" or a width), value]

    def u(self, name: str, width: int) -> int:
        return self._keep(name, width, self._reader.u(width))

    def ue(self, name: str) -> int:
        return self._keep(name, "ue", self._reader.ue())

    def se(self, name: str) -> int:
        return self._keep(name, "se", self._reader.se())

    @property
    def position(self) -> int:
        return self._reader.position

    def _keep(self, name: str, kind: str | int, value: int) -> int:
        self.elements.append([name, kind, value])
        return value

    def index(self, name: str) -> int:
        return next(index for index, element in enumerate(self.elements) if element[0] == name)

    def set(self, name: str, value: int) -> None:
        self.elements[self.index(name)][2] = value

    def written(self) -> Writer:
        writer = Writer()
        for _name, kind, value in self.elements:
            if kind == "ue":
                writer.ue(value)
            elif kind == "se":
                writer.se(value)
            else:
                writer.u(kind, value)
        return writer


@dataclass(frozen=True)
class StreamParameters:
    """What a slice header's layout depends on, from the stream's one SPS and one PPS."""

    log2_max_frame_num: int
    # 0 (pic_order_cnt_lsb in each slice header) or 2 (display order is decoding order).
    poc_type: int
    log2_max_poc_lsb: int
    pps_id: int
    max_reference_frames: int
    macroblocks: int
    has_chroma: bool
    cabac: bool
    weighted_prediction: bool
    references_l0: int  # num_ref_idx_l0_default_active_minus1 + 1
    pic_init_qp: int
    deblocking_control: bool
    length_size: int

    @classmethod
    def from_avcc(cls, extradata: bytes) -> StreamParameters:
        """Reads an MP4's avcC box body: exactly one SPS and one PPS, as x264 writes."""
        sps, pps, length_size = _parameter_sets(extradata)
        return cls._parse(sps, pps, length_size)

    @classmethod
    def _parse(cls, sps_nal: bytes, pps_nal: bytes, length_size: int) -> StreamParameters:
        sps = _sps_fields(sps_nal)
        values = {name: value for name, _kind, value in sps.elements}
        pps = Reader(unescape(pps_nal[1:]))
        pps_id = pps.ue()
        pps.ue()
        cabac = bool(pps.u(1))
        if pps.u(1):
            raise MediaError("bottom_field_pic_order_in_frame_present_flag is not supported")
        if pps.ue():
            raise MediaError("slice groups are not supported")
        references_l0 = pps.ue() + 1
        pps.ue()
        weighted_prediction = bool(pps.u(1))
        pps.u(2)  # weighted_bipred_idc: B slices are refused
        pic_init_qp = 26 + pps.se()
        pps.se()
        pps.se()
        deblocking_control = bool(pps.u(1))
        pps.u(1)
        if pps.u(1):
            raise MediaError("redundant pictures are not supported")
        return cls(
            log2_max_frame_num=values["log2_max_frame_num_minus4"] + 4,
            poc_type=values["pic_order_cnt_type"],
            log2_max_poc_lsb=values.get("log2_max_pic_order_cnt_lsb_minus4", -4) + 4,
            pps_id=pps_id,
            max_reference_frames=values["max_num_ref_frames"],
            macroblocks=(values["pic_width_in_mbs_minus1"] + 1) * (values["pic_height_in_map_units_minus1"] + 1),
            has_chroma=values.get("chroma_format_idc", 1) != 0,
            cabac=cabac,
            weighted_prediction=weighted_prediction,
            references_l0=references_l0,
            pic_init_qp=pic_init_qp,
            deblocking_control=deblocking_control,
            length_size=length_size,
        )

    def reordering(self) -> StreamParameters:
        """These parameters once `reordering_avcc` has rewritten the SPS."""
        return dataclasses.replace(self, poc_type=0, log2_max_poc_lsb=POC_LSB_BITS)


def _parameter_sets(extradata: bytes) -> tuple[bytes, bytes, int]:
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
    return sets[0], sets[1], length_size


def _sps_fields(sps_nal: bytes) -> _Fields:
    """The whole SPS, VUI included, element by element (7.3.2.1.1, E.1.1)."""
    sps = _Fields(unescape(sps_nal[1:]))
    profile = sps.u("profile_idc", 8)
    sps.u("constraint_flags", 8)
    sps.u("level_idc", 8)
    sps.ue("seq_parameter_set_id")
    if profile in _HIGH_PROFILES:
        if sps.ue("chroma_format_idc") == 3 and sps.u("separate_colour_plane_flag", 1):
            raise MediaError("separate colour planes are not supported")
        sps.ue("bit_depth_luma_minus8")
        sps.ue("bit_depth_chroma_minus8")
        sps.u("qpprime_y_zero_transform_bypass_flag", 1)
        if sps.u("seq_scaling_matrix_present_flag", 1):
            raise MediaError("H.264 scaling matrices are not supported")
    sps.ue("log2_max_frame_num_minus4")
    poc_type = sps.ue("pic_order_cnt_type")
    if poc_type == 0:
        sps.ue("log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type != 2:
        raise MediaError(f"picture order count type {poc_type} is not supported")
    sps.ue("max_num_ref_frames")
    sps.u("gaps_in_frame_num_value_allowed_flag", 1)
    sps.ue("pic_width_in_mbs_minus1")
    sps.ue("pic_height_in_map_units_minus1")
    if not sps.u("frame_mbs_only_flag", 1):
        raise MediaError("interlaced H.264 is not supported")
    sps.u("direct_8x8_inference_flag", 1)
    if sps.u("frame_cropping_flag", 1):
        for side in ("left", "right", "top", "bottom"):
            sps.ue(f"frame_crop_{side}_offset")
    if sps.u("vui_parameters_present_flag", 1):
        _vui_fields(sps)
    return sps


def _vui_fields(sps: _Fields) -> None:
    if sps.u("aspect_ratio_info_present_flag", 1) and sps.u("aspect_ratio_idc", 8) == 255:
        sps.u("sar_width", 16)
        sps.u("sar_height", 16)
    if sps.u("overscan_info_present_flag", 1):
        sps.u("overscan_appropriate_flag", 1)
    if sps.u("video_signal_type_present_flag", 1):
        sps.u("video_format", 3)
        sps.u("video_full_range_flag", 1)
        if sps.u("colour_description_present_flag", 1):
            sps.u("colour_primaries", 8)
            sps.u("transfer_characteristics", 8)
            sps.u("matrix_coefficients", 8)
    if sps.u("chroma_loc_info_present_flag", 1):
        sps.ue("chroma_sample_loc_type_top_field")
        sps.ue("chroma_sample_loc_type_bottom_field")
    if sps.u("timing_info_present_flag", 1):
        sps.u("num_units_in_tick", 32)
        sps.u("time_scale", 32)
        sps.u("fixed_frame_rate_flag", 1)
    hrd = [sps.u(f"{kind}_hrd_parameters_present_flag", 1) and _hrd_fields(sps, kind) for kind in ("nal", "vcl")]
    if any(hrd):
        sps.u("low_delay_hrd_flag", 1)
    sps.u("pic_struct_present_flag", 1)
    if sps.u("bitstream_restriction_flag", 1):
        sps.u("motion_vectors_over_pic_boundaries_flag", 1)
        sps.ue("max_bytes_per_pic_denom")
        sps.ue("max_bits_per_mb_denom")
        sps.ue("log2_max_mv_length_horizontal")
        sps.ue("log2_max_mv_length_vertical")
        sps.ue("max_num_reorder_frames")
        sps.ue("max_dec_frame_buffering")


def _hrd_fields(sps: _Fields, kind: str) -> bool:
    count = sps.ue(f"{kind}_cpb_cnt_minus1") + 1
    sps.u(f"{kind}_bit_rate_scale", 4)
    sps.u(f"{kind}_cpb_size_scale", 4)
    for index in range(count):
        sps.ue(f"{kind}_bit_rate_value_minus1_{index}")
        sps.ue(f"{kind}_cpb_size_value_minus1_{index}")
        sps.u(f"{kind}_cbr_flag_{index}", 1)
    for name in ("initial_cpb_removal_delay", "cpb_removal_delay", "dpb_output_delay", "time_offset"):
        sps.u(f"{kind}_{name}_length", 5)
    return True


def reordering_avcc(extradata: bytes) -> bytes:
    """The avcC with its SPS rewritten for one frame of reordering: picture order count type 0 and the VUI's
    max_num_reorder_frames 1, max_dec_frame_buffering at least 2 (the picture held back and the one decoded)."""
    sps_nal, _pps, _length_size = _parameter_sets(extradata)
    sps = _sps_fields(sps_nal)
    if sps.elements[sps.index("pic_order_cnt_type")][2] != 2:
        raise MediaError("the H.264 stream already has picture order count type 0")
    try:
        buffering = sps.elements[sps.index("max_dec_frame_buffering")][2]
    except StopIteration:
        raise MediaError("the H.264 stream's SPS has no bitstream restriction to declare its reordering") from None
    sps.set("max_num_reorder_frames", 1)
    sps.set("max_dec_frame_buffering", max(2, buffering))
    sps.set("pic_order_cnt_type", 0)
    position = sps.index("pic_order_cnt_type") + 1
    sps.elements.insert(position, ["log2_max_pic_order_cnt_lsb_minus4", "ue", POC_LSB_BITS - 4])
    writer = sps.written()
    writer.bits("1")  # rbsp_stop_one_bit
    rewritten = sps_nal[:1] + escape(writer.rbsp())
    # avcC: 5 bytes, then the SPS count and its length, the SPS, and the rest (PPS, High profile fields) unchanged.
    rest = extradata[8 + len(sps_nal) :]
    return extradata[:6] + len(rewritten).to_bytes(2, "big") + rewritten + rest


def reordered_slice(nal: bytes, params: StreamParameters, poc_lsb: int, frame_num: int | None = None) -> bytes:
    """An x264 slice (of a stream with `params`, picture order count type 2) with pic_order_cnt_lsb added to its
    header, and its frame_num set when given; the slice data is kept bit for bit."""
    rbsp = unescape(nal[1:])
    header = _Fields(rbsp[:_HEADER_BYTES])
    nal_ref_idc, idr = nal[0] >> 5, nal[0] & 0x1F == NAL_IDR
    header.ue("first_mb_in_slice")
    slice_type = header.ue("slice_type") % 5
    if slice_type not in (_P, _I):
        raise MediaError(f"H.264 slice type {slice_type} is not supported (P and I only)")
    header.ue("pic_parameter_set_id")
    header.u("frame_num", params.log2_max_frame_num)
    if idr:
        header.ue("idr_pic_id")
    poc_at = len(header.elements)
    if slice_type == _P:
        references = params.references_l0
        if header.u("num_ref_idx_active_override_flag", 1):
            references = header.ue("num_ref_idx_l0_active_minus1") + 1
        if header.u("ref_pic_list_modification_flag_l0", 1):
            while (operation := header.ue("modification_of_pic_nums_idc")) != 3:
                header.ue("abs_diff_pic_num_minus1" if operation < 2 else "long_term_pic_num")
        if params.weighted_prediction:
            _pred_weight_fields(header, references, params.has_chroma)
    if nal_ref_idc:
        if idr:
            header.u("no_output_of_prior_pics_flag", 1)
            header.u("long_term_reference_flag", 1)
        elif header.u("adaptive_ref_pic_marking_mode_flag", 1):
            while (operation := header.ue("memory_management_control_operation")) != 0:
                if operation in (1, 3):
                    header.ue("difference_of_pic_nums_minus1")
                if operation == 2:
                    header.ue("long_term_pic_num")
                if operation in (3, 6):
                    header.ue("long_term_frame_idx")
                if operation == 4:
                    header.ue("max_long_term_frame_idx_plus1")
    if params.cabac and slice_type != _I:
        header.ue("cabac_init_idc")
    header.se("slice_qp_delta")
    if params.deblocking_control and header.ue("disable_deblocking_filter_idc") != 1:
        header.se("slice_alpha_c0_offset_div2")
        header.se("slice_beta_offset_div2")
    end = header.position
    if frame_num is not None:
        header.set("frame_num", frame_num)
    header.elements.insert(poc_at, ["pic_order_cnt_lsb", POC_LSB_BITS, poc_lsb])
    writer = header.written()
    if params.cabac:
        # The slice data starts byte-aligned after cabac_alignment_one_bits: only the header moves.
        writer.bits("1" * (-writer.length() % 8))
        rewritten = writer.rbsp() + rbsp[(end + 7) // 8 :]
    else:
        # CAVLC data follows the header bit by bit: the rest of the RBSP (its stop bit included) is shifted.
        size = len(rbsp) * 8 - end
        rest = int.from_bytes(rbsp, "big") & ((1 << size) - 1)
        trailing = (rest & -rest).bit_length() - 1
        rest, size = rest >> trailing, size - trailing
        total = writer.length() + size
        value = ((int(writer.text(), 2) << size) | rest) << (-total % 8)
        rewritten = value.to_bytes((total + 7) // 8, "big")
    return nal[:1] + escape(rewritten)


def _pred_weight_fields(header: _Fields, references: int, has_chroma: bool) -> None:
    header.ue("luma_log2_weight_denom")
    if has_chroma:
        header.ue("chroma_log2_weight_denom")
    for _ in range(references):
        if header.u("luma_weight_l0_flag", 1):
            header.se("luma_weight_l0")
            header.se("luma_offset_l0")
        if has_chroma and header.u("chroma_weight_l0_flag", 1):
            for _plane in range(4):
                header.se("chroma_weight_or_offset_l0")


def decode_times(shown: list[int]) -> list[int]:
    """Decoding times for pictures shown at `shown` (in decoding order), in the same unit: with one frame of
    reordering each is decoded when the one before it in display order is shown, the first a tick before its own
    time, the last a tick before its own (so the track's decoding span ends where its display does). Every part of a
    video starts so, one tick early, which keeps the joined video's decoding times rising across each join."""
    order = sorted(shown)
    times = [order[0] - 1, *order[:-1]]
    times[-1] = max(times[-1], shown[-1] - 1)
    if any(time > show for time, show in zip(times, shown, strict=True)):
        raise MediaError("a picture would be decoded after it is shown: more than one frame of reordering")
    return times


def reorder(source: Path, target: Path, fps: int) -> None:
    """Copies an x264 part (no B-frames, picture order count type 2, timestamps on the 1 / `fps` grid) to `target`
    as the same pictures declaring one frame of reordering, in a time base of 1 / `fps`. On any error no `target`
    is left."""
    try:
        with av.open(str(source)) as inputs, av.open(str(target), "w", format="mp4") as output:
            stream = inputs.streams.video[0]
            extradata = bytes(stream.codec_context.extradata or b"")
            params = StreamParameters.from_avcc(extradata)
            copy = output.add_stream_from_template(stream)
            copy.codec_context.extradata = reordering_avcc(extradata)
            copy.time_base = Fraction(1, fps)
            since_idr = 0
            for packet, shown, duration in _frames(inputs.demux(stream), fps):
                units = nal_units(bytes(packet), params.length_size)
                if any(unit[0] & 0x1F == NAL_IDR for unit in units):
                    since_idr = 0
                poc_lsb = (2 * since_idr) % (1 << POC_LSB_BITS)
                units = [
                    reordered_slice(unit, params, poc_lsb) if unit[0] & 0x1F in (NAL_SLICE, NAL_IDR) else unit
                    for unit in units
                ]
                # Display order is decoding order here: each picture decoded a tick before it is shown.
                data = sample(units, params.length_size)
                write_packet(output, copy, data, shown, shown - 1, duration, fps, packet.is_keyframe)
                since_idr += 1
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _frames(packets: Iterator[av.Packet], fps: int) -> Iterator[tuple[av.Packet, int, int]]:
    """Each picture with its time and duration in frames (decoding order is display order without B-frames)."""
    for packet in packets:
        if not packet.size:
            continue
        if packet.pts is None or packet.time_base is None:
            raise MediaError("an H.264 part has a picture without a timestamp")
        shown, duration = (value * packet.time_base * fps for value in (packet.pts, packet.duration or 0))
        if shown.denominator != 1 or duration.denominator != 1:
            seconds = float(packet.pts * packet.time_base)
            raise MediaError(f"an H.264 part's picture at {seconds:.4f} s is off the frame grid")
        yield packet, int(shown), int(duration)


def write_packet(
    output: av.container.OutputContainer,
    stream: av.stream.Stream,
    data: bytes,
    shown: int,
    decoded: int,
    duration: int,
    fps: int,
    key: bool,
) -> None:
    """Muxes one picture, its times in frames of 1 / `fps`."""
    packet = av.Packet(data)
    packet.stream = stream
    packet.time_base = Fraction(1, fps)
    packet.pts = shown
    packet.dts = decoded
    packet.duration = duration
    packet.is_keyframe = key
    output.mux(packet)


def renumbered(nal: bytes, params: StreamParameters, frame_num: int) -> bytes:
    """A slice with its frame_num set: only its bits change (a fixed-width field near the start of the header)."""
    rbsp = bytearray(unescape(nal[1:]))
    header = Reader(bytes(rbsp[:64]))
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
    return nal[:1] + escape(bytes(rbsp))
