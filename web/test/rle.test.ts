import { describe, expect, it } from "vitest";
import { area, bbox, bitmapToCounts, contains, countsToString, decode, encode, stringToCounts } from "../src/lib/rle";
import fixtures from "./rle_fixtures.json";

// The fixtures were made by pycocotools (the server's encoder): the strings must match byte for byte.
describe("COCO RLE matches pycocotools", () => {
  for (const f of fixtures as { name: string; height: number; width: number; bits: string; counts: string }[]) {
    const bitmap = Uint8Array.from(f.bits, (c) => (c === "1" ? 1 : 0));
    it(`encodes ${f.name}`, () => {
      expect(encode(bitmap, f.height, f.width)).toEqual({ size: [f.height, f.width], counts: f.counts });
    });
    it(`decodes ${f.name}`, () => {
      expect(Array.from(decode({ size: [f.height, f.width], counts: f.counts }))).toEqual(Array.from(bitmap));
    });
    it(`finds each pixel of ${f.name}`, () => {
      const rle = { size: [f.height, f.width] as [number, number], counts: f.counts };
      const wrong: number[][] = [];
      const step = f.height * f.width > 5000 ? 7 : 1; // every 7th pixel of the large ones
      for (let n = 0; n < f.height * f.width; n += step) {
        const x = n % f.width, y = Math.floor(n / f.width);
        if (contains(rle, x, y) !== (bitmap[n] === 1)) wrong.push([x, y]);
      }
      expect(wrong).toEqual([]);
      expect(contains(rle, -1, 0) || contains(rle, f.width, 0)).toBe(false);
    });
    it(`measures ${f.name}`, () => {
      expect(area({ size: [f.height, f.width], counts: f.counts })).toBe(bitmap.reduce((n, v) => n + v, 0));
    });
  }

  it("handles runs longer than 2**31 bits of one count group", () => {
    // 2000×3000 mask, last column from row 1000 down (pycocotools: 'h\\Rg5Xo0', bbox x=2999, y=1000, w=1, h=1000)
    const rle = { size: [2000, 3000] as [number, number], counts: "h\\Rg5Xo0" };
    expect(stringToCounts(rle.counts)).toEqual([2999 * 2000 + 1000, 1000]);
    expect(bbox(rle)).toEqual([2999, 1000, 3000, 2000]);
    expect(countsToString([2999 * 2000 + 1000, 1000])).toBe(rle.counts);
  });

  it("round-trips counts including negative differences", () => {
    const counts = [5, 100, 3, 1, 70000, 2, 1, 1, 123456789];
    expect(stringToCounts(countsToString(counts))).toEqual(counts);
  });

  it("starts with a zero run when the first pixel is set", () => {
    expect(bitmapToCounts(Uint8Array.from([1, 0, 1, 0]), 2, 2)).toEqual([0, 2, 2]); // column-major: the left column is set
    expect(bitmapToCounts(Uint8Array.from([1, 1, 0, 0]), 2, 2)).toEqual([0, 1, 1, 1, 1]);
  });

  it("finds the bounding box in the server's convention", () => {
    const bitmap = new Uint8Array(6 * 8);
    for (let y = 1; y < 4; y++) for (let x = 2; x < 6; x++) bitmap[y * 8 + x] = 1;
    expect(bbox(encode(bitmap, 6, 8))).toEqual([2, 1, 6, 4]);
    expect(bbox(encode(new Uint8Array(12), 3, 4))).toBeNull();
  });

  it("rejects a string that does not cover the mask", () => {
    expect(() => decode({ size: [4, 4], counts: "3" })).toThrow(/covers/);
  });
});
