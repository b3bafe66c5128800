import assert from "node:assert/strict";
import {
  describeExtent,
  ExtentRuns,
  formatMapJson,
  formatMapText,
  formatTotalsJson,
  formatTotalsText,
  totalsOf,
} from "../../src/cli/extent-map.ts";

function runsOf(extents: [number, number][]): ExtentRuns {
  const runs = new ExtentRuns();
  for (const [length, type] of extents) runs.add(length, type);
  return runs;
}

Deno.test("descriptions per context, none for unknown contexts or types", () => {
  assert.equal(describeExtent("base:allocation", 3), "hole,zero");
  assert.equal(describeExtent("base:allocation", 4), undefined);
  assert.equal(describeExtent("qemu:dirty-bitmap:b0", 1), "dirty");
  assert.equal(describeExtent("qemu:dirty-bitmap:b0", 2), undefined);
  assert.equal(describeExtent("qemu:allocation-depth", 0), "absent");
  assert.equal(describeExtent("qemu:allocation-depth", 1), "local");
  assert.equal(describeExtent("qemu:allocation-depth", 7), "backing depth 7");
  assert.equal(describeExtent("x:y", 0), undefined);
});

Deno.test("adjacent extents of one type merge into a run", () => {
  const runs = runsOf([[4096, 0], [4096, 0], [8192, 3], [512, 0], [512, 3], [512, 3]]);
  assert.deepEqual(runs.runs, [
    { offset: 0, length: 8192, type: 0 },
    { offset: 8192, length: 8192, type: 3 },
    { offset: 16384, length: 512, type: 0 },
    { offset: 16896, length: 1024, type: 3 },
  ]);
});

// The expected lines are nbdinfo 1.14.2's for qemu-nbd -A on a 64 MiB image with 4 KiB of data.
const RUNS = runsOf([[1048576, 3], [4096, 0], [66056192, 3]]).runs;

Deno.test("map text and JSON", () => {
  assert.equal(
    formatMapText("base:allocation", RUNS),
    "         0     1048576    3  hole,zero\n" +
      "   1048576        4096    0  data\n" +
      "   1052672    66056192    3  hole,zero\n",
  );
  assert.equal(
    formatMapJson("base:allocation", RUNS),
    '[\n{ "offset": 0, "length": 1048576, "type": 3, "description": "hole,zero"},\n' +
      '{ "offset": 1048576, "length": 4096, "type": 0, "description": "data"},\n' +
      '{ "offset": 1052672, "length": 66056192, "type": 3, "description": "hole,zero"}\n]\n',
  );
  assert.equal(formatMapText("x:y", RUNS.slice(0, 1)), "         0     1048576    3\n");
  assert.equal(
    formatMapJson("x:y", RUNS.slice(0, 1)),
    '[\n{ "offset": 0, "length": 1048576, "type": 3}\n]\n',
  );
  assert.equal(formatMapJson("base:allocation", []), "[\n\n]\n");
  assert.equal(formatMapText("base:allocation", []), "");
});

Deno.test("totals: bytes and share per type, ascending", () => {
  const totals = totalsOf(RUNS, 67108864);
  assert.deepEqual(totals.map(({ type, bytes }) => [type, bytes]), [[0, 4096], [3, 67104768]]);
  assert.equal(
    formatTotalsText("base:allocation", totals),
    "      4096   0.0%   0 data\n  67104768 100.0%   3 hole,zero\n",
  );
  assert.equal(
    formatTotalsJson("base:allocation", totals),
    '[\n{ "size": 4096, "percent": 0.00610352, "type": 0, "description": "data" },\n' +
      '{ "size": 67104768, "percent": 99.9939, "type": 3, "description": "hole,zero" }\n]\n',
  );
  const depth = totalsOf(runsOf([[131072, 1], [8257536, 2]]).runs, 8388608);
  assert.equal(
    formatTotalsText("qemu:allocation-depth", depth),
    "    131072   1.6%   1 local\n   8257536  98.4%   2 backing depth 2\n",
  );
  assert.ok(
    formatTotalsJson("x:y", depth).includes('{ "size": 131072, "percent": 1.5625, "type": 1 }'),
  );
  assert.equal(formatTotalsJson("base:allocation", totalsOf([], 0)), "[]\n");
  assert.equal(formatTotalsText("base:allocation", totalsOf([], 0)), "");
});
