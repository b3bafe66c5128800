/**
 * `denbd qmp` against qemu-storage-daemon 7.2 (and denbd daemon): one-shot
 * commands (JSON or KEY=VALUE arguments; return value printed, errors on
 * standard error with exit 1), over a Unix socket and over TCP at each
 * address of a name; the shell in qmp-shell's syntax fed from a pipe
 * (replies equal to the JSON form's, nested keys, transactions, help, the
 * exit status of a failing script); and on a terminal (a pty driven by
 * Python): Tab completion from the server's schema and history across
 * sessions.
 */

import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import { join } from "node:path";
import {
  type CommandResult,
  denbdCommand,
  freePort,
  launch,
  needs,
  python,
  qmpMonitorArgs,
  run,
  type ServerProcess,
  withTempDir,
} from "./harness.ts";
import { makePlace, startDaemon } from "./daemon_harness.ts";

function denbdQmp(args: string[], stdin?: string): Promise<CommandResult> {
  const [command, prefix] = denbdCommand();
  return run(command, [...prefix, "qmp", ...args], {
    stdin: stdin === undefined ? undefined : new TextEncoder().encode(stdin),
    timeoutMs: 30_000,
  });
}

/** The shell fed `lines` from a pipe. */
function denbdScript(target: string, lines: readonly string[], flags: string[] = []) {
  return denbdQmp([...flags, target], lines.join("\n") + "\n");
}

/** The JSON messages of the shell's (one line each) output. */
function messages(stdout: string): Record<string, unknown>[] {
  return stdout.trimEnd().split("\n").map((line) => JSON.parse(line));
}

/** Where {@linkcode withQsd}'s qsd listens. */
interface QsdOptions {
  /** The address of the TCP monitor (default 127.0.0.1). */
  readonly tcpHost?: string;
  /** Start an NBD server (on `DIR/nbd.sock`) from the command line. */
  readonly nbdServer?: boolean;
}

/**
 * Run `body` with qsd serving QMP on `DIR/qmp.sock` and on a TCP port of
 * `tcpHost` (that address alone), with a null node n0.
 */
async function withQsd(
  body: (qmp: string, tcp: string, dir: string) => Promise<void>,
  { tcpHost = "127.0.0.1", nbdServer = false }: QsdOptions = {},
): Promise<void> {
  await withTempDir(async (dir) => {
    const socket = join(dir, "qmp.sock");
    const port = freePort();
    const qsd: ServerProcess = await launch({
      command: "qemu-storage-daemon",
      args: [
        "--blockdev",
        "driver=null-co,node-name=n0",
        ...(nbdServer ? ["--nbd-server", `addr.type=unix,addr.path=${join(dir, "nbd.sock")}`] : []),
        "--chardev",
        `socket,id=tcp0,host=${tcpHost},port=${port},server=on,wait=off,ipv4=${
          tcpHost.includes(":") ? "off" : "on"
        },ipv6=${tcpHost.includes(":") ? "on" : "off"}`,
        "--monitor",
        "chardev=tcp0",
        ...qmpMonitorArgs(socket),
      ],
      uri: "",
      listen: socket,
    });
    try {
      const host = tcpHost.includes(":") ? `[${tcpHost}]` : tcpHost;
      await body(socket, `${host}:${port}`, dir);
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
    /^Usage: denbd qmp \[OPTIONS\] SOCKET\|HOST:PORT \[COMMAND \[JSON-ARGS \| KEY=VALUE \.\.\.\]\]/,
  );
  assert.match(help.stdout, /-p, --pretty/);
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
      const missingKv = await denbdQmp([socket, "block-export-del", "id=nope", "mode=hard"]);
      assert.deepEqual([missingKv.code, missingKv.stderr], [1, "Export 'nope' is not found\n"]);
      const unknown = await denbdQmp([tcp, "nope"]);
      assert.deepEqual([unknown.code, unknown.stderr], [
        1,
        "The command nope has not been found\n",
      ]);
      const invalid = await denbdQmp([socket, "query-version", '{"x": 1}']);
      assert.deepEqual([invalid.code, invalid.stderr], [1, "Parameter 'x' is unexpected\n"]);
      const badJson = await denbdQmp([socket, "query-version", "{x}"]);
      assert.equal(badJson.code, 1);
      assert.match(badJson.stderr, /Invalid arguments: JSON parse error/);
      const badPair = await denbdQmp([socket, "query-version", "x"]);
      assert.equal(badPair.code, 1);
      assert.match(badPair.stderr, /Expected a key=value pair, got 'x'/);
    });
  },
);

Deno.test(
  "one-shot KEY=VALUE: blockdev-add with a file node, as its JSON form",
  needs("qemu-storage-daemon"),
  async () => {
    await withQsd(async (socket, _, dir) => {
      const image = join(dir, "x.img");
      await Deno.writeFile(image, new Uint8Array(65536));
      const kv = await denbdQmp([
        socket,
        "blockdev-add",
        "driver=file",
        "node-name=f0",
        `filename=${image}`,
        "read-only=true",
      ]);
      assert.deepEqual([kv.code, kv.stdout, kv.stderr], [0, "{}\n", ""]);
      const json = await denbdQmp([
        socket,
        "blockdev-add",
        JSON.stringify({ driver: "file", "node-name": "f1", filename: image, "read-only": true }),
      ]);
      assert.deepEqual([json.code, json.stdout, json.stderr], [0, "{}\n", ""]);
      const nodes = JSON.parse((await denbdQmp([socket, "query-named-block-nodes"])).stdout);
      const described = (name: string) => {
        const node = nodes.find((n: { "node-name": string }) => n["node-name"] === name);
        return { ro: node.ro, drv: node.drv, file: node.file, size: node.image["virtual-size"] };
      };
      assert.deepEqual(described("f0"), described("f1"));
      assert.deepEqual(described("f0"), { ro: true, drv: "file", file: image, size: 65536 });
    });
  },
);

Deno.test("an unreachable monitor is an error with exit 1", async () => {
  await withTempDir(async (dir) => {
    const result = await denbdQmp([join(dir, "none.sock"), "query-version"]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /cannot connect to '.*none\.sock'/);
  });
  const port = freePort();
  const refused = await denbdQmp([`localhost:${port}`, "query-version"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, new RegExp(`cannot connect to 'localhost:${port}': .*refused`));
});

Deno.test(
  "HOST:PORT with a name reaches qsd at whichever address it listens on",
  needs("qemu-storage-daemon"),
  async () => {
    // Each address localhost has (/etc/hosts: 127.0.0.1, often ::1 as well), qsd on it alone.
    const addresses = new Set((await lookup("localhost", { all: true })).map((a) => a.address));
    for (const address of ["127.0.0.1", "::1"]) {
      await withQsd(async (_, tcp) => {
        const port = tcp.slice(tcp.lastIndexOf(":") + 1);
        const literal = await denbdQmp([tcp, "query-block-exports"]);
        assert.deepEqual([literal.code, literal.stdout], [0, "[]\n"], literal.stderr);
        if (!addresses.has(address)) return;
        const named = await denbdQmp([`localhost:${port}`, "query-block-exports"]);
        assert.deepEqual([named.code, named.stdout], [0, "[]\n"], named.stderr);
      }, { tcpHost: address });
    }
    assert.ok(addresses.has("127.0.0.1") || addresses.has("::1"));
  },
);

Deno.test(
  "the shell: KEY=VALUE lines get the same replies as their JSON forms",
  needs("qemu-storage-daemon"),
  async () => {
    const kvLines = [
      "block-export-add type=nbd id=e0 node-name=n0 writable=false",
      "query-block-exports",
      "block-dirty-bitmap-add node=n0 name=b0 granularity=65536 persistent=false",
      "block-export-del id=e0 mode=hard",
      "block-export-del id=e0",
    ];
    const jsonLines = [
      'block-export-add {"type": "nbd", "id": "e0", "node-name": "n0", "writable": false}',
      '{"execute": "query-block-exports"}',
      '{"execute": "block-dirty-bitmap-add", "arguments": ' +
      '{"node": "n0", "name": "b0", "granularity": 65536, "persistent": false}}',
      'block-export-del {"id": "e0", "mode": "hard"}',
      'block-export-del {"id": "e0"}',
    ];
    const transcripts: unknown[][] = [];
    for (const lines of [kvLines, jsonLines]) {
      await withQsd(async (socket) => {
        const result = await denbdScript(socket, lines);
        assert.equal(result.code, 1, "the last line fails");
        assert.equal(
          result.stderr,
          "denbd qmp: line 5: block-export-del: Export 'e0' is not found\n",
        );
        transcripts.push(
          messages(result.stdout).map((message) => {
            if (message.event) return { event: message.event, data: message.data };
            return message;
          }),
        );
      }, { nbdServer: true });
    }
    assert.deepEqual(transcripts[0], transcripts[1]);
    assert.deepEqual(transcripts[0], [
      { return: {} },
      { return: [{ "node-name": "n0", "shutting-down": false, type: "nbd", id: "e0" }] },
      { return: {} },
      { event: "BLOCK_EXPORT_DELETED", data: { id: "e0" } },
      { return: {} },
      { error: { class: "GenericError", desc: "Export 'e0' is not found" } },
    ]);
  },
);

Deno.test(
  "the shell: nested keys start an NBD server that nbdinfo reaches; transactions",
  needs("qemu-storage-daemon", "nbdinfo"),
  async () => {
    await withQsd(async (socket) => {
      const port = freePort();
      const result = await denbdScript(socket, [
        `nbd-server-start addr.type=inet addr.data.host=127.0.0.1 addr.data.port='${port}'`,
        "block-export-add type=nbd id=e0 node-name=n0 name=disk",
        "transaction(",
        "block-dirty-bitmap-add node=n0 name=b0",
        "block-dirty-bitmap-add node=n0 name=b1 disabled=true",
        ")",
        "transaction( block-dirty-bitmap-remove node=n0 name=b1 )",
      ], ["-v"]);
      assert.deepEqual([result.code, result.stderr], [0, ""]);
      const sent = messages(result.stdout);
      assert.deepEqual(sent[0], {
        execute: "nbd-server-start",
        arguments: { addr: { type: "inet", data: { host: "127.0.0.1", port: String(port) } } },
      });
      assert.deepEqual(sent[1], { return: {} });
      assert.deepEqual(sent[4], {
        execute: "transaction",
        arguments: {
          actions: [
            { type: "block-dirty-bitmap-add", data: { node: "n0", name: "b0" } },
            { type: "block-dirty-bitmap-add", data: { node: "n0", name: "b1", disabled: true } },
          ],
        },
      });
      assert.deepEqual(sent.slice(5), [
        { return: {} },
        {
          execute: "transaction",
          arguments: {
            actions: [{ type: "block-dirty-bitmap-remove", data: { node: "n0", name: "b1" } }],
          },
        },
        { return: {} },
      ]);
      const size = await run("nbdinfo", ["--size", `nbd://127.0.0.1:${port}/disk`]);
      assert.deepEqual([size.code, size.stdout], [0, "1073741824\n"], size.stderr);
      const bitmaps = await denbdQmp([socket, "query-named-block-nodes"]);
      const node = JSON.parse(bitmaps.stdout).find((n: { "node-name": string }) =>
        n["node-name"] === "n0"
      );
      assert.deepEqual(node["dirty-bitmaps"].map((b: { name: string }) => b.name), ["b0"]);
    });
  },
);

Deno.test(
  "the shell from a pipe: exit 0 when every line succeeds, 1 naming each failed line",
  needs("qemu-storage-daemon"),
  async () => {
    await withQsd(async (socket) => {
      const good = await denbdScript(socket, ["query-block-exports", "", "quit"]);
      assert.deepEqual([good.code, good.stderr], [0, ""]);
      assert.deepEqual(messages(good.stdout), [{ return: [] }, { return: {} }]);
    });
    await withQsd(async (socket) => {
      const bad = await denbdScript(socket, [
        "block-export-del id=nope",
        "query-block-exports x",
        "not json {",
        "nope",
        "query-block-exports",
        "help nope",
      ]);
      assert.equal(bad.code, 1);
      assert.equal(
        bad.stderr,
        [
          "denbd qmp: line 1: block-export-del: Export 'nope' is not found",
          "denbd qmp: line 2: Error while parsing command line: Expected a key=value pair, got 'x'",
          "denbd qmp: line 3: Error while parsing command line: Expected a key=value pair, got 'json'",
          "denbd qmp: line 4: nope: The command nope has not been found",
          "denbd qmp: line 6: help: the command nope has not been found",
          "",
        ].join("\n"),
      );
      assert.deepEqual(messages(bad.stdout), [
        { error: { class: "GenericError", desc: "Export 'nope' is not found" } },
        { error: { class: "CommandNotFound", desc: "The command nope has not been found" } },
        { return: [] },
      ]);
    });
  },
);

Deno.test(
  "the shell: help lists the commands and shows one command's arguments; -p indents, sorted",
  needs("qemu-storage-daemon"),
  async () => {
    await withQsd(async (socket) => {
      const result = await denbdScript(
        socket,
        ["help", "help block-export-del", "query-version"],
        ["-p"],
      );
      assert.deepEqual([result.code, result.stderr], [0, ""]);
      assert.match(result.stdout, /^Type COMMAND \[KEY=VALUE \.\.\.\]/);
      assert.match(result.stdout, /\nCommands:\n {2}/);
      assert.match(result.stdout, / blockdev-add /);
      assert.match(
        result.stdout,
        /\nblock-export-del id=<str> \[mode=safe\|hard\]\n {2}returns \{\}\n\{\n/,
      );
      assert.match(
        result.stdout,
        /\n\{\n {4}"return": \{\n {8}"package": "[^"]*",\n {8}"qemu": \{\n {12}"major": 7,\n {12}"micro": \d+,\n {12}"minor": 2\n {8}\}\n {4}\}\n\}\n$/,
      );
      const oneShot = await denbdQmp([socket, "help", "nbd-server-start"]);
      assert.equal(oneShot.code, 0, oneShot.stderr);
      assert.match(oneShot.stdout, /^nbd-server-start \[tls-creds=<str>\]/);
      assert.match(oneShot.stdout, /\n {2}addr\.data\.path=<str> {2}if addr\.type=unix\n/);
    });
  },
);

Deno.test(
  "a script on a pipe that stays open ends when the server hangs up",
  needs("qemu-storage-daemon"),
  async () => {
    await withQsd(async (socket) => {
      const [command, prefix] = denbdCommand();
      const child = new Deno.Command(command, {
        args: [...prefix, "qmp", socket],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const input = child.stdin.getWriter();
      await input.write(new TextEncoder().encode("quit\n"));
      const deadline = setTimeout(() => child.kill("SIGKILL"), 20_000);
      try {
        const { code, stdout, stderr } = await child.output();
        const errors = new TextDecoder().decode(stderr);
        assert.equal(code, 0, `exit status while its input is still open\n${errors}`);
        assert.match(new TextDecoder().decode(stdout), /^\{"return": \{\}\}/);
        assert.equal(errors, "", "no reply was due when it hung up");
      } finally {
        clearTimeout(deadline);
        await input.close().catch(() => {});
      }
    });
  },
);

Deno.test("the shell on denbd daemon: commands and their arguments from its query-qmp-schema", async () => {
  await withTempDir(async (root) => {
    const place = await makePlace(root, "denbd", {});
    const daemon = await startDaemon(place, { args: [] });
    try {
      const result = await denbdScript(daemon.qmpPath, [
        "help",
        "help block-export-del",
        "query-block-exports",
      ]);
      assert.deepEqual([result.code, result.stderr], [0, ""]);
      assert.match(result.stdout, /\nCommands:\n.* quit/s);
      assert.match(result.stdout, /\nblock-export-del id=<str> \[mode=safe\|hard\]\n/);
      assert.match(result.stdout, /\n\{"return": \[\]\}\n$/);
    } finally {
      await daemon.process.stop();
    }
  });
});

/** Runs a program on a pseudo-terminal and types what a script says (see onTerminal). */
const PTY_DRIVER = `
import json, os, pty, select, sys, time
argv, extra, steps = (json.loads(arg) for arg in sys.argv[1:4])
pid, fd = pty.fork()
if pid == 0:
    os.execve(argv[0], argv, dict(os.environ, **extra))
out, seen, deadline = b"", 0, time.time() + 45

def pump(wait):
    """Read what arrives within wait seconds; False at the end of output."""
    global out
    if not select.select([fd], [], [], wait)[0]:
        return True
    try:
        data = os.read(fd, 65536)
    except OSError:
        return False
    out += data
    return bool(data)

def fail(why):
    os.kill(pid, 9)
    sys.stdout.write(out.decode(errors="replace"))
    sys.exit(why)

for wait_for, keys in steps:
    while wait_for.encode() not in out[seen:]:
        if time.time() > deadline or not pump(0.2):
            fail("never saw " + repr(wait_for))
    seen = out.index(wait_for.encode(), seen) + len(wait_for)
    os.write(fd, keys.encode())
while pump(0.2):
    if time.time() > deadline:
        fail("still running")
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
`;

/**
 * Run `denbd qmp TARGET` on a pseudo-terminal with XDG_STATE_HOME=`stateHome`:
 * for each [WAIT, KEYS], wait (bounded) until WAIT appears after what the
 * previous step waited for, then type KEYS; return everything the terminal
 * showed once the program has exited.
 */
async function onTerminal(
  target: string,
  stateHome: string,
  script: readonly [string, string][],
): Promise<string> {
  const [command, prefix] = denbdCommand();
  const result = await python(PTY_DRIVER, [
    JSON.stringify([command, ...prefix, "qmp", target]),
    JSON.stringify({ XDG_STATE_HOME: stateHome }),
    JSON.stringify(script),
  ]);
  assert.equal(result.code, 0, result.stderr + result.stdout);
  return result.stdout;
}

Deno.test(
  "on a terminal: Tab completes from qsd's schema; history is kept across sessions",
  needs("qemu-storage-daemon"),
  async () => {
    await withQsd(async (socket, _, dir) => {
      const state = join(dir, "state");
      const first = await onTerminal(socket, state, [
        ["(QMP) ", "block-export-d\t"],
        ["block-export-del ", "i\t"],
        ["id=", "e0 \t"],
        ["mode=", "\t"],
        ["mode=safe", "h\t\r"],
        ["not found", ""],
        ["(QMP) ", "query-block-exp\t\r"],
        ['{"return": []}', ""],
        ["(QMP) ", "\x04"],
      ]);
      assert.match(first, /Welcome to the QMP low-level shell!\r?\nConnected to QEMU 7\.2\.\d+/);
      assert.match(first, /mode=hard +mode=safe/, "a Tab after a Tab lists mode's values");
      assert.match(
        first,
        /\{"error": \{"class": "GenericError", "desc": "Export 'e0' is not found"\}\}/,
      );
      const history = join(state, "denbd", "qmp_history");
      assert.equal(
        await Deno.readTextFile(history),
        "block-export-del id=e0 mode=hard \nquery-block-exports \n",
      );
      assert.equal((await Deno.stat(history)).mode! & 0o777, 0o600);

      const second = await onTerminal(socket, state, [
        ["(QMP) ", "\x1b[A\x1b[A\r"],
        ["not found", ""],
        ["(QMP) ", "\x04"],
      ]);
      assert.match(second, /\(QMP\) block-export-del id=e0 mode=hard/);
    });
  },
);
