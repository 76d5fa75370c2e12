/**
 * The labelling view: one item on the map with the project's tools, pre-labels, autosave and the conflict dialog.
 * /projects/:id/label takes the next item of the work queue; /projects/:id/items/:item opens one item.
 */
import { api, ApiError, itemPredictions, livePrediction, type Annotation, type Item, type Project } from "../api";
import { Editor } from "../canvas/editor";
import type { Tool } from "../canvas/tools";
import { clear, dialog, formatError, h, isTyping, toast } from "../dom";
import { Autosaver, ConflictError, RetryableError, type Revision } from "../lib/autosave";
import { dismissals, preLabelsOf, type Prediction } from "../lib/prelabels";
import { describe, type Shape } from "../lib/shapes";
import { navigate } from "../router";
import { canReview, projectNav } from "./nav";

interface Doc { shapes: Shape[]; state: "draft" | "submitted" }

const TOOLS: Record<string, { label: string; key: string; tools: Tool[] }> = {
  select: { label: "Select / move", key: "v", tools: ["select"] },
  box: { label: "Box", key: "r", tools: ["box"] },
  polygon: { label: "Polygon", key: "p", tools: ["polygon"] },
  brush: { label: "Brush", key: "b", tools: ["brush"] },
  eraser: { label: "Eraser", key: "e", tools: ["eraser"] },
};
const KIND_TOOLS: Record<string, Tool[]> = {
  classification: ["select"], multilabel: ["select"], detection: ["select", "box"],
  instance: ["select", "box", "polygon", "brush", "eraser"], semantic: ["select", "polygon", "brush", "eraser"],
};
const STATUS_TEXT = { saved: "Saved", unsaved: "Unsaved changes", saving: "Saving…", conflict: "Conflict", error: "Not saved" };

function toRevision(a: Annotation | null): Revision<Doc> | null {
  return a ? { version: a.version, author: a.author, created_at: a.created_at,
    doc: { shapes: a.shapes, state: a.state === "submitted" ? "submitted" : "draft" } } : null;
}

export async function labelPage(root: HTMLElement, params: Record<string, string>) {
  const projectId = Number(params.id);
  let project: Project;
  try {
    project = await api.project(projectId);
  } catch (error) {
    root.append(h("p", { class: "error" }, formatError(error)));
    return;
  }
  const queueMode = !params.item;
  let item: Item | null = null;
  let annotation: Annotation | null = null;
  let baseVersion = 0;
  try {
    if (queueMode) {
      const next = await api.next(projectId);
      if (!next.item) {
        root.append(projectNav(project, "label"), h("p", { class: "card", "data-testid": "queue-empty" }, next.message || "Nothing left to label."));
        return;
      }
      ({ item, annotation, base_version: baseVersion } = next);
    } else {
      ({ item, annotation, base_version: baseVersion } = await api.item(Number(params.item)));
    }
  } catch (error) {
    root.append(projectNav(project, "label"), h("p", { class: "error" }, formatError(error)));
    return;
  }
  const predictions: Prediction[] = await itemPredictions(projectId, item!.id).catch(() => []);
  return new LabelView(root, project, item!, annotation, baseVersion, predictions, queueMode);
}

class LabelView {
  private editor: Editor;
  private saver: Autosaver<Doc>;
  private readonly status = h("span", { class: "save-status saved", "data-testid": "save-status", role: "status" }, "Saved");
  private readonly sidebar = h("aside", { class: "sidebar" });
  private readonly toolbar = h("aside", { class: "toolbar" });
  private readonly mapEl = h("div", { class: "map", "data-testid": "map", tabindex: "0" });
  private predictionsVisible = true;
  private opacity = 0.9;
  private threshold = 0.5;
  private conflictOpen = false;
  private liveOn = false;
  private liveUrl: string | null = null;
  private liveBusy = false;
  private livePending = false;
  private readonly keyHandler = (e: KeyboardEvent) => this.onKey(e);
  private readonly resizeObserver = new ResizeObserver(() => this.editor.viewer.map.updateSize());
  private readonly predictionIds: number[];

  constructor(root: HTMLElement, private readonly project: Project, private readonly item: Item,
    annotation: Annotation | null, baseVersion: number, predictions: Prediction[], private readonly queueMode: boolean) {
    const shapes = annotation?.shapes ?? [];
    this.predictionIds = predictions.filter((p) => p.review_state === "pending").map((p) => p.id);
    root.append(projectNav(project, "label"), h("div", { class: "workspace" }, this.toolbar, this.mapEl, this.sidebar));
    this.threshold = Number(project.settings.target_precision ?? 0.5);
    this.editor = new Editor(this.mapEl, project, item, shapes, preLabelsOf(predictions, shapes), (why, keys) => this.changed(why, keys));
    this.saver = new Autosaver<Doc>({
      baseVersion,
      save: (doc, base) => this.save(doc, base),
      onChange: () => this.showStatus(),
    });
    this.renderToolbar();
    this.renderSidebar();
    this.editor.viewer.fit(); // now that the side panels have taken their room
    this.resizeObserver.observe(this.mapEl);
    document.addEventListener("keydown", this.keyHandler);
    this.editor.shapes.layer.once("postrender", () => {
      (window as unknown as Record<string, unknown>).__labelloopShapesDrawn = performance.now();
    });
    this.editor.viewer.map.once("rendercomplete", () => {
      (window as unknown as Record<string, unknown>).__labelloopReady = performance.now();
      document.body.dataset.ready = "1";
    });
    // for browser tests and the benchmark: image pixel -> client (screen) coordinates
    const toScreen = (x: number, y: number) => {
      const px = this.editor.viewer.map.getPixelFromCoordinate([x, item.height - y]);
      const rect = this.mapEl.getBoundingClientRect();
      return [rect.left + px[0], rect.top + px[1]];
    };
    (window as unknown as Record<string, unknown>).__labelloop = { editor: this.editor, saver: this.saver, toScreen };
  }

  canLeave(): boolean {
    return !this.saver.dirty || confirm("You have unsaved changes on this image. Leave anyway?");
  }

  dispose(): void {
    document.removeEventListener("keydown", this.keyHandler);
    this.resizeObserver.disconnect();
    if (this.liveUrl) URL.revokeObjectURL(this.liveUrl);
    delete document.body.dataset.ready;
    this.editor.dispose();
  }

  private async save(doc: Doc, base: number): Promise<number> {
    try {
      return (await api.save(this.item.id, doc.shapes, base, doc.state)).version;
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        throw new ConflictError(error.message, toRevision((error.body?.current ?? null) as Annotation | null));
      }
      if (error instanceof ApiError && (error.status === 0 || error.status >= 500)) throw new RetryableError(error.message);
      throw error;
    }
  }

  private changed(why: string, keys?: string[]): void {
    if (why !== "selection" && why !== "class" && why !== "reject") {
      this.saver.edit({ shapes: this.editor.doc(), state: "draft" });
    }
    if (why === "reject" && keys?.length) void this.dismiss(keys);
    if (why === "accept" || why === "reject") void this.settlePredictions();
    if (why === "scribble" && this.liveOn) void this.refreshLive();
    this.renderSidebar();
    // the class, an edited pre-label's tool, or what the live prediction waits for may have changed
    if (why === "class" || why === "classify" || why === "accept" || (why === "scribble" && this.liveOn)) this.renderToolbar();
  }

  private showStatus(): void {
    const s = this.saver.status;
    this.status.className = `save-status ${s}`;
    this.status.textContent = STATUS_TEXT[s] + (s === "error" && this.saver.message ? `: ${this.saver.message}` : "");
    if (s === "conflict" && !this.conflictOpen) void this.showConflict();
  }

  private async showConflict(): Promise<void> {
    this.conflictOpen = true;
    const conflict = this.saver.conflict!;
    const theirs = conflict.theirs;
    const list = (shapes: Shape[]) => h("ul", { class: "shape-list" }, shapes.length ? shapes.map((s) => h("li", {}, describe(s))) : h("li", {}, "(no shapes)"));
    const choice = await dialog("Someone else saved this image meanwhile",
      [h("p", {}, this.saver.message),
        h("div", { class: "versions" },
          h("div", { "data-testid": "conflict-mine" }, h("h3", {}, "Yours (not saved)"), list(conflict.mine.shapes)),
          h("div", { "data-testid": "conflict-theirs" }, h("h3", {}, theirs ? `Version ${theirs.version} by ${theirs.author ?? "?"}` : "Deleted"),
            list(theirs?.doc.shapes ?? [])))],
      [{ label: "Keep mine (save over theirs)", value: "mine", primary: true, testid: "keep-mine" },
        { label: "Take theirs (drop my edits)", value: "theirs", testid: "take-theirs" }], "conflict-dialog");
    this.conflictOpen = false;
    if (choice === "theirs") {
      const revision = this.saver.takeTheirs();
      this.editor.load(revision?.doc.shapes ?? []);
      this.renderSidebar();
    } else if (choice === "mine") {
      this.saver.keepMine();
    } else {
      this.showStatus(); // closed without choosing: ask again
    }
  }

  /** Rejected pre-labels are kept by the server (for this user), so they do not come back after a reload. */
  private async dismiss(keys: string[]): Promise<void> {
    for (const [id, shapes] of dismissals(keys)) {
      try {
        await api.dismissPrediction(id, shapes);
      } catch (error) {
        toast(`prediction ${id}: the rejection was not kept (${formatError(error)})`, "error");
      }
    }
  }

  /** Once every pre-label of a prediction is accepted or rejected, a reviewer's verdict is recorded on the server. */
  private async settlePredictions(): Promise<void> {
    if (!canReview(this.project)) return;
    const open = new Set(this.editor.prelabels.map((p) => p.predictionId));
    const settled = this.predictionIds.filter((id) => !open.has(id));
    if (!settled.length) return;
    await this.saver.flush();
    if (this.saver.status !== "saved") return;
    for (const id of settled) {
      this.predictionIds.splice(this.predictionIds.indexOf(id), 1);
      const used = this.editor.entries.some((e) => String(e.shape.attributes?.["prediction"] ?? "").startsWith(`${id}:`));
      try {
        const verdict = used ? await api.reviewPrediction(id, "edit", this.editor.doc(), this.saver.baseVersion)
          : await api.reviewPrediction(id, "reject");
        if (verdict.annotation) this.saver.reset(verdict.annotation.version);
      } catch (error) {
        toast(`prediction ${id}: ${formatError(error)}`, "error");
      }
    }
  }

  /** Retrain the live pixel classifier on the scribbles and show its prediction (one request at a time). */
  private async refreshLive(): Promise<void> {
    if (this.liveBusy) {
      this.livePending = true;
      return;
    }
    const scribbles = this.editor.entries.filter((x) => x.shape.type === "scribble").map((x) => x.shape);
    if (!scribbles.length) return; // nothing painted here yet: wait for the first stroke
    this.liveBusy = true;
    try {
      const blob = await livePrediction(this.item.id, scribbles);
      if (this.liveUrl) URL.revokeObjectURL(this.liveUrl);
      this.liveUrl = URL.createObjectURL(blob);
      this.editor.setLiveOverlay(this.liveUrl, this.opacity);
    } catch (error) {
      toast(formatError(error), "error");
    } finally {
      this.liveBusy = false;
      if (this.livePending) {
        this.livePending = false;
        void this.refreshLive();
      }
    }
  }

  private async submit(): Promise<void> {
    this.saver.edit({ shapes: this.editor.doc(), state: "submitted" });
    await this.saver.flush();
    if (this.saver.status !== "saved") {
      toast("not submitted: resolve the problem first", "error");
      return;
    }
    toast("submitted");
    if (this.queueMode) navigate(`/projects/${this.project.id}/label?after=${this.item.id}`, true);
  }

  private setTool(tool: Tool): void {
    this.editor.setTool(tool);
    this.renderToolbar();
  }

  private renderToolbar(): void {
    const e = this.editor;
    const kindTools = KIND_TOOLS[this.project.kind];
    const raster = this.project.kind === "semantic" || this.project.kind === "instance";
    const size = h("input", { type: "range", min: 1, max: 200, value: String(e.brushSize), "data-testid": "brush-size",
      oninput: () => { e.brushSize = Number(size.value); sizeLabel.textContent = `${e.brushSize} px`; } });
    const sizeLabel = h("span", {}, `${e.brushSize} px`);
    const opacity = h("input", { type: "range", min: 0, max: 1, step: 0.05, value: String(this.opacity), "data-testid": "prediction-opacity",
      oninput: () => { this.opacity = Number(opacity.value); e.setPredictionsVisible(this.predictionsVisible, this.opacity); } });
    clear(this.toolbar,
      kindTools.length > 1 ? h("section", {}, h("h3", {}, "Tools"), kindTools.map((t) => h("button", {
        class: e.tools.tool === t ? "tool active" : "tool", "data-testid": `tool-${t}`, title: `${TOOLS[t].label} (${TOOLS[t].key})`,
        onclick: () => this.setTool(t) }, `${TOOLS[t].label} `, h("kbd", {}, TOOLS[t].key)))) : null,
      h("section", {}, h("h3", {}, "Class"), this.project.classes.map((c, n) => {
        const on = this.isClassOn(c.name, n);
        return h("button", { class: on ? "class-pick active" : "class-pick", "aria-pressed": String(on), "data-testid": `class-${c.name}`,
          style: { borderLeftColor: c.colour }, onclick: () => e.chooseClass(n) }, h("kbd", {}, n < 9 ? n + 1 : n === 9 ? 0 : ""), ` ${c.name}`);
      })),
      raster ? h("section", {}, h("h3", {}, "Brush"), h("label", {}, "Size ", size, sizeLabel),
        this.project.kind === "semantic" ? h("label", { class: "check" }, h("input", { type: "checkbox", checked: e.paintTarget === "scribble",
          "data-testid": "scribble-mode", onchange: (ev: Event) => {
            e.paintTarget = (ev.target as HTMLInputElement).checked ? "scribble" : "mask";
            this.renderToolbar();
          } }), " paint scribbles (s)") : null,
        this.project.kind === "semantic" ? h("div", { class: `paint-mode ${e.paintTarget}`, "data-testid": "paint-mode" },
          e.paintTarget === "scribble" ? "The brush paints scribbles (striped): partial labels the pixel classifier learns from"
            : "The brush paints masks (solid): the item's label") : null,
        this.project.kind === "semantic" ? h("label", { class: "check" }, h("input", { type: "checkbox", checked: this.liveOn,
          "data-testid": "live-prediction", onchange: (ev: Event) => {
            this.liveOn = (ev.target as HTMLInputElement).checked;
            if (this.liveOn && e.paintTarget !== "scribble") {
              e.paintTarget = "scribble"; // live prediction learns from scribbles only: painting masks would do nothing
              toast("live prediction learns from scribbles: the brush now paints scribbles (s switches back to masks)");
            }
            if (this.liveOn) void this.refreshLive();
            else this.editor.setLiveOverlay(null, this.opacity);
            this.renderToolbar();
          } }), " live prediction from scribbles") : null,
        this.project.kind === "semantic" && this.liveOn ? h("p", { class: "muted", "data-testid": "live-hint" }, this.liveHint()) : null)
        : null,
      h("section", {}, h("h3", {}, "Edit"),
        h("button", { onclick: () => e.undoEdit(), "data-testid": "undo", title: "Ctrl+Z" }, "Undo"),
        h("button", { onclick: () => e.redoEdit(), "data-testid": "redo", title: "Ctrl+Shift+Z" }, "Redo"),
        h("button", { onclick: () => e.viewer.fit(), title: "f" }, "Fit")),
      h("section", {}, h("h3", {}, "Predictions"),
        h("label", { class: "check" }, h("input", { type: "checkbox", checked: this.predictionsVisible, "data-testid": "show-predictions",
          onchange: (ev: Event) => { this.predictionsVisible = (ev.target as HTMLInputElement).checked; e.setPredictionsVisible(this.predictionsVisible, this.opacity); } }),
        " show (h)"), h("label", {}, "Opacity ", opacity)),
      this.windowControl());
  }

  /** What the live prediction waits for, in words (it never stays silent). */
  private liveHint(): string {
    if (this.editor.paintTarget !== "scribble") return "Live prediction reads scribbles only: press s to paint scribbles.";
    const classes = new Set(this.editor.entries.filter((x) => x.shape.type === "scribble").map((x) => x.shape.label));
    if (classes.size < 2) return `Scribble at least 2 classes (${classes.size} so far, e.g. background and an object): `
      + "the prediction appears after each stroke.";
    return "The prediction is retrained after each stroke.";
  }

  private isClassOn(name: string, n: number): boolean {
    if (this.project.kind === "classification" || this.project.kind === "multilabel") {
      return this.editor.entries.some((x) => x.shape.type === "class" && x.shape.label === name);
    }
    return this.editor.classIndex === n;
  }

  /** Window/level for 16-bit and DICOM pictures, applied by the server. */
  private windowControl(): HTMLElement | null {
    if (this.item.dtype === "uint8" && this.item.format !== "dicom") return null;
    const meta = this.item.metadata as Record<string, unknown>;
    const centre = h("input", { type: "number", step: "any", value: String(meta.window_centre ?? ""), "data-testid": "window-centre" });
    const width = h("input", { type: "number", step: "any", min: 0, value: String(meta.window_width ?? ""), "data-testid": "window-width" });
    return h("section", {}, h("h3", {}, "Window / level"), h("label", {}, "Centre ", centre), h("label", {}, "Width ", width),
      h("button", { "data-testid": "window-apply", onclick: () => {
        const c = Number(centre.value), w = Number(width.value);
        if (!centre.value || !width.value || !(w > 0)) return toast("give a centre and a positive width", "error");
        this.editor.viewer.setWindow({ centre: c, width: w });
      } }, "Apply"),
      h("button", { "data-testid": "window-reset", onclick: () => this.editor.viewer.setWindow(null) }, "Reset"));
  }

  private renderSidebar(): void {
    const e = this.editor;
    const pres = e.prelabels;
    const selectedPre = pres.filter((p) => e.selected.has(p.key));
    const threshold = h("input", { type: "number", min: 0, max: 1, step: 0.05, value: String(this.threshold), "data-testid": "threshold",
      onchange: () => { this.threshold = Number(threshold.value); } });
    clear(this.sidebar,
      h("section", {}, this.status, h("div", { class: "muted" }, `#${this.item.id} ${this.item.source} · ${this.item.width}×${this.item.height}`),
        h("div", { class: "row" },
          h("button", { class: "primary", "data-testid": "submit", title: "Ctrl+Enter", onclick: () => void this.submit() },
            this.queueMode ? "Submit & next" : "Submit"),
          this.queueMode ? h("button", { "data-testid": "skip", onclick: async () => {
            await api.skip(this.item.id).catch((err) => toast(formatError(err), "error"));
            navigate(`/projects/${this.project.id}/label?after=${this.item.id}`, true);
          } }, "Skip") : null)),
      pres.length ? h("section", { "data-testid": "prelabels" }, h("h3", {}, `Pre-labels (${pres.length})`),
        selectedPre.length ? h("div", { class: "row" },
          h("button", { class: "primary", "data-testid": "accept-prelabel", title: "Enter", onclick: () => e.acceptPre(selectedPre.map((p) => p.key)) }, "Accept"),
          h("button", { "data-testid": "edit-prelabel", title: "e", onclick: () => e.editPre(selectedPre[0].key) }, "Edit"),
          h("button", { "data-testid": "reject-prelabel", title: "Delete", onclick: () => e.reject(selectedPre.map((p) => p.key)) }, "Reject"))
          : h("p", { class: "muted" }, "Click a dashed pre-label to accept, edit or reject it."),
        h("div", { class: "row" }, h("label", {}, "Score ≥ ", threshold),
          h("button", { "data-testid": "accept-above", onclick: () => toast(`${e.acceptAbove(this.threshold)} pre-label(s) accepted`) }, "Accept all above")),
        h("ul", { class: "shape-list" }, pres.map((p) => h("li", { class: e.selected.has(p.key) ? "selected" : "",
          onclick: () => e.select([p.key]) }, `${describe(p.shape)}${p.score !== null ? ` · ${p.score.toFixed(2)}` : ""}${
            (p.shape as any).attributes?.micro_model ? ` · by ${(p.shape as any).attributes.micro_model}` : ""}`))))
        : null,
      h("section", {}, h("h3", {}, `Shapes (${e.entries.length})`),
        h("ul", { class: "shape-list", "data-testid": "shapes" }, e.entries.slice(0, 500).map((x) => h("li", {
          class: e.selected.has(x.uid) ? "selected" : "", onclick: () => e.select([x.uid]) },
        h("span", { class: "swatch", style: { background: e.colourOf(x.shape.label) } }), describe(x.shape)))),
        e.entries.length > 500 ? h("p", { class: "muted" }, `… and ${e.entries.length - 500} more`) : null));
  }

  private onKey(event: KeyboardEvent): void {
    if (isTyping(event.target) || document.querySelector(".overlay")) return;
    const e = this.editor;
    const key = event.key;
    const ctrl = event.ctrlKey || event.metaKey;
    const selectedPre = e.prelabels.filter((p) => e.selected.has(p.key)).map((p) => p.key);
    let handled = true;
    if (ctrl && key.toLowerCase() === "z") (event.shiftKey ? e.redoEdit() : e.undoEdit());
    else if (ctrl && key.toLowerCase() === "y") e.redoEdit();
    else if (ctrl && key === "Enter") void this.submit();
    else if (ctrl) handled = false;
    else if (e.tools.drawKey(key)) { /* polygon drawing keys */ }
    else if (/^[0-9]$/.test(key)) e.chooseClass(key === "0" ? 9 : Number(key) - 1);
    else if (key === "Enter" && selectedPre.length) e.acceptPre(selectedPre);
    else if (key === "e" && selectedPre.length) e.editPre(selectedPre[0]);
    else if (key === "Delete" || key === "Backspace") e.deleteSelected();
    else if (key === "Escape") e.select([]);
    else if (key === "h") {
      this.predictionsVisible = !this.predictionsVisible;
      e.setPredictionsVisible(this.predictionsVisible, this.opacity);
      this.renderToolbar();
    } else if (key === "f") e.viewer.fit();
    else if (key === "+" || key === "=" || key === "-") {
      const view = e.viewer.map.getView();
      view.animate({ zoom: (view.getZoom() ?? 0) + (key === "-" ? -1 : 1), duration: 120 });
    } else if (key === "[" || key === "]") {
      e.brushSize = Math.max(1, Math.min(200, Math.round(e.brushSize * (key === "]" ? 1.25 : 0.8))));
      this.renderToolbar();
    } else if (key === "s" && this.project.kind === "semantic") {
      e.paintTarget = e.paintTarget === "scribble" ? "mask" : "scribble";
      this.renderToolbar();
    } else if (key === "n") e.select([]);
    else {
      const tool = Object.entries(TOOLS).find(([, t]) => t.key === key)?.[0] as Tool | undefined;
      if (tool && KIND_TOOLS[this.project.kind].includes(tool)) this.setTool(tool);
      else handled = false;
    }
    if (handled) event.preventDefault();
  }
}
