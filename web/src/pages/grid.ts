/** Classification in a grid of 4, 6 or 9 unlabelled images: arrows move, number keys tag the focused image; with a
 * trained classifier, each image shows the model's suggestion and Enter accepts the page. */
import { api, ApiError, imageUrl, type Item, type Project } from "../api";
import { clear, formatError, h, isTyping, toast } from "../dom";
import { acceptPlan, isTagged, leftMessage, pageSource, suggestionText, type Suggestion } from "../lib/grid";
import { toggleClass, type Shape } from "../lib/shapes";
import { projectNav } from "./nav";

interface Cell {
  item: Item; shapes: Shape[]; version: number; el: HTMLElement; saving: Promise<boolean>;
  suggestion: Suggestion | null; failed: boolean; // failed: the last save did not go through (Enter retries it)
}

const HELP_SINGLE = "Arrows move; a number key tags the focused image and moves to the next one; "
  + "Enter accepts the page (the model's suggestions on untagged images); "
  + "Page Down: next images; ? all keys";
const HELP_MULTI = "Arrows move; a number key adds or removes that class on the focused image; Page Down: next images; "
  + "? all keys";

export async function gridPage(root: HTMLElement, params: Record<string, string>) {
  const id = Number(params.id);
  const size = [4, 6, 9].includes(Number(params.n)) ? Number(params.n) : 9;
  let project: Project;
  try {
    project = await api.project(id);
  } catch (error) {
    root.append(h("p", { class: "error" }, formatError(error)));
    return;
  }
  const multi = project.kind === "multilabel";
  const grid = h("div", { class: `grid grid-${size}`, "data-testid": "grid" });
  const hint = h("span", { class: "muted", "data-testid": "grid-source" }, "");
  const picker = h("select", { onchange: () => { location.search = `?n=${picker.value}`; } },
    [4, 6, 9].map((n) => h("option", { value: n, selected: n === size }, `${n} images`)));
  const acceptButton = h("button", { class: "primary", "data-testid": "grid-accept", title: "Enter",
    onclick: () => void accept() }, "Accept page");
  root.append(projectNav(project, "grid"), h("div", { class: "row" }, picker,
    h("span", { class: "muted", "data-testid": "grid-help" }, multi ? HELP_MULTI : HELP_SINGLE), hint,
    !multi && acceptButton,
    h("button", { "data-testid": "grid-next", onclick: () => void load() }, "Next images")), grid);
  let cells: Cell[] = [];
  let focus = 0;
  let accepting = false;

  async function load(): Promise<void> {
    // The model's suggestions (single-label, with a trained classifier), else similar images (clusters of cached
    // embeddings); without embeddings, the labelling order.
    const similar = await api.similar(id, size, !multi);
    const ordered = (similar.similar || similar.page_class) && similar.item_ids.length;
    const items = ordered
      ? (await Promise.all(similar.item_ids.map((itemId) => api.item(itemId)))).map((d) => d.item)
      : (await api.items(id, "", "unlabelled", size)).items;
    hint.textContent = pageSource(similar);
    hint.title = similar.reason; // e.g. why the model suggests nothing
    const suggestions = similar.suggestions ?? {};
    cells = items.map((item) => {
      const level = Math.max(0, Math.ceil(Math.log2(Math.max(item.width, item.height) / 320)));
      const el = h("figure", { class: "cell", "data-testid": `cell-${item.id}` },
        h("img", { src: imageUrl(item.id, level), alt: item.source }), h("figcaption", {}, ""));
      return { item, shapes: [], version: item.version, el, saving: Promise.resolve(true),
        suggestion: suggestions[String(item.id)] ?? null, failed: false };
    });
    cells.forEach((c, n) => c.el.addEventListener("click", () => { focus = n; show(); }));
    focus = 0;
    acceptButton.disabled = !cells.some((c) => c.suggestion);
    clear(grid, cells.length ? cells.map((c) => c.el) : h("p", {}, "No unlabelled images left."));
    show();
  }

  function caption(cell: Cell): Node | string {
    if (cell.shapes.length || !cell.suggestion) return cell.shapes.map((s) => s.label).join(", ");
    return h("span", { class: "suggestion", "data-testid": `suggestion-${cell.item.id}`,
      title: "the model's suggestion: a number key tags the image yourself; Enter accepts the page" },
    suggestionText(cell.suggestion));
  }

  function show(): void {
    cells.forEach((c, n) => {
      c.el.classList.toggle("focus", n === focus);
      clear(c.el.querySelector("figcaption")!, caption(c));
      c.el.classList.toggle("done", c.shapes.length > 0);
      c.el.classList.toggle("failed", c.failed);
    });
  }

  /** Save one image's shapes after its previous save (each based on the version that one made); false on error. */
  async function save(cell: Cell, shapes: Shape[]): Promise<boolean> {
    const saved = cell.saving.then(() => api.save(cell.item.id, shapes, cell.version, "submitted"));
    const done = saved.then((annotation) => {
      cell.version = annotation.version;
      cell.failed = false;
      return true;
    }, (error) => {
      cell.failed = !(error instanceof ApiError && error.status === 409);
      if (error instanceof ApiError && error.status === 409) {
        const current = error.body?.current as { version: number; shapes: Shape[] } | undefined;
        cell.version = current?.version ?? cell.version;
        cell.shapes = current?.shapes ?? cell.shapes;
        toast(`image ${cell.item.id} was labelled by someone else meanwhile: showing their label`, "error");
      } else {
        toast(formatError(error), "error");
      }
      show();
      return false;
    });
    cell.saving = done;
    return done;
  }

  async function tag(index: number): Promise<void> {
    const cell = cells[focus];
    const cls = project.classes[index];
    if (!cell || !cls) return;
    const shapes = toggleClass(cell.shapes, cls.name, multi);
    const changed = shapes !== cell.shapes;
    cell.shapes = shapes;
    if (!multi && focus < cells.length - 1) focus++; // move on at once: the save finishes in the background
    show();
    if (changed) await save(cell, shapes); // the same class again: nothing new to save (no extra revision)
  }

  /** Untagged images take the model's suggestion; when every save (the person's tags too) succeeded, the next page. */
  async function accept(): Promise<void> {
    if (multi || accepting) return;
    if (!cells.some((c) => c.suggestion)) {
      toast("No suggestions on this page (the project has no trained classifier): tag the images with number keys");
      return;
    }
    accepting = true;
    acceptButton.disabled = true;
    const page = cells;
    try {
      const plan = acceptPlan(page, project.classes.map((c) => c.name));
      for (const cell of page) if (cell.failed && isTagged(cell.shapes)) void save(cell, cell.shapes); // again
      for (const { index, shapes } of plan.saves) {
        page[index].shapes = shapes;
        void save(page[index], shapes);
      }
      show();
      const results = await Promise.all(page.map((c) => c.saving));
      if (results.includes(false)) return; // the toasts said why; the page stays as it is
      const left = leftMessage(plan.left);
      if (left) toast(left);
      if (cells === page) await load();
    } catch (error) {
      toast(formatError(error), "error");
    } finally {
      accepting = false;
      acceptButton.disabled = !cells.some((c) => c.suggestion);
    }
  }

  const columns = size === 4 ? 2 : 3;
  const onKey = (event: KeyboardEvent) => {
    const target = event.target as HTMLElement;
    if (target.tagName === "SELECT" || isTyping(event.target) || document.querySelector(".overlay")) return;
    const k = event.key;
    if (/^[0-9]$/.test(k)) void tag(k === "0" ? 9 : Number(k) - 1);
    else if (k === "ArrowRight") focus = Math.min(cells.length - 1, focus + 1);
    else if (k === "ArrowLeft") focus = Math.max(0, focus - 1);
    else if (k === "ArrowDown") focus = Math.min(cells.length - 1, focus + columns);
    else if (k === "ArrowUp") focus = Math.max(0, focus - columns);
    else if (k === "PageDown") void load();
    else if (k === "Enter" && !multi && !["BUTTON", "A"].includes(target.tagName)) void accept(); // a button: its own
    else return;
    event.preventDefault();
    show();
  };
  document.addEventListener("keydown", onKey);
  await load().catch((e) => toast(formatError(e), "error"));
  return { dispose: () => document.removeEventListener("keydown", onKey) };
}
