/**
 * COCO run-length encoding, bit-compatible with pycocotools (what the server stores: geometry/rle.py).
 *
 * Runs are counted in column-major order (down each column, then the next column), starting with a run of
 * zeros. The compressed string stores each count as 5-bit groups offset by 48 ('0'), with a continuation
 * bit (0x20) and, from the fourth count on, as a difference to the count two places earlier.
 */

export interface Rle {
  size: [number, number]; // [height, width]
  counts: string;
}

/** Uncompressed counts -> COCO's compressed string (pycocotools rleToString). */
export function countsToString(counts: ArrayLike<number>): string {
  let out = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x = Math.floor(x / 32); // an arithmetic shift that also works past 2**31
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  }
  return out;
}

/** COCO's compressed string -> uncompressed counts (pycocotools rleFrString). */
export function stringToCounts(text: string): number[] {
  const counts: number[] = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= text.length) throw new Error("truncated RLE string");
      const c = text.charCodeAt(p) - 48;
      if (c < 0 || c > 63) throw new Error(`invalid RLE character ${JSON.stringify(text[p])}`);
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** Row-major H×W bitmap (non-zero = set) -> uncompressed column-major counts. */
export function bitmapToCounts(bitmap: ArrayLike<number>, height: number, width: number): number[] {
  if (bitmap.length !== height * width) throw new Error(`bitmap has ${bitmap.length} values, expected ${height}×${width}`);
  const counts: number[] = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let i = x; i < height * width; i += width) {
      const v = bitmap[i] ? 1 : 0;
      if (v !== current) {
        counts.push(run);
        run = 0;
        current = v;
      }
      run++;
    }
  }
  counts.push(run);
  return counts;
}

export function encode(bitmap: ArrayLike<number>, height: number, width: number): Rle {
  return { size: [height, width], counts: countsToString(bitmapToCounts(bitmap, height, width)) };
}

/**
 * Decode into a row-major bitmap: set pixels get `value`, others are left as they are (so several masks can be
 * painted into one label map). Returns the target.
 */
export function decodeInto(rle: Rle, target: Uint8Array, value = 1): Uint8Array {
  const [height, width] = rle.size;
  if (target.length !== height * width) throw new Error(`target has ${target.length} values, mask is ${width}×${height}`);
  const counts = stringToCounts(rle.counts);
  let pos = 0; // column-major position
  let on = false;
  for (const run of counts) {
    if (on) {
      for (let j = pos; j < pos + run; j++) {
        const x = Math.floor(j / height);
        const y = j - x * height;
        target[y * width + x] = value;
      }
    }
    pos += run;
    on = !on;
  }
  if (pos !== height * width) throw new Error(`RLE covers ${pos} pixels, the mask has ${height * width}`);
  return target;
}

export function decode(rle: Rle): Uint8Array {
  return decodeInto(rle, new Uint8Array(rle.size[0] * rle.size[1]));
}

/** Whether pixel (x, y) is set, without decoding (COCO runs go down the columns). */
export function contains(rle: Rle, x: number, y: number): boolean {
  const [height, width] = rle.size;
  if (x < 0 || y < 0 || x >= width || y >= height) return false;
  const target = Math.floor(x) * height + Math.floor(y);
  const counts = stringToCounts(rle.counts);
  let pos = 0;
  for (let i = 0; i < counts.length; i++) {
    pos += counts[i];
    if (target < pos) return i % 2 === 1;
  }
  return false;
}

/** Number of set pixels, without decoding. */
export function area(rle: Rle): number {
  const counts = stringToCounts(rle.counts);
  let total = 0;
  for (let i = 1; i < counts.length; i += 2) total += counts[i];
  return total;
}

/** (x0, y0, x1, y1) of the set pixels, pixel (c, r) covering [c, c+1) × [r, r+1); null when empty. */
export function bbox(rle: Rle): [number, number, number, number] | null {
  const [height] = rle.size;
  const counts = stringToCounts(rle.counts);
  let pos = 0;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (let i = 0; i < counts.length; i++) {
    const run = counts[i];
    if (i % 2 === 1 && run > 0) {
      const firstX = Math.floor(pos / height), lastX = Math.floor((pos + run - 1) / height);
      x0 = Math.min(x0, firstX);
      x1 = Math.max(x1, lastX + 1);
      if (firstX !== lastX) {
        y0 = 0;
        y1 = height;
      } else {
        y0 = Math.min(y0, pos - firstX * height);
        y1 = Math.max(y1, pos + run - firstX * height);
      }
    }
    pos += run;
  }
  return x0 === Infinity ? null : [x0, y0, x1, y1];
}
