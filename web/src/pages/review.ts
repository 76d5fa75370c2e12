/**
 * Review: the model's pending predictions and the annotators' submitted annotations. Selecting one shows it on
 * the map (predictions as dashed pre-labels); accept, reject, or change it and save the edit, each one action.
 */
import { api, type Annotation, type Project } from "../api";
import { Editor } from "../canvas/editor";
import { clear, formatError, h, isTyping, toast } from "../dom";
import { preLabelsOf, type Prediction } from "../lib/prelabels";
import { link } from "../router";
import { projectNav } from "./nav";
import { showSuspects } from "./suspects";

type Entry = { kind: "prediction"; prediction: Prediction } | { kind: "annotation"; annotation: Annotation };

export async function reviewPage(root: HTMLElement, params: Record<string, string>) {
  const id = Number(params.id);
  let project: Project;
  try {
    project = await api.project(id);
  } catch (error) {
    root.append(h("p", { class: "error" }, formatError(error)));
    return;
  }
  const list = h("aside", { class: "sidebar review-list", "data-testid": "review-list" });
  const mapEl = h("div", { class: "map" });
  const actions = h("aside", { class: "toolbar" });
  let tab: "queue" | "suspects" = "queue";
  const tabButton = (which: "queue" | "suspects", text: string) => h("button", {
    role: "tab", "data-testid": `review-tab-${which}`, onclick: async () => {
      tab = which;
      for (const b of tabs.children) b.setAttribute("aria-selected", String(b === tabs.children[which === "queue" ? 0 : 1]));
      try {
        if (which === "suspects") await showSuspects(project, list, actions, showItem);
        else {
          await refresh();
          if (entries.length) await open(entries[0]);
        }
      } catch (error) {
        toast(formatError(error), "error");
      }
    } }, text);
  const tabs = h("div", { class: "tabs", role: "tablist" }, tabButton("queue", "Waiting for review"), tabButton("suspects", "Suspects"));
  tabs.children[0].setAttribute("aria-selected", "true");
  root.append(projectNav(project, "review"), tabs, h("div", { class: "workspace" }, list, mapEl, actions));
  let editor: Editor | null = null;
  let entries: Entry[] = [];

  /** A suspect's item on the map, with its current labels. */
  async function showItem(itemId: number): Promise<void> {
    const detail = await api.item(itemId);
    editor?.dispose();
    mapEl.replaceChildren();
    editor = new Editor(mapEl, project, detail.item, detail.annotation?.shapes ?? [], [], () => {});
  }

  async function refresh(): Promise<void> {
    if (tab !== "queue") return;
    const [predictions, annotations] = await Promise.all([api.predictions(id), api.reviewQueue(id)]);
    entries = [...predictions.items.map((prediction) => ({ kind: "prediction" as const, prediction })),
      ...annotations.items.map((annotation) => ({ kind: "annotation" as const, annotation }))];
    clear(list, h("h3", {}, `Waiting for review (${entries.length})`), h("ul", { class: "shape-list" }, entries.map((e, n) =>
      h("li", { "data-testid": `review-${n}`, onclick: () => void open(e) }, e.kind === "prediction"
        ? `prediction #${e.prediction.id} · item ${e.prediction.item_id} · ${e.prediction.model_version} · ${e.prediction.shapes.length} shapes`
        : `item ${e.annotation.item_id} v${e.annotation.version} by ${e.annotation.author} · ${e.annotation.shapes.length} shapes`))));
    if (!entries.length) {
      editor?.dispose();
      editor = null;
      clear(actions, h("p", {}, "Nothing to review."));
    }
  }

  async function open(entry: Entry): Promise<void> {
    const itemId = entry.kind === "prediction" ? entry.prediction.item_id : entry.annotation.item_id;
    const detail = await api.item(itemId);
    const shapes = entry.kind === "prediction" ? detail.annotation?.shapes ?? [] : entry.annotation.shapes;
    const pres = entry.kind === "prediction" ? preLabelsOf([entry.prediction], shapes) : [];
    editor?.dispose();
    mapEl.replaceChildren();
    let edited = false;
    editor = new Editor(mapEl, project, detail.item, shapes, pres, (why) => { if (why !== "selection") edited = true; });
    const verdict = (action: string) => async () => {
      try {
        if (entry.kind === "prediction") {
          const which = action === "save" ? "edit" : action;
          await api.reviewPrediction(entry.prediction.id, which, which === "edit" ? editor!.doc() : undefined, detail.base_version);
        } else {
          const which = action === "save" ? (edited ? "edit" : "accept") : action;
          await api.reviewAnnotation(itemId, which, entry.annotation.version, which === "edit" ? editor!.doc() : undefined);
        }
        toast(`${action === "save" ? "edit" : action} recorded`);
        await refresh();
        if (entries.length) await open(entries[0]);
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    clear(actions, h("h3", {}, entry.kind === "prediction" ? `Prediction #${entry.prediction.id}` : `Annotation v${entry.annotation.version}`),
      link(`/projects/${id}/items/${itemId}`, `open item ${itemId} in the labelling view`),
      h("button", { class: "primary", "data-testid": "review-accept", onclick: verdict("accept") }, "Accept as is"),
      h("button", { "data-testid": "review-save-edit", onclick: verdict("save") }, "Save my edit"),
      h("button", { "data-testid": "review-reject", onclick: verdict("reject") }, "Reject"),
      h("p", { class: "muted" }, "Click a dashed pre-label, then Enter accepts it, e edits it, Delete drops it; number keys relabel."));
  }

  const onKey = (event: KeyboardEvent) => {
    if (!editor || isTyping(event.target) || document.querySelector(".overlay")) return;
    const pre = editor.prelabels.filter((p) => editor!.selected.has(p.key)).map((p) => p.key);
    if (event.key === "Enter" && pre.length) editor.acceptPre(pre);
    else if (event.key === "e" && pre.length) editor.editPre(pre[0]);
    else if (event.key === "Delete" || event.key === "Backspace") editor.deleteSelected();
    else if (/^[0-9]$/.test(event.key)) editor.chooseClass(event.key === "0" ? 9 : Number(event.key) - 1);
    else return;
    event.preventDefault();
  };
  document.addEventListener("keydown", onKey);
  await refresh().catch((e) => toast(formatError(e), "error"));
  if (entries.length) await open(entries[0]);
  return { dispose: () => { document.removeEventListener("keydown", onKey); editor?.dispose(); } };
}
