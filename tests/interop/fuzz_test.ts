/**
 * The fuzz harness (scripts/fuzz.ts) in CI: a bounded run with fixed seeds
 * against `denbd serve` and `denbd daemon`, the replay of every kept
 * regression case (tests/fuzz/regressions/), and a check that the harness
 * does see a server that died.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type FuzzReport,
  fuzzTarget,
  loadRegression,
  probe,
  REGRESSIONS_DIR,
  startTarget,
} from "../../scripts/fuzz.ts";
import { withTempDir } from "./harness.ts";

/** Seconds of fuzzing per target in CI. */
const CI_SECONDS = 12;

/** Fail with what the harness found, and where it kept the input. */
function assertClean(report: FuzzReport): void {
  const failure = report.failure;
  assert.equal(
    failure,
    null,
    failure
      ? `${failure.problem}; input saved to ${failure.savedTo}\n${failure.stderr.slice(-4000)}`
      : "",
  );
  assert.ok(report.cases > 0 && report.probes > 0, "the run sent cases and probed");
}

Deno.test("fuzzing `denbd serve` with a fixed seed: no crash, hang or growth", async () => {
  assertClean(
    await fuzzTarget({ target: "serve", seed: 1, deadline: Date.now() + CI_SECONDS * 1000 }),
  );
});

Deno.test("fuzzing `denbd daemon` (NBD and QMP) with a fixed seed: no crash, hang or growth", async () => {
  assertClean(
    await fuzzTarget({ target: "daemon", seed: 2, deadline: Date.now() + CI_SECONDS * 1000 }),
  );
});

Deno.test("every kept regression case replays without crash, hang or growth", async () => {
  const files = [...Deno.readDirSync(REGRESSIONS_DIR)]
    .filter((entry) => entry.name.endsWith(".json"))
    .map((entry) => join(REGRESSIONS_DIR, entry.name))
    .sort();
  assert.ok(files.length > 0, `regression cases in ${REGRESSIONS_DIR}`);
  await withTempDir(async (scratch) => {
    for (const file of files) {
      const cases = await loadRegression(file);
      const report = await fuzzTarget({
        target: cases[0].target,
        seed: 0,
        deadline: Infinity,
        cases,
        saveDir: scratch,
      });
      assertClean(report);
      assert.equal(report.cases, cases.length, file);
    }
  });
});

Deno.test("the harness reports a server that died, hangs or grows", async () => {
  await withTempDir(async (dir) => {
    const running = await startTarget("serve", dir);
    try {
      assert.equal(await probe(running), null);
      assert.match((await probe(running, { maxRss: 1 << 20 }))!, /^growth: /);
      running.child.kill("SIGSTOP");
      try {
        assert.match((await probe(running, { timeoutMs: 500 }))!, /^hang: /);
      } finally {
        running.child.kill("SIGCONT");
      }
      running.child.kill("SIGKILL");
      await running.child.status;
      assert.match((await probe(running))!, /^crash: /);
    } finally {
      await running.stop();
    }
  });
});
