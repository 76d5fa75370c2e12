/**
 * The drawing and editing tools on the map: select/move (Translate), polygon vertices (Modify: drag an edge to
 * insert, drag a vertex to move, Alt+click to delete), box corners and edges (BoxResize), box and polygon
 * drawing (Draw), brush and eraser (BrushInteraction). Each reports finished edits; the page owns the document.
 */
import Collection from "ol/Collection";
import type Feature from "ol/Feature";
import type Map from "ol/Map";
import type MapBrowserEvent from "ol/MapBrowserEvent";
import type Polygon from "ol/geom/Polygon";
import Draw, { createBox } from "ol/interaction/Draw";
import Modify from "ol/interaction/Modify";
import PointerInteraction from "ol/interaction/Pointer";
import Translate from "ol/interaction/Translate";
import type Interaction from "ol/interaction/Interaction";
import { boxToRing, ringsToParts, ringToBox, toImage, type XY } from "../lib/coords";
import { hitHandle, resizeBox, type Handle } from "../lib/boxEdit";
import type { BoxShape, PolygonShape } from "../lib/shapes";
import type { ShapeLayer } from "./vectors";

export type Tool = "select" | "box" | "polygon" | "brush" | "eraser" | "pan";

export interface ToolEvents {
  created(shape: BoxShape | PolygonShape): void;
  edited(keys: (number | string)[]): void; // features whose geometry changed (translate, modify, resize)
  /** `at`: the image pixel clicked, for what is not a vector feature (mask pre-labels) */
  clicked(key: number | string | null, prelabel: boolean, additive: boolean, at: [number, number] | null): void;
  dragStarted(key: number | string, prelabel: boolean): void;
  stroke(points: XY[], done: boolean): void; // brush points in image pixels
}

class BoxResize extends PointerInteraction {
  private target: Feature<Polygon> | null = null;
  private handle: Handle | null = null;
  private box: BoxShape | null = null;

  constructor(private readonly tools: Tools) {
    super();
  }

  protected override handleDownEvent(event: MapBrowserEvent<PointerEvent>): boolean {
    const found = this.tools.boxHandleAt(event);
    if (!found) return false;
    [this.target, this.handle, this.box] = found;
    return true;
  }

  protected override handleDragEvent(event: MapBrowserEvent<PointerEvent>): void {
    if (!this.target || !this.handle || !this.box) return;
    const h = this.tools.height;
    const next = resizeBox(this.box, this.handle, toImage(event.coordinate as XY, h));
    this.target.getGeometry()!.setCoordinates([boxToRing(next, h)]);
  }

  protected override handleUpEvent(): boolean {
    if (this.target) this.tools.events.edited([this.target.get("key")]);
    this.target = null;
    this.handle = null;
    return false;
  }
}

class BrushInteraction extends PointerInteraction {
  private points: XY[] = [];

  constructor(private readonly tools: Tools) {
    super();
  }

  protected override handleDownEvent(event: MapBrowserEvent<PointerEvent>): boolean {
    if (event.originalEvent.button !== 0 || event.originalEvent.shiftKey) return false; // shift-drag pans
    this.points = [toImage(event.coordinate as XY, this.tools.height)];
    this.tools.events.stroke(this.points, false);
    return true;
  }

  protected override handleDragEvent(event: MapBrowserEvent<PointerEvent>): void {
    this.points.push(toImage(event.coordinate as XY, this.tools.height));
    this.tools.events.stroke(this.points, false);
  }

  protected override handleUpEvent(): boolean {
    this.tools.events.stroke(this.points, true);
    this.points = [];
    return false;
  }
}

export class Tools {
  tool: Tool = "select";
  readonly selectedPolygons = new Collection<Feature<Polygon>>();
  private active: Interaction[] = [];
  private draw: Draw | null = null;
  private drawing = false;

  constructor(private readonly map: Map, readonly height: number, private readonly shapes: ShapeLayer,
    private readonly prelabels: ShapeLayer, readonly events: ToolEvents) {
    map.on("click", (event) => { // not "singleclick": that waits 250 ms to rule out a double click
      if (this.tool !== "select") return;
      const hit = this.featureAt(event);
      this.events.clicked(hit ? hit.feature.get("key") : null, hit?.prelabel ?? false,
        event.originalEvent.shiftKey || event.originalEvent.ctrlKey, toImage(event.coordinate as XY, this.height));
    });
    map.on("pointermove", (event) => {
      if (this.tool !== "select" || event.dragging) return;
      const handle = this.boxHandleAt(event);
      const el = map.getTargetElement();
      if (el) el.style.cursor = handle ? `${handle[1]}-resize` : this.featureAt(event) ? "move" : "";
    });
  }

  featureAt(event: MapBrowserEvent<any>): { feature: Feature<Polygon>; prelabel: boolean } | null {
    let found: { feature: Feature<Polygon>; prelabel: boolean } | null = null;
    this.map.forEachFeatureAtPixel(event.pixel, (feature, layer) => {
      found = { feature: feature as Feature<Polygon>, prelabel: layer === this.prelabels.layer };
      return true;
    }, { hitTolerance: 3, layerFilter: (l) => l === this.shapes.layer || l === this.prelabels.layer });
    return found;
  }

  /** A selected box's corner or edge under the pointer. */
  boxHandleAt(event: MapBrowserEvent<any>): [Feature<Polygon>, Handle, BoxShape] | null {
    const tolerance = 5 * (this.map.getView().getResolution() ?? 1);
    const point = toImage(event.coordinate as XY, this.height);
    for (const key of this.shapes.selectedKeys) {
      const feature = this.shapes.feature(key);
      const shape = feature?.get("shape");
      if (!feature || shape?.type !== "box") continue;
      const handle = hitHandle(shape, point, tolerance);
      if (handle) return [feature, handle, shape];
    }
    return null;
  }

  setTool(tool: Tool): void {
    for (const interaction of this.active) this.map.removeInteraction(interaction);
    this.active = [];
    this.draw = null;
    this.drawing = false;
    this.tool = tool;
    const el = this.map.getTargetElement();
    if (el) el.style.cursor = tool === "brush" || tool === "eraser" ? "crosshair" : "";
    if (tool === "select") {
      const translate = new Translate({ layers: [this.shapes.layer], hitTolerance: 3 });
      translate.on("translatestart", (e) => {
        const key = e.features.item(0)?.get("key");
        if (key !== undefined) this.events.dragStarted(key, false);
      });
      translate.on("translateend", (e) => this.events.edited(e.features.getArray().map((f) => f.get("key"))));
      const modify = new Modify({ features: this.selectedPolygons, pixelTolerance: 8 });
      modify.on("modifyend", (e) => this.events.edited(e.features.getArray().map((f) => f.get("key"))));
      this.active = [translate, modify, new BoxResize(this)];
    } else if (tool === "box" || tool === "polygon") {
      const draw = tool === "box"
        ? new Draw({ type: "Circle", geometryFunction: createBox(), freehand: true })
        : new Draw({ type: "Polygon", stopClick: true });
      draw.on("drawstart", () => { this.drawing = true; });
      draw.on("drawabort", () => { this.drawing = false; });
      draw.on("drawend", (e) => {
        this.drawing = false;
        const rings = (e.feature.getGeometry() as Polygon).getCoordinates() as XY[][];
        this.events.created(tool === "box" ? ringToBox(rings[0], this.height, "")
          : { type: "polygon", label: "", parts: ringsToParts(rings, this.height) });
      });
      this.draw = draw;
      this.active = [draw];
    } else if (tool === "brush" || tool === "eraser") {
      this.active = [new BrushInteraction(this)];
    }
    for (const interaction of this.active) this.map.addInteraction(interaction);
  }

  /** Polygon drawing from the keyboard: Enter finishes, Backspace drops the last point, Escape abandons. */
  drawKey(key: string): boolean {
    if (!this.draw || !this.drawing) return false;
    if (key === "Enter") this.draw.finishDrawing();
    else if (key === "Backspace") this.draw.removeLastPoint();
    else if (key === "Escape") this.draw.abortDrawing();
    else return false;
    return true;
  }

  /** The polygons Modify may edit: those selected. */
  setEditable(features: Feature<Polygon>[]): void {
    this.selectedPolygons.clear();
    this.selectedPolygons.extend(features);
  }
}
