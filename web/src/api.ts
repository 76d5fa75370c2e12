/** The REST API (docs/api.md): session cookie + X-CSRF-Token on unsafe methods, JSON errors with `detail`. */
import type { SimilarPage } from "./lib/grid";
import type { Prediction } from "./lib/prelabels";
import type { SimulateBody } from "./lib/simulation";
import type { ProjectKind, Shape } from "./lib/shapes";

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly body: Record<string, unknown> | null) {
    super(message);
  }
}

export interface User { id: number; name: string; is_admin: boolean; active: boolean }
export interface ClassDef { name: string; index: number; colour: string }
export interface Project {
  id: number; name: string; kind: ProjectKind; classes: ClassDef[]; settings: Record<string, unknown>;
  role: string | null;
}
export interface Item {
  id: number; project_id: number; source: string; page: number; format: string; width: number; height: number;
  dtype: string; channels: number; metadata: Record<string, unknown>; split: string; state: string; version: number;
}
export interface Annotation {
  id: number; item_id: number; version: number; author: string; state: string; source: string; shapes: Shape[];
  created_at: string;
}
export interface ItemDetail { item: Item; annotation: Annotation | null; base_version: number; image_levels: number }
export interface NextOut { item: Item | null; annotation: Annotation | null; base_version: number; message: string }
export interface Job {
  id: number; kind: string; state: string; done: number; total: number | null; message: string; error?: string | null;
  result?: Record<string, any>;
}
export interface Page<T> { items: T[]; next_cursor: string | null }

function csrfToken(): string {
  const found = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("labelloop_csrf="));
  return found ? decodeURIComponent(found.slice("labelloop_csrf=".length)) : sessionStorage.getItem("csrf") ?? "";
}

export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  let payload: BodyInit | undefined;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  if (!["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = csrfToken();
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch (error) {
    throw new ApiError(0, `the server cannot be reached (${(error as Error).message})`, null);
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let data: Record<string, unknown> | null = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = typeof data?.detail === "string" ? data.detail : `${response.status} ${response.statusText}`;
    if (response.status === 401 && !path.startsWith("/api/auth/login")) window.dispatchEvent(new Event("labelloop:logged-out"));
    throw new ApiError(response.status, detail, data);
  }
  return data as T;
}

export const api = {
  login: (name: string, password: string) =>
    request<{ user: User; csrf_token: string }>("POST", "/api/auth/login", { name, password }),
  logout: () => request<void>("POST", "/api/auth/logout"),
  me: () => request<User>("GET", "/api/auth/me"),
  projects: () => request<Page<Project>>("GET", "/api/projects?limit=1000"),
  project: (id: number) => request<Project>("GET", `/api/projects/${id}`),
  createProject: (body: { name: string; kind: string; classes: string[]; colours?: string[] }) =>
    request<Project>("POST", "/api/projects", body),
  patchProject: (id: number, body: { add_classes?: string[]; class_colours?: Record<string, string>;
    rename_classes?: Record<string, string>; remove_classes?: string[]; settings?: Record<string, unknown> }) =>
    request<Project>("PATCH", `/api/projects/${id}`, body),
  upload: (id: number, files: File[], skipBad = false) => {
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    if (skipBad) form.append("skip_bad", "true");
    return request<Record<string, unknown>>("POST", `/api/projects/${id}/items`, form);
  },
  items: (id: number, cursor = "", state = "", limit = 100) =>
    request<Page<Item>>("GET", `/api/projects/${id}/items?limit=${limit}${cursor ? `&cursor=${cursor}` : ""}${state ? `&state=${state}` : ""}`),
  item: (id: number) => request<ItemDetail>("GET", `/api/items/${id}`),
  exportPreview: (id: number, query: string) =>
    request<{ items: number; left_out: Record<string, number> }>("GET", `/api/projects/${id}/export/preview?${query}`),
  similar: (projectId: number, size: number, suggest = false) =>
    request<SimilarPage>("GET", `/api/projects/${projectId}/similar?size=${size}${suggest ? "&suggest=true" : ""}`),
  next: (projectId: number) => request<NextOut>("GET", `/api/projects/${projectId}/next`),
  skip: (itemId: number) => request<unknown>("POST", `/api/items/${itemId}/skip`),
  save: (itemId: number, shapes: Shape[], baseVersion: number, state: "draft" | "submitted") =>
    request<Annotation>("POST", `/api/items/${itemId}/annotations`, { shapes, base_version: baseVersion, state }),
  predictions: (projectId: number, cursor = "", state = "pending", itemId?: number) =>
    request<Page<Prediction>>("GET", `/api/projects/${projectId}/predictions?limit=1000&state=${state}`
      + `${itemId !== undefined ? `&item=${itemId}` : ""}${cursor ? `&cursor=${cursor}` : ""}`),
  dismissPrediction: (id: number, shapes: number[]) =>
    request<Prediction>("POST", `/api/predictions/${id}/dismiss`, { shapes }),
  reviewPrediction: (id: number, action: string, shapes?: Shape[], baseVersion?: number) =>
    request<{ annotation: Annotation | null }>("POST", `/api/predictions/${id}/review`,
      { action, ...(shapes ? { shapes } : {}), ...(baseVersion !== undefined ? { base_version: baseVersion } : {}) }),
  reviewQueue: (projectId: number) => request<Page<Annotation>>("GET", `/api/projects/${projectId}/review?limit=1000`),
  suspects: (projectId: number, kind = "") =>
    request<Page<Record<string, any>>>("GET", `/api/projects/${projectId}/suspects?limit=200${kind ? `&kind=${kind}` : ""}`),
  suspectAction: (projectId: number, id: number, action: string, labels?: string[]) =>
    request<Record<string, any>>("POST", `/api/projects/${projectId}/suspects/${id}/action`,
      { action, ...(labels ? { labels } : {}) }),
  reviewAnnotation: (itemId: number, action: string, version: number, shapes?: Shape[]) =>
    request<unknown>("POST", `/api/items/${itemId}/review`, { action, version, ...(shapes ? { shapes } : {}) }),
  stats: (projectId: number) => request<Record<string, any>>("GET", `/api/projects/${projectId}/stats`),
  models: (projectId: number) => request<Page<Record<string, any>>>("GET", `/api/projects/${projectId}/models`),
  train: (projectId: number, model: string, params: Record<string, unknown> = {}) =>
    request<Job>("POST", `/api/projects/${projectId}/train`, { model, params }),
  predict: (projectId: number, model: string, items?: number[]) =>
    request<Job>("POST", `/api/projects/${projectId}/predict`, items ? { model, items } : { model }),
  trainMicro: (projectId: number, body: Record<string, unknown>) =>
    request<Job>("POST", `/api/projects/${projectId}/micro-models/train`, body),
  setChain: (projectId: number, chain: string[]) =>
    request<Record<string, any>>("PUT", `/api/projects/${projectId}/chain`, { chain }),
  predictChain: (projectId: number, body: Record<string, unknown> = {}) =>
    request<Job>("POST", `/api/projects/${projectId}/chain/predict`, body),
  runQuality: (projectId: number, kind = "") =>
    request<Job>("POST", `/api/projects/${projectId}/quality/jobs${kind ? `?kind=${kind}` : ""}`),
  job: (id: number) => request<Job>("GET", `/api/jobs/${id}`),
  projectJobs: (projectId: number, limit = 100) => request<Page<Job>>("GET", `/api/projects/${projectId}/jobs?limit=${limit}`),
  simulate: (projectId: number, body: SimulateBody) => request<Job>("POST", `/api/projects/${projectId}/simulate`, body),
  cancelJob: (id: number) => request<Job>("POST", `/api/jobs/${id}/cancel`),
  members: (projectId: number) => request<Page<{ user: string; role: string }>>("GET", `/api/projects/${projectId}/members?limit=1000`),
  setMember: (projectId: number, user: string, role: string) =>
    request<unknown>("PUT", `/api/projects/${projectId}/members/${encodeURIComponent(user)}`, { role }),
  removeMember: (projectId: number, user: string) =>
    request<void>("DELETE", `/api/projects/${projectId}/members/${encodeURIComponent(user)}`),
};

/** Every pending prediction of one item, with the shapes this user rejected before (`dismissed`). */
export async function itemPredictions(projectId: number, itemId: number): Promise<Prediction[]> {
  const found: Prediction[] = [];
  let cursor = "";
  for (let guard = 0; guard < 1000; guard++) {
    const page = await api.predictions(projectId, cursor, "pending", itemId);
    found.push(...page.items);
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  return found;
}

/** Retrain the live pixel classifier on these scribbles; a PNG overlay of the item's predicted classes. */
export async function livePrediction(itemId: number, scribbles: Shape[]): Promise<Blob> {
  const response = await fetch(`/api/items/${itemId}/live`, { method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify({ scribbles: scribbles.map(({ score: _s, ...rest }) => rest) }) });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body?.detail ?? `${response.status} ${response.statusText}`, body);
  }
  return response.blob();
}

export function imageUrl(itemId: number, level: number, window?: { centre: number; width: number } | null,
  tile?: [number, number]): string {
  let url = `/api/items/${itemId}/image?level=${level}`;
  if (window) url += `&window_centre=${window.centre}&window_width=${window.width}`;
  if (tile) url += `&tile_x=${tile[0]}&tile_y=${tile[1]}`;
  return url;
}

/** A finished simulation's figure (dataset quality against human time); an <img> loads it with the session cookie. */
export function simulationFigureUrl(projectId: number, jobId: number): string {
  return `/api/projects/${projectId}/simulations/${jobId}/effort.png`;
}
