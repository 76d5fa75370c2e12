import { api } from "../api";
import { formatError, h } from "../dom";
import { navigate } from "../router";
import { renderHeader } from "../header";

export function loginPage(root: HTMLElement, params: Record<string, string>): void {
  const name = h("input", { name: "name", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card login", onsubmit: async (event: Event) => {
    event.preventDefault();
    message.textContent = "";
    try {
      const answer = await api.login(name.value, password.value);
      sessionStorage.setItem("csrf", answer.csrf_token);
      await renderHeader();
      const next = params.next && params.next.startsWith("/") && !params.next.startsWith("//") ? params.next : "/projects";
      navigate(next);
    } catch (error) {
      message.textContent = formatError(error);
    }
  } },
  h("h1", {}, "Log in"),
  h("label", {}, "Name", name),
  h("label", {}, "Password", password),
  h("button", { type: "submit", class: "primary" }, "Log in"),
  message);
  root.append(form);
}
