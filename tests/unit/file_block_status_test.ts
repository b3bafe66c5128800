import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { FileNode } from "../../src/block/file.ts";

const BLOCK = 4096;

/** A sparse file of `blocks` * 2 blocks with every other block written (data, hole, data, ...). */
async function fragmentedFile(blocks: number): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "denbd-fragmented-" });
  const file = await Deno.open(path, { write: true });
  try {
    await file.truncate(2 * blocks * BLOCK);
    const data = new Uint8Array(BLOCK).fill(1);
    for (let block = 0; block < blocks; block++) {
      await file.seek(2 * block * BLOCK, Deno.SeekMode.Start);
      await file.write(data);
    }
  } finally {
    file.close();
  }
  return path;
}

Deno.test("block status of a fragmented file lets the event loop turn while it scans", async () => {
  const path = await fragmentedFile(2048);
  const node = await FileNode.open(path, { readOnly: true, lock: false });
  try {
    let turns = 0;
    let scanning = true;
    const counting = (async () => {
      while (scanning) {
        await new Promise((resolve) => setImmediate(resolve));
        turns++;
      }
    })();
    const extents = await node.blockStatus(0, node.size);
    scanning = false;
    await counting;
    assert.equal(extents.length, 1024, "one call gathers at most 1024 extents");
    extents.forEach((extent, index) =>
      assert.deepEqual(extent, {
        length: BLOCK,
        data: index % 2 === 0,
        zero: index % 2 === 1,
        allocated: true,
      })
    );
    // About 1500 lseek calls, at most 64 per turn.
    assert.ok(turns >= 10, `the event loop turned ${turns} times during the scan`);
  } finally {
    await node.close();
    await Deno.remove(path);
  }
});
