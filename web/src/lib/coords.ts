/**
 * Image pixel coordinates (origin top-left, y down: the project's convention) <-> map coordinates of the
 * OpenLayers view (origin bottom-left, y up, one map unit = one full-resolution pixel).
 */
import type { BoxShape, PolygonShape } from "./shapes";

export type XY = [number, number];

export function toMap([x, y]: XY, height: number): XY {
  return [x, height - y];
}

export function toImage([x, y]: XY, height: number): XY {
  return [x, height - y];
}

/** A closed map ring (first point repeated at the end, as OpenLayers keeps it). */
export function boxToRing(box: { x0: number; y0: number; x1: number; y1: number }, height: number): XY[] {
  const { x0, y0, x1, y1 } = box;
  return [toMap([x0, y0], height), toMap([x1, y0], height), toMap([x1, y1], height), toMap([x0, y1], height),
    toMap([x0, y0], height)];
}

export function ringToBox(ring: XY[], height: number, label: string): BoxShape {
  const xs = ring.map((p) => p[0]);
  const ys = ring.map((p) => height - p[1]);
  return { type: "box", label, x0: Math.min(...xs), y0: Math.min(...ys), x1: Math.max(...xs), y1: Math.max(...ys) };
}

export function polygonToRings(poly: PolygonShape, height: number): XY[][] {
  return poly.parts.map((part) => {
    const ring = part.map((p) => toMap(p, height));
    return ring.length ? [...ring, ring[0]] : ring;
  });
}

/** Map rings (closed) -> API parts (not closed). */
export function ringsToParts(rings: XY[][], height: number): [number, number][][] {
  return rings.map((ring) => {
    const open = ring.length > 1 && ring[0][0] === ring[ring.length - 1][0] && ring[0][1] === ring[ring.length - 1][1]
      ? ring.slice(0, -1) : ring;
    return open.map((p) => toImage(p, height));
  });
}

/** Zoom levels the server renders: level n halves both sides n times (services/data/items.py). */
export function levelCount(width: number, height: number): number {
  return Math.ceil(Math.log2(Math.max(width, height, 1))) + 1;
}

/** The server level whose pixels are at least as fine as the view's resolution (map units per screen pixel). */
export function levelFor(resolution: number, levels: number): number {
  if (!(resolution > 1)) return 0;
  return Math.min(levels - 1, Math.floor(Math.log2(resolution)));
}
