import { api, type Project } from "../api";
import { clear, formatError, h, toast } from "../dom";
import { link, navigate } from "../router";

const MAX_CLASS_NAME = 100;
const KINDS = ["classification", "multilabel", "detection", "instance", "semantic"];

export async function projectsPage(root: HTMLElement): Promise<void> {
  let projects: Project[];
  try {
    projects = (await api.projects()).items;
  } catch (error) {
    root.append(h("p", { class: "error" }, formatError(error)));
    return;
  }
  const name = h("input", { name: "name", required: true, placeholder: "mitochondria" });
  const kind = h("select", { name: "kind" }, KINDS.map((k) => h("option", { value: k }, k)));
  const classes = h("input", { name: "classes", placeholder: "background, cell", required: false });
  const parsed = h("div", { class: "muted", "data-testid": "classes-preview" });
  const names = () => classes.value.split(",").map((c) => c.trim()).filter(Boolean);
  // the field is split at commas: show the classes it makes, so a comma inside a name never splits it silently
  const problem = (): string | null => {
    const long = names().find((c) => c.length > MAX_CLASS_NAME);
    return long ? `"${long.slice(0, 30)}…" is ${long.length} characters long; a class name has at most ${MAX_CLASS_NAME}` : null;
  };
  const showParsed = () => {
    const found = names();
    const why = problem();
    clear(parsed, found.length ? `${found.length} class${found.length > 1 ? "es" : ""}: ` : "",
      found.map((c) => h("span", { class: "chip", title: c }, c.length > 24 ? `${c.slice(0, 23)}…` : c)),
      found.length ? " (commas separate classes; a class name cannot contain one)" : "",
      why ? h("div", { class: "error", "data-testid": "classes-problem" }, why) : null);
  };
  classes.addEventListener("input", showParsed);
  const form = h("form", { class: "card inline", onsubmit: async (event: Event) => {
    event.preventDefault();
    const why = problem();
    if (why) {
      toast(why, "error");
      return;
    }
    try {
      const created = await api.createProject({ name: name.value.trim(), kind: kind.value, classes: names() });
      navigate(`/projects/${created.id}`);
    } catch (error) {
      toast(formatError(error), "error");
    }
  } },
  h("h2", {}, "New project"),
  h("label", {}, "Name", name), h("label", {}, "Kind", kind), h("label", {}, "Classes (comma-separated)", classes), parsed,
  h("button", { type: "submit", class: "primary" }, "Create"));
  root.append(
    h("h1", {}, "Projects"),
    projects.length
      ? h("table", { class: "list", "data-testid": "projects" },
        h("tr", {}, h("th", {}, "Project"), h("th", {}, "Kind"), h("th", {}, "Classes"), h("th", {}, "Your role"), h("th", {})),
        projects.map((p) => h("tr", {},
          h("td", {}, link(`/projects/${p.id}`, p.name)), h("td", {}, p.kind),
          h("td", {}, p.classes.map((c) => h("span", { class: "chip", title: c.name, style: { borderColor: c.colour } },
            c.name.length > 24 ? `${c.name.slice(0, 23)}…` : c.name))),
          h("td", {}, p.role ?? "admin"),
          h("td", {}, link(`/projects/${p.id}/label`, "Label")))))
      : h("p", {}, "No projects yet."),
    form);
}
