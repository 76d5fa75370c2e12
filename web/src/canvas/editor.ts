/**
 * The annotation document of one item on its map: shapes with stable ids, undo/redo, selection, pre-labels,
 * and the layers and tools that show and edit them. The page around it handles saving and the sidebar.
 */
import type { Item, Project } from "../api";
import { UndoStack } from "../lib/history";
import { accept, acceptAbove, type PreLabel } from "../lib/prelabels";
import { forAnnotation, normaliseBox, normalisePolygon, toggleClass, type BoxShape, type MaskShape, type PolygonShape,
  type Shape } from "../lib/shapes";
import ImageLayer from "ol/layer/Image";
import ImageStatic from "ol/source/ImageStatic";
import { contains } from "../lib/rle";
import { RasterLayer, type RasterValue } from "./raster";
import { Tools, type Tool } from "./tools";
import { ImageViewer } from "./viewer";
import { isVector, shapeOf, ShapeLayer, type Entry } from "./vectors";

export type Key = number | string; // number: a shape of the document; string: a pre-label ("prediction:index")

/**
 * A mask rebuilt from the raster (a brush stroke, or a pre-label merged into its class's mask) keeps the pre-label
 * it came from: the prediction is then recorded as edited, with provenance, not as rejected.
 */
function keepOrigin(shape: MaskShape, before: Entry[]): MaskShape {
  const from = before.find((e) => e.shape.type === shape.type && e.shape.label === shape.label
    && typeof e.shape.attributes?.["prediction"] === "string");
  if (!from) return shape;
  return { ...shape, attributes: { ...(shape.attributes ?? {}), prediction: from.shape.attributes!["prediction"] } };
}

const sameList = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export class Editor {
  readonly viewer: ImageViewer;
  readonly shapes: ShapeLayer;
  readonly pres: ShapeLayer;
  readonly tools: Tools;
  readonly undo: UndoStack<Entry[]>;
  masks: RasterLayer | null = null;
  scribbles: RasterLayer | null = null;
  predicted: RasterLayer | null = null;
  prelabels: PreLabel[];
  selected = new Set<Key>();
  classIndex = 0; // position in project.classes
  brushSize = 8;
  paintTarget: "mask" | "scribble" = "mask";
  private nextUid = 1;
  private rasterShown = new Map<string, Shape[]>();
  private painted = 0;
  private strokeValue = 0;
  private instanceValues: number[] = []; // instance masks: map value - 1 -> uid

  constructor(target: HTMLElement, readonly project: Project, readonly item: Item, shapes: Shape[],
    prelabels: PreLabel[], private readonly changed: (why: string, keys?: string[]) => void) {
    this.undo = new UndoStack(this.entriesOf(shapes));
    this.prelabels = prelabels;
    this.viewer = new ImageViewer(target, item);
    const colour = (label: string) => this.colourOf(label);
    this.shapes = new ShapeLayer(item.height, colour);
    this.pres = new ShapeLayer(item.height, colour, true);
    const kinds = this.project.kind;
    if (kinds === "semantic" || kinds === "instance") {
      this.masks = new RasterLayer(item.width, item.height, this.viewer.projection, "mask", this.classValues());
      this.predicted = new RasterLayer(item.width, item.height, this.viewer.projection, "mask", this.classValues(), 110);
      this.predicted.style = "dashed";
      this.viewer.map.addLayer(this.masks.layer);
      if (kinds === "semantic") {
        this.scribbles = new RasterLayer(item.width, item.height, this.viewer.projection, "scribble", this.classValues(), 230);
        this.scribbles.style = "striped";
        this.viewer.map.addLayer(this.scribbles.layer);
      }
      this.viewer.map.addLayer(this.predicted.layer);
    }
    this.viewer.map.addLayer(this.pres.layer);
    this.viewer.map.addLayer(this.shapes.layer);
    this.tools = new Tools(this.viewer.map, item.height, this.shapes, this.pres, {
      created: (shape) => this.created(shape),
      edited: (keys) => this.edited(keys),
      clicked: (key, _pre, additive, at) => this.select(key !== null ? [key] : this.maskPreAt(at), additive),
      dragStarted: (key) => { if (!this.selected.has(key)) this.select([key]); },
      stroke: (points, done) => this.stroke(points, done),
    });
    this.tools.setTool("select");
    this.render();
  }

  get entries(): Entry[] {
    return this.undo.current;
  }

  get className(): string {
    return this.project.classes[this.classIndex]?.name ?? "";
  }

  /** What to save: the document's shapes in API form. */
  doc(): Shape[] {
    return this.entries.map((e) => forAnnotation(e.shape));
  }

  colourOf(label: string): string {
    return this.project.classes.find((c) => c.name === label)?.colour ?? "#ff00ff";
  }

  private classValues(): Map<number, RasterValue> {
    return new Map(this.project.classes.map((c) => [c.index, { label: c.name, colour: c.colour }]));
  }

  private entriesOf(shapes: Shape[]): Entry[] {
    return shapes.map((shape) => ({ uid: this.nextUid++, shape }));
  }

  /** Replace the document with a revision from the server (nothing to undo into). */
  load(shapes: Shape[]): void {
    this.undo.reset(this.entriesOf(shapes));
    this.selected.clear();
    this.render();
  }

  commit(next: Entry[], why: string): void {
    this.undo.push(next);
    for (const key of [...this.selected]) if (typeof key === "number" && !next.some((e) => e.uid === key)) this.selected.delete(key);
    this.render();
    this.changed(why);
  }

  undoEdit(): void {
    if (!this.undo.canUndo) return;
    this.undo.undo();
    this.render();
    this.changed("undo");
  }

  redoEdit(): void {
    if (!this.undo.canRedo) return;
    this.undo.redo();
    this.render();
    this.changed("redo");
  }

  setTool(tool: Tool): void {
    this.tools.setTool(tool);
  }

  /** Show the document and pre-labels on the layers (only what changed is touched). */
  render(): void {
    this.shapes.sync(this.entries.map((e) => ({ key: e.uid, shape: e.shape })));
    this.pres.sync(this.prelabels.map((p) => ({ key: p.key, shape: p.shape })));
    this.renderRasters();
    if (this.predicted) {
      const index = (label: string) => this.project.classes.find((c) => c.name === label)?.index ?? 0;
      this.predicted.setHighlight(this.prelabels.filter((p) => p.shape.type === "mask" && this.selected.has(p.key))
        .map((p) => index(p.shape.label)));
    }
    this.shapes.setSelected([...this.selected].filter((k) => typeof k === "number"));
    this.pres.setSelected([...this.selected].filter((k) => typeof k === "string"));
    this.tools.setEditable([...this.selected].map((k) => this.shapes.feature(k)).filter((f) =>
      f !== undefined && f.get("shape").type === "polygon") as never);
  }

  private renderRasters(): void {
    const show = (raster: RasterLayer | null, name: string, shapes: MaskShape[], valueOf: (s: MaskShape, n: number) => number) => {
      if (!raster || sameList(this.rasterShown.get(name) ?? [], shapes)) return;
      raster.load(shapes, valueOf);
      this.rasterShown.set(name, shapes);
    };
    const index = (s: MaskShape) => this.project.classes.find((c) => c.name === s.label)?.index ?? 0;
    const maskEntries = this.entries.filter((e) => e.shape.type === "mask");
    if (this.project.kind === "instance" && this.masks) {
      this.instanceValues = maskEntries.map((e) => e.uid).slice(0, 255);
      this.masks.setValues(new Map(maskEntries.slice(0, 255).map((e, n) =>
        [n + 1, { label: e.shape.label, colour: this.colourOf(e.shape.label) }])));
      show(this.masks, "mask", maskEntries.map((e) => e.shape as MaskShape).slice(0, 255), (_s, n) => n + 1);
    } else {
      show(this.masks, "mask", maskEntries.map((e) => e.shape as MaskShape), index);
    }
    show(this.scribbles, "scribble", this.entries.filter((e) => e.shape.type === "scribble").map((e) => e.shape as MaskShape), index);
    const predictedMasks = this.prelabels.filter((p) => p.shape.type === "mask").map((p) => p.shape as MaskShape);
    show(this.predicted, "predicted", predictedMasks, index);
  }

  select(keys: Key[], additive = false): void {
    if (!additive) this.selected.clear();
    for (const key of keys) {
      if (additive && this.selected.has(key)) this.selected.delete(key);
      else this.selected.add(key);
    }
    this.render();
    this.changed("selection");
  }

  /** Number key: pick the class for new shapes; relabel the selected shapes; classification: set or toggle it. */
  chooseClass(index: number): void {
    const cls = this.project.classes[index];
    if (!cls) return;
    this.classIndex = index;
    const kind = this.project.kind;
    if (kind === "classification" || kind === "multilabel") {
      const shapes = toggleClass(this.entries.map((e) => e.shape), cls.name, kind === "multilabel");
      this.commit(this.reuse(shapes), "classify");
      return;
    }
    const chosen = this.entries.filter((e) => this.selected.has(e.uid) && e.shape.label !== cls.name && e.shape.type !== "scribble");
    if (chosen.length && kind !== "semantic") {
      this.commit(this.entries.map((e) => chosen.includes(e) ? { uid: e.uid, shape: { ...e.shape, label: cls.name } } : e), "relabel");
    } else {
      this.changed("class");
    }
  }

  /** Keep the uid of shapes that did not change (classification toggles rebuild the list). */
  private reuse(shapes: Shape[]): Entry[] {
    return shapes.map((shape) => this.entries.find((e) => e.shape === shape) ?? { uid: this.nextUid++, shape });
  }

  deleteSelected(): void {
    const pre = [...this.selected].filter((k): k is string => typeof k === "string");
    if (pre.length) this.reject(pre);
    const next = this.entries.filter((e) => !this.selected.has(e.uid));
    if (next.length !== this.entries.length) this.commit(next, "delete");
  }

  private created(shape: BoxShape | PolygonShape): void {
    const labelled = { ...shape, label: this.className };
    const clean = labelled.type === "box" ? normaliseBox(labelled, this.item.width, this.item.height)
      : normalisePolygon(labelled, this.item.width, this.item.height);
    if (!clean) return;
    const entry = { uid: this.nextUid++, shape: clean };
    this.selected = new Set([entry.uid]);
    this.commit([...this.entries, entry], "draw");
  }

  private edited(keys: Key[]): void {
    const changed = new Map<Key, Shape>();
    for (const key of keys) {
      const entry = this.entries.find((e) => e.uid === key);
      const feature = this.shapes.feature(key);
      if (!entry || !feature || !isVector(entry.shape)) continue;
      const moved = shapeOf(feature, entry.shape, this.item.height);
      const clean = moved.type === "box" ? normaliseBox(moved, this.item.width, this.item.height)
        : normalisePolygon(moved, this.item.width, this.item.height);
      if (clean) changed.set(key, clean);
    }
    if (!changed.size) {
      this.render(); // put a refused edit back
      return;
    }
    this.commit(this.entries.map((e) => changed.has(e.uid) ? { uid: e.uid, shape: changed.get(e.uid)! } : e), "edit");
  }

  private rasterFor(): RasterLayer | null {
    return this.paintTarget === "scribble" && this.scribbles ? this.scribbles : this.masks;
  }

  /** Brush/eraser points (image pixels) as they come; the stroke is committed when done. */
  private stroke(points: [number, number][], done: boolean): void {
    const raster = this.rasterFor();
    if (!raster || !points.length) return;
    const radius = this.brushSize / 2;
    if (this.painted === 0) {
      this.strokeValue = this.tools.tool === "eraser" ? 0 : this.brushValue();
      raster.paint(points[0], points[0], radius, this.strokeValue);
      this.painted = 1;
    }
    for (let i = this.painted; i < points.length; i++) raster.paint(points[i - 1], points[i], radius, this.strokeValue);
    this.painted = points.length;
    if (!done) return;
    this.painted = 0;
    if (raster.endStroke()) this.commitRaster(raster);
  }

  /** The value the brush writes: the class (semantic, scribbles) or the object being painted (instance). */
  private brushValue(): number {
    const cls = this.project.classes[this.classIndex];
    if (this.project.kind !== "instance" || !this.masks) return cls?.index ?? 1;
    const active = [...this.selected].find((k) => typeof k === "number" && this.instanceValues.includes(k as number));
    if (active !== undefined) return this.instanceValues.indexOf(active as number) + 1;
    if (this.instanceValues.length >= 255) return 255;
    const value = this.instanceValues.length + 1;
    const uid = this.nextUid++;
    this.instanceValues.push(uid);
    this.masks.setValues(new Map([...this.instanceValues.keys()].map((n) => [n + 1,
      this.masks!.valueInfo(n + 1) ?? { label: cls.name, colour: cls.colour }])));
    this.selected = new Set([uid]);
    return value;
  }

  /** The raster's content becomes the document's masks (or scribbles) of that type. */
  private commitRaster(raster: RasterLayer): void {
    const type = raster.type;
    const others = this.entries.filter((e) => e.shape.type !== type);
    let fresh: Entry[];
    if (this.project.kind === "instance" && raster === this.masks) {
      fresh = [];
      this.instanceValues.forEach((uid, n) => {
        const shape = raster.shapeFor(n + 1);
        if (shape) fresh.push({ uid, shape: keepOrigin(shape, this.entries.filter((e) => e.uid === uid)) });
      });
    } else {
      fresh = raster.toShapes().map((shape) => ({ uid: this.entries.find((e) => e.shape.type === type
        && e.shape.label === shape.label)?.uid ?? this.nextUid++, shape: keepOrigin(shape, this.entries) }));
    }
    this.rasterShown.set(type, fresh.map((e) => e.shape));
    this.commit([...others, ...fresh], type);
  }

  // --- pre-labels ---

  /** Accept pre-labels as they are (they become the annotator's shapes). Returns the new entries' uids. */
  acceptPre(keys: string[]): number[] {
    const chosen = this.prelabels.filter((p) => keys.includes(p.key));
    if (!chosen.length) return [];
    this.prelabels = this.prelabels.filter((p) => !keys.includes(p.key));
    const added = chosen.map((p) => ({ uid: this.nextUid++, shape: accept(p) }));
    let next = [...this.entries];
    for (const entry of added) {
      if (entry.shape.type === "class") {
        const shapes = toggleClass(next.map((e) => e.shape), entry.shape.label, this.project.kind === "multilabel");
        next = shapes.map((s) => next.find((e) => e.shape === s) ?? (s.type === "class" && s.label === entry.shape.label ? entry : { uid: this.nextUid++, shape: s }));
      } else {
        next.push(entry);
      }
    }
    if (this.project.kind === "semantic" && this.masks && added.some((e) => e.shape.type === "mask")) {
      // one mask per class: merge an accepted region into the class's mask
      const index = (m: MaskShape) => this.project.classes.find((c) => c.name === m.label)?.index ?? 0;
      this.masks.load(next.filter((e) => e.shape.type === "mask").map((e) => e.shape as MaskShape), index);
      const merged = this.masks.toShapes().map((shape) => ({ uid: this.nextUid++, shape: keepOrigin(shape, next) }));
      next = [...next.filter((e) => e.shape.type !== "mask"), ...merged];
      this.rasterShown.set("mask", merged.map((e) => e.shape));
    }
    this.selected = new Set(added.map((e) => e.uid));
    this.commit(next, "accept");
    return added.map((e) => e.uid);
  }

  /** The mask pre-label under image pixel `at` (masks are no vector features: they are found in their RLE). */
  maskPreAt(at: [number, number] | null): string[] {
    if (!at) return [];
    const hit = this.prelabels.find((p) => p.shape.type === "mask" && contains(p.shape as MaskShape, at[0], at[1]));
    return hit ? [hit.key] : [];
  }

  /** Edit: accept, then get ready to change it: a box or polygon selected for moving and reshaping, a mask with the
   * brush in its class (paint to grow it; the eraser, e, shrinks it). */
  editPre(key: string): void {
    const pre = this.prelabels.find((p) => p.key === key);
    if (pre?.shape.type === "mask") {
      const index = this.project.classes.findIndex((c) => c.name === pre.shape.label);
      if (index >= 0) this.classIndex = index;
      this.paintTarget = "mask";
      this.tools.setTool("brush");
    } else {
      this.tools.setTool("select");
    }
    this.acceptPre([key]); // after the tool change, so the page shows the tool it leaves us with
  }

  reject(keys: string[]): void {
    this.prelabels = this.prelabels.filter((p) => !keys.includes(p.key));
    for (const key of keys) this.selected.delete(key);
    this.render();
    this.changed("reject", keys);
  }

  acceptAbove(threshold: number): number {
    const { remaining } = acceptAbove(this.prelabels, threshold);
    return this.acceptPre(this.prelabels.filter((p) => !remaining.includes(p)).map((p) => p.key)).length;
  }

  private live: ImageLayer<ImageStatic> | null = null;

  /** The live pixel classifier's picture of the item (semantic projects), or none. */
  setLiveOverlay(url: string | null, opacity: number): void {
    if (this.live) this.viewer.map.removeLayer(this.live);
    this.live = null;
    if (!url) return;
    this.live = new ImageLayer({ opacity, source: new ImageStatic({ url, imageExtent: this.viewer.extent,
      projection: this.viewer.projection, interpolate: false }) });
    this.viewer.map.getLayers().insertAt(1, this.live);
  }

  setPredictionsVisible(visible: boolean, opacity: number): void {
    this.live?.setVisible(visible);
    this.live?.setOpacity(opacity);
    this.pres.layer.setVisible(visible);
    this.pres.layer.setOpacity(opacity);
    if (this.predicted) {
      this.predicted.layer.setVisible(visible);
      this.predicted.layer.setOpacity(opacity);
    }
  }

  dispose(): void {
    this.viewer.dispose();
  }
}
