/** Pre-labels: a model's predicted shapes shown for review inside the labelling view. */
import { forAnnotation, type Shape } from "./shapes";

export interface Prediction {
  id: number;
  item_id: number;
  model_version: string;
  shapes: Shape[];
  score: number | null;
  review_state: string;
  dismissed?: number[]; // shapes this user rejected while labelling (kept by the server)
}

export interface PreLabel {
  key: string; // "predictionId:index"
  predictionId: number;
  index: number;
  shape: Shape;
  score: number | null;
}

/** The pending pre-labels of an item, without those already taken into the annotation or rejected before. */
export function preLabelsOf(predictions: Prediction[], annotation: Shape[]): PreLabel[] {
  const taken = new Set(annotation.map((s) => origin(s)).filter((k): k is string => k !== null));
  const found: PreLabel[] = [];
  for (const p of predictions) {
    if (p.review_state !== "pending") continue;
    const dismissed = new Set(p.dismissed ?? []);
    p.shapes.forEach((shape, index) => {
      if (shape.attributes?.["prelabel"] === false) return; // kept as a prediction (below the calibrated threshold)
      const key = `${p.id}:${index}`;
      if (!taken.has(key) && !dismissed.has(index)) found.push({ key, predictionId: p.id, index, shape, score: shape.score ?? p.score });
    });
  }
  return found;
}

/** The prediction a shape was taken from ("id:index"), if any. */
export function origin(shape: Shape): string | null {
  const from = shape.attributes?.["prediction"];
  return typeof from === "string" ? from : null;
}

/** The annotation shape made from accepting (or starting to edit) a pre-label. */
export function accept(pre: PreLabel): Shape {
  const shape = forAnnotation(pre.shape);
  return { ...shape, attributes: { ...(shape.attributes ?? {}), prediction: pre.key } } as Shape;
}

/** Split pre-labels at a score threshold: those at or above it are accepted, the rest stay for review. */
export function acceptAbove(pres: PreLabel[], threshold: number): { accepted: Shape[]; remaining: PreLabel[] } {
  const accepted: Shape[] = [];
  const remaining: PreLabel[] = [];
  for (const pre of pres) {
    if (pre.score !== null && pre.score >= threshold) accepted.push(accept(pre));
    else remaining.push(pre);
  }
  return { accepted, remaining };
}

/** Rejected pre-label keys ("id:index") grouped by prediction: what the server is told to hide for good. */
export function dismissals(keys: string[]): Map<number, number[]> {
  const found = new Map<number, number[]>();
  for (const key of keys) {
    const [id, index] = key.split(":").map(Number);
    if (!Number.isInteger(id) || !Number.isInteger(index)) continue;
    found.set(id, [...(found.get(id) ?? []), index]);
  }
  return found;
}
