/** Small SVG charts for the dashboard (no chart library). */
const SVG = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Horizontal bars, one per entry, labelled with name and value. */
export function barChart(entries: { name: string; value: number; colour?: string }[], title: string): SVGSVGElement {
  const rowHeight = 22, labelWidth = 140, barWidth = 260, valueWidth = 60;
  const height = Math.max(1, entries.length) * rowHeight + 24;
  const width = labelWidth + barWidth + valueWidth;
  // scales down with its card (viewBox), never wider than drawn
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": title,
    class: "chart", style: `max-width: ${width}px` });
  chart.append(svg("text", { x: 0, y: 14, class: "chart-title" }, title));
  const max = Math.max(1, ...entries.map((e) => e.value));
  entries.forEach((e, i) => {
    const y = 24 + i * rowHeight;
    const label = svg("g", {}); // the whole name on hover
    label.append(svg("title", {}, e.name), svg("text", { x: 0, y: y + 14 }, shorten(e.name, 18)));
    chart.append(label);
    chart.append(svg("rect", { x: labelWidth, y: y + 3, height: rowHeight - 8,
      width: Math.max(1, (barWidth * e.value) / max), fill: e.colour ?? "#4a7fd4" }));
    chart.append(svg("text", { x: labelWidth + barWidth + 6, y: y + 14 }, String(e.value)));
  });
  return chart;
}

/** A name cut to `max` characters with an ellipsis, so it stays inside its column. */
export function shorten(name: string, max: number): string {
  return name.length <= max ? name : `${name.slice(0, max - 1)}…`;
}

/** One stacked bar of parts of a whole (items by state). */
export function stackedBar(parts: { name: string; value: number; colour: string }[]): HTMLElement {
  const total = parts.reduce((n, p) => n + p.value, 0) || 1;
  const bar = document.createElement("div");
  bar.className = "stacked";
  for (const p of parts) {
    const seg = document.createElement("span");
    seg.style.width = `${(100 * p.value) / total}%`;
    seg.style.background = p.colour;
    seg.title = `${p.name}: ${p.value}`;
    bar.append(seg);
  }
  return bar;
}
