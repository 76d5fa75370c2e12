import { api, type Project } from "../api";
import { clear, formatError, h, toast } from "../dom";
import { projectNav } from "./nav";

const ROLES = ["owner", "manager", "annotator", "reviewer"];
// nearest-labelled: pages of a stack (multi-page TIFF, DICOM series, numbered slices) next to a labelled page first
const ORDERS = ["shuffled", "sequential", "nearest-labelled"];

export async function settingsPage(root: HTMLElement, params: Record<string, string>): Promise<void> {
  const id = Number(params.id);
  let project: Project;
  try {
    project = await api.project(id);
  } catch (error) {
    root.append(h("p", { class: "error" }, formatError(error)));
    return;
  }
  const body = h("div", { class: "settings" });
  root.append(projectNav(project, "settings"), body);

  async function refresh(): Promise<void> {
    project = await api.project(id);
    const members = (await api.members(id)).items;
    const newClass = h("input", { placeholder: "new class", "data-testid": "new-class" });
    const precision = h("input", { type: "number", min: 0.5, max: 1, step: 0.01, "data-testid": "target-precision",
      value: String(project.settings.target_precision ?? 0.95) });
    const order = String(project.settings.sampling ?? "shuffled");
    // a model-driven order set from the CLI or the API stays listed, so saving other settings keeps it
    const orders = [...new Set([...ORDERS, order])];
    const sampling = h("select", { "data-testid": "order-of-work" }, orders.map((s) =>
      h("option", { value: s, selected: order === s }, s)));
    const overlap = h("input", { type: "number", min: 1, max: 10, value: String(project.settings.overlap ?? 1) });
    const user = h("input", { placeholder: "user name", "data-testid": "member-name" });
    const role = h("select", { "data-testid": "member-role" }, ROLES.map((r) => h("option", { value: r, selected: r === "annotator" }, r)));
    const act = (fn: () => Promise<unknown>, done: string) => async () => {
      try {
        await fn();
        toast(done);
        await refresh();
      } catch (error) {
        toast(formatError(error), "error");
      }
    };
    clear(body,
      h("section", { class: "card" }, h("h2", {}, "Classes"),
        h("table", { class: "list", "data-testid": "classes" },
          h("tr", {}, h("th", {}, "Key"), h("th", {}, "Class"), h("th", {}, "Colour"), h("th", {})),
          project.classes.map((c, n) => {
            const name: HTMLInputElement = h("input", { value: c.name, "aria-label": `name of ${c.name}`, "data-testid": `class-name-${c.name}` });
            const colour: HTMLInputElement = h("input", { type: "color", value: c.colour.toLowerCase(),
              "aria-label": `colour of ${c.name}`, "data-testid": `class-colour-${c.name}` });
            colour.addEventListener("change", act(() => api.patchProject(id, { class_colours: { [c.name]: colour.value } }),
              `colour of ${c.name} changed`));
            return h("tr", {}, h("td", {}, h("kbd", {}, n < 9 ? String(n + 1) : n === 9 ? "0" : "–")),
              h("td", {}, name), h("td", {}, colour, " ", h("code", {}, c.colour)),
              h("td", {},
                h("button", { "data-testid": `rename-class-${c.name}`, onclick: () => {
                  const to = name.value.trim();
                  if (to && to !== c.name) void act(() => api.patchProject(id, { rename_classes: { [c.name]: to } }), `${c.name} renamed to ${to}`)();
                } }, "Rename"),
                h("button", { "data-testid": `remove-class-${c.name}`, onclick: () => {
                  if (confirm(`Remove the class ${c.name}?`)) void act(() => api.patchProject(id, { remove_classes: [c.name] }), `${c.name} removed`)();
                } }, "Remove")));
          })),
        h("p", { class: "muted" }, "Number keys pick a class while labelling, in this order. Colours change at once; a class that "
          + "annotations or pre-labels use cannot be renamed or removed (shapes keep their class by name)."),
        h("div", { class: "row" }, newClass, h("button", { onclick: act(() => api.patchProject(id, { add_classes: [newClass.value.trim()] }),
          "class added") }, "Add class"))),
      h("section", { class: "card" }, h("h2", {}, "Labelling and pre-labels"),
        h("label", {}, "Target precision for auto-acceptance", precision),
        h("label", {}, "Order of work", sampling),
        h("label", {}, "Annotators per item (overlap)", overlap),
        h("button", { class: "primary", "data-testid": "save-settings", onclick: act(() => api.patchProject(id, { settings: {
          target_precision: Number(precision.value), sampling: sampling.value, overlap: Number(overlap.value) } }), "settings saved") },
        "Save settings")),
      h("section", { class: "card" }, h("h2", {}, "Members"),
        h("table", { class: "list", "data-testid": "members" }, members.map((m) => {
          const pick: HTMLSelectElement = h("select", {}, ROLES.map((r) => h("option", { value: r, selected: r === m.role }, r)));
          pick.addEventListener("change", act(() => api.setMember(id, m.user, pick.value), `role of ${m.user} changed`));
          return h("tr", {}, h("td", {}, m.user), h("td", {}, pick),
            h("td", {}, h("button", { onclick: act(() => api.removeMember(id, m.user), `${m.user} removed`) }, "Remove")));
        })),
        h("div", { class: "row" }, user, role, h("button", { "data-testid": "add-member",
          onclick: act(() => api.setMember(id, user.value.trim(), role.value), "member added") }, "Add member"))));
  }
  await refresh().catch((e) => body.append(h("p", { class: "error" }, formatError(e))));
}
