import { api, type Item, type Job } from "../api";
import { barChart, stackedBar } from "./charts";
import { clear, formatError, h, toast } from "../dom";
import { link } from "../router";
import { canManage, projectNav } from "./nav";

const STATE_COLOURS: Record<string, string> = { unlabelled: "#c9ced6", submitted: "#f0b429", accepted: "#2f9e44" };
const MODELS: Record<string, string[]> = {
  classification: ["classifier"], multilabel: ["classifier"], detection: [], instance: ["pixel-rf", "unet"],
  semantic: ["pixel-rf", "unet"],
};

export async function dashboardPage(root: HTMLElement, params: Record<string, string>) {
  const id = Number(params.id);
  const project = await api.project(id).catch((e) => {
    root.append(h("p", { class: "error" }, formatError(e)));
    return null;
  });
  if (!project) return;
  const body = h("div", { class: "dashboard" });
  root.append(projectNav(project, "dashboard"), body);
  let timer: ReturnType<typeof setTimeout> | null = null;
  let disposed = false;

  async function refresh(): Promise<void> {
    const [stats, items] = await Promise.all([api.stats(id), api.items(id, "", "", 200)]);
    if (disposed) return;
    const states = stats.items_per_state as Record<string, number>;
    const perClass = stats.per_class as Record<string, { items: number; shapes: number }>;
    const perAnnotator = stats.per_annotator as Record<string, { newest_revisions: number; queue_items_done: number }>;
    const jobs = stats.jobs as Job[];
    const models = stats.models as Record<string, any>[];
    const colour = (name: string) => project!.classes.find((c) => c.name === name)?.colour;
    clear(body,
      h("section", { class: "card" }, h("h2", {}, `Progress: ${stats.items} items`),
        stackedBar(Object.entries(states).map(([name, value]) => ({ name, value, colour: STATE_COLOURS[name] ?? "#888" }))),
        h("ul", { class: "legend", "data-testid": "states" }, Object.entries(states).map(([name, value]) =>
          h("li", {}, h("span", { class: "swatch", style: { background: STATE_COLOURS[name] } }), `${name}: ${value}`))),
        h("table", { class: "list" }, h("tr", {}, h("th", {}, "Annotator"), h("th", {}, "Items (newest revisions)"),
          h("th", {}, "Queue items done")),
          Object.entries(perAnnotator).map(([name, v]) => h("tr", {}, h("td", {}, name), h("td", {}, v.newest_revisions),
            h("td", {}, v.queue_items_done))))),
      h("section", { class: "card" }, barChart(Object.entries(perClass).map(([name, v]) =>
        ({ name, value: v.shapes, colour: colour(name) })), "Shapes per class")),
      uploadCard(),
      modelsCard(models),
      h("section", { class: "card" }, h("h2", {}, "Jobs"), jobs.length ? h("table", { class: "list", "data-testid": "jobs" },
        jobs.map((j) => h("tr", {}, h("td", {}, `#${j.id} ${j.kind}`), h("td", {}, j.state),
          h("td", {}, h("progress", { max: j.total ?? 1, value: j.total ? j.done : j.state === "done" ? 1 : 0 })),
          h("td", {}, j.message ?? ""),
          h("td", {}, ["queued", "running"].includes(j.state) && canManage(project!)
            ? h("button", { onclick: () => api.cancelJob(j.id).then(refresh) }, "Cancel") : "")))) : h("p", {}, "No jobs yet.")),
      itemsCard(items.items));
    if (jobs.some((j) => j.state === "queued" || j.state === "running")) timer = setTimeout(() => void refresh(), 2000);
  }

  function uploadCard(): HTMLElement | null {
    if (!canManage(project!)) return null;
    const files = h("input", { type: "file", multiple: true, accept: "image/*,.dcm,.tif,.tiff", "data-testid": "upload-files" });
    return h("section", { class: "card" }, h("h2", {}, "Add images"), files,
      h("button", { class: "primary", "data-testid": "upload", onclick: async () => {
        if (!files.files?.length) return;
        try {
          const report = await api.upload(id, Array.from(files.files));
          toast(`added ${report.items_added ?? report.added ?? files.files.length} image(s)`);
          await refresh();
        } catch (error) {
          toast(formatError(error), "error");
        }
      } }, "Upload"));
  }

  function modelsCard(models: Record<string, any>[]): HTMLElement {
    const kinds = MODELS[project!.kind] ?? [];
    const pick = h("select", {}, kinds.map((k) => h("option", { value: k }, k)));
    const start = (what: "train" | "predict") => async () => {
      try {
        const job = what === "train" ? await api.train(id, pick.value) : await api.predict(id, pick.value);
        toast(`${what} job #${job.id} started`);
        await refresh();
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    return h("section", { class: "card" }, h("h2", {}, "Models"),
      models.length ? h("div", { class: "models" }, models.map((m) => h("figure", {},
        h("figcaption", {}, `${m.kind}:${m.version} (${m.status ?? ""}) ${metricsLine(m.metrics)}`),
        m.curves_png ? h("img", { src: m.curves_png, alt: `training curves of ${m.kind}:${m.version}`, loading: "lazy" }) : null)))
        : h("p", {}, "No models yet."),
      kinds.length && canManage(project!) ? h("div", { class: "row" }, pick,
        h("button", { onclick: start("train") }, "Train"), h("button", { onclick: start("predict") }, "Pre-label")) : null);
  }

  function itemsCard(items: Item[]): HTMLElement {
    return h("section", { class: "card" }, h("h2", {}, "Items"), h("table", { class: "list", "data-testid": "items" },
      items.map((i) => h("tr", {}, h("td", {}, link(`/projects/${id}/items/${i.id}`, `#${i.id} ${i.source}`)),
        h("td", {}, `${i.width}×${i.height} ${i.dtype}`), h("td", {}, i.state), h("td", {}, `v${i.version}`)))));
  }

  await refresh().catch((e) => body.append(h("p", { class: "error" }, formatError(e))));
  return { dispose: () => { disposed = true; if (timer) clearTimeout(timer); } };
}

function metricsLine(metrics: Record<string, unknown> | undefined): string {
  if (!metrics) return "";
  return Object.entries(metrics).filter(([, v]) => typeof v === "number").slice(0, 4)
    .map(([k, v]) => `${k} ${(v as number).toFixed(3)}`).join(", ");
}
