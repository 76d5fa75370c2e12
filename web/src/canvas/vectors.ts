/** Box and polygon shapes as OpenLayers features in a spatially indexed vector source. */
import Feature from "ol/Feature";
import Polygon from "ol/geom/Polygon";
import VectorLayer from "ol/layer/Vector";
import VectorSource from "ol/source/Vector";
import { Fill, Stroke, Style } from "ol/style";
import type { FeatureLike } from "ol/Feature";
import { boxToRing, polygonToRings, ringsToParts, ringToBox, type XY } from "../lib/coords";
import type { BoxShape, PolygonShape, Shape } from "../lib/shapes";

/** One shape of the document, with an id that survives edits (for undo and feature reuse). */
export interface Entry {
  uid: number;
  shape: Shape;
}

export const isVector = (shape: Shape): shape is BoxShape | PolygonShape => shape.type === "box" || shape.type === "polygon";

export function geometryOf(shape: BoxShape | PolygonShape, height: number): Polygon {
  return new Polygon(shape.type === "box" ? [boxToRing(shape, height)] : polygonToRings(shape, height));
}

/** The shape a feature's (edited) geometry now describes, keeping label and attributes. */
export function shapeOf(feature: Feature, previous: BoxShape | PolygonShape, height: number): BoxShape | PolygonShape {
  const rings = (feature.getGeometry() as Polygon).getCoordinates() as XY[][];
  if (previous.type === "box") {
    return { ...ringToBox(rings[0], height, previous.label), ...(previous.attributes ? { attributes: previous.attributes } : {}) };
  }
  return { ...previous, parts: ringsToParts(rings, height) };
}

function hexToRgba(hex: string, alpha: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

const styleCache = new Map<string, Style[]>();

/** Solid outline and light fill in the class colour; selected shapes thicker; pre-labels dashed and hatched-grey. */
export function styleFor(colour: string, mode: "human" | "selected" | "prelabel" | "prelabel-selected"): Style[] {
  const key = `${colour}|${mode}`;
  let styles = styleCache.get(key);
  if (!styles) {
    const pre = mode.startsWith("prelabel");
    const selected = mode.endsWith("selected");
    styles = [new Style({
      stroke: new Stroke({ color: pre ? hexToRgba(colour, 0.95) : colour, width: selected ? 3 : 1.5,
        lineDash: pre ? [8, 5] : undefined }),
      fill: new Fill({ color: hexToRgba(colour, selected ? 0.28 : pre ? 0.06 : 0.15) }),
    })];
    if (pre) {
      styles.push(new Style({ stroke: new Stroke({ color: "rgba(255,255,255,0.8)", width: 1, lineDash: [2, 11] }) }));
    }
    styleCache.set(key, styles);
  }
  return styles;
}

/** A vector layer of shapes, reusing each feature while its entry is unchanged. */
export class ShapeLayer {
  readonly source = new VectorSource<Feature<Polygon>>({ wrapX: false });
  readonly layer: VectorLayer<VectorSource<Feature<Polygon>>>;
  private features = new Map<number | string, Feature<Polygon>>();
  selectedKeys = new Set<number | string>();

  constructor(private readonly height: number, private readonly colourOf: (label: string) => string,
    private readonly prelabel = false) {
    this.layer = new VectorLayer({
      source: this.source,
      updateWhileInteracting: true,
      updateWhileAnimating: true,
      style: (feature: FeatureLike) => {
        const selected = this.selectedKeys.has(feature.get("key"));
        const mode = this.prelabel ? (selected ? "prelabel-selected" : "prelabel") : selected ? "selected" : "human";
        return styleFor(this.colourOf(feature.get("label")), mode);
      },
    });
  }

  feature(key: number | string): Feature<Polygon> | undefined {
    return this.features.get(key);
  }

  /** Make the layer show exactly these shapes (keyed), touching only what changed. */
  sync(entries: { key: number | string; shape: Shape }[]): void {
    const seen = new Set<number | string>();
    const added: Feature<Polygon>[] = [];
    for (const { key, shape } of entries) {
      if (!isVector(shape)) continue;
      seen.add(key);
      const existing = this.features.get(key);
      if (existing) {
        if (existing.get("shape") === shape) continue;
        existing.setGeometry(geometryOf(shape, this.height));
        existing.setProperties({ shape, label: shape.label }, true);
        existing.changed();
        continue;
      }
      const feature = new Feature<Polygon>({ geometry: geometryOf(shape, this.height) });
      feature.setProperties({ key, shape, label: shape.label, prelabel: this.prelabel }, true);
      feature.setId(String(key));
      this.features.set(key, feature);
      added.push(feature);
    }
    if (added.length) this.source.addFeatures(added);
    for (const [key, feature] of this.features) {
      if (!seen.has(key)) {
        this.source.removeFeature(feature);
        this.features.delete(key);
        this.selectedKeys.delete(key);
      }
    }
  }

  setSelected(keys: Iterable<number | string>): void {
    const before = this.selectedKeys;
    this.selectedKeys = new Set(keys);
    for (const key of new Set([...before, ...this.selectedKeys])) this.features.get(key)?.changed();
  }
}
