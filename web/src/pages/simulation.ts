/** The dashboard's "Effort saved (simulation)" card: start `POST /simulate` on the project's own labels, follow the
 * job, show the last finished simulation's figures per strategy and its effort PNG (docs/simulate.md). */
import { api, ApiError, simulationFigureUrl, type Job, type Project } from "../api";
import { clear, formatError, h } from "../dom";
import {
  fieldProblems, GRID_PAGES, SIMULATION_STRATEGIES, simulationRequest, strategyRows, versusRandomLines, type Simulation,
} from "../lib/simulation";

export interface SimulationCard {
  element: HTMLElement;
  /** The dashboard's recent jobs (newest first, without results): progress of a running simulation, and the
   * result of the newest finished one, fetched once. */
  update(jobs: Job[]): Promise<void>;
}

const ENDED = ["done", "failed", "cancelled"];

/** Made once per dashboard: its form keeps what the user typed while the dashboard redraws around it. */
export function simulationCard(project: Project, started: (job: Job) => Promise<void>): SimulationCard {
  const grids = project.kind === "classification";
  const fineTunes = project.kind === "detection"; // the detector trains --from its previous version
  const sampling = String(project.settings?.["sampling"] ?? "");
  const strategy = h("select", { "data-testid": "simulation-strategy" }, SIMULATION_STRATEGIES.map((s) =>
    h("option", { value: s, selected: s === (SIMULATION_STRATEGIES.includes(sampling) ? sampling : "random") }, s)));
  const compare = SIMULATION_STRATEGIES.map((s) => h("input", { type: "checkbox", value: s,
    "data-testid": `simulation-compare-${s}` }));
  const number = (name: string, value: string, hint: string) => h("input", { name, value, size: 6, title: hint,
    "data-testid": `simulation-${name}` });
  const start = number("start", "20", "items labelled by hand before the first model");
  const batch = number("batch", "20", "items the person labels in each round");
  const rounds = number("rounds", "5", "rounds after the start (or tick until done)");
  const untilDone = h("input", { type: "checkbox", checked: true, "data-testid": "simulation-until-done",
    onchange: () => { rounds.disabled = untilDone.checked; } });
  rounds.disabled = true;
  const precision = h("input", { name: "target_precision", size: 6, "data-testid": "simulation-target-precision",
    placeholder: String(project.settings?.["target_precision"] ?? 0.95),
    title: "the precision pre-labels must reach to be accepted without a person (empty: the project's setting)" });
  const seeds = number("seeds", "0", "seeds separated by commas (0,1,2): each strategy runs once per seed");
  const grid = h("select", { "data-testid": "simulation-grid" }, h("option", { value: "" }, "none (item by item)"),
    GRID_PAGES.map((n) => h("option", { value: String(n) }, `${n} per page`)));
  const fromPrevious = h("input", { type: "checkbox", "data-testid": "simulation-from-previous" });
  const error = h("p", { class: "banner error", role: "alert", "data-testid": "simulation-error", hidden: true });
  const startButton = h("button", { class: "primary", "data-testid": "simulation-submit", onclick: () => void go() },
    "Start");
  const status = h("div", { "data-testid": "simulation-status" });
  const result = h("div", { "data-testid": "simulation-result" });
  // a six-column table and a figure: the card spans two columns of the dashboard's grid, as micro-models' does
  const element = h("section", { class: "card simulation-card", style: "grid-column: span 2",
    "data-testid": "simulation-card" },
    h("h2", {}, "Effort saved (simulation)"),
    h("p", { class: "muted" }, "A simulated person labels a copy of this project again, with labelloop's models and "
      + "without: the expert time saved, at what quality, per sampling strategy."),
    h("details", { class: "train-form", "data-testid": "simulation-form" },
      h("summary", {}, "Simulate labelling with labelloop…"),
      h("p", { class: "muted" }, "Uses the labels people have already given as the truth: only labelled items take "
        + "part. The project itself is not changed."),
      h("div", { class: "form-grid" },
        h("label", {}, "Strategy", strategy),
        h("label", {}, "Start", start), h("label", {}, "Batch", batch),
        h("label", {}, "Rounds", rounds), h("label", { class: "check" }, untilDone, " until done"),
        h("label", {}, "Target precision", precision), h("label", {}, "Seeds", seeds),
        grids ? h("label", { title: "label on grid pages of the classifier's suggestions" }, "Grid pages", grid)
          : null,
        fineTunes ? h("label", { class: "check", title: "each round fine-tunes the round before's detector instead "
          + "of training anew, so the training adds up over the rounds" }, fromPrevious, " improve the last round's model")
          : null),
      h("div", { class: "row compare" }, h("span", {}, "Compare with:"), compare.map((box) =>
        h("label", { class: "check" }, box, ` ${box.value}`))),
      startButton, error),
    status, result);

  let shown = 0; // the job whose result the card shows
  let searched = false; // the project's job list was searched once for an older finished simulation

  function fail(message: string): void {
    error.textContent = message;
    error.hidden = false;
  }

  async function go(): Promise<void> {
    const checked = simulationRequest({
      strategy: strategy.value, compare: compare.filter((b) => b.checked).map((b) => b.value), start: start.value,
      batch: batch.value, untilDone: untilDone.checked, rounds: rounds.value, targetPrecision: precision.value,
      seeds: seeds.value, grid: grids ? grid.value : "", fromPrevious: fineTunes && fromPrevious.checked,
    }, grids);
    if (checked.error !== null) return fail(checked.error);
    error.hidden = true;
    startButton.disabled = true;
    try {
      const job = await api.simulate(project.id, checked.body);
      await started(job);
    } catch (problem) {
      // a 400 is the server's sentence; a 422 (a field the form did not check) lists its fields
      fail((problem instanceof ApiError ? fieldProblems(problem.body?.detail) : null) ?? formatError(problem));
    } finally {
      startButton.disabled = false;
    }
  }

  async function show(jobId: number): Promise<void> {
    shown = jobId;
    const job = await api.job(jobId);
    const simulation = job.result?.simulation as Simulation | undefined;
    if (!simulation?.summary || shown !== jobId) return;
    const rows = strategyRows(simulation);
    clear(result, h("h3", {}, `Simulation #${job.id}`),
      job.result?.summary ? h("p", { "data-testid": "simulation-summary" }, String(job.result.summary)) : null,
      h("div", { style: "overflow-x: auto" }, h("table", { class: "list compact", "data-testid": "simulation-table" },
        h("tr", {}, ["strategy", "effort ratio", "human time", "dataset quality", "time to quality goal",
          "auto-accepted (wrong)"].map((t) => h("th", {}, t))),
        rows.map((r) => h("tr", { "data-testid": `simulation-row-${r.strategy}` },
          h("td", {}, r.best ? h("strong", { title: "the best effort ratio" }, r.strategy) : r.strategy),
          h("td", { "data-testid": "effort-ratio" }, r.effortRatio), h("td", {}, r.humanTime),
          h("td", {}, r.datasetQuality), h("td", {}, r.timeToGoal), h("td", {}, r.autoAccepted))))),
      versusRandomLines(simulation).map((line) => h("p", { class: "muted", "data-testid": "simulation-versus" }, line)),
      h("img", { src: simulationFigureUrl(project.id, job.id), "data-testid": "simulation-figure", loading: "lazy",
        alt: `simulation #${job.id}: dataset quality against human time, per strategy` }));
  }

  async function update(jobs: Job[]): Promise<void> {
    const mine = jobs.filter((j) => j.kind === "simulate");
    const newest = mine[0];
    clear(status, newest && !ENDED.includes(newest.state)
      ? h("div", { class: "row" }, `Simulation #${newest.id} ${newest.state}`,
        h("progress", { max: newest.total ?? 1, value: newest.total ? newest.done : 0 }),
        h("span", { class: "muted" }, newest.message ?? ""))
      : newest && newest.state !== "done"
        ? h("p", { class: newest.state === "failed" ? "error" : "muted" },
          `Simulation #${newest.id} ${newest.state}: ${newest.message || newest.error || ""}`)
        : null);
    let done = mine.find((j) => j.state === "done")?.id;
    if (done === undefined && !searched && !shown) {
      searched = true; // the dashboard lists only the recent jobs; an older simulation is found once, on a larger page
      const page = await api.projectJobs(project.id, 100);
      done = page.items.find((j) => j.kind === "simulate" && j.state === "done")?.id;
    }
    if (done !== undefined && done !== shown) await show(done);
  }

  return { element, update };
}
