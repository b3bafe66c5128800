/**
 * The shell history file: where it lives (XDG state directory), that it
 * keeps the newest entries only, and that it is private to the user.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  HISTORY_LIMIT,
  historyPath,
  loadHistory,
  saveHistory,
} from "../../src/cli/history-file.ts";

Deno.test("history path: XDG_STATE_HOME, else ~/.local/state, else none", () => {
  assert.equal(
    historyPath("qmp_history", { XDG_STATE_HOME: "/s", HOME: "/h" }),
    "/s/denbd/qmp_history",
  );
  assert.equal(historyPath("qmp_history", { HOME: "/h" }), "/h/.local/state/denbd/qmp_history");
  assert.equal(
    historyPath("qmp_history", { XDG_STATE_HOME: "relative", HOME: "/h" }),
    "/h/.local/state/denbd/qmp_history",
    "a relative XDG path is ignored, as the spec says",
  );
  assert.equal(historyPath("qmp_history", {}), null);
});

Deno.test("history file: created 0600 in a 0700 directory, bounded, reloaded", async () => {
  const state = await Deno.makeTempDir();
  try {
    const path = join(state, "denbd", "qmp_history");
    assert.deepEqual(await loadHistory(path), []);
    const entries = Array.from({ length: HISTORY_LIMIT + 5 }, (_, i) => `query-version # ${i}`);
    await saveHistory(path, entries);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(join(state, "denbd"))).mode! & 0o777, 0o700);
    const loaded = await loadHistory(path);
    assert.equal(loaded.length, HISTORY_LIMIT);
    assert.equal(loaded[0], "query-version # 5");
    assert.equal(loaded.at(-1), `query-version # ${HISTORY_LIMIT + 4}`);

    await Deno.chmod(path, 0o644);
    await saveHistory(path, ["quit", ""]);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, "an existing file is made private");
    assert.equal(await Deno.readTextFile(path), "quit\n");
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});
