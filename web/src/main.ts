import "ol/ol.css";
import "./style.css";
import { h } from "./dom";
import { navigate, route, start } from "./router";
import { header, renderHeader } from "./header";
import { loginPage } from "./pages/login";
import { projectsPage } from "./pages/projects";
import { dashboardPage } from "./pages/dashboard";
import { settingsPage } from "./pages/settings";
import { labelPage } from "./pages/label";
import { gridPage } from "./pages/grid";
import { reviewPage } from "./pages/review";
import { installShortcutHelp } from "./shortcuts";

const main = h("main", { id: "page" });
document.body.append(header, main);

window.addEventListener("labelloop:logged-out", () => {
  if (location.pathname !== "/login") navigate(`/login?next=${encodeURIComponent(location.pathname)}`);
});

route("/login", loginPage);
route("/", () => navigate("/projects", true));
route("/projects", projectsPage);
route("/projects/:id", dashboardPage);
route("/projects/:id/settings", settingsPage);
route("/projects/:id/label", labelPage);
route("/projects/:id/items/:item", labelPage);
route("/projects/:id/grid", gridPage);
route("/projects/:id/review", reviewPage);

installShortcutHelp();
void renderHeader();
start(main);
