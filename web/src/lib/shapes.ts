/** Shapes as the API speaks them (docs/api.md): pixel coordinates, origin at the top-left corner, y down. */

export interface ShapeBase {
  label: string;
  attributes?: Record<string, unknown>;
  score?: number; // predictions only; the API refuses it on annotations
}
export interface ClassShape extends ShapeBase { type: "class" }
export interface BoxShape extends ShapeBase { type: "box"; x0: number; y0: number; x1: number; y1: number }
export interface PolygonShape extends ShapeBase { type: "polygon"; parts: [number, number][][] }
export interface MaskShape extends ShapeBase { type: "mask" | "scribble"; size: [number, number]; counts: string }
export type Shape = ClassShape | BoxShape | PolygonShape | MaskShape;
export type ShapeType = Shape["type"];

export type ProjectKind = "classification" | "multilabel" | "detection" | "instance" | "semantic";

/** The shape types the server accepts per project kind (services/labelling/annotations.py ALLOWED). */
export const ALLOWED: Record<ProjectKind, ShapeType[]> = {
  classification: ["class"],
  multilabel: ["class"],
  detection: ["box"],
  instance: ["polygon", "mask", "box"],
  semantic: ["mask", "scribble", "polygon"],
};

const round = (v: number): number => Math.round(v * 100) / 100;

/** Ordered corners, clamped to the image, rounded to 1/100 pixel; null when it has no area left. */
export function normaliseBox(box: BoxShape, width: number, height: number): BoxShape | null {
  const clampX = (v: number) => Math.min(width, Math.max(0, v));
  const clampY = (v: number) => Math.min(height, Math.max(0, v));
  const x0 = round(clampX(Math.min(box.x0, box.x1))), x1 = round(clampX(Math.max(box.x0, box.x1)));
  const y0 = round(clampY(Math.min(box.y0, box.y1))), y1 = round(clampY(Math.max(box.y0, box.y1)));
  if (x1 - x0 < 0.5 || y1 - y0 < 0.5) return null;
  return { ...box, x0, y0, x1, y1 };
}

/** Points clamped and rounded, closing duplicates and repeated points dropped; parts under 3 points removed. */
export function normalisePolygon(poly: PolygonShape, width: number, height: number): PolygonShape | null {
  const parts: [number, number][][] = [];
  for (const part of poly.parts) {
    const clean: [number, number][] = [];
    for (const [x, y] of part) {
      const p: [number, number] = [round(Math.min(width, Math.max(0, x))), round(Math.min(height, Math.max(0, y)))];
      const last = clean[clean.length - 1];
      if (!last || last[0] !== p[0] || last[1] !== p[1]) clean.push(p);
    }
    while (clean.length > 1 && clean[0][0] === clean[clean.length - 1][0] && clean[0][1] === clean[clean.length - 1][1]) {
      clean.pop();
    }
    if (clean.length >= 3 && Math.abs(ringArea(clean)) > 1e-6) parts.push(clean);
  }
  return parts.length ? { ...poly, parts } : null;
}

export function ringArea(ring: [number, number][]): number {
  let sum = 0;
  for (let i = 0; i < ring.length; i++) {
    const [x0, y0] = ring[i];
    const [x1, y1] = ring[(i + 1) % ring.length];
    sum += x0 * y1 - x1 * y0;
  }
  return sum / 2;
}

/** What an annotation may carry: predictions' scores dropped (the API forbids them on annotations). */
export function forAnnotation(shape: Shape): Shape {
  const { score: _score, ...rest } = shape;
  return rest as Shape;
}

/** Insert a vertex after index `after` (on the edge to the next point), for the polygon editor. */
export function insertVertex(ring: [number, number][], after: number, point: [number, number]): [number, number][] {
  return [...ring.slice(0, after + 1), point, ...ring.slice(after + 1)];
}

/** Remove a vertex, refusing to go below a triangle. */
export function deleteVertex(ring: [number, number][], index: number): [number, number][] {
  if (ring.length <= 3) return ring;
  return ring.filter((_, i) => i !== index);
}

/** One line describing a shape, for lists and the conflict dialog. */
export function describe(shape: Shape): string {
  switch (shape.type) {
    case "class":
      return `class ${shape.label}`;
    case "box":
      return `box ${shape.label} (${shape.x0}, ${shape.y0})–(${shape.x1}, ${shape.y1})`;
    case "polygon":
      return `polygon ${shape.label}, ${shape.parts.reduce((n, p) => n + p.length, 0)} points`;
    default:
      return `${shape.type} ${shape.label} ${shape.size[1]}×${shape.size[0]}`;
  }
}

/** Class shapes after pressing the class's key: single-label replaces, multi-label toggles. */
export function toggleClass(shapes: Shape[], label: string, multi: boolean): Shape[] {
  const others = shapes.filter((s) => s.type !== "class");
  const classes = shapes.filter((s) => s.type === "class");
  if (!multi) {
    return classes.length === 1 && classes[0].label === label ? shapes : [...others, { type: "class", label }];
  }
  const has = classes.some((s) => s.label === label);
  const next = has ? classes.filter((s) => s.label !== label) : [...classes, { type: "class" as const, label }];
  return [...others, ...next];
}
