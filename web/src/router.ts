/** Client routes on the History API; the server answers index.html for all of them (server/web.py). */

export type Render = (root: HTMLElement, params: Record<string, string>) => Promise<Page | void> | Page | void;
export interface Page {
  /** Return false to keep the user here (unsaved work). */
  canLeave?(): boolean;
  dispose?(): void;
}

const routes: { pattern: RegExp; keys: string[]; render: Render }[] = [];
let current: Page | void = undefined;
let root: HTMLElement;
let shownPath = "";

export function route(path: string, render: Render): void {
  const keys: string[] = [];
  const pattern = new RegExp("^" + path.replace(/:(\w+)/g, (_, key) => {
    keys.push(key);
    return "([^/]+)";
  }) + "/?$");
  routes.push({ pattern, keys, render });
}

export function navigate(path: string, replace = false): void {
  if (current && current.canLeave && !current.canLeave()) return;
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  void show();
}

async function show(): Promise<void> {
  const path = location.pathname;
  shownPath = path + location.search;
  if (current && current.dispose) current.dispose();
  current = undefined;
  for (const { pattern, keys, render } of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    const params: Record<string, string> = Object.fromEntries(keys.map((k, i) => [k, decodeURIComponent(match[i + 1])]));
    for (const [k, v] of new URLSearchParams(location.search)) params[k] ??= v;
    // Each page renders into its own box: a page still loading when the user is sent elsewhere (a 401 sends
    // everyone to /login) writes its late error into a detached box, not onto the next page.
    const box = document.createElement("div");
    box.style.display = "contents";
    root.replaceChildren(box);
    current = await render(box, params);
    return;
  }
  navigate("/projects", true);
}

export function start(element: HTMLElement): void {
  root = element;
  window.addEventListener("popstate", () => {
    if (current && current.canLeave && !current.canLeave()) {
      history.pushState(null, "", shownPath); // stay: the browser already moved the address
      return;
    }
    void show();
  });
  document.addEventListener("click", (event) => {
    const link = (event.target as HTMLElement).closest("a[data-link]") as HTMLAnchorElement | null;
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(link.getAttribute("href")!);
  });
  window.addEventListener("beforeunload", (event) => {
    if (current && current.canLeave && !current.canLeave()) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
  void show();
}

export function link(href: string, text: string, attrs: Record<string, string> = {}): HTMLAnchorElement {
  const a = document.createElement("a");
  a.href = href;
  a.dataset.link = "";
  a.textContent = text;
  for (const [k, v] of Object.entries(attrs)) a.setAttribute(k, v);
  return a;
}
