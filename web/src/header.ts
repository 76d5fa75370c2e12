import { api } from "./api";
import { h } from "./dom";
import { link, navigate } from "./router";

export const header = h("header", { class: "topbar" });

/** The top bar: home link, who is logged in, log out. */
export async function renderHeader(): Promise<void> {
  header.replaceChildren(link("/projects", "labelloop", { class: "brand" }));
  try {
    const me = await api.me();
    header.append(h("span", { class: "spacer" }), h("span", { class: "who", "data-testid": "who" }, me.name),
      h("button", { class: "link", onclick: async () => {
        await api.logout().catch(() => undefined);
        await renderHeader();
        navigate("/login");
      } }, "Log out"));
  } catch {
    // not logged in: the page itself sends us to /login
  }
}
