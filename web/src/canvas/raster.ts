/**
 * Pixel labels (masks, scribbles) as a label map of one byte per pixel (0: nothing, v: entry v), drawn through an
 * OpenLayers canvas source. Painting touches only the label map and the changed rectangle of a full-size colour
 * canvas, so a stroke costs what it covers, not the size of the image; RLE encoding happens once per stroke.
 */
import ImageLayer from "ol/layer/Image";
import ImageCanvasSource from "ol/source/ImageCanvas";
import type Projection from "ol/proj/Projection";
import { paintLine, select, union, valuesIn, type Dirty } from "../lib/brush";
import { decodeInto, encode } from "../lib/rle";
import type { MaskShape } from "../lib/shapes";

export interface RasterValue {
  label: string;
  colour: string;
}

function rgb(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export class RasterLayer {
  readonly map: Uint8Array;
  readonly layer: ImageLayer<ImageCanvasSource>;
  private readonly canvas: HTMLCanvasElement;
  private readonly source: ImageCanvasSource;
  private lut = new Uint8ClampedArray(256 * 4);
  private stroke: Dirty | null = null;
  /** solid: masks; striped: scribbles (so a scribble never looks like a mask); dashed: pre-labels, whose outline
   * is dashed like a box pre-label's, over a faint fill */
  style: "solid" | "striped" | "dashed" = "solid";
  private highlight = new Set<number>();

  constructor(readonly width: number, readonly height: number, projection: Projection, readonly type: "mask" | "scribble",
    private values: Map<number, RasterValue>, private readonly alpha = 150) {
    this.map = new Uint8Array(width * height);
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.setValues(values);
    const full = this.canvas;
    this.source = new ImageCanvasSource({
      projection,
      ratio: 1,
      canvasFunction: (extent, _resolution, _pixelRatio, size) => {
        const out = document.createElement("canvas");
        out.width = Math.round(size[0]);
        out.height = Math.round(size[1]);
        const ctx = out.getContext("2d")!;
        ctx.imageSmoothingEnabled = false;
        const [minX, minY, maxX, maxY] = extent;
        // clip the source rectangle to the image and place it proportionally (browsers differ on overhangs)
        const sx = Math.max(0, minX), sy = Math.max(0, height - maxY);
        const ex = Math.min(width, maxX), ey = Math.min(height, height - minY);
        if (ex > sx && ey > sy) {
          const kx = out.width / (maxX - minX), ky = out.height / (maxY - minY);
          ctx.drawImage(full, sx, sy, ex - sx, ey - sy, (sx - minX) * kx, (sy - (height - maxY)) * ky,
            (ex - sx) * kx, (ey - sy) * ky);
        }
        return out;
      },
    });
    this.layer = new ImageLayer({ source: this.source, opacity: 1 });
  }

  setValues(values: Map<number, RasterValue>): void {
    this.values = values;
    this.lut = new Uint8ClampedArray(256 * 4);
    for (const [v, { colour }] of values) {
      const [r, g, b] = rgb(colour);
      this.lut.set([r, g, b, this.alpha], v * 4);
    }
  }

  /** Values drawn as selected (a selected mask pre-label): a solid outline and a stronger fill. */
  setHighlight(values: number[]): void {
    if (values.length === this.highlight.size && values.every((v) => this.highlight.has(v))) return;
    this.highlight = new Set(values);
    this.redraw({ x0: 0, y0: 0, x1: this.width, y1: this.height });
  }

  /** The value at image pixel (x, y); 0 outside the image or where nothing is painted. */
  valueAt(x: number, y: number): number {
    const cx = Math.floor(x), cy = Math.floor(y);
    return cx < 0 || cy < 0 || cx >= this.width || cy >= this.height ? 0 : this.map[cy * this.width + cx];
  }

  valueInfo(v: number): RasterValue | undefined {
    return this.values.get(v);
  }

  /** Replace the content with these shapes (`valueOf` gives each shape's value in the map). */
  load(shapes: MaskShape[], valueOf: (shape: MaskShape, n: number) => number): void {
    this.map.fill(0);
    shapes.forEach((shape, n) => decodeInto({ size: shape.size, counts: shape.counts }, this.map, valueOf(shape, n)));
    this.redraw({ x0: 0, y0: 0, x1: this.width, y1: this.height });
  }

  /** One brush segment in image pixels; value 0 erases. `only`: erase just this value (others stay). */
  paint(a: [number, number], b: [number, number], radius: number, value: number): void {
    const dirty = paintLine(this.map, this.width, this.height, a, b, radius, value);
    if (dirty) {
      this.stroke = union(this.stroke, dirty);
      this.redraw(dirty);
    }
  }

  /** End of a stroke: the rectangle it touched (null if none). */
  endStroke(): Dirty | null {
    const dirty = this.stroke;
    this.stroke = null;
    return dirty;
  }

  /** The label map as API shapes, one per value present. */
  toShapes(): MaskShape[] {
    return valuesIn(this.map).map((v) => this.shapeFor(v)).filter((s): s is MaskShape => s !== null);
  }

  /** The pixels of one value as an API shape; null when none are left. */
  shapeFor(value: number): MaskShape | null {
    const info = this.values.get(value);
    if (!info || !this.map.includes(value)) return null;
    const rle = encode(select(this.map, value), this.height, this.width);
    return { type: this.type, label: info.label, size: rle.size, counts: rle.counts };
  }

  private patternAlpha(v: number, index: number, x: number, y: number, alpha: number): number {
    if (this.style === "striped") return (x + y) % 6 < 3 ? 255 : Math.round(alpha * 0.3);
    const w = this.width, m = this.map;
    const edge = x === 0 || y === 0 || x === w - 1 || y === this.height - 1 || m[index - 1] !== v || m[index + 1] !== v
      || m[index - w] !== v || m[index + w] !== v;
    const selected = this.highlight.has(v);
    if (edge) return selected || ((x + y) >> 2) % 2 === 0 ? 255 : 0;
    return selected ? 130 : 60;
  }

  redraw(dirty: Dirty): void {
    const w = dirty.x1 - dirty.x0, h = dirty.y1 - dirty.y0;
    if (w <= 0 || h <= 0) return;
    const image = new ImageData(w, h);
    const data = image.data;
    const lut = this.lut;
    for (let y = 0; y < h; y++) {
      let src = (dirty.y0 + y) * this.width + dirty.x0;
      let dst = y * w * 4;
      for (let x = 0; x < w; x++, src++, dst += 4) {
        const v = this.map[src];
        if (v) {
          const o = v * 4;
          data[dst] = lut[o];
          data[dst + 1] = lut[o + 1];
          data[dst + 2] = lut[o + 2];
          data[dst + 3] = this.style === "solid" ? lut[o + 3] : this.patternAlpha(v, src, dirty.x0 + x, dirty.y0 + y, lut[o + 3]);
        }
      }
    }
    this.canvas.getContext("2d")!.putImageData(image, dirty.x0, dirty.y0);
    this.source.changed();
  }
}
