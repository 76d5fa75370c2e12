/** Classification in a grid of 4, 6 or 9 unlabelled images: arrows move, number keys tag the focused image. */
import { api, ApiError, imageUrl, type Item, type Project } from "../api";
import { clear, formatError, h, isTyping, toast } from "../dom";
import { toggleClass, type Shape } from "../lib/shapes";
import { projectNav } from "./nav";

interface Cell { item: Item; shapes: Shape[]; version: number; el: HTMLElement; saving: Promise<void> }

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
  root.append(projectNav(project, "grid"), h("div", { class: "row" }, picker,
    h("span", { class: "muted", "data-testid": "grid-help" }, multi
      ? "Arrows move; a number key adds or removes that class on the focused image; Page Down: next images; ? all keys"
      : "Arrows move; a number key tags the focused image and moves to the next one; Page Down: next images; ? all keys"), hint,
    h("button", { "data-testid": "grid-next", onclick: () => void load() }, "Next images")), grid);
  let cells: Cell[] = [];
  let focus = 0;

  async function load(): Promise<void> {
    // Similar images first (clusters of cached embeddings); without embeddings, the labelling order.
    const similar = await api.similar(id, size);
    const items = similar.similar && similar.item_ids.length
      ? (await Promise.all(similar.item_ids.map((itemId) => api.item(itemId)))).map((d) => d.item)
      : (await api.items(id, "", "unlabelled", size)).items;
    hint.textContent = similar.similar ? "Similar images" : `Labelling order (${similar.reason})`;
    cells = items.map((item) => {
      const level = Math.max(0, Math.ceil(Math.log2(Math.max(item.width, item.height) / 320)));
      const el = h("figure", { class: "cell", "data-testid": `cell-${item.id}` },
        h("img", { src: imageUrl(item.id, level), alt: item.source }), h("figcaption", {}, ""));
      return { item, shapes: [], version: item.version, el, saving: Promise.resolve() };
    });
    cells.forEach((c, n) => c.el.addEventListener("click", () => { focus = n; show(); }));
    focus = 0;
    clear(grid, cells.length ? cells.map((c) => c.el) : h("p", {}, "No unlabelled images left."));
    show();
  }

  function show(): void {
    cells.forEach((c, n) => {
      c.el.classList.toggle("focus", n === focus);
      c.el.querySelector("figcaption")!.textContent = c.shapes.map((s) => s.label).join(", ");
      c.el.classList.toggle("done", c.shapes.length > 0);
    });
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
    if (!changed) return; // the same class again: nothing new to save (no extra revision)
    // one save at a time per image, each based on the version the previous one made
    const saved = cell.saving.then(() => api.save(cell.item.id, shapes, cell.version, "submitted"));
    cell.saving = saved.then(() => undefined, () => undefined);
    try {
      cell.version = (await saved).version;
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        const current = error.body?.current as { version: number; shapes: Shape[] } | undefined;
        cell.version = current?.version ?? cell.version;
        cell.shapes = current?.shapes ?? cell.shapes;
        toast(`image ${cell.item.id} was labelled by someone else meanwhile: showing their label`, "error");
      } else {
        toast(formatError(error), "error");
      }
      show();
    }
  }

  const columns = size === 4 ? 2 : 3;
  const onKey = (event: KeyboardEvent) => {
    if ((event.target as HTMLElement).tagName === "SELECT" || isTyping(event.target) || document.querySelector(".overlay")) return;
    const k = event.key;
    if (/^[0-9]$/.test(k)) void tag(k === "0" ? 9 : Number(k) - 1);
    else if (k === "ArrowRight") focus = Math.min(cells.length - 1, focus + 1);
    else if (k === "ArrowLeft") focus = Math.max(0, focus - 1);
    else if (k === "ArrowDown") focus = Math.min(cells.length - 1, focus + columns);
    else if (k === "ArrowUp") focus = Math.max(0, focus - columns);
    else if (k === "PageDown") void load();
    else return;
    event.preventDefault();
    show();
  };
  document.addEventListener("keydown", onKey);
  await load().catch((e) => toast(formatError(e), "error"));
  return { dispose: () => document.removeEventListener("keydown", onKey) };
}
