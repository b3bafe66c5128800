import assert from "node:assert/strict";
import { RangeLock } from "../../src/block/range-lock.ts";

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("range lock: an overlapping range waits for the holder, a disjoint one does not", async () => {
  const lock = new RangeLock();
  const order: string[] = [];
  const releaseFirst = await lock.acquire(0, 4096);
  const overlapping = lock.acquire(4095, 8192).then((release) => {
    order.push("overlapping");
    release();
  });
  const disjoint = lock.acquire(4096, 8192).then((release) => {
    order.push("disjoint");
    return release;
  });
  const releaseDisjoint = await disjoint;
  await tick();
  assert.deepEqual(order, ["disjoint"], "the overlapping range still waits");
  releaseFirst();
  await tick();
  assert.deepEqual(order, ["disjoint"], "it also overlaps the disjoint holder");
  releaseDisjoint();
  await overlapping;
  assert.deepEqual(order, ["disjoint", "overlapping"]);
});
