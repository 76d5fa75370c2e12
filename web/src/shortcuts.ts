/** The keyboard shortcut help screen: `?` on any page (outside text fields), like Label Studio's and CVAT's. */
import { dialog, h } from "./dom";

const SECTIONS: [string, [string, string][]][] = [
  ["Labelling view", [
    ["1 … 9, 0", "pick class 1 … 10 for new shapes; relabel the selected shapes; classification: set (single) or toggle (multi) the class"],
    ["v r p b e", "select/move, box, polygon, brush, eraser"],
    ["[ ]", "brush size"],
    ["s", "semantic: the brush paints scribbles (dashed) or masks (solid)"],
    ["n, Escape", "deselect (instance masks: the next stroke starts a new object)"],
    ["Delete, Backspace", "delete the selected shapes; on a pre-label: reject it"],
    ["Enter, e", "on a selected pre-label: accept it, accept and edit it"],
    ["h", "show or hide predictions"],
    ["f, +, -", "fit the image, zoom"],
    ["Ctrl+Z, Ctrl+Shift+Z / Ctrl+Y", "undo, redo"],
    ["Ctrl+Enter", "submit (queue: and take the next item)"],
  ]],
  ["Grid", [
    ["arrows", "move between images"],
    ["1 … 9, 0", "classification: tag the focused image and move to the next; multi-label: add or remove the class"],
    ["Enter", "classification: accept the page (untagged images take the model's suggestion), then the next images"],
    ["Page Down", "the next images"],
  ]],
  ["Review", [
    ["Enter, e, Delete", "on a selected pre-label: accept, edit, drop it"],
    ["1 … 9, 0", "relabel the selected shapes"],
  ]],
  ["Everywhere", [["?", "this help"]]],
];

let open = false;

export function showShortcuts(): void {
  if (open) return;
  open = true;
  void dialog("Keyboard shortcuts", SECTIONS.map(([title, keys]) => h("section", {}, h("h3", {}, title),
    h("table", { class: "list compact" }, keys.map(([key, does]) => h("tr", {}, h("td", {}, h("kbd", {}, key)), h("td", {}, does)))))),
  [{ label: "Close", value: true, primary: true, testid: "shortcuts-close" }], "shortcuts").then(() => { open = false; });
}

/** `?` opens the help wherever focus is, except while typing in a text field. */
export function installShortcutHelp(): void {
  document.addEventListener("keydown", (event) => {
    if (event.key !== "?" || event.ctrlKey || event.metaKey) return;
    const target = event.target as HTMLElement;
    if (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && !["checkbox", "radio", "range", "color"]
      .includes((target as HTMLInputElement).type)) || target.isContentEditable) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    showShortcuts();
  }, true);
}
