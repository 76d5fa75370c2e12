/** Resizing a box by its corners and edges, in image coordinates. */
import type { BoxShape } from "./shapes";

export type Handle = "n" | "s" | "e" | "w" | "ne" | "nw" | "se" | "sw";

/** The handle of `box` under `point` within `tolerance` pixels (corners before edges), or null. */
export function hitHandle(box: BoxShape, [x, y]: [number, number], tolerance: number): Handle | null {
  const near = (a: number, b: number) => Math.abs(a - b) <= tolerance;
  const insideX = x >= box.x0 - tolerance && x <= box.x1 + tolerance;
  const insideY = y >= box.y0 - tolerance && y <= box.y1 + tolerance;
  if (!insideX || !insideY) return null;
  const v = near(y, box.y0) ? "n" : near(y, box.y1) ? "s" : "";
  const h = near(x, box.x0) ? "w" : near(x, box.x1) ? "e" : "";
  return (v + h || null) as Handle | null;
}

/** The box with the handle's sides moved to `point`; sides that cross swap so the box stays ordered. */
export function resizeBox(box: BoxShape, handle: Handle, [x, y]: [number, number]): BoxShape {
  let { x0, y0, x1, y1 } = box;
  if (handle.includes("n")) y0 = y;
  if (handle.includes("s")) y1 = y;
  if (handle.includes("w")) x0 = x;
  if (handle.includes("e")) x1 = x;
  return { ...box, x0: Math.min(x0, x1), y0: Math.min(y0, y1), x1: Math.max(x0, x1), y1: Math.max(y0, y1) };
}

/** CSS cursor for a handle. */
export function cursorFor(handle: Handle): string {
  return `${handle}-resize`;
}
