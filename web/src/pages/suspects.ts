/**
 * The Suspects tab of the review page: what the quality checks found (label errors, duplicates, outliers,
 * spot-checks of auto-accepted pre-labels), most suspect first, each with its reason and one-click actions.
 */
import { api, type Project } from "../api";
import { clear, formatError, h, toast } from "../dom";
import { link } from "../router";
import { canManage } from "./nav";

export interface Suspect {
  id: number; item_id: number; file: string | null; kind: string; check: string; score: number; reason: string;
  group: string | null; state: string; details: Record<string, any>;
}

const KINDS = ["", "label", "duplicate", "outlier", "spot_check"];

function title(s: Suspect): string {
  if (s.kind === "outlier") return s.check === "knn" ? "outlier" : s.check;
  if (s.kind === "label" && s.details?.issue_words) return `label: ${s.details.issue_words}`;
  return s.kind === "spot_check" ? `spot-check ${s.check}` : s.kind;
}

/** Fill `list` with the open suspects; opening one shows its item (through `showItem`) and its actions. */
export async function showSuspects(project: Project, list: HTMLElement, actions: HTMLElement,
  showItem: (itemId: number) => Promise<void>, kind = ""): Promise<void> {
  const page = await api.suspects(project.id, kind);
  const suspects = page.items as Suspect[];
  const select = h("select", { "data-testid": "suspect-kind", "aria-label": "kind of suspect",
    onchange: () => void showSuspects(project, list, actions, showItem, select.value) },
  KINDS.map((k) => h("option", { value: k, selected: k === kind }, k ? k.replace("_", "-") : "every kind")));
  const status = h("p", { class: "muted", "data-testid": "quality-run-status" }, "");
  const run = canManage(project) ? h("button", { "data-testid": "run-quality", onclick: async () => {
    try {
      let job = await api.runQuality(project.id, select.value === "spot_check" ? "" : select.value);
      run!.setAttribute("disabled", "");
      while (job.state === "queued" || job.state === "running") {
        status.textContent = `checking: ${job.message || job.state}`;
        await new Promise((resolve) => setTimeout(resolve, 1000));
        job = await api.job(job.id);
      }
      toast(`quality checks ${job.state}: ${job.message || job.error || ""}`, job.state === "done" ? "info" : "error");
      await showSuspects(project, list, actions, showItem, kind);
      const again = list.querySelector("[data-testid=quality-run-status]");
      if (again) again.textContent = `last run: ${job.message || job.error || job.state}`;
    } catch (error) {
      toast(formatError(error), "error");
      run!.removeAttribute("disabled");
    }
  } }, "Run the checks") : null;
  clear(list, h("h3", {}, `Suspects (${suspects.length}${page.next_cursor ? "+" : ""})`), select, run, status,
    h("ul", { class: "shape-list" }, suspects.map((s, n) =>
      h("li", { "data-testid": `suspect-${n}`, title: s.reason, onclick: () => void open(s) },
        `${title(s)} · ${s.score.toFixed(2)} · ${s.file ?? `item ${s.item_id}`}`))));
  if (!suspects.length) {
    clear(actions, h("p", {}, "No open suspects. Run the checks with the button, or `labelloop quality "
      + project.name + "`."));
    return;
  }
  await open(suspects[0]);

  async function open(s: Suspect): Promise<void> {
    await showItem(s.item_id);
    const act = (action: string, labels?: string[]) => async () => {
      try {
        await api.suspectAction(project.id, s.id, action, labels);
        toast(`${action} recorded`);
        await showSuspects(project, list, actions, showItem, kind);
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    const classes = project.kind === "classification" || project.kind === "multilabel";
    const fixable = classes && (s.kind === "label" || s.kind === "spot_check");
    const suggested: string[] = s.details?.suggested ?? [];
    const label = h("select", { "data-testid": "suspect-label", "aria-label": "the right label" },
      project.classes.map((c) => h("option", { value: c.name, selected: suggested.includes(c.name) }, c.name)));
    clear(actions, h("h3", {}, `${title(s)} (score ${s.score.toFixed(3)})`),
      h("p", { "data-testid": "suspect-reason" }, s.reason),
      s.group ? h("p", { class: "muted" }, `group ${s.group}: items ${(s.details?.group ?? []).join(", ")}`) : null,
      link(`/projects/${project.id}/items/${s.item_id}`, `open item ${s.item_id} in the labelling view`),
      s.details?.box ? h("p", { class: "muted", "data-testid": "suspect-box" }, `the box: (${s.details.box.slice(0, 2)
        .map((v: number) => Math.round(v)).join(", ")})–(${s.details.box.slice(2).map((v: number) => Math.round(v)).join(", ")}); `
        + "fix it in the labelling view: the next quality run checks the new boxes") : null,
      h("button", { class: "primary", "data-testid": "suspect-keep", onclick: act("keep") },
        s.kind === "spot_check" ? "Right: keep" : "Keep as is"),
      fixable ? label : null,
      fixable ? h("button", { "data-testid": "suspect-fix", onclick: () => void act("fix", [label.value])() },
        "Fix the label") : null,
      s.kind === "duplicate" ? h("button", { "data-testid": "suspect-drop", onclick: act("drop") }, "Drop this duplicate") : null,
      h("button", { "data-testid": "suspect-exclude", onclick: act("exclude") }, "Exclude the item"));
  }
}
