/** A few lines instead of a framework: element building, toasts, dialogs. */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]):
  HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value as EventListener);
    } else if (key === "class") {
      el.className = String(value);
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (key in el && typeof value !== "string") {
      (el as unknown as Record<string, unknown>)[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el: HTMLElement, ...children: (Child | Child[])[]): HTMLElement {
  el.replaceChildren();
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function toast(message: string, kind: "info" | "error" = "info"): void {
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  document.body.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 3000);
}

/** A modal dialog; resolves with the value of the button pressed (Escape: null). */
export function dialog<T>(title: string, body: Child | Child[], buttons: { label: string; value: T; primary?: boolean;
  testid?: string }[], testid = "dialog"): Promise<T | null> {
  return new Promise((resolve) => {
    const close = (value: T | null) => {
      overlay.remove();
      resolve(value);
    };
    const box = h("div", { class: "dialog", role: "dialog", "aria-modal": "true", "data-testid": testid },
      h("h2", {}, title), h("div", { class: "dialog-body" }, body),
      h("div", { class: "dialog-buttons" }, buttons.map((b) =>
        h("button", { class: b.primary ? "primary" : "", "data-testid": b.testid, onclick: () => close(b.value) }, b.label))));
    const overlay = h("div", { class: "overlay", onkeydown: (e: KeyboardEvent) => {
      if (e.key === "Escape") close(null);
      e.stopPropagation();
    } }, box);
    document.body.append(overlay);
    (box.querySelector("button.primary") as HTMLButtonElement | null)?.focus();
  });
}

export function formatError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Whether a key press goes to a text field (where shortcuts must not act); checkboxes, buttons, sliders and
 * selects do not count, so shortcuts keep working after a click on a sidebar control. */
export function isTyping(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  if (!el || !el.tagName) return false;
  if (el.tagName === "TEXTAREA" || el.isContentEditable) return true;
  return el.tagName === "INPUT" && !["checkbox", "radio", "range", "color", "button", "submit", "file"]
    .includes((el as HTMLInputElement).type);
}
