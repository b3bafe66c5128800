/**
 * The QMP shell's completion and per-command help, read off the schema
 * qemu-storage-daemon 7.2 returns for query-qmp-schema (captured once, at
 * test time, so the masked type names are QEMU's own), and off command
 * names alone (a server without query-qmp-schema).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { QmpClient } from "../../src/qmp/client.ts";
import { QmpIntrospection } from "../../src/qmp/introspected-schema.ts";
import type { JsonValue } from "../../src/qmp/json-value.ts";
import { completeShellLine } from "../../src/qmp/shell-completion.ts";
import { launch, needs, qmpMonitorArgs, withTempDir } from "../interop/harness.ts";

let captured: Promise<QmpIntrospection> | undefined;

/** qsd's schema, fetched from a qsd started for the purpose (once per test file). */
function qsdSchema(): Promise<QmpIntrospection> {
  captured ??= withTempDir(async (dir) => {
    const socket = join(dir, "qmp.sock");
    const qsd = await launch({
      command: "qemu-storage-daemon",
      args: [
        ...qmpMonitorArgs(socket, "m"),
      ],
      uri: "",
      listen: socket,
    });
    try {
      const client = await QmpClient.connect({ transport: "unix", path: socket });
      try {
        await client.execute("qmp_capabilities");
        const reply = await client.execute("query-qmp-schema");
        return QmpIntrospection.fromSchemaInfo(reply.return as JsonValue);
      } finally {
        client.close();
      }
    } finally {
      await qsd.stop();
    }
  });
  return captured;
}

/** The candidates for `line` with qsd's schema. */
async function complete(line: string): Promise<readonly string[]> {
  const completion = completeShellLine(await qsdSchema(), line);
  assert.equal(completion.start, /\S*$/.exec(line)!.index);
  return completion.candidates;
}

const QSD = needs("qemu-storage-daemon");

Deno.test("completion: command names, and help's argument", QSD, async () => {
  assert.deepEqual(await complete("block-export-"), [
    "block-export-add",
    "block-export-del",
  ]);
  assert.deepEqual(await complete("hel"), ["help"]);
  assert.ok((await complete("")).includes("blockdev-add"));
  assert.deepEqual(await complete("help nbd-server-s"), ["nbd-server-start", "nbd-server-stop"]);
  assert.deepEqual(await complete("help quit "), []);
  assert.deepEqual(await complete("nope-"), []);
});

Deno.test("completion: argument keys, nested objects and union branches", QSD, async () => {
  assert.deepEqual(await complete("block-export-del "), ["id=", "mode="]);
  assert.deepEqual(await complete("block-export-del id=e0 "), ["mode="]);
  assert.deepEqual(await complete("nbd-server-start a"), ["addr."]);
  assert.deepEqual(await complete("nbd-server-start addr."), ["addr.data.", "addr.type="]);
  assert.deepEqual(await complete("nbd-server-start addr.type=unix addr.data."), [
    "addr.data.abstract=",
    "addr.data.path=",
    "addr.data.tight=",
  ]);
  assert.ok((await complete("nbd-server-start addr.data.")).includes("addr.data.cid="));
  assert.deepEqual(await complete("blockdev-add driver=file file"), ["filename="]);
  assert.deepEqual(await complete("blockdev-add driver=qcow2 file.driver=fi"), [
    "file.driver=file",
  ]);
  assert.deepEqual(await complete("blockdev-add driver=qcow2 file.driver=file file.f"), [
    "file.filename=",
    "file.force-share=",
  ]);
  assert.deepEqual(await complete("nope x"), []);
});

Deno.test("completion: enum and boolean values", QSD, async () => {
  assert.deepEqual(await complete("block-export-del id=e0 mode="), [
    "mode=hard",
    "mode=safe",
  ]);
  assert.deepEqual(await complete("block-export-add writable=t"), ["writable=true"]);
  assert.deepEqual(await complete("block-export-add id="), []);
  assert.deepEqual(await complete("nbd-server-start addr.type=u"), ["addr.type=unix"]);
});

Deno.test("help COMMAND: keys in the shell's syntax, branches, return", QSD, async () => {
  const schema = await qsdSchema();
  assert.deepEqual(schema.commandHelp("block-export-del"), [
    "block-export-del id=<str> [mode=safe|hard]",
    "  returns {}",
  ]);
  const start = schema.commandHelp("nbd-server-start")!;
  assert.equal(
    start[0],
    "nbd-server-start [tls-creds=<str>] [tls-authz=<str>] [max-connections=<int>]",
  );
  assert.equal(start[1], "  addr.type=inet|unix|vsock|fd");
  assert.ok(start.includes("  addr.data.path=<str>  if addr.type=unix"));
  assert.ok(start.includes("  [addr.data.tight=true|false]  if addr.type=unix"));
  const blockdev = schema.commandHelp("blockdev-add")!;
  assert.match(blockdev[0], /^blockdev-add driver=blkdebug\|.*\|file\|.* \[node-name=<str>\]/);
  assert.ok(blockdev.includes("  filename=<str>  if driver=file"));
  assert.ok(blockdev.includes("  [backing={...}|<str>|null]  if driver=qcow2"));
  assert.ok(blockdev.includes("  file={...}|<str>  if driver=qcow2"), "an alternate's forms");
  assert.deepEqual(schema.commandHelp("transaction")?.[0], "transaction actions=[{...},...]");
  assert.equal(schema.commandHelp("nope"), null);
  assert.equal(schema.knowsArguments, true);
});

Deno.test("command names alone: commands complete, arguments are unknown", () => {
  const schema = QmpIntrospection.fromCommandNames(["quit", "query-version", "qmp_capabilities"]);
  assert.equal(schema.knowsArguments, false);
  assert.deepEqual(completeShellLine(schema, "q"), {
    start: 0,
    candidates: ["qmp_capabilities", "query-version", "quit"],
  });
  assert.deepEqual(completeShellLine(schema, "quit a"), { start: 5, candidates: [] });
  assert.deepEqual(completeShellLine(schema, "x a='b c"), { start: 7, candidates: [] });
  assert.equal(schema.commandHelp("quit"), null);
});
