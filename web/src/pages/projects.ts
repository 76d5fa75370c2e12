import { api, type Project } from "../api";
import { formatError, h, toast } from "../dom";
import { link, navigate } from "../router";

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
  const form = h("form", { class: "card inline", onsubmit: async (event: Event) => {
    event.preventDefault();
    try {
      const created = await api.createProject({ name: name.value.trim(), kind: kind.value,
        classes: classes.value.split(",").map((c) => c.trim()).filter(Boolean) });
      navigate(`/projects/${created.id}`);
    } catch (error) {
      toast(formatError(error), "error");
    }
  } },
  h("h2", {}, "New project"),
  h("label", {}, "Name", name), h("label", {}, "Kind", kind), h("label", {}, "Classes (comma-separated)", classes),
  h("button", { type: "submit", class: "primary" }, "Create"));
  root.append(
    h("h1", {}, "Projects"),
    projects.length
      ? h("table", { class: "list", "data-testid": "projects" },
        h("tr", {}, h("th", {}, "Project"), h("th", {}, "Kind"), h("th", {}, "Classes"), h("th", {}, "Your role"), h("th", {})),
        projects.map((p) => h("tr", {},
          h("td", {}, link(`/projects/${p.id}`, p.name)), h("td", {}, p.kind),
          h("td", {}, p.classes.map((c) => h("span", { class: "chip", style: { borderColor: c.colour } }, c.name))),
          h("td", {}, p.role ?? "admin"),
          h("td", {}, link(`/projects/${p.id}/label`, "Label")))))
      : h("p", {}, "No projects yet."),
    form);
}
