"""Label Studio's brush RLE: masks as the list of bytes its BrushLabels results carry in `value.rle`.

The format is thi.ng's rle-pack, which Label Studio's front end writes and label-studio-converter's `brush.py`
reads (`decode_rle`) and writes (`encode_rle`): a bit stream, most significant bit first, holding
  32 bits  the number of values (height · width · 4: the mask is RGBA, one byte per channel, row-major)
   5 bits  word size − 1 (8 for Label Studio)
  4×4 bits the four run-length field sizes − 1 (3, 4, 8, 16 for Label Studio)
then runs until every value is out: 1 bit (1 = one value repeated, 0 = literal values), 2 bits choosing a field
size, that many bits for run length − 1, then one word (a repeat) or run-length words (literals).
The mask is the alpha channel (> 0 = set). The encoder writes what `encode_rle` writes, byte for byte
(including its padding, which adds a whole zero byte when the bits already end on a byte boundary).
"""

from __future__ import annotations

import numpy as np

_RUN_BITS = (3, 4, 8, 16)
_WORD = 8
_MAX_RUN = 1 << 16


def decode(rle: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> boolean height × width mask (alpha channel > 0); ValueError when malformed."""
    if height < 1 or width < 1:
        raise ValueError(f"mask size {width}×{height} is empty")
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError("brush RLE must be a list of byte values (0-255)") from None
    if data.ndim != 1 or (data.size and (data.min() < 0 or data.max() > 255)):
        raise ValueError("brush RLE must be a list of byte values (0-255)")
    bits = (np.unpackbits(data.astype(np.uint8)) + 48).tobytes().decode("ascii")
    if len(bits) < 53:
        raise ValueError("brush RLE is shorter than its 53-bit header")
    total = int(bits[0:32], 2)
    word = int(bits[32:37], 2) + 1
    sizes = [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)]
    if total != height * width * 4:
        raise ValueError(f"brush RLE holds {total} values but a {width}×{height} RGBA mask has {height * width * 4}")
    if word > 16:
        raise ValueError(f"brush RLE word size {word} bits is not supported")
    pos, end = 53, len(bits)
    starts: list[int] = []
    values: list[int] = []
    done = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > end:
            raise ValueError("brush RLE ends in the middle of a run")
        value = int(bits[pos : pos + n], 2)
        pos += n
        return value

    # The mask is read as runs: (start, value) pairs, filled in one numpy pass at the end.
    while done < total:
        repeat = read(1)
        length = read(sizes[read(2)]) + 1
        if done + length > total:
            raise ValueError(f"brush RLE runs past its {total} values")
        if repeat:
            starts.append(done)
            values.append(read(word))
        else:
            for k in range(length):
                starts.append(done + k)
                values.append(read(word))
        done += length
    flat = np.repeat(np.asarray(values, dtype=np.int64), np.diff(np.asarray([*starts, total])))
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def encode(mask: np.ndarray) -> list[int]:
    """Boolean height × width mask -> Label Studio brush RLE (every channel 255 where set, 0 elsewhere)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel()
    n = flat.size
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    lengths = np.diff(bounds) * 4  # four equal channels per pixel
    firsts = flat[bounds[:-1]]
    parts = [f"{n * 4:032b}", f"{_WORD - 1:05b}", "".join(f"{s - 1:04b}" for s in _RUN_BITS)]
    set_word, clear_word = f"{255:08b}", f"{0:08b}"
    for length, value in zip(lengths.tolist(), firsts.tolist()):
        word = set_word if value else clear_word
        if length <= 8:
            parts.append(f"100{length - 1:03b}{word}")
        elif length <= 16:
            parts.append(f"101{length - 1:04b}{word}")
        elif length <= 256:
            parts.append(f"110{length - 1:08b}{word}")
        else:
            chunk = f"111{_MAX_RUN - 1:016b}{word}"
            while length > _MAX_RUN:
                parts.append(chunk)
                length -= _MAX_RUN
            parts.append(f"111{length - 1:016b}{word}")
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
