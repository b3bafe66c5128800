/**
 * `denbd qmp` against qemu-storage-daemon 7.2: one-shot commands (return
 * value printed, errors on standard error with exit 1), over a Unix socket
 * and over TCP, and the shell fed from a pipe, events included.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CommandResult,
  denbdCommand,
  freePort,
  launch,
  needs,
  run,
  type ServerProcess,
  withTempDir,
} from "./harness.ts";

function denbdQmp(args: string[], stdin?: string): Promise<CommandResult> {
  const [command, prefix] = denbdCommand();
  return run(command, [...prefix, "qmp", ...args], {
    stdin: stdin === undefined ? undefined : new TextEncoder().encode(stdin),
    timeoutMs: 30_000,
  });
}

/** Run `body` with qsd serving QMP on `DIR/qmp.sock` and on a TCP port, with a null node n0. */
async function withQsd(body: (qmp: string, tcp: string) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const socket = join(dir, "qmp.sock");
    const port = freePort();
    const qsd: ServerProcess = await launch({
      command: "qemu-storage-daemon",
      args: [
        "--blockdev",
        "driver=null-co,node-name=n0",
        "--nbd-server",
        `addr.type=unix,addr.path=${join(dir, "nbd.sock")}`,
        "--chardev",
        `socket,id=tcp0,host=127.0.0.1,port=${port},server=on,wait=off`,
        "--monitor",
        "chardev=tcp0",
        "--chardev",
        `socket,id=qmp0,path=${socket},server=on,wait=off`,
        "--monitor",
        "chardev=qmp0",
      ],
      uri: "",
      listen: socket,
    });
    try {
      await body(socket, `127.0.0.1:${port}`);
    } finally {
      await qsd.stop();
    }
  });
}

Deno.test("denbd qmp --help describes both forms", async () => {
  const help = await denbdQmp(["--help"]);
  assert.equal(help.code, 0);
  assert.match(
    help.stdout,
    /^Usage: denbd qmp \[OPTIONS\] SOCKET\|HOST:PORT \[COMMAND \[JSON-ARGS\]\]/,
  );
  const usage = await denbdQmp([]);
  assert.equal(usage.code, 1);
  assert.match(usage.stderr, /Try 'denbd qmp --help'/);
});

Deno.test(
  "one-shot commands print the return value, or the error with exit 1",
  needs("qemu-storage-daemon"),
  async () => {
    await withQsd(async (socket, tcp) => {
      for (const target of [socket, tcp]) {
        const version = await denbdQmp([target, "query-version"]);
        assert.equal(version.code, 0, version.stderr);
        assert.match(version.stdout, /^\{\n {4}"qemu": \{\n {8}"micro": \d+,\n/);
        const parsed = JSON.parse(version.stdout);
        assert.equal(parsed.qemu.major, 7);
        assert.equal(parsed.qemu.minor, 2);
        assert.equal(typeof parsed.package, "string");
      }
      const exports = await denbdQmp([socket, "query-block-exports"]);
      assert.deepEqual([exports.code, exports.stdout], [0, "[]\n"]);
      const missing = await denbdQmp([socket, "block-export-del", '{"id": "nope"}']);
      assert.deepEqual([missing.code, missing.stdout, missing.stderr], [
        1,
        "",
        "Export 'nope' is not found\n",
      ]);
      const unknown = await denbdQmp([tcp, "nope"]);
      assert.deepEqual([unknown.code, unknown.stderr], [
        1,
        "The command nope has not been found\n",
      ]);
      const invalid = await denbdQmp([socket, "query-version", '{"x": 1}']);
      assert.deepEqual([invalid.code, invalid.stderr], [1, "Parameter 'x' is unexpected\n"]);
      const badJson = await denbdQmp([socket, "query-version", "{x}"]);
      assert.equal(badJson.code, 1);
      assert.match(badJson.stderr, /invalid JSON-ARGS '\{x\}'/);
    });
  },
);

Deno.test("an unreachable monitor is an error with exit 1", async () => {
  await withTempDir(async (dir) => {
    const result = await denbdQmp([join(dir, "none.sock"), "query-version"]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /cannot connect to '.*none\.sock'/);
  });
});

Deno.test(
  "the shell sends each line and prints every reply and event",
  needs("qemu-storage-daemon"),
  async () => {
    await withQsd(async (socket) => {
      const result = await denbdQmp(
        [socket],
        [
          'block-export-add {"type": "nbd", "id": "e0", "node-name": "n0"}',
          "",
          '{"execute": "block-export-del", "arguments": {"id": "e0"}, "id": 7}',
          "query-block-exports",
          "not json {",
          "nope",
        ].join("\n"),
      );
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, "invalid arguments: JSON parse error, invalid keyword 'json'\n");
      const messages = result.stdout.split(/\n(?=\{)/).map((text) => JSON.parse(text));
      const event = messages.find((message) => message.event);
      assert.deepEqual(messages.filter((message) => !message.event), [
        { return: {} },
        { return: {}, id: 7 },
        { return: [] },
        { error: { class: "CommandNotFound", desc: "The command nope has not been found" } },
      ]);
      assert.equal(event.event, "BLOCK_EXPORT_DELETED");
      assert.deepEqual(event.data, { id: "e0" });
    });
  },
);
