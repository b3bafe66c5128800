/**
 * `denbd top` and x-denbd-query-stats with real traffic: qemu-io and fio
 * send known requests to `denbd serve --qmp` and to `denbd daemon` (export
 * made over QMP), and the counts and bytes read back over QMP and from
 * `denbd top -b` are exactly those; rates are non-zero while traffic runs;
 * a client that leaves keeps its export's totals.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CommandResult,
  denbdCommand,
  freePort,
  launch,
  makeSparseImage,
  needs,
  qmpMonitorArgs,
  run,
  type ServerProcess,
  withTempDir,
} from "./harness.ts";
import { QmpClient } from "../../src/qmp/client.ts";
import { validateInput } from "../../src/qmp/input.ts";
import { DenbdStats, type DenbdStatsValue } from "../../src/daemon/qapi-types.ts";
import { formatJson, type JsonObject } from "../../src/qmp/json-value.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** `denbd top ARGS`, bounded in time. */
function denbdTop(args: string[]): Promise<CommandResult> {
  const [command, prefix] = denbdCommand();
  return run(command, [...prefix, "top", ...args], { timeoutMs: 60_000 });
}

/** Run `command` on the monitor at `socket` (capabilities negotiated first); its reply. */
async function qmp(socket: string, command: string, args?: JsonObject): Promise<JsonObject> {
  const client = await QmpClient.connect({ transport: "unix", path: socket });
  try {
    await client.execute("qmp_capabilities");
    return await client.execute(command, args);
  } finally {
    client.close();
  }
}

/** x-denbd-query-stats on the monitor at `socket`, checked against its schema. */
async function queryStats(socket: string): Promise<DenbdStatsValue> {
  const reply = await qmp(socket, "x-denbd-query-stats");
  assert.ok("return" in reply, formatJson(reply));
  return validateInput(DenbdStats, reply.return);
}

/** The frames of `denbd top -b` output, each as its lines. */
function frames(output: string): string[][] {
  return output.split(/^(?=denbd top - )/m).map((frame) => frame.trimEnd().split("\n"));
}

/** The cells of a table line (columns are separated by two spaces or more). */
function cells(line: string): string[] {
  return line.trim().split(/ {2,}/);
}

/** Run `body` with `denbd serve -t -e 4 --qmp` serving a 64 MiB raw image as "disk". */
async function withServe(
  body: (place: { nbd: string; qmp: string; uri: string }) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const image = join(dir, "d.img");
    await makeSparseImage(image, 64 * MiB);
    const nbd = join(dir, "nbd.sock");
    const qmpSocket = join(dir, "qmp.sock");
    const [command, prefix] = denbdCommand();
    const uri = `nbd+unix:///disk?socket=${nbd}`;
    const server: ServerProcess = await launch({
      command,
      args: [
        ...prefix,
        "serve",
        "-t",
        "-e",
        "4",
        "-f",
        "raw",
        "-x",
        "disk",
        "-k",
        nbd,
        "--qmp",
        qmpSocket,
        image,
      ],
      uri,
      // The monitor listens once the export is there.
      listen: qmpSocket,
    });
    try {
      await body({ nbd, qmp: qmpSocket, uri });
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });
}

/** qemu-io's arguments for `commands`, each a -c. */
function qemuIoCommands(commands: readonly string[]): string[] {
  return commands.flatMap((command) => ["-c", command]);
}

Deno.test(
  "serve --qmp: qemu-io's 16 writes and 8 reads counted exactly, kept after it leaves, shown by top",
  needs("qemu-io"),
  async () => {
    await withServe(async ({ qmp: qmpSocket, uri }) => {
      const writes = Array.from({ length: 16 }, (_, i) => `write -P ${i + 1} ${i * 64}k 64k`);
      const reads = Array.from({ length: 8 }, (_, i) => `read -P ${i + 1} ${i * 64}k 64k`);
      const io = await run("qemu-io", [
        "-f",
        "raw",
        uri,
        ...qemuIoCommands([...writes, ...reads]),
      ]);
      assert.equal(io.code, 0, io.stderr + io.stdout);
      assert.doesNotMatch(io.stdout, /Pattern verification failed/);

      const stats = await queryStats(qmpSocket);
      assert.deepEqual(stats.clients, []);
      assert.equal(stats.exports.length, 1);
      const [entry] = stats.exports;
      assert.equal(entry.name, "disk");
      assert.equal(entry.clients, 0);
      assert.equal(entry["departed-clients"], 1);
      assert.equal(entry.stats.wr_operations, 16);
      assert.equal(entry.stats.wr_bytes, 16 * 64 * KiB);
      assert.equal(entry.stats.rd_operations, 8);
      assert.equal(entry.stats.rd_bytes, 8 * 64 * KiB);
      assert.equal(entry.stats.failed_operations, 0);
      assert.equal(entry.stats.zero_operations, 0);
      assert.equal(entry.stats.unmap_operations, 0);

      // The serve monitor's small command set, with query-block-exports.
      const exports = await qmp(qmpSocket, "query-block-exports");
      assert.deepEqual(exports.return, [
        { id: "disk", type: "nbd", "node-name": "disk", "shutting-down": false },
      ]);
      const commands = await qmp(qmpSocket, "query-commands");
      assert.deepEqual(
        (commands.return as { name: string }[]).map((command) => command.name).sort(),
        [
          "qmp_capabilities",
          "query-block-exports",
          "query-commands",
          "query-qmp-schema",
          "query-version",
          "x-denbd-query-stats",
        ],
      );

      const top = await denbdTop(["-b", "-n", "1", qmpSocket]);
      assert.equal(top.code, 0, top.stderr);
      const [frame] = frames(top.stdout);
      assert.match(frame[0], /^denbd top - .*qmp\.sock - \d\d:\d\d:\d\d UTC - every 1s$/);
      assert.equal(frame[1], "1 export, 0 clients");
      assert.equal(frame[3], "export 'disk' (id disk, node disk): 0 clients, 1 departed");
      const total = cells(frame.find((line) => line.trim().startsWith("total"))!);
      // total, REQ/S, READ/S, WRITE/S (none on a first frame), REQUESTS, READ, WRITTEN, ERRORS
      assert.deepEqual(total.slice(0, 4), ["total", "-", "-", "-"]);
      assert.equal(
        Number(total[4]),
        entry.stats.rd_operations + entry.stats.wr_operations +
          entry.stats.flush_operations + entry.stats.block_status_operations,
      );
      assert.deepEqual(total.slice(5), ["512.0 KiB", "1.0 MiB", "0"]);
    });
  },
);

Deno.test(
  "serve --qmp: top -b -n 2 -d 0.5 shows non-zero rates while qemu-io writes",
  needs("qemu-io"),
  async () => {
    await withServe(async ({ qmp: qmpSocket, uri }) => {
      // Writes of 64 KiB, 20 ms apart, for far longer than top watches; stopped after.
      const paced = Array.from({ length: 1000 }, () => ["write 0 64k", "sleep 20"]).flat();
      const writer = new Deno.Command("qemu-io", {
        args: ["-f", "raw", uri, ...qemuIoCommands(paced)],
        stdout: "null",
        stderr: "null",
        signal: AbortSignal.timeout(90_000),
      }).spawn();
      try {
        const deadline = Date.now() + 30_000;
        while ((await queryStats(qmpSocket)).clients.length === 0) {
          assert.ok(Date.now() < deadline, "qemu-io did not connect");
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const top = await denbdTop(["-b", "-n", "2", "-d", "0.5", qmpSocket]);
        assert.equal(top.code, 0, top.stderr);
        const shown = frames(top.stdout);
        assert.equal(shown.length, 2, top.stdout);
        const second = shown[1];
        assert.equal(second[1], "1 export, 1 client");
        const client = cells(second.find((line) => /^ {2}#\d+ /.test(line))!);
        // #ID, ADDRESS, AGE, REQ/S, READ/S, WRITE/S, REQUESTS, READ, WRITTEN, ERRORS
        assert.equal(client[1], "unix");
        assert.ok(Number(client[3]) > 0, `requests per second: ${client[3]}`);
        assert.match(client[5], /^\d+\.\d (KiB|MiB)\/s$/);
        assert.equal(client[9], "0");
        const total = cells(second.find((line) => line.trim().startsWith("total"))!);
        assert.ok(Number(total[1]) > 0, `export's requests per second: ${total[1]}`);
        assert.notEqual(total[3], "0 B/s");
      } finally {
        writer.kill("SIGTERM");
        await writer.status;
      }
      let after = await queryStats(qmpSocket);
      for (const deadline = Date.now() + 10_000; after.clients.length > 0;) {
        assert.ok(Date.now() < deadline, "the killed qemu-io is still a client");
        await new Promise((resolve) => setTimeout(resolve, 50));
        after = await queryStats(qmpSocket);
      }
      assert.equal(after.exports[0]["departed-clients"], 1);
      assert.equal(
        after.exports[0].stats.wr_bytes,
        after.exports[0].stats.wr_operations * 64 * KiB,
      );
      assert.ok(after.exports[0].stats.wr_operations > 0);
    });
  },
);

Deno.test(
  "daemon: an export made over QMP counts fio's 256 writes of 4 KiB, and keeps them after it left",
  needs("fio"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "d.img");
      await makeSparseImage(image, 16 * MiB);
      const qmpSocket = join(dir, "qmp.sock");
      const nbd = join(dir, "nbd.sock");
      const [command, prefix] = denbdCommand();
      const daemon = await launch({
        command,
        args: [
          ...prefix,
          "daemon",
          "--blockdev",
          `driver=file,node-name=file0,filename=${image}`,
          "--blockdev",
          "driver=raw,node-name=fmt0,file=file0",
          ...qmpMonitorArgs(qmpSocket),
        ],
        uri: "",
        listen: qmpSocket,
      });
      try {
        const client = await QmpClient.connect({ transport: "unix", path: qmpSocket });
        try {
          await client.execute("qmp_capabilities");
          const started = await client.execute("nbd-server-start", {
            addr: { type: "unix", data: { path: nbd } },
          });
          assert.deepEqual(started, { return: {} });
          const added = await client.execute("block-export-add", {
            type: "nbd",
            id: "e0",
            "node-name": "fmt0",
            name: "disk",
            writable: true,
          });
          assert.deepEqual(added, { return: {} });
        } finally {
          client.close();
        }
        const fio = await run("fio", [
          "--name=stats",
          "--ioengine=nbd",
          `--uri=nbd+unix:///disk?socket=${nbd}`,
          "--rw=randwrite",
          "--bs=4k",
          "--iodepth=8",
          "--size=1M",
        ]);
        assert.equal(fio.code, 0, fio.stderr + fio.stdout);
        const stats = await queryStats(qmpSocket);
        assert.deepEqual(stats.clients, []);
        const [entry] = stats.exports;
        // fio's nbd engine connects twice: once to learn the size, once for the job.
        assert.deepEqual(
          [entry.id, entry.name, entry["node-name"], entry.clients, entry["departed-clients"]],
          ["e0", "disk", "fmt0", 0, 2],
        );
        assert.equal(entry.stats.wr_operations, 256);
        assert.equal(entry.stats.wr_bytes, 1 * MiB);
        assert.equal(entry.stats.rd_operations, 0);
        assert.equal(entry.stats.failed_operations, 0);

        const top = await denbdTop(["--batch", "--iterations=1", qmpSocket]);
        assert.equal(top.code, 0, top.stderr);
        const [frame] = frames(top.stdout);
        assert.equal(frame[3], "export 'disk' (id e0, node fmt0): 0 clients, 2 departed");
        const total = cells(frame.find((line) => line.trim().startsWith("total"))!);
        assert.deepEqual(total.slice(5), ["0 B", "1.0 MiB", "0"]);
      } finally {
        assert.equal(await daemon.stop(), 0, daemon.stderr());
      }
    });
  },
);

Deno.test("serve --qmp HOST:PORT: top reads it over TCP", async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "d.img");
    await makeSparseImage(image, 1 * MiB);
    const port = freePort();
    const [command, prefix] = denbdCommand();
    const server = await launch({
      command,
      args: [
        ...prefix,
        "serve",
        "-t",
        "-f",
        "raw",
        "-k",
        join(dir, "nbd.sock"),
        "--qmp",
        `127.0.0.1:${port}`,
        image,
      ],
      uri: "",
      listen: { hostname: "127.0.0.1", port },
    });
    try {
      const top = await denbdTop(["-b", "-n", "1", `127.0.0.1:${port}`]);
      assert.equal(top.code, 0, top.stderr);
      const [frame] = frames(top.stdout);
      assert.match(frame[0], new RegExp(`^denbd top - 127\\.0\\.0\\.1:${port} - `));
      assert.equal(frame[3], "export '' (id disk, node disk): 0 clients, 0 departed");
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });
});

Deno.test(
  "top on a terminal: the alternate screen, redrawn until q, then the terminal restored",
  needs("script"),
  async () => {
    await withServe(async ({ qmp: qmpSocket }) => {
      const [command, prefix] = denbdCommand();
      const line = [command, ...prefix, "top", "-d", "0.2", qmpSocket].join(" ");
      // script(1) gives top a pseudo-terminal; its input reaches top as keys.
      const child = new Deno.Command("script", {
        args: ["-q", "-e", "-c", `stty cols 120 rows 30; ${line}`, "/dev/null"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).spawn();
      let output = "";
      const decoder = new TextDecoder();
      const reading = child.stdout.pipeTo(
        new WritableStream({ write: (chunk) => void (output += decoder.decode(chunk)) }),
      );
      const keys = child.stdin.getWriter();
      const deadline = Date.now() + 30_000;
      while (output.split("\x1b[H\x1b[2J").length < 3) {
        assert.ok(Date.now() < deadline, `no second frame: ${JSON.stringify(output)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await keys.write(new TextEncoder().encode("q"));
      await keys.close();
      const status = await child.status;
      await reading;
      await child.stderr.cancel();
      assert.equal(status.code, 0, output);
      assert.ok(output.includes("\x1b[?1049h\x1b[?25l"), "the alternate screen, no cursor");
      assert.match(output, /export 'disk' \(id disk, node disk\): 0 clients, 0 departed/);
      assert.ok(output.trimEnd().endsWith("\x1b[?25h\x1b[?1049l"), "the terminal restored last");
    });
  },
);

Deno.test("top: usage mistakes and an unreachable monitor exit 1", async () => {
  const usage = await denbdTop([]);
  assert.equal(usage.code, 1);
  assert.match(usage.stderr, /^denbd top: expected SOCKET\|HOST:PORT\n/);
  const delay = await denbdTop(["-d", "0", "/nonexistent.sock"]);
  assert.equal(delay.code, 1);
  assert.match(delay.stderr, /invalid delay '0'/);
  const missing = await denbdTop(["-b", "/nonexistent/qmp.sock"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^denbd top: cannot connect to '\/nonexistent\/qmp\.sock': /);
  const help = await denbdTop(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: denbd top \[OPTIONS\] SOCKET\|HOST:PORT\n/);
});
