/**
 * Autosave with optimistic concurrency: every save names the version it was based on; the server answers 409
 * with the current revision when someone else saved meanwhile. The machine never drops an edit silently:
 *
 *   saved --edit--> unsaved --(delay)--> saving --ok--> saved (or unsaved if edited meanwhile)
 *                                          |--409--> conflict --keepMine--> unsaved (base = theirs) --> saving
 *                                          |                  \--takeTheirs--> saved (their revision shown)
 *                                          \--network/5xx--> error --(retry delay)--> saving
 */

export type SaveStatus = "saved" | "unsaved" | "saving" | "conflict" | "error";

export interface Revision<T> {
  version: number;
  doc: T;
  author?: string;
  created_at?: string;
}

/** Thrown by the save function on HTTP 409; `current` is the server's newest revision (null: none). */
export class ConflictError<T> extends Error {
  constructor(message: string, readonly current: Revision<T> | null) {
    super(message);
  }
}

/** Thrown by the save function for failures worth retrying later (network down, 5xx). */
export class RetryableError extends Error {}

export interface Timer {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimer: Timer = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface AutosaveOptions<T> {
  /** Persist `doc` on top of `baseVersion`; resolves the new version. */
  save(doc: T, baseVersion: number): Promise<number>;
  baseVersion: number;
  delayMs?: number;
  retryMs?: number;
  timer?: Timer;
  onChange?(status: SaveStatus, saver: Autosaver<T>): void;
}

export class Autosaver<T> {
  status: SaveStatus = "saved";
  baseVersion: number;
  message = "";
  conflict: { mine: T; theirs: Revision<T> | null } | null = null;
  private latest: T | null = null;
  private edits = 0; // edits made so far
  private savedEdits = 0; // edits contained in the newest successful save
  private handle: unknown = null;
  private inFlight: Promise<void> | null = null;
  private readonly delayMs: number;
  private readonly retryMs: number;
  private readonly timer: Timer;

  constructor(private readonly options: AutosaveOptions<T>) {
    this.baseVersion = options.baseVersion;
    this.delayMs = options.delayMs ?? 800;
    this.retryMs = options.retryMs ?? 3000;
    this.timer = options.timer ?? realTimer;
  }

  /** True while something the user did is not yet on the server. */
  get dirty(): boolean {
    return this.edits > this.savedEdits || this.status === "conflict";
  }

  edit(doc: T): void {
    this.latest = doc;
    this.edits++;
    if (this.status === "conflict") return; // the dialog decides; keep the newest doc as "mine"
    this.setStatus(this.status === "saving" ? "saving" : "unsaved");
    this.schedule(this.delayMs);
  }

  /** Save now and wait (before submitting or leaving). Resolves when nothing is left unsaved or on conflict. */
  async flush(): Promise<void> {
    this.cancelTimer();
    for (let guard = 0; guard < 10; guard++) {
      if (this.inFlight) {
        await this.inFlight;
        continue;
      }
      if (!this.dirty || this.status === "conflict" || this.status === "error") return;
      await this.run();
    }
  }

  /** Overwrite the other revision with mine: the next save is based on theirs. */
  keepMine(): void {
    if (!this.conflict) return;
    this.baseVersion = this.conflict.theirs?.version ?? 0;
    this.latest = this.conflict.mine;
    this.conflict = null;
    this.edits++;
    this.setStatus("unsaved");
    this.schedule(0);
  }

  /** Drop my unsaved edits and continue from their revision; returns it for display. */
  takeTheirs(): Revision<T> | null {
    const theirs = this.conflict?.theirs ?? null;
    this.baseVersion = theirs?.version ?? 0;
    this.conflict = null;
    this.latest = null;
    this.savedEdits = this.edits;
    this.setStatus("saved");
    return theirs;
  }

  /** Start again from a revision loaded from the server (another item, or after a reload). */
  reset(baseVersion: number): void {
    this.cancelTimer();
    this.baseVersion = baseVersion;
    this.latest = null;
    this.conflict = null;
    this.savedEdits = this.edits;
    this.message = "";
    this.setStatus("saved");
  }

  private schedule(ms: number): void {
    this.cancelTimer();
    this.handle = this.timer.set(() => {
      this.handle = null;
      if (!this.inFlight) void this.run();
    }, ms);
  }

  private cancelTimer(): void {
    if (this.handle !== null) {
      this.timer.clear(this.handle);
      this.handle = null;
    }
  }

  private run(): Promise<void> {
    const doc = this.latest;
    if (doc === null || this.status === "conflict") return Promise.resolve();
    const upTo = this.edits;
    this.setStatus("saving");
    this.inFlight = this.options.save(doc, this.baseVersion).then(
      (version) => {
        this.baseVersion = version;
        this.savedEdits = Math.max(this.savedEdits, upTo);
        this.message = "";
        if (this.edits > upTo) {
          this.setStatus("unsaved");
          this.schedule(this.delayMs);
        } else {
          this.setStatus("saved");
        }
      },
      (error: unknown) => {
        if (error instanceof ConflictError) {
          this.conflict = { mine: this.latest ?? doc, theirs: error.current as Revision<T> | null };
          this.message = error.message;
          this.setStatus("conflict");
        } else {
          this.message = error instanceof Error ? error.message : String(error);
          this.setStatus("error");
          if (error instanceof RetryableError) this.schedule(this.retryMs);
        }
      },
    ).finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private setStatus(status: SaveStatus): void {
    this.status = status;
    this.options.onChange?.(status, this);
  }
}
