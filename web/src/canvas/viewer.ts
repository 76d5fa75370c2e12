/**
 * The image under the annotation layers: one OpenLayers map per item, one map unit per full-size pixel.
 * Small pictures are one PNG; large ones are 512-pixel tiles of the server's zoom levels (level n halves both
 * sides n times), so an 8000×8000 image only ever loads what the view shows at the resolution it shows it.
 */
import Map from "ol/Map";
import View from "ol/View";
import ImageLayer from "ol/layer/Image";
import TileLayer from "ol/layer/Tile";
import Projection from "ol/proj/Projection";
import ImageStatic from "ol/source/ImageStatic";
import TileImage from "ol/source/TileImage";
import TileGrid from "ol/tilegrid/TileGrid";
import { defaults as defaultInteractions } from "ol/interaction/defaults";
import { imageUrl, type Item } from "../api";
import { levelCount } from "../lib/coords";

export const TILE = 512;
export const SINGLE_IMAGE_MAX = 2048; // longest side served as one PNG; above it, tiles

export interface WindowLevel { centre: number; width: number }

export class ImageViewer {
  readonly map: Map;
  readonly projection: Projection;
  readonly extent: [number, number, number, number];
  readonly levels: number;
  private layer: ImageLayer<ImageStatic> | TileLayer<TileImage>;
  private window: WindowLevel | null = null;

  constructor(target: HTMLElement, readonly item: Item) {
    const { width, height } = item;
    this.extent = [0, 0, width, height];
    this.levels = levelCount(width, height);
    this.projection = new Projection({ code: `labelloop-item-${item.id}`, units: "pixels", extent: this.extent });
    this.layer = this.makeLayer();
    this.map = new Map({
      target,
      layers: [this.layer],
      interactions: defaultInteractions({ doubleClickZoom: false, shiftDragZoom: false }),
      controls: [],
      view: new View({
        projection: this.projection,
        extent: [-width, -height, 2 * width, 2 * height],
        maxResolution: Math.max(width, height) / 64,
        minResolution: 1 / 32,
        constrainResolution: false,
        smoothResolutionConstraint: false,
        showFullExtent: true,
      }),
    });
    this.fit();
  }

  get tiled(): boolean {
    return Math.max(this.item.width, this.item.height) > SINGLE_IMAGE_MAX;
  }

  fit(): void {
    this.map.updateSize();
    this.map.getView().fit(this.extent, { padding: [16, 16, 16, 16] });
  }

  /** Server-side windowing of 16-bit and DICOM pictures; null: the file's own window. */
  setWindow(window: WindowLevel | null): void {
    this.window = window;
    const fresh = this.makeLayer();
    const layers = this.map.getLayers();
    layers.setAt(layers.getArray().indexOf(this.layer), fresh);
    this.layer = fresh;
  }

  private makeLayer(): ImageLayer<ImageStatic> | TileLayer<TileImage> {
    const { id, width, height } = this.item;
    if (!this.tiled) {
      return new ImageLayer({
        source: new ImageStatic({
          url: imageUrl(id, 0, this.window),
          imageExtent: this.extent,
          projection: this.projection,
          interpolate: false,
        }),
      });
    }
    const coarsest = this.levels - 1;
    const resolutions = Array.from({ length: this.levels }, (_, z) => 2 ** (coarsest - z));
    const grid = new TileGrid({ extent: this.extent, origin: [0, height], resolutions, tileSize: TILE });
    const window = this.window;
    const source = new TileImage({
      projection: this.projection,
      tileGrid: grid,
      interpolate: false,
      transition: 0,
      tileUrlFunction: ([z, x, y]) => {
        const level = coarsest - z;
        const scale = 2 ** level;
        if (x < 0 || y < 0 || x * TILE * scale >= width || y * TILE * scale >= height) return undefined;
        return imageUrl(id, level, window, [x, y]);
      },
      tileLoadFunction: loadPaddedTile,
    });
    return new TileLayer({ source, preload: 1 });
  }

  dispose(): void {
    this.map.setTarget(undefined);
    this.map.dispose();
  }
}

/** Edge tiles come back smaller than 512 pixels; pad them so OpenLayers does not stretch them over the slot. */
function loadPaddedTile(tile: import("ol/Tile").default, src: string): void {
  const imageTile = tile as import("ol/ImageTile").default;
  const image = new Image();
  image.onload = () => {
    if (image.naturalWidth === TILE && image.naturalHeight === TILE) {
      imageTile.setImage(image);
      return;
    }
    const canvas = document.createElement("canvas");
    canvas.width = TILE;
    canvas.height = TILE;
    canvas.getContext("2d")!.drawImage(image, 0, 0);
    imageTile.setImage(canvas);
  };
  image.onerror = () => imageTile.setState(3); // TileState.ERROR
  image.src = src;
}
