/** Brush and eraser strokes on a row-major label map (one byte per pixel). */

export interface Dirty {
  x0: number;
  y0: number;
  x1: number; // exclusive
  y1: number;
}

/** Paint a filled disc of `radius` pixels centred at (cx, cy) with `value`; returns the touched rectangle. */
export function paintDisc(map: Uint8Array, width: number, height: number, cx: number, cy: number, radius: number,
  value: number): Dirty | null {
  const r = Math.max(0.5, radius);
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(width, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(height, Math.ceil(cy + r));
  if (x0 >= x1 || y0 >= y1) return null;
  const r2 = r * r;
  for (let y = y0; y < y1; y++) {
    const dy = y + 0.5 - cy;
    for (let x = x0; x < x1; x++) {
      const dx = x + 0.5 - cx;
      if (dx * dx + dy * dy <= r2) map[y * width + x] = value;
    }
  }
  return { x0, y0, x1, y1 };
}

/** Paint discs along the segment from a to b, spaced so the stroke has no gaps. */
export function paintLine(map: Uint8Array, width: number, height: number, a: [number, number], b: [number, number],
  radius: number, value: number): Dirty | null {
  const length = Math.hypot(b[0] - a[0], b[1] - a[1]);
  const steps = Math.max(1, Math.ceil(length / Math.max(0.5, radius / 2)));
  let dirty: Dirty | null = null;
  for (let i = 0; i <= steps; i++) {
    const t = i / steps;
    dirty = union(dirty, paintDisc(map, width, height, a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, radius, value));
  }
  return dirty;
}

export function union(a: Dirty | null, b: Dirty | null): Dirty | null {
  if (!a) return b;
  if (!b) return a;
  return { x0: Math.min(a.x0, b.x0), y0: Math.min(a.y0, b.y0), x1: Math.max(a.x1, b.x1), y1: Math.max(a.y1, b.y1) };
}

/** Pixels of `map` equal to `value`, as a 0/1 bitmap (what one class's mask encodes). */
export function select(map: Uint8Array, value: number): Uint8Array {
  const out = new Uint8Array(map.length);
  for (let i = 0; i < map.length; i++) out[i] = map[i] === value ? 1 : 0;
  return out;
}

/** The class values present in a label map (0 excluded), ascending. */
export function valuesIn(map: Uint8Array): number[] {
  const seen = new Uint8Array(256);
  for (let i = 0; i < map.length; i++) seen[map[i]] = 1;
  const out: number[] = [];
  for (let v = 1; v < 256; v++) if (seen[v]) out.push(v);
  return out;
}
