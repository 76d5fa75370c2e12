import type { Project } from "../api";
import { h } from "../dom";
import { link } from "../router";

export function canReview(project: Project, isAdmin = false): boolean {
  return isAdmin || project.role === null || ["owner", "manager", "reviewer"].includes(project.role);
}

export function canManage(project: Project): boolean {
  return project.role === null || ["owner", "manager"].includes(project.role);
}

/** The project's sub-navigation. */
export function projectNav(project: Project, active: string): HTMLElement {
  const entries: [string, string][] = [
    ["dashboard", `/projects/${project.id}`],
    ["label", `/projects/${project.id}/label`],
  ];
  if (project.kind === "classification" || project.kind === "multilabel") entries.push(["grid", `/projects/${project.id}/grid`]);
  if (canReview(project)) entries.push(["review", `/projects/${project.id}/review`]);
  if (canManage(project)) entries.push(["settings", `/projects/${project.id}/settings`]);
  return h("nav", { class: "subnav" }, h("strong", {}, project.name), h("span", { class: "muted" }, project.kind),
    entries.map(([name, href]) => link(href, name[0].toUpperCase() + name.slice(1), name === active ? { class: "active" } : {})));
}
