import assert from "node:assert/strict";
import {
  ARCHITECTURE_DOC,
  checkLayers,
  checkLayerTable,
  findImportCycles,
  groupOf,
  layerTableMarkdown,
  type ModuleGraph,
} from "../../scripts/check-layers.ts";

const repositoryRoot = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** Write `files` (relative path to text) under a new temporary folder and return its path. */
async function fixtureTree(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "denbd-layers-test-" });
  for (const [path, text] of Object.entries(files)) {
    await Deno.mkdir(`${root}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    await Deno.writeTextFile(`${root}/${path}`, text);
  }
  return root;
}

Deno.test("groupOf: a file's folder places it; tests and folders missing from the table are in no layer", () => {
  assert.equal(groupOf("main.ts")?.name, "cli");
  assert.equal(groupOf("src/cli/serve.ts")?.name, "cli");
  assert.equal(groupOf("src/nbd/server/handshake.ts")?.name, "nbd-server");
  assert.equal(groupOf("src/nbd/client/client.ts")?.name, "nbd-client");
  assert.equal(groupOf("src/nbd/wire.ts")?.name, "nbd-protocol");
  assert.equal(groupOf("src/errors.ts")?.name, "base");
  assert.equal(groupOf("src/block/sub/dir.ts")?.name, "block");
  assert.equal(groupOf("src/vhost/engine.ts"), undefined);
  assert.equal(groupOf("tests/unit/wire_test.ts"), undefined);
});

Deno.test("checkLayers: upward, sibling, outside and unplaced imports and a cycle are reported, downward ones are not", async () => {
  const root = await fixtureTree({
    "deno.json": `{ "version": "1.0.0" }`,
    "main.ts": `import { serve } from "./src/cli/serve.ts";\nserve();\n`,
    "src/cli/serve.ts":
      `import { listen } from "../nbd/server/server.ts";\nexport function serve(): void {\n  listen();\n}\n`,
    "src/nbd/server/server.ts": [
      `import { MAGIC } from "../wire.ts";`,
      `import type { Client } from "../client/client.ts";`,
      `export function listen(client?: Client): number {\n  return MAGIC + (client ? 1 : 0);\n}\n`,
    ].join("\n"),
    "src/nbd/client/client.ts": `export interface Client {\n  name: string;\n}\n`,
    "src/nbd/wire.ts":
      `import { VERSION } from "../version.ts";\nexport const MAGIC = VERSION.length;\n`,
    "src/version.ts":
      `import manifest from "../deno.json" with { type: "json" };\nexport const VERSION: string = manifest.version;\n`,
    "src/qmp/monitor.ts": `\n\nexport { EventBus } from "../daemon/event-bus.ts";\n`,
    "src/daemon/event-bus.ts": `export class EventBus {}\n`,
    "src/copy/endpoints.ts":
      `import { openFile } from "./file-endpoint.ts";\nexport interface Source {\n  size: number;\n}\nexport const open = openFile;\n`,
    "src/copy/file-endpoint.ts":
      `import type { Source } from "./endpoints.ts";\nexport function openFile(): Source {\n  return { size: 0 };\n}\n`,
    "src/vhost/engine.ts": `export const TLS = 1;\n`,
    "src/io/reader.ts":
      `import { helper } from "../../tests/helper.ts";\nexport const READER = helper;\n`,
    "tests/helper.ts": `export const helper = 1;\n`,
  });
  try {
    assert.deepEqual(await checkLayers(root), [
      "src/io/reader.ts:1 imports tests/helper.ts, which is outside the layers",
      "src/nbd/server/server.ts:2 imports src/nbd/client/client.ts: nbd-server may not import nbd-client, another group of layer 3",
      "src/qmp/monitor.ts:3 imports src/daemon/event-bus.ts: qmp (layer 5) may not import daemon (layer 2), which is above it",
      "src/vhost/engine.ts: in no layer; add its folder to LAYERS in scripts/check-layers.ts",
      "import cycle: src/copy/endpoints.ts -> src/copy/file-endpoint.ts -> src/copy/endpoints.ts",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("findImportCycles: one message per cycle set, naming the files beyond the shortest cycle", () => {
  const graph: ModuleGraph = new Map([
    ["a.ts", [{ target: "b.ts", line: 1 }]],
    ["b.ts", [{ target: "c.ts", line: 1 }, { target: "a.ts", line: 2 }]],
    ["c.ts", [{ target: "a.ts", line: 1 }, { target: "node:fs", line: 2 }]],
    ["d.ts", [{ target: "d.ts", line: 1 }]],
    ["e.ts", [{ target: "a.ts", line: 1 }]],
  ]);
  assert.deepEqual(findImportCycles(graph), [
    "import cycle: a.ts -> b.ts -> a.ts (also in the cycle: c.ts)",
    "import cycle: d.ts -> d.ts",
  ]);
});

Deno.test("checkLayerTable: a table that is missing a row, or formatted differently, is compared by its cells", () => {
  const table = layerTableMarkdown();
  assert.deepEqual(checkLayerTable(`# Title\n\n${table}\n\nText.\n`), []);
  const padded = table.split("\n").map((line) => line.replaceAll(" | ", "  |  ")).join("\n");
  assert.deepEqual(checkLayerTable(padded), []);
  const lines = table.split("\n");
  const withoutLastRow = lines.slice(0, -1).join("\n");
  assert.equal(checkLayerTable(withoutLastRow).length, 1);
  assert.equal(checkLayerTable("no table here").length, 1);
});

Deno.test("the repository: every import of src/ goes downwards, without cycles", async () => {
  assert.deepEqual(await checkLayers(repositoryRoot), []);
});

Deno.test("the repository: docs/architecture.md holds the layer table of the check", async () => {
  const doc = await Deno.readTextFile(`${repositoryRoot}/${ARCHITECTURE_DOC}`);
  assert.deepEqual(checkLayerTable(doc), []);
});
