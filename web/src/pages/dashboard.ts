import { api, type Item, type Job } from "../api";
import { barChart, stackedBar } from "./charts";
import { clear, dialog, formatError, h, toast } from "../dom";
import { link } from "../router";
import { canManage, projectNav } from "./nav";
import { simulationCard } from "./simulation";

const STATE_COLOURS: Record<string, string> = { unlabelled: "#c9ced6", submitted: "#f0b429", accepted: "#2f9e44" };
const FORMATS: Record<string, string[]> = {
  classification: ["folders", "csv"], multilabel: ["csv"], detection: ["coco", "yolo", "voc"],
  instance: ["coco", "instances", "yolo"], semantic: ["masks", "scribbles"],
};
/** The models card's entry for micro-models: Train trains every class with enough examples, Pre-label runs the chain. */
const MICRO = "micro-models (one per class)";
const MODELS: Record<string, string[]> = {
  classification: ["classifier", MICRO], multilabel: ["classifier", MICRO], detection: ["detector", MICRO],
  instance: ["pixel-rf", "unet"], semantic: ["pixel-rf", "unet", MICRO],
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
  const running = new Set<number>(); // jobs seen queued or running: their outcome is shown when they end
  let uploadError: HTMLElement | null = null;
  // what the user is in the middle of survives the refreshes while jobs run
  const selected = new Set<number>();
  const trainForm: { open: boolean; values: Record<string, string> } = { open: false, values: {} };
  // the micro-model card's training options, kept while the dashboard refreshes
  const microOptions = { base: "", minExamples: "", pseudo: false, open: false };
  let chosenKind = (MODELS[project.kind] ?? [])[0] ?? ""; // the model kind picked in the models card
  let classifierHead = "logreg"; // what the classifier trains: a logistic regression, or the network's last stage
  // made once: the dashboard moves the same card into each redraw, so its form and figure survive refreshes
  const simulation = canManage(project) ? simulationCard(project, async (job) => {
    running.add(job.id);
    await refresh();
  }) : null;

  async function refresh(): Promise<void> {
    const [stats, items, listed] = await Promise.all([api.stats(id), api.items(id, "", "", 200), api.models(id)]);
    if (disposed) return;
    const states = stats.items_per_state as Record<string, number>;
    const perClass = stats.per_class as Record<string, { items: number; shapes: number }>;
    const perAnnotator = stats.per_annotator as Record<string, { newest_revisions: number; queue_items_done: number }>;
    const jobs = stats.jobs as Job[];
    for (const j of jobs) {
      if (j.state === "queued" || j.state === "running") running.add(j.id);
      else if (running.delete(j.id)) toast(`${j.kind} job #${j.id} ${j.state}: ${j.message ?? ""}`, j.state === "failed" ? "error" : "info");
    }
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
      exportCard(),
      modelsCard(models),
      microCard((listed as Record<string, any>).micro_models ?? null),
      simulation?.element,
      h("section", { class: "card" }, h("h2", {}, "Jobs"), jobs.length ? h("table", { class: "list", "data-testid": "jobs" },
        jobs.map((j) => h("tr", {}, h("td", { class: "nowrap" }, `#${j.id} ${j.kind}`), h("td", { class: "nowrap" }, j.state),
          h("td", {}, h("progress", { max: j.total ?? 1, value: j.total ? j.done : j.state === "done" ? 1 : 0 })),
          h("td", { class: "job-message", "data-testid": `job-message-${j.id}` }, j.message ?? ""),
          h("td", {}, ["queued", "running"].includes(j.state) && canManage(project!)
            ? h("button", { onclick: () => api.cancelJob(j.id).then(refresh) }, "Cancel") : "")))) : h("p", {}, "No jobs yet.")),
      itemsCard(items.items));
    simulation?.update(jobs).catch((e) => toast(`simulation: ${formatError(e)}`, "error"));
    if (jobs.some((j) => j.state === "queued" || j.state === "running")) timer = setTimeout(() => void refresh(), 2000);
  }

  function uploadCard(): HTMLElement | null {
    if (!canManage(project!)) return null;
    const files = h("input", { type: "file", multiple: true, accept: "image/*,.dcm,.tif,.tiff", "data-testid": "upload-files" });
    const skip = h("input", { type: "checkbox", "data-testid": "upload-skip-bad" });
    uploadError = uploadError ?? h("div", { class: "banner error", role: "alert", "data-testid": "upload-error", hidden: true });
    const banner = uploadError;
    return h("section", { class: "card" }, h("h2", {}, "Add images"), files,
      h("label", { class: "check" }, skip, " skip unreadable files (import the others and list them)"),
      h("button", { class: "primary", "data-testid": "upload", onclick: async () => {
        if (!files.files?.length) return;
        try {
          const report = await api.upload(id, Array.from(files.files), skip.checked);
          const skipped = (report.skipped as string[] | undefined) ?? [];
          clear(banner, skipped.length ? [h("strong", {}, `${skipped.length} file(s) could not be read and were skipped:`),
            h("ul", {}, skipped.map((line) => h("li", {}, line)))] : []);
          banner.hidden = !skipped.length;
          toast(`added ${report.items_added ?? files.files.length} image(s)`);
          await refresh();
        } catch (error) {
          const [first, ...lines] = formatError(error).split("\n");
          clear(banner, h("strong", {}, first), lines.length ? h("ul", {}, lines.map((line) => h("li", {}, line.trim()))) : null);
          banner.hidden = false;
        }
      } }, "Upload"), banner);
  }

  function exportCard(): HTMLElement | null {
    if (!canManage(project!)) return null;
    return h("section", { class: "card" }, h("h2", {}, "Export"),
      h("p", { class: "muted" }, "Labelled items in a training format, as a zip."),
      h("button", { "data-testid": "export-open", onclick: () => void exportDialog() }, "Export…"));
  }

  async function exportDialog(): Promise<void> {
    const formats = FORMATS[project!.kind] ?? [];
    const format = h("select", { "data-testid": "export-format" }, formats.map((f) => h("option", { value: f }, f)));
    const include = h("select", { "data-testid": "export-include" },
      [["annotations", "people's labels"], ["both", "people's labels and model predictions"], ["predictions", "model predictions only"]]
        .map(([v, words]) => h("option", { value: v }, words)));
    const unlabelled = h("input", { type: "checkbox", "data-testid": "export-unlabelled" });
    const images = h("input", { type: "checkbox", "data-testid": "export-images" });
    const preview = h("p", { "data-testid": "export-preview" }, "…");
    const query = () => `format=${format.value}&include=${include.value}&unlabelled=${unlabelled.checked}`;
    const update = async () => {
      try {
        const found = await api.exportPreview(id, query());
        const left = Object.entries(found.left_out).map(([why, n]) => `${n} ${why}`).join(", ");
        clear(preview, `${found.items} item(s) will be exported`, left ? `; left out: ${left} (they have no label to export)` : "");
      } catch (error) {
        clear(preview, h("span", { class: "error" }, formatError(error)));
      }
    };
    for (const control of [format, include, unlabelled]) control.addEventListener("change", () => void update());
    void update();
    const chosen = await dialog("Export", [
      h("label", {}, "Format", format), h("label", {}, "Labels", include),
      h("label", { class: "check" }, unlabelled, " include unlabelled items (written with empty labels)"),
      h("label", { class: "check" }, images, " include the image files"), preview],
    [{ label: "Cancel", value: false, testid: "export-cancel" }, { label: "Download", value: true, primary: true, testid: "export-download" }],
    "export-dialog");
    if (!chosen) return;
    // a link, not fetch: the browser streams the zip to disk as the server writes it
    const a = h("a", { href: `/api/projects/${id}/export?${query()}&images=${images.checked}`, download: `${project!.name}-${format.value}.zip` });
    document.body.append(a);
    a.click();
    a.remove();
    toast("export started: the zip downloads as it is written");
  }

  function modelsCard(models: Record<string, any>[]): HTMLElement {
    const kinds = MODELS[project!.kind] ?? [];
    const pick = h("select", { onchange: () => { chosenKind = pick.value; } },
      kinds.map((k) => h("option", { value: k, selected: k === chosenKind }, k)));
    const start = (what: "train" | "predict") => async () => {
      try {
        const micro = pick.value === MICRO;
        const job = what === "train"
          ? (micro ? await api.trainMicro(id, { all_classes: true })
            : await api.train(id, pick.value, pick.value === "classifier" ? { head: classifierHead } : {}))
          : (micro ? await api.predictChain(id, {}) : await api.predict(id, pick.value));
        running.add(job.id);
        toast(`${what} job #${job.id} started`);
        await refresh();
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    const target = project!.settings?.["target_precision"];
    const classifier = kinds.includes("classifier");
    const head = classifier ? h("select", { "data-testid": "classifier-head", title: "what the classifier trains "
      + "(fine-tuning runs the network on every image and trains 6 times for its calibration: minutes, not seconds)",
      onchange: (e: Event) => { classifierHead = (e.target as HTMLSelectElement).value; } },
      [["logreg", "logistic regression (seconds)"], ["finetune", "fine-tuned last stage (minutes)"]].map(([value, label]) =>
        h("option", { value, selected: value === classifierHead }, label))) : null;
    return h("section", { class: "card models-card" }, h("h2", {}, "Models"),
      models.length ? h("div", { class: "models" }, [...models].reverse().map(modelCard)) : h("p", {}, "No models yet."),
      kinds.includes("detector") && canManage(project!) ? detectorForm(models) : null,
      kinds.length && canManage(project!) ? h("div", { class: "row" }, pick, head,
        kinds.includes("detector") ? null : h("button", { onclick: start("train") }, "Train"),
        h("button", { onclick: start("predict") }, "Pre-label")) : null,
      classifier ? h("p", { class: "muted" }, `Pre-label uses the target precision in Settings (now ${target ?? 0.95}); `
        + "after a change it chooses the thresholds again from the model's held-out scores, without retraining.") : null);
  }

  /** Training a detector with the seed's hyperparameters, each filled with its default. */
  function detectorForm(models: Record<string, any>[]): HTMLElement {
    const field = (name: string, label: string, value: string, hint: string) =>
      h("label", { title: hint }, label, h("input", { name, value: trainForm.values[name] ?? value, "data-testid": `train-${name}`,
        size: 8, oninput: (e: Event) => { trainForm.values[name] = (e.target as HTMLInputElement).value; } }));
    const versions = models.filter((m) => m.kind === "detector" && m.status === "ready").map((m) => m.version);
    const from = h("select", { name: "from", "data-testid": "train-from" }, h("option", { value: "" }, "ImageNet backbone"),
      versions.map((v: number) => h("option", { value: String(v) }, `detector:${v} (improve it)`)));
    const fields = [
      field("time_budget", "Time budget", "15m", "stop after this long (20m, 90s); or give epochs"),
      field("epochs", "Epochs", "", "train this many passes (empty: the time budget decides)"),
      field("batch_size", "Batch size", "4", "images per step"),
      field("lr", "Learning rate", "0.01", "SGD learning rate after the warm-up"),
      field("gamma", "Gamma", "0.1", "the rate is multiplied by gamma at each gamma epoch"),
      field("gamma_epochs", "Gamma epochs", "", "e.g. 20,27 (empty: at 70% and 90% of the run)"),
      field("rois_per_image", "RoIs per image", "128", "regions sampled per image for the box head"),
      field("eval_period", "Evaluation period", "2", "evaluate on the test images and checkpoint every N epochs"),
      field("test_fraction", "Test share", "0.2", "share of labelled images held out to test and calibrate"),
      field("min_size", "Image size", "416", "the shorter side the network sees, in pixels"),
      field("calibration_folds", "Calibration folds", "auto", "cross-validation fold models that add held-out "
        + "evidence for the pre-label threshold (auto: 3 when the test images hold under 30 boxes; 0: none)"),
    ];
    const go = async () => {
      const params: Record<string, unknown> = {};
      for (const label of fields) {
        const input = label.querySelector("input")!;
        if (input.value.trim()) params[input.name] = input.value.trim();
      }
      if (from.value) params.from = from.value;
      try {
        const job = await api.train(id, "detector", params);
        running.add(job.id);
        toast(`train job #${job.id} started`);
        await refresh();
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    return h("details", { class: "train-form", "data-testid": "detector-form", open: trainForm.open,
      ontoggle: (e: Event) => { trainForm.open = (e.target as HTMLDetailsElement).open; } }, h("summary", {}, "Train a detector…"),
      h("div", { class: "form-grid" }, fields, h("label", {}, "Start from", from)),
      h("button", { class: "primary", "data-testid": "train-detector", onclick: () => void go() }, "Train"));
  }

  /** Each class's micro-model: examples, the version in use, ready or why not, held-out precision and recall. */
  function microCard(state: { chain: string[]; classes: Record<string, any>[] } | null): HTMLElement | null {
    const pct = (v: number | null | undefined) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`);
    // Semantic projects' micro-models are scored on held-out pixels: precision, recall and IoU of pixels; detection
    // projects' on held-out images' boxes: precision, recall and AP@0.5. Both count images holding the class.
    const pixels = project!.kind === "semantic";
    const boxes = project!.kind === "detection";
    const manage = canManage(project!);
    const train = (className: string | null) => async () => {
      const body: Record<string, unknown> = className ? { class: className } : { all_classes: true };
      if (microOptions.base) body.base = microOptions.base;
      if (microOptions.minExamples.trim()) body.min_examples = Number(microOptions.minExamples.trim());
      if (microOptions.pseudo) body.pseudo_labels = true;
      try {
        const job = await api.trainMicro(id, body);
        running.add(job.id);
        toast(`train job #${job.id} started: ${className ? `micro:${className}` : "every class with enough examples"}`);
        await refresh();
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    // the API's options: base (semantic and detection projects choose), the examples a class needs, pseudo-labels
    const bases = pixels ? { title: "unet where the project has masks, else pixel-rf",
                             choices: [["", "auto"], ["pixel-rf", "pixel-rf"], ["unet", "unet"]] }
      : boxes ? { title: "one detector per class (the chain runs each), or one detector shared by the classes with a small head per class (the chain runs it once per image)",
                  choices: [["", "auto"], ["detector", "a detector per class"], ["shared-detector", "one shared detector"]] }
      : null;
    const options = manage ? h("div", { class: "row", "data-testid": "micro-options" },
      bases ? h("label", { title: bases.title }, "Base ",
        h("select", { "data-testid": "micro-base", onchange: (e: Event) => { microOptions.base = (e.target as HTMLSelectElement).value; } },
          bases.choices.map(([value, label]) =>
            h("option", { value, selected: value === microOptions.base }, label)))) : null,
      h("label", { title: `labelled ${pixels || boxes ? "images" : "examples"} a class needs before its micro-model trains` },
        "Min examples ", h("input", { type: "number", min: "2", size: 4, placeholder: pixels ? "2" : "5",
          "data-testid": "micro-min-examples", value: microOptions.minExamples,
          oninput: (e: Event) => { microOptions.minExamples = (e.target as HTMLInputElement).value; } })),
      h("label", { class: "check", title: "the chain's pending pre-labels join training where the held-out score says they help" },
        h("input", { type: "checkbox", "data-testid": "micro-pseudo", checked: microOptions.pseudo,
          onchange: (e: Event) => { microOptions.pseudo = (e.target as HTMLInputElement).checked; } }), " pseudo-labels"),
      h("button", { "data-testid": "micro-train-all", onclick: () => void train(null)() }, "Train every class")) : null;
    if (!state) {
      // before any micro-model or chain: the options and a Train button per class, folded away like the detector's form
      if (!manage || !(MODELS[project!.kind] ?? []).includes(MICRO)) return null;
      return h("details", { class: "card train-form", style: "grid-column: span 2", "data-testid": "micro-start",
        open: microOptions.open, ontoggle: (e: Event) => { microOptions.open = (e.target as HTMLDetailsElement).open; } },
        h("summary", {}, "Train micro-models (one small model per class)…"),
        h("p", { class: "muted" }, "Each class gets its own model as soon as it has enough labelled examples; chain them to "
          + "pre-label every class in one pass."),
        options,
        pixels ? null : h("div", { class: "row" }, project!.classes.map((c) => h("button", {
          "data-testid": `micro-train-${c.name}`, onclick: () => void train(c.name)() }, `Train ${c.name}`))));
    }
    const trained = state.classes.filter((c) => c.model).map((c) => `micro:${c.class}`);
    const chainAll = async () => {
      try {
        await api.setChain(id, trained);
        toast(`chain: ${trained.join(" → ")}`);
        await refresh();
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    // A wide table: the card spans two columns of the grid.
    return h("section", { class: "card", style: "grid-column: span 2", "data-testid": "micro-models" }, h("h2", {}, "Micro-models"),
      h("p", { class: "muted" }, state.chain.length ? `Chain: ${state.chain.join(" → ")}`
        : `No chain yet: chain the trained classes below, or labelloop chain ${project!.name} micro:CLASS …`),
      options,
      trained.length && manage && trained.join() !== state.chain.join()
        ? h("button", { "data-testid": "chain-trained", onclick: () => void chainAll() },
          `Chain every trained class (${trained.length})`) : null,
      h("p", { class: "muted" }, `Precision, recall${pixels ? " and IoU of pixels" : boxes ? " of boxes (AP@0.5 over all scores)" : ""}: held out, at each class's threshold.`),
      h("div", { style: "overflow-x: auto" }, h("table", { class: "list compact" },
        h("tr", {}, ["class", pixels || boxes ? "images" : "examples", "micro-model", "ready", "precision", "recall",
          ...(pixels ? ["IoU"] : []), ...(boxes ? ["AP@0.5"] : []), "in chain", ...(manage ? [""] : [])].map((t) => h("th", {}, t))),
        state.classes.map((c) => h("tr", {}, h("td", { class: "name", title: c.class }, c.class), h("td", {}, String(c.examples)),
          h("td", { title: c.not_used || "" }, c.model ? `${c.model}${c.base && c.base !== "classifier" ? ` (${c.base})` : ""}` : "–"),
          h("td", { class: c.ready ? "" : "muted" }, c.ready ? "ready" : `no: ${c.why_not}`),
          h("td", {}, pct(c.held_out_precision)), h("td", {}, pct(c.held_out_recall)),
          ...(pixels ? [h("td", {}, c.held_out_iou === null || c.held_out_iou === undefined ? "–" : c.held_out_iou.toFixed(3))] : []),
          ...(boxes ? [h("td", {}, c.held_out_average_precision === null || c.held_out_average_precision === undefined
            ? "–" : c.held_out_average_precision.toFixed(3))] : []),
          h("td", {}, c.in_chain ? "yes" : ""),
          manage ? h("td", {}, h("button", { class: "link", "data-testid": `micro-train-${c.class}`,
            title: `train micro:${c.class} alone, with the options above`, onclick: () => void train(c.class)() },
            c.model ? "Retrain" : "Train")) : null)))));
  }

  function modelCard(m: Record<string, any>): HTMLElement {
    const card = m.card ?? { figures: [], classes: [], note: "" };
    const pct = (v: number | null | undefined) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`);
    return h("figure", { "data-testid": `model-${m.kind}-${m.version}` },
      h("figcaption", {}, h("strong", {}, `${m.kind}:${m.version}`), ` (${m.status ?? ""})`),
      card.figures.length ? h("dl", { class: "figures" }, card.figures.flatMap((f: { name: string; value: string }) =>
        [h("dt", {}, f.name), h("dd", {}, f.value)])) : null,
      card.classes.length ? h("table", { class: "list compact", "data-testid": "model-classes" },
        h("tr", {}, ["class", "threshold", "precision", "recall", "coverage", "pre-labels"].map((t) => h("th", {}, t))),
        card.classes.map((c: Record<string, any>) => c.threshold === null
          ? h("tr", {}, h("td", { class: "name", title: c.class }, c.class),
            h("td", { colspan: 5, class: "muted" }, `no threshold: ${c.reason}`))
          : h("tr", {}, h("td", { class: "name", title: c.class }, c.class), h("td", {}, c.threshold.toFixed(3)),
            h("td", {}, pct(c.precision)), h("td", {}, pct(c.recall)), h("td", {}, pct(c.coverage)),
            h("td", {}, c.prelabelled ?? "–")))) : null,
      card.note ? h("p", { class: "muted" }, card.note) : null,
      m.curves_png ? h("img", { src: m.curves_png, alt: `curves of ${m.kind}:${m.version}`, loading: "lazy" }) : null);
  }

  function itemsCard(items: Item[]): HTMLElement {
    const kinds = MODELS[project!.kind] ?? [];
    const count = h("span", { class: "muted", "data-testid": "selected-count" }, "");
    const chosen = () => [...selected];
    const boxes = items.map((i) => h("input", { type: "checkbox", value: String(i.id), "data-testid": `select-${i.id}`,
      checked: selected.has(i.id), onchange: (e: Event) => {
        if ((e.target as HTMLInputElement).checked) selected.add(i.id);
        else selected.delete(i.id);
        count.textContent = selected.size ? `${selected.size} selected` : "";
      } }));
    count.textContent = selected.size ? `${selected.size} selected` : "";
    const smart = kinds.length && canManage(project!) ? h("div", { class: "row" },
      h("button", { "data-testid": "prelabel-selected", onclick: async () => {
        if (!chosen().length) return toast("tick the images to pre-label first", "error");
        try {
          const job = chosenKind === MICRO ? await api.predictChain(id, { items: chosen() })
            : await api.predict(id, chosenKind, chosen());
          running.add(job.id);
          toast(`pre-labelling ${chosen().length} image(s): job #${job.id}`);
          await refresh();
        } catch (error) {
          toast(formatError(error), "error");
        }
      } }, "Pre-label selected (the model picked above)"), count) : null;
    return h("section", { class: "card" }, h("h2", {}, "Items"), smart, h("div", { class: "scroll" }, h("table", { class: "list", "data-testid": "items" },
      items.map((i, n) => h("tr", {}, h("td", {}, boxes[n]), h("td", {}, link(`/projects/${id}/items/${i.id}`, `#${i.id} ${i.source}`)),
        h("td", {}, `${i.width}×${i.height} ${i.dtype}`), h("td", {}, i.state), h("td", {}, `v${i.version}`))))));
  }

  await refresh().catch((e) => body.append(h("p", { class: "error" }, formatError(e))));
  return { dispose: () => { disposed = true; if (timer) clearTimeout(timer); } };
}
