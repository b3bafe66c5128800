import assert from "node:assert/strict";
import { figuresOf, formatAge, renderFrame } from "../../src/cli/top-view.ts";
import { formatBytes } from "../../src/copy/progress.ts";
import type { DenbdRequestStatsValue, DenbdStatsValue } from "../../src/daemon/qapi-types.ts";

/** Request stats with every counter 0 but those in `some`. */
function stats(some: Partial<DenbdRequestStatsValue> = {}): DenbdRequestStatsValue {
  return {
    rd_bytes: 0,
    wr_bytes: 0,
    zero_bytes: 0,
    unmap_bytes: 0,
    rd_operations: 0,
    wr_operations: 0,
    zero_operations: 0,
    unmap_operations: 0,
    flush_operations: 0,
    block_status_operations: 0,
    cache_operations: 0,
    failed_operations: 0,
    ...some,
  };
}

/** One export "e0" named "disk" with client #3 (and #4 in its handshake). */
function sample(client: Partial<DenbdRequestStatsValue>, age: number): DenbdStatsValue {
  return {
    exports: [{
      id: "e0",
      name: "disk",
      "node-name": "n0",
      clients: 1,
      "departed-clients": 2,
      stats: stats({ ...client, wr_bytes: (client.wr_bytes ?? 0) + 1024 }),
    }],
    clients: [
      {
        id: 3,
        address: "127.0.0.1:40000",
        export: "e0",
        "connected-at": 1_700_000_000,
        age,
        stats: stats(client),
      },
      {
        id: 4,
        address: "[::1]:40001",
        "connected-at": 1_700_000_000,
        age: 0.2,
        stats: stats(),
      },
    ],
  };
}

Deno.test("bytes in binary units, ages as top writes them", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1000 / 3), "333 B", "a rate below 1 KiB/s in whole bytes");
  assert.equal(formatBytes(1024), "1.0 KiB");
  assert.equal(formatBytes(1536 * 1024), "1.5 MiB");
  assert.equal(formatBytes(3 * 1024 ** 3), "3.0 GiB");
  assert.equal(formatAge(0.9), "0s");
  assert.equal(formatAge(59.5), "59s");
  assert.equal(formatAge(185), "3m05s");
  assert.equal(formatAge(2 * 3600 + 7 * 60 + 9), "2h07m");
  assert.equal(formatAge(3 * 86400 + 4 * 3600), "3d04h");
});

Deno.test("a row's requests count every kind and the failures", () => {
  const figures = figuresOf(stats({
    rd_operations: 1,
    wr_operations: 2,
    zero_operations: 3,
    unmap_operations: 4,
    flush_operations: 5,
    block_status_operations: 6,
    cache_operations: 7,
    failed_operations: 8,
    rd_bytes: 9,
    wr_bytes: 10,
  }));
  assert.deepEqual(figures, { requests: 36, readBytes: 9, writeBytes: 10, errors: 8 });
});

Deno.test("the first frame has totals but no rates; clients sit under their export", () => {
  const lines = renderFrame({
    title: "denbd top - q.sock",
    sample: sample({ wr_operations: 16, wr_bytes: 1 << 20, rd_operations: 8 }, 65),
    previous: null,
    seconds: 0,
  });
  assert.deepEqual(lines, [
    "denbd top - q.sock",
    "1 export, 2 clients",
    "",
    "export 'disk' (id e0, node n0): 1 client, 2 departed",
    "  CLIENT   ADDRESS                      AGE     REQ/S       READ/S      WRITE/S   REQUESTS" +
    "       READ    WRITTEN  ERRORS",
    "  #3       127.0.0.1:40000            1m05s         -            -            -         24" +
    "        0 B    1.0 MiB       0",
    "  total                                             -            -            -         24" +
    "        0 B    1.0 MiB       0",
    "",
    "in handshake:",
    "  CLIENT   ADDRESS                      AGE     REQ/S       READ/S      WRITE/S   REQUESTS" +
    "       READ    WRITTEN  ERRORS",
    "  #4       [::1]:40001                   0s         -            -            -          0" +
    "        0 B        0 B       0",
  ]);
});

Deno.test("rates are the differences over the seconds between two answers", () => {
  const before = sample({ rd_operations: 10, rd_bytes: 10 * 4096 }, 10);
  const now = sample({
    rd_operations: 110,
    rd_bytes: 110 * 4096,
    wr_operations: 50,
    wr_bytes: 50 * 65536,
    failed_operations: 2,
  }, 12);
  const newcomer = { ...now.clients[1], id: 5 };
  const lines = renderFrame({
    title: "t",
    sample: { ...now, clients: [now.clients[0], newcomer] },
    previous: before,
    seconds: 2,
  });
  const client = lines.find((line) => line.startsWith("  #3"))!;
  assert.deepEqual(client.split(/ {2,}/).slice(1), [
    "#3",
    "127.0.0.1:40000",
    "12s",
    "76.0",
    "200.0 KiB/s",
    "1.6 MiB/s",
    "162",
    "440.0 KiB",
    "3.1 MiB",
    "2",
  ]);
  const total = lines.find((line) => line.startsWith("  total"))!;
  assert.match(total, /^ {2}total +76\.0 +200\.0 KiB\/s +1\.6 MiB\/s +162 /);
  // A client that was not there before has no rates yet.
  assert.match(lines.find((line) => line.startsWith("  #5"))!, /0s +- +- +-/);
});

Deno.test("on a terminal, lines are cut to its width", () => {
  const lines = renderFrame({
    title: "a title longer than twenty columns",
    sample: sample({}, 1),
    previous: null,
    seconds: 0,
    width: 20,
  });
  assert.ok(lines.every((line) => line.length <= 20));
  assert.equal(lines[0], "a title longer than ");
});
