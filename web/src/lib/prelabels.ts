/** Pre-labels: a model's predicted shapes shown for review inside the labelling view. */
import { forAnnotation, type Shape } from "./shapes";

export interface Prediction {
  id: number;
  item_id: number;
  model_version: string;
  shapes: Shape[];
  score: number | null;
  review_state: string;
}

export interface PreLabel {
  key: string; // "predictionId:index"
  predictionId: number;
  index: number;
  shape: Shape;
  score: number | null;
}

/** The pending pre-labels of an item, without those already taken into the annotation. */
export function preLabelsOf(predictions: Prediction[], annotation: Shape[]): PreLabel[] {
  const taken = new Set(annotation.map((s) => origin(s)).filter((k): k is string => k !== null));
  const found: PreLabel[] = [];
  for (const p of predictions) {
    if (p.review_state !== "pending") continue;
    p.shapes.forEach((shape, index) => {
      const key = `${p.id}:${index}`;
      if (!taken.has(key)) found.push({ key, predictionId: p.id, index, shape, score: shape.score ?? p.score });
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
