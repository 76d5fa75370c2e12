import { describe, expect, it } from "vitest";
import { hitHandle, resizeBox } from "../src/lib/boxEdit";
import { paintDisc, paintLine, select, valuesIn } from "../src/lib/brush";
import { boxToRing, levelCount, levelFor, polygonToRings, ringsToParts, ringToBox, toImage, toMap } from "../src/lib/coords";
import { deleteVertex, insertVertex, normaliseBox, normalisePolygon, ringArea, toggleClass, type BoxShape, type PolygonShape,
  type Shape } from "../src/lib/shapes";

describe("coordinates", () => {
  it("flips y between image (down) and map (up)", () => {
    expect(toMap([3, 10], 100)).toEqual([3, 90]);
    expect(toImage(toMap([3.5, 10.25], 100), 100)).toEqual([3.5, 10.25]);
  });

  it("round-trips boxes through closed map rings", () => {
    const box: BoxShape = { type: "box", label: "cat", x0: 1, y0: 2, x1: 30, y1: 40 };
    const ring = boxToRing(box, 48);
    expect(ring).toHaveLength(5);
    expect(ring[0]).toEqual(ring[4]);
    expect(ringToBox(ring, 48, "cat")).toEqual(box);
  });

  it("round-trips polygon parts (open in the API, closed in OpenLayers)", () => {
    const poly: PolygonShape = { type: "polygon", label: "cell", parts: [[[1, 1], [10, 1], [10, 8]], [[20, 20], [30, 20], [25, 28]]] };
    const rings = polygonToRings(poly, 50);
    expect(rings[0]).toHaveLength(4);
    expect(ringsToParts(rings, 50)).toEqual(poly.parts);
  });

  it("chooses server levels by view resolution", () => {
    expect(levelCount(4096, 4096)).toBe(13);
    expect(levelCount(1, 1)).toBe(1);
    expect(levelFor(0.5, 13)).toBe(0);
    expect(levelFor(4, 13)).toBe(2);
    expect(levelFor(5.9, 13)).toBe(2);
    expect(levelFor(1e6, 13)).toBe(12);
  });
});

describe("shapes", () => {
  it("orders, clamps and rounds boxes; refuses empty ones", () => {
    expect(normaliseBox({ type: "box", label: "a", x0: 50, y0: -3, x1: 10.123, y1: 20 }, 40, 30))
      .toEqual({ type: "box", label: "a", x0: 10.12, y0: 0, x1: 40, y1: 20 });
    expect(normaliseBox({ type: "box", label: "a", x0: 5, y0: 5, x1: 5.2, y1: 9 }, 40, 30)).toBeNull();
  });

  it("cleans polygons: duplicates, closing point, degenerate parts", () => {
    const poly: PolygonShape = { type: "polygon", label: "c", parts: [[[0, 0], [0, 0], [10, 0], [10, 10], [0, 0]], [[1, 1], [2, 2], [3, 3]]] };
    expect(normalisePolygon(poly, 100, 100)?.parts).toEqual([[[0, 0], [10, 0], [10, 10]]]);
    expect(normalisePolygon({ ...poly, parts: [[[1, 1], [2, 2], [3, 3]]] }, 100, 100)).toBeNull();
  });

  it("computes signed ring areas", () => {
    expect(Math.abs(ringArea([[0, 0], [4, 0], [4, 3], [0, 3]]))).toBe(12);
  });

  it("inserts and deletes vertices, keeping at least a triangle", () => {
    const ring: [number, number][] = [[0, 0], [10, 0], [10, 10]];
    const four = insertVertex(ring, 0, [5, -1]);
    expect(four).toEqual([[0, 0], [5, -1], [10, 0], [10, 10]]);
    expect(deleteVertex(four, 1)).toEqual(ring);
    expect(deleteVertex(ring, 0)).toBe(ring);
  });

  it("sets single labels and toggles multi labels", () => {
    const box: Shape = { type: "box", label: "x", x0: 0, y0: 0, x1: 1, y1: 1 };
    let shapes = toggleClass([box], "cat", false);
    expect(shapes.filter((s) => s.type === "class").map((s) => s.label)).toEqual(["cat"]);
    shapes = toggleClass(shapes, "dog", false);
    expect(shapes.filter((s) => s.type === "class").map((s) => s.label)).toEqual(["dog"]);
    let multi = toggleClass(toggleClass([], "cat", true), "dog", true);
    expect(multi.map((s) => s.label)).toEqual(["cat", "dog"]);
    multi = toggleClass(multi, "cat", true);
    expect(multi.map((s) => s.label)).toEqual(["dog"]);
  });
});

describe("box resizing", () => {
  const box: BoxShape = { type: "box", label: "a", x0: 10, y0: 10, x1: 50, y1: 30 };
  it("finds corners before edges, nothing far away", () => {
    expect(hitHandle(box, [10, 10], 2)).toBe("nw");
    expect(hitHandle(box, [51, 31], 2)).toBe("se");
    expect(hitHandle(box, [30, 30], 2)).toBe("s");
    expect(hitHandle(box, [49.5, 20], 2)).toBe("e");
    expect(hitHandle(box, [30, 20], 2)).toBeNull();
    expect(hitHandle(box, [80, 10], 2)).toBeNull();
  });
  it("moves the handle's sides and keeps the box ordered", () => {
    expect(resizeBox(box, "se", [60, 40])).toMatchObject({ x0: 10, y0: 10, x1: 60, y1: 40 });
    expect(resizeBox(box, "n", [0, 5])).toMatchObject({ x0: 10, y0: 5, x1: 50, y1: 30 });
    expect(resizeBox(box, "w", [70, 0])).toMatchObject({ x0: 50, x1: 70 });
  });
});

describe("brush", () => {
  it("paints a disc of pixel centres within the radius", () => {
    const map = new Uint8Array(10 * 10);
    const dirty = paintDisc(map, 10, 10, 5, 5, 2, 3);
    expect(dirty).toEqual({ x0: 3, y0: 3, x1: 7, y1: 7 });
    expect(map.reduce((n, v) => n + (v === 3 ? 1 : 0), 0)).toBe(12);
    expect(valuesIn(map)).toEqual([3]);
  });
  it("paints gap-free lines and clips at the border", () => {
    const map = new Uint8Array(20 * 10);
    paintLine(map, 20, 10, [-5, 5], [25, 5], 1, 1);
    for (let x = 0; x < 20; x++) expect(map[5 * 20 + x]).toBe(1);
    paintLine(map, 20, 10, [0, 5], [19, 5], 1, 0);
    expect(select(map, 1).reduce((n, v) => n + v, 0)).toBe(0);
  });
});
