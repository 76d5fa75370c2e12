import { describe, expect, it } from "vitest";
import { acceptPlan, isTagged, leftMessage, pageSource, suggestionText, type SimilarPage } from "../src/lib/grid";
import type { Shape } from "../src/lib/shapes";

const CLASSES = ["ants", "bees"];
const ants = { label: "ants", score: 0.82 };
const tag = (label: string): Shape[] => [{ type: "class", label }];

describe("grid: accept page", () => {
  it("saves the suggested class on untagged images, keeps the person's tags, leaves the rest", () => {
    const plan = acceptPlan([
      { shapes: [], suggestion: ants },
      { shapes: tag("bees"), suggestion: ants }, // the person's tag wins over the model
      { shapes: [], suggestion: null },
      { shapes: [] },
      { shapes: [], suggestion: { label: "bees", score: 0.51 } },
    ], CLASSES);
    expect(plan.saves).toEqual([{ index: 0, shapes: tag("ants") }, { index: 4, shapes: tag("bees") }]);
    expect(plan.left).toBe(2);
  });
  it("leaves a suggestion of a class the project no longer has, and keeps other shapes beside the class", () => {
    const note: Shape = { type: "box", label: "ants", x0: 1, y0: 2, x1: 3, y1: 4 };
    const plan = acceptPlan([{ shapes: [], suggestion: { label: "wasps", score: 0.9 } },
      { shapes: [note], suggestion: ants }], CLASSES);
    expect(plan.saves).toEqual([{ index: 1, shapes: [note, ...tag("ants")] }]);
    expect(plan.left).toBe(1);
    expect(isTagged([note])).toBe(false);
  });
  it("has nothing to save on a page the person tagged whole", () => {
    expect(acceptPlan([{ shapes: tag("ants"), suggestion: ants }], CLASSES)).toEqual({ saves: [], left: 0 });
  });
  it("says how many images were left", () => {
    expect(leftMessage(0)).toBe("");
    expect(leftMessage(1)).toBe("1 image had no suggestion and was left for later");
    expect(leftMessage(2)).toBe("2 images had no suggestion and were left for later");
  });
});

describe("grid: captions and hint", () => {
  it("shows a suggestion as a question with its score", () => {
    expect(suggestionText(ants)).toBe("ants? 0.82");
  });
  it("says where the page comes from", () => {
    const base: SimilarPage = { similar: true, item_ids: [1], reason: "", suggestions: {} };
    expect(pageSource({ ...base, page_class: "bees", model: "classifier v3" }))
      .toBe("The model's suggestions (classifier v3): bees");
    expect(pageSource({ ...base, page_class: "bees", model: null })).toBe("The model's suggestions: bees");
    expect(pageSource(base)).toBe("Similar images");
    expect(pageSource({ ...base, similar: false, reason: "no embeddings" })).toBe("Labelling order (no embeddings)");
  });
});
