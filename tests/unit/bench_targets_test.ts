import assert from "node:assert/strict";
import {
  type Check,
  describeCheck,
  describeRule,
  fioChecks,
  type Medians,
  passes,
  type TableRule,
  verdict,
} from "../../scripts/bench-targets.ts";

const RAW: TableRule = { mine: "denbd", iopsPeers: ["qemu-nbd", "nbdkit"], cpuPeer: "nbdkit" };
const QCOW2: TableRule = {
  mine: "denbd-qcow2",
  iopsPeers: ["qemu-nbd-qcow2"],
  vsOwn: { server: "denbd", min: 0.8 },
};

/** Medians by server name from `[name, iops, cpuUs]` triples. */
function medians(...rows: [string, number, number][]): Map<string, Medians> {
  return new Map(rows.map(([name, iops, cpuUs]) => [name, { iops, cpuUs }]));
}

Deno.test("fioChecks: the IOPS reference is the best peer that ran, CPU is against nbdkit", () => {
  const checks = fioChecks(
    RAW,
    medians(["denbd", 30_000, 30], ["qemu-nbd", 20_000, 50], ["nbdkit", 40_000, 20]),
  );
  assert.deepEqual(checks, [
    { measure: "IOPS", reference: "nbdkit", ratio: 0.75, bound: 1 },
    { measure: "CPU/op", reference: "nbdkit", ratio: 1.5, bound: 1 },
  ]);
  assert.equal(verdict(checks), "FAIL");

  const faster = fioChecks(
    RAW,
    medians(["denbd", 30_000, 15], ["qemu-nbd", 25_000, 50], ["nbdkit", 20_000, 20]),
  );
  assert.deepEqual(faster.map((c) => [c.reference, c.ratio]), [["qemu-nbd", 1.2], [
    "nbdkit",
    0.75,
  ]]);
  assert.equal(verdict(faster), "PASS");
});

Deno.test("fioChecks: a reference that did not run is left out; none at all is n/a", () => {
  const onlyQemu = fioChecks(RAW, medians(["denbd", 10, 30], ["qemu-nbd", 10, 50]));
  assert.deepEqual(onlyQemu, [{ measure: "IOPS", reference: "qemu-nbd", ratio: 1, bound: 1 }]);
  assert.equal(verdict(onlyQemu), "PASS");
  assert.deepEqual(fioChecks(RAW, medians(["denbd", 10, 30])), []);
  assert.equal(verdict([]), "n/a");
  assert.deepEqual(fioChecks(RAW, medians(["nbdkit", 10, 30])), []);
});

Deno.test("fioChecks: qcow2 is held to its peer and to 0.8x denbd on raw", () => {
  const checks = fioChecks(
    QCOW2,
    medians(["denbd-qcow2", 700, 40], ["qemu-nbd-qcow2", 500, 60], ["denbd", 1_000, 30]),
  );
  assert.deepEqual(checks, [
    { measure: "IOPS", reference: "qemu-nbd-qcow2", ratio: 1.4, bound: 1 },
    { measure: "IOPS", reference: "denbd", ratio: 0.7, bound: 0.8 },
  ]);
  assert.equal(verdict(checks), "FAIL");
});

Deno.test("passes: CPU per op is a maximum, everything else a minimum; equality passes", () => {
  const check = (measure: Check["measure"], ratio: number): Check => ({
    measure,
    reference: "x",
    ratio,
    bound: 1,
  });
  assert.equal(passes(check("IOPS", 1)), true);
  assert.equal(passes(check("IOPS", 0.99)), false);
  assert.equal(passes(check("MiB/s", 1.01)), true);
  assert.equal(passes(check("CPU/op", 1)), true);
  assert.equal(passes(check("CPU/op", 1.01)), false);
  assert.equal(passes(check("CPU/op", 0.5)), true);
});

Deno.test("describeCheck and describeRule say the reference, the ratio and the bound", () => {
  assert.equal(
    describeCheck({ measure: "CPU/op", reference: "nbdkit", ratio: 1.414, bound: 1 }),
    "CPU/op 1.41x nbdkit (<= 1)",
  );
  assert.equal(
    describeCheck({ measure: "MiB/s", reference: "nbdcopy", ratio: 0.9, bound: 1 }),
    "MiB/s 0.90x nbdcopy (>= 1)",
  );
  assert.equal(
    describeRule(RAW),
    "denbd: IOPS >= 1 x best of qemu-nbd, nbdkit; CPU/op <= 1 x nbdkit",
  );
  assert.equal(
    describeRule(QCOW2),
    "denbd-qcow2: IOPS >= 1 x best of qemu-nbd-qcow2; IOPS >= 0.8 x denbd",
  );
});
