/** The grid page's decisions, kept apart from the DOM: what a page comes from, what "Accept page" saves. */
import { toggleClass, type Shape } from "./shapes";

/** The model's most likely class for one item. */
export interface Suggestion { label: string; score: number }

/** `GET /api/projects/{id}/similar` (docs/api.md); `suggestions` is keyed by item id. */
export interface SimilarPage {
  similar: boolean; item_ids: number[]; cluster?: number | null; remaining_unlabelled?: number | null;
  reason: string; suggestions?: Record<string, Suggestion>; page_class?: string | null; model?: string | null;
}

/** What the hint above the grid says about where the page comes from. */
export function pageSource(page: SimilarPage): string {
  if (page.page_class) return `The model's suggestions${page.model ? ` (${page.model})` : ""}: ${page.page_class}`;
  return page.similar ? "Similar images" : `Labelling order (${page.reason})`;
}

/** A suggestion as a cell's caption shows it: a question, not a label ("ants? 0.82"). */
export function suggestionText(suggestion: Suggestion): string {
  return `${suggestion.label}? ${suggestion.score.toFixed(2)}`;
}

/** Whether the person (or someone else, after a conflict) has given this image a class. */
export function isTagged(shapes: Shape[]): boolean {
  return shapes.some((s) => s.type === "class");
}

export interface AcceptPlan {
  /** cells to save: their index on the page and the shapes with the suggested class */
  saves: { index: number; shapes: Shape[] }[];
  /** untagged cells without a usable suggestion: left unlabelled */
  left: number;
}

/** "Accept page": every untagged cell with a suggestion of one of the project's classes takes that class; tagged
 * cells keep their tag; the others are left for later. */
export function acceptPlan(cells: { shapes: Shape[]; suggestion?: Suggestion | null }[],
  classes: readonly string[]): AcceptPlan {
  const plan: AcceptPlan = { saves: [], left: 0 };
  cells.forEach((cell, index) => {
    if (isTagged(cell.shapes)) return;
    // a class renamed or removed since the model was trained is no class to save
    if (cell.suggestion && classes.includes(cell.suggestion.label)) {
      plan.saves.push({ index, shapes: toggleClass(cell.shapes, cell.suggestion.label, false) });
    } else {
      plan.left++;
    }
  });
  return plan;
}

/** The toast after an accept: how many images were left unlabelled, or nothing to say. */
export function leftMessage(left: number): string {
  if (!left) return "";
  return left === 1 ? "1 image had no suggestion and was left for later"
    : `${left} images had no suggestion and were left for later`;
}
