import { describe, expect, it } from "vitest";
import { Autosaver, ConflictError, RetryableError, type Timer } from "../src/lib/autosave";
import { UndoStack } from "../src/lib/history";
import { accept, acceptAbove, dismissals, preLabelsOf, type Prediction } from "../src/lib/prelabels";
import type { Shape } from "../src/lib/shapes";

describe("undo stack", () => {
  it("undoes and redoes; a new edit drops the redo branch", () => {
    const stack = new UndoStack<number[]>([]);
    stack.push([1]);
    stack.push([1, 2]);
    expect(stack.undo()).toEqual([1]);
    expect(stack.redo()).toEqual([1, 2]);
    stack.undo();
    stack.push([1, 3]);
    expect(stack.canRedo).toBe(false);
    expect(stack.undo()).toEqual([1]);
    expect(stack.undo()).toEqual([]);
    expect(stack.undo()).toEqual([]);
  });
  it("forgets the oldest states past its limit and resets to a loaded state", () => {
    const stack = new UndoStack(0, 3);
    for (let i = 1; i <= 5; i++) stack.push(i);
    stack.undo(); stack.undo(); stack.undo();
    expect(stack.current).toBe(2);
    expect(stack.canUndo).toBe(false);
    stack.reset(9);
    expect(stack.current).toBe(9);
    expect(stack.canRedo).toBe(false);
  });
});

/** A timer the test advances by hand. */
class FakeTimer implements Timer {
  queue: { fn: () => void; id: number }[] = [];
  private n = 0;
  set(fn: () => void): unknown {
    const id = ++this.n;
    this.queue.push({ fn, id });
    return id;
  }
  clear(handle: unknown): void {
    this.queue = this.queue.filter((t) => t.id !== handle);
  }
  fire(): void {
    const all = this.queue;
    this.queue = [];
    all.forEach((t) => t.fn());
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("autosave", () => {
  it("saves after an edit, based on the last saved version", async () => {
    const timer = new FakeTimer();
    const calls: [string, number][] = [];
    const saver = new Autosaver<string>({ baseVersion: 3, timer, save: async (doc, base) => { calls.push([doc, base]); return base + 1; } });
    expect(saver.status).toBe("saved");
    saver.edit("a");
    saver.edit("ab");
    expect(saver.status).toBe("unsaved");
    expect(saver.dirty).toBe(true);
    timer.fire();
    await tick();
    expect(calls).toEqual([["ab", 3]]);
    expect(saver.status).toBe("saved");
    expect(saver.baseVersion).toBe(4);
    expect(saver.dirty).toBe(false);
  });

  it("keeps an edit made during a save and saves it next, on the new version", async () => {
    const timer = new FakeTimer();
    let release!: (v: number) => void;
    const calls: [string, number][] = [];
    const saver = new Autosaver<string>({ baseVersion: 0, timer, save: (doc, base) => {
      calls.push([doc, base]);
      return new Promise((resolve) => { release = resolve; });
    } });
    saver.edit("a");
    timer.fire();
    expect(saver.status).toBe("saving");
    saver.edit("ab");
    release(1);
    await tick();
    expect(saver.status).toBe("unsaved");
    timer.fire();
    release(2);
    await tick();
    expect(calls).toEqual([["a", 0], ["ab", 1]]);
    expect(saver.status).toBe("saved");
  });

  it("turns a 409 into a conflict that keeps both versions, then lets the user keep theirs or mine", async () => {
    const timer = new FakeTimer();
    const calls: [string, number][] = [];
    let conflictOnce = true;
    const saver = new Autosaver<string>({ baseVersion: 1, timer, save: async (doc, base) => {
      calls.push([doc, base]);
      if (conflictOnce) {
        conflictOnce = false;
        throw new ConflictError("changed meanwhile", { version: 2, doc: "theirs", author: "bob" });
      }
      return base + 1;
    } });
    saver.edit("mine");
    timer.fire();
    await tick();
    expect(saver.status).toBe("conflict");
    expect(saver.conflict).toEqual({ mine: "mine", theirs: { version: 2, doc: "theirs", author: "bob" } });
    saver.edit("mine2"); // typing on while the dialog is open is not lost and does not save
    expect(timer.queue).toHaveLength(0);
    expect(saver.conflict?.mine).toBe("mine");
    saver.keepMine();
    timer.fire();
    await tick();
    expect(calls[1]).toEqual(["mine", 2]);
    expect(saver.status).toBe("saved");
    expect(saver.baseVersion).toBe(3);
  });

  it("takes their version and drops mine", async () => {
    const timer = new FakeTimer();
    const saver = new Autosaver<string>({ baseVersion: 1, timer, save: async () => {
      throw new ConflictError("changed", { version: 5, doc: "theirs" });
    } });
    saver.edit("mine");
    timer.fire();
    await tick();
    const theirs = saver.takeTheirs();
    expect(theirs?.doc).toBe("theirs");
    expect(saver.baseVersion).toBe(5);
    expect(saver.status).toBe("saved");
    expect(saver.dirty).toBe(false);
  });

  it("retries network failures but not refusals", async () => {
    const timer = new FakeTimer();
    let fail: Error | null = new RetryableError("offline");
    const saver = new Autosaver<string>({ baseVersion: 0, timer, save: async (_d, base) => {
      if (fail) throw fail;
      return base + 1;
    } });
    saver.edit("a");
    timer.fire();
    await tick();
    expect(saver.status).toBe("error");
    expect(saver.message).toBe("offline");
    expect(timer.queue).toHaveLength(1);
    fail = null;
    timer.fire();
    await tick();
    expect(saver.status).toBe("saved");
    fail = new Error("class 'x' is not in the project");
    saver.edit("b");
    timer.fire();
    await tick();
    expect(saver.status).toBe("error");
    expect(timer.queue).toHaveLength(0);
    expect(saver.dirty).toBe(true);
  });

  it("flush saves at once and waits", async () => {
    const saver = new Autosaver<string>({ baseVersion: 0, timer: new FakeTimer(), save: async (_d, base) => base + 1 });
    saver.edit("a");
    await saver.flush();
    expect(saver.status).toBe("saved");
    expect(saver.baseVersion).toBe(1);
  });
});

describe("pre-labels", () => {
  const box = (x: number, score: number): Shape => ({ type: "box", label: "cat", x0: x, y0: 0, x1: x + 5, y1: 5, score });
  const prediction: Prediction = { id: 7, item_id: 1, model_version: "m:1", score: 0.5, review_state: "pending",
    shapes: [box(0, 0.9), box(10, 0.4), box(20, 0.7)] };

  it("lists pending shapes not yet taken into the annotation", () => {
    const taken = accept(preLabelsOf([prediction], [])[1]);
    expect(taken).toEqual({ type: "box", label: "cat", x0: 10, y0: 0, x1: 15, y1: 5, attributes: { prediction: "7:1" } });
    expect(preLabelsOf([prediction], [taken]).map((p) => p.key)).toEqual(["7:0", "7:2"]);
    expect(preLabelsOf([{ ...prediction, review_state: "accepted" }], [])).toEqual([]);
  });

  it("leaves out boxes a detector kept below its calibrated threshold (attributes.prelabel false)", () => {
    const below = { ...box(30, 0.2), attributes: { prelabel: false, threshold: 0.6 } } as Shape;
    const above = { ...box(40, 0.8), attributes: { prelabel: true, threshold: 0.6 } } as Shape;
    expect(preLabelsOf([{ ...prediction, shapes: [below, above] }], []).map((p) => p.key)).toEqual(["7:1"]);
  });

  it("leaves out the shapes this user rejected before, and groups new rejections by prediction", () => {
    expect(preLabelsOf([{ ...prediction, dismissed: [0, 2] }], []).map((p) => p.key)).toEqual(["7:1"]);
    expect(preLabelsOf([{ ...prediction, dismissed: [] }], []).map((p) => p.key)).toEqual(["7:0", "7:1", "7:2"]);
    expect([...dismissals(["7:2", "9:0", "7:0", "junk"])]).toEqual([[7, [2, 0]], [9, [0]]]);
  });

  it("accepts all at or above a threshold", () => {
    const { accepted, remaining } = acceptAbove(preLabelsOf([prediction], []), 0.7);
    expect(accepted.map((s) => (s as { x0: number }).x0)).toEqual([0, 20]);
    expect(accepted.every((s) => s.score === undefined)).toBe(true);
    expect(remaining.map((p) => p.key)).toEqual(["7:1"]);
  });
});
