/**
 * QMP monitors driven over in-process Unix sockets with a small command
 * table: greeting, negotiation, id echo, framing errors, ordering, events,
 * misbehaving and vanishing peers, quit and shutdown.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { EventBus } from "../../src/qmp/events.ts";
import { DenbdError } from "../../src/errors.ts";
import { commandFor, CommandTable, QmpError } from "../../src/qmp/command.ts";
import { coreCommands } from "../../src/qmp/core-commands.ts";
import { QmpServer } from "../../src/qmp/monitor.ts";
import { BUILTIN, EMPTY_STRUCT, event, member, optional, struct } from "../../src/qmp/schema.ts";
import { VERSION } from "../../src/version.ts";

/** What the test commands record. */
interface TestState {
  running: number;
  maxRunning: number;
  finished: string[];
  events: EventBus;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait (up to 5 s) until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 250 && !condition(); i++) await sleep(20);
  assert.ok(condition(), "timed out waiting");
}

/** The event the tests emit (QEMU's, with its data). */
const BLOCK_EXPORT_DELETED = event(
  "BLOCK_EXPORT_DELETED",
  struct("q_obj_BLOCK_EXPORT_DELETED-arg", [member("id", BUILTIN.str)]),
);

const testCommand = commandFor<TestState>();

const TEST_COMMANDS = [
  testCommand({
    name: "x-sleep",
    args: struct("x-sleep-arg", [member("ms", BUILTIN.uint32), optional("tag", BUILTIN.str)]),
    async run(context, args) {
      const state = context.state;
      state.maxRunning = Math.max(state.maxRunning, ++state.running);
      await sleep(args.ms);
      state.running--;
      state.finished.push(args.tag ?? "");
      return { slept: args.ms };
    },
  }),
  testCommand({
    name: "x-fail",
    args: struct("x-fail-arg", [optional("class", BUILTIN.str)]),
    run(_context, args) {
      if (args.class) throw new QmpError("DeviceNotFound", "No such device");
      throw new DenbdError("busy", "Node 'n' is busy");
    },
  }),
  testCommand({
    name: "x-emit",
    args: struct("x-emit-arg", [member("id", BUILTIN.str)]),
    run(context, args) {
      context.state.events.emit(BLOCK_EXPORT_DELETED, { id: args.id });
    },
  }),
  testCommand({
    name: "x-big",
    args: struct("x-big-arg", [member("bytes", BUILTIN.uint32)]),
    run(context, args) {
      context.state.finished.push("big");
      return "x".repeat(args.bytes);
    },
  }),
  testCommand({
    name: "x-list",
    args: EMPTY_STRUCT,
    run: () => [1, "two", { three: 3 }],
  }),
];

interface Fixture {
  readonly server: QmpServer<TestState>;
  readonly state: TestState;
  /** The first monitor socket. */
  readonly path: string;
  /** Three monitor sockets (like three --chardev/--monitor pairs), `path` first. */
  readonly paths: readonly string[];
  quits: number;
}

/** Run `body` with a QMP server on a fresh Unix socket; everything is closed afterwards. */
async function withServer(body: (fixture: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-qmp-" });
  const paths = ["qmp.sock", "qmp1.sock", "qmp2.sock"].map((name) => join(dir, name));
  const path = paths[0];
  const state: TestState = { running: 0, maxRunning: 0, finished: [], events: new EventBus() };
  const commands = new CommandTable<TestState>([...coreCommands<TestState>(), ...TEST_COMMANDS]);
  const fixture = {
    state,
    path,
    paths,
    quits: 0,
    server: new QmpServer<TestState>({
      commands,
      state,
      events: state.events,
      requestQuit: () => fixture.quits++,
      limits: { maxValueBytes: 4096 },
    }),
  };
  const serving = paths.map((socket) =>
    fixture.server.serve(Deno.listen({ transport: "unix", path: socket }))
  );
  try {
    await body(fixture);
  } finally {
    await fixture.server.close();
    await Promise.all(serving);
    await Deno.remove(dir, { recursive: true });
  }
}

/** A QMP client that reads whole lines. */
class Client {
  readonly #conn: Deno.UnixConn;
  #buffered = "";
  readonly #decoder = new TextDecoder();

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  static async connect(path: string): Promise<Client> {
    return new Client(await Deno.connect({ transport: "unix", path }));
  }

  /** The next line (without "\r\n"), or null at the end of the stream. */
  async line(): Promise<string | null> {
    for (;;) {
      const end = this.#buffered.indexOf("\r\n");
      if (end >= 0) {
        const line = this.#buffered.slice(0, end);
        this.#buffered = this.#buffered.slice(end + 2);
        return line;
      }
      const buffer = new Uint8Array(65536);
      const count = await this.#conn.read(buffer);
      if (count === null) {
        assert.equal(this.#buffered, "", "unterminated line at end of stream");
        return null;
      }
      this.#buffered += this.#decoder.decode(buffer.subarray(0, count));
    }
  }

  /** The next line, parsed. */
  async json(): Promise<unknown> {
    const line = await this.line();
    assert.notEqual(line, null, "connection closed");
    return JSON.parse(line!);
  }

  async send(text: string): Promise<void> {
    const data = new TextEncoder().encode(text);
    for (let done = 0; done < data.length;) done += await this.#conn.write(data.subarray(done));
  }

  /** Send `text` and return the next reply. */
  async ask(text: string): Promise<unknown> {
    await this.send(text + "\n");
    return this.json();
  }

  /** Connect, read the greeting and negotiate capabilities. */
  static async ready(path: string): Promise<Client> {
    const client = await Client.connect(path);
    await client.line();
    assert.deepEqual(await client.ask('{"execute": "qmp_capabilities"}'), { return: {} });
    return client;
  }

  close(): void {
    this.#conn.close();
  }
}

const genericError = (desc: string) => ({ error: { class: "GenericError", desc } });

Deno.test("greeting: QEMU 7.2.0, denbd's package, oob offered, CRLF-terminated", async () => {
  await withServer(async ({ path }) => {
    const client = await Client.connect(path);
    assert.equal(
      await client.line(),
      `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, ` +
        `"package": "denbd ${VERSION}"}, "capabilities": ["oob"]}}`,
    );
    client.close();
  });
});

Deno.test("capabilities negotiation comes first, and only once", async () => {
  await withServer(async ({ path }) => {
    const client = await Client.connect(path);
    await client.line();
    const expecting = {
      error: {
        class: "CommandNotFound",
        desc: "Expecting capabilities negotiation with 'qmp_capabilities'",
      },
    };
    assert.deepEqual(await client.ask('{"execute": "query-version"}'), expecting);
    assert.deepEqual(await client.ask('{"execute": "nope", "id": 1}'), { ...expecting, id: 1 });
    assert.deepEqual(
      await client.ask('{"exec-oob": "qmp_capabilities", "id": 0}'),
      { ...genericError("QMP input member 'exec-oob' is unexpected"), id: 0 },
    );
    assert.deepEqual(
      await client.ask('{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}'),
      genericError("Parameter 'null' does not accept value 'foo'"),
    );
    assert.equal(
      await (client.send('{"execute": "qmp_capabilities", "id": 1}\n'), client.line()),
      '{"return": {}, "id": 1}',
    );
    assert.deepEqual(await client.ask('{"execute": "qmp_capabilities", "arguments": {}}'), {
      error: {
        class: "CommandNotFound",
        desc: "Capabilities negotiation is already complete, command ignored",
      },
    });
    assert.deepEqual(
      await client.ask('{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}'),
      genericError("Invalid parameter type for 'enable[0]', expected: string"),
    );
    client.close();
  });
});

Deno.test("ids of any JSON type are echoed on replies and errors", async () => {
  await withServer(async ({ path }) => {
    const client = await Client.ready(path);
    for (const id of ['"x"', "7", '{"a": [1, 2]}', "null", "[]", "1.5", "true"]) {
      await client.send(`{"execute": "x-list", "id": ${id}}\n`);
      assert.equal(await client.line(), `{"return": [1, "two", {"three": 3}], "id": ${id}}`);
      await client.send(`{"execute": "nope", "id": ${id}}\n`);
      assert.equal(
        await client.line(),
        `{"id": ${id}, "error": {"class": "CommandNotFound", ` +
          `"desc": "The command nope has not been found"}}`,
      );
    }
    client.close();
  });
});

Deno.test("malformed requests get qsd's errors", async () => {
  await withServer(async ({ path }) => {
    const client = await Client.ready(path);
    const cases: [string, unknown][] = [
      ["[1]", genericError("QMP input must be a JSON object")],
      ['"str"', genericError("QMP input must be a JSON object")],
      ["null", genericError("QMP input must be a JSON object")],
      ['{"id": 5}', { ...genericError("QMP input lacks member 'execute'"), id: 5 }],
      ["{}", genericError("QMP input lacks member 'execute'")],
      ['{"execute": 1}', genericError("QMP input member 'execute' must be a string")],
      [
        '{"execute": "x-list", "arguments": []}',
        genericError("QMP input member 'arguments' must be an object"),
      ],
      ['{"arguments": 5}', genericError("QMP input member 'arguments' must be an object")],
      ['{"foo": 1}', genericError("QMP input member 'foo' is unexpected")],
      [
        '{"execute": "x-list", "foo": 1, "execute2": 2}',
        genericError(
          "QMP input member 'execute2' is unexpected",
        ),
      ],
      [
        '{"execute": "query-version", "id": "A", "zzz": 1, "aaa": 2, "arguments": 5}',
        { ...genericError("QMP input member 'aaa' is unexpected"), id: "A" },
      ],
      ['{"execute": "x-list", "arguments": {"x": 1}}', genericError("Parameter 'x' is unexpected")],
      ["}", genericError("JSON parse error, expecting value")],
      ["nonsense", genericError("JSON parse error, invalid keyword 'nonsense'")],
    ];
    for (const [input, reply] of cases) assert.deepEqual(await client.ask(input), reply, input);
    client.close();
  });
});

Deno.test("out-of-band execution: refused until enabled, then per command", async () => {
  await withServer(async ({ path }) => {
    const client = await Client.connect(path);
    await client.line();
    await client.ask('{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}');
    const cases: [string, unknown][] = [
      [
        '{"exec-oob": "nope", "id": 1}',
        { error: { class: "CommandNotFound", desc: "The command nope has not been found" }, id: 1 },
      ],
      [
        '{"exec-oob": "x-list", "execute": "x-list", "id": 2}',
        { ...genericError("QMP input member 'execute' clashes with 'exec-oob'"), id: 2 },
      ],
      [
        '{"exec-oob": "x-list", "arguments": {"x": 1}, "id": 3}',
        { ...genericError("The command x-list does not support OOB"), id: 3 },
      ],
      ['{"exec-oob": 1}', genericError("QMP input member 'exec-oob' must be a string")],
    ];
    for (const [input, reply] of cases) assert.deepEqual(await client.ask(input), reply, input);
    client.close();
  });
});

Deno.test("command errors: a DenbdError is a GenericError, a QmpError keeps its class", async () => {
  await withServer(async ({ path }) => {
    const client = await Client.ready(path);
    assert.deepEqual(
      await client.ask('{"execute": "x-fail", "id": 1}'),
      { ...genericError("Node 'n' is busy"), id: 1 },
    );
    assert.deepEqual(await client.ask('{"execute": "x-fail", "arguments": {"class": "x"}}'), {
      error: { class: "DeviceNotFound", desc: "No such device" },
    });
    client.close();
  });
});

Deno.test("commands of one monitor run one at a time, in order, however they arrive", async () => {
  await withServer(async ({ path, state }) => {
    const client = await Client.ready(path);
    const requests = Array.from(
      { length: 30 },
      (_, i) => `{"execute": "x-sleep", "arguments": {"ms": ${i % 3}, "tag": "${i}"}, "id": ${i}}`,
    );
    const text = requests.join("") + "}\n";
    for (let i = 0; i < text.length; i += 7) await client.send(text.slice(i, i + 7));
    for (let i = 0; i < 30; i++) {
      assert.deepEqual(await client.json(), { return: { slept: i % 3 }, id: i });
    }
    assert.deepEqual(await client.json(), genericError("JSON parse error, expecting value"));
    assert.equal(state.maxRunning, 1);
    assert.deepEqual(state.finished, requests.map((_, i) => String(i)));
    client.close();
  });
});

Deno.test("events reach only negotiated monitors, in QEMU's format", async () => {
  await withServer(async ({ paths, state }) => {
    const negotiated = await Client.ready(paths[0]);
    const waiting = await Client.connect(paths[1]);
    await waiting.line();
    await negotiated.send('{"execute": "x-emit", "arguments": {"id": "e0"}, "id": 1}\n');
    const event = await negotiated.json() as Record<string, unknown>;
    assert.deepEqual(event, { ...event, event: "BLOCK_EXPORT_DELETED", data: { id: "e0" } });
    assert.deepEqual(await negotiated.json(), { return: {}, id: 1 });
    state.events.emit(BLOCK_EXPORT_DELETED, { id: "e1" });
    const line = await negotiated.line();
    assert.match(
      line!,
      /^\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "BLOCK_EXPORT_DELETED", "data": \{"id": "e1"\}\}$/,
    );
    const { seconds } = (JSON.parse(line!) as { timestamp: { seconds: number } }).timestamp;
    assert.ok(Math.abs(seconds - Date.now() / 1000) < 60);
    // The waiting monitor saw no event: its next line is the reply to its request.
    assert.deepEqual(
      await waiting.ask('{"execute": "query-version", "id": 1}'),
      {
        error: {
          class: "CommandNotFound",
          desc: "Expecting capabilities negotiation with 'qmp_capabilities'",
        },
        id: 1,
      },
    );
    negotiated.close();
    waiting.close();
  });
});

Deno.test("a peer that floods or leaves mid-command affects only itself", async () => {
  await withServer(async ({ paths, state }) => {
    const flooder = await Client.ready(paths[0]);
    const leaver = await Client.ready(paths[1]);
    const bystander = await Client.ready(paths[2]);
    await flooder.send('{"execute": "x-list", "arguments": {"pad": "' + "x".repeat(10000));
    assert.deepEqual(await flooder.json(), genericError("JSON token size limit exceeded"));
    await leaver.send('{"execute": "x-sleep", "arguments": {"ms": 100, "tag": "left"}}\n');
    await until(() => state.running === 1);
    leaver.close();
    assert.deepEqual(await bystander.ask('{"execute": "x-list", "id": 1}'), {
      return: [1, "two", { three: 3 }],
      id: 1,
    });
    await until(() => state.finished.length > 0);
    assert.deepEqual(state.finished, ["left"]);
    await flooder.send('"}\n\x01{"execute": "x-list", "id": 2}');
    for (;;) {
      const reply = await flooder.json() as Record<string, unknown>;
      if (!("error" in reply)) {
        assert.deepEqual(reply, { return: [1, "two", { three: 3 }], id: 2 });
        break;
      }
    }
    flooder.close();
    bystander.close();
  });
});

Deno.test("requests sent before the peer half-closes are all answered", async () => {
  await withServer(async ({ path }) => {
    const conn = await Deno.connect({ transport: "unix", path });
    await conn.write(new TextEncoder().encode(
      '{"execute": "qmp_capabilities"}{"execute": "x-sleep", "arguments": {"ms": 20}, "id": 1}' +
        '{"execute": "query-version", "id": 2}',
    ));
    await conn.closeWrite();
    const output = new TextDecoder().decode(
      (await new Response(conn.readable).arrayBuffer()) as ArrayBuffer,
    );
    const lines = output.split("\r\n");
    assert.equal(lines.length, 5);
    assert.equal(lines[1], '{"return": {}}');
    assert.equal(lines[2], '{"return": {"slept": 20}, "id": 1}');
    assert.match(lines[3], /"id": 2\}$/);
    assert.equal(lines[4], "");
  });
});

Deno.test("quit replies, asks the daemon to end, and closes the session", async () => {
  await withServer(async (fixture) => {
    const client = await Client.ready(fixture.path);
    await client.send('{"execute": "quit", "id": 9}\n{"execute": "x-list"}\n');
    assert.deepEqual(await client.json(), { return: {}, id: 9 });
    assert.equal(await client.line(), null);
    assert.equal(fixture.quits, 1);
    client.close();
  });
});

Deno.test("query-version and query-commands", async () => {
  await withServer(async ({ path }) => {
    const client = await Client.ready(path);
    assert.deepEqual(await client.ask('{"execute": "query-version"}'), {
      return: { qemu: { micro: 0, minor: 2, major: 7 }, package: `denbd ${VERSION}` },
    });
    assert.deepEqual(await client.ask('{"execute": "query-commands"}'), {
      return: [
        "x-list",
        "x-big",
        "x-emit",
        "x-fail",
        "x-sleep",
        "quit",
        "query-commands",
        "query-version",
        "qmp_capabilities",
      ].map((name) => ({ name })),
    });
    client.close();
  });
});

Deno.test("closing the server lets a running command reply, then ends every session", async () => {
  await withServer(async ({ path, paths, server, state }) => {
    const busy = await Client.ready(path);
    const idle = await Client.ready(paths[1]);
    await busy.send('{"execute": "x-sleep", "arguments": {"ms": 50}, "id": 1}\n');
    await until(() => state.running === 1);
    await server.close();
    assert.deepEqual(await busy.json(), { return: { slept: 50 }, id: 1 });
    assert.equal(await busy.line(), null);
    assert.equal(await idle.line(), null);
    await assert.rejects(Client.connect(path));
    busy.close();
    idle.close();
  });
});

Deno.test("one client per monitor socket at a time: the next is greeted when it leaves", async () => {
  await withServer(async ({ path }) => {
    const first = await Client.ready(path);
    const second = await Client.connect(path);
    const greeting = second.line();
    const early = await Promise.race([
      greeting.then(() => "greeted"),
      new Promise((resolve) => setTimeout(() => resolve("waiting"), 200)),
    ]);
    assert.equal(early, "waiting", "no greeting while the first client is connected");
    first.close();
    assert.match((await greeting)!, /^\{"QMP": /);
    second.close();
  });
});

Deno.test("a peer that never reads its replies is no longer answered once 256 KiB wait", async () => {
  await withServer(async ({ path, state }) => {
    const client = await Client.ready(path);
    // 40 small requests in one write, each answered with a reply of about 1 MB.
    await client.send('{"execute": "x-big", "arguments": {"bytes": 1000000}}\n'.repeat(40));
    await until(() => state.finished.length > 0);
    await sleep(300);
    // The first reply alone exceeds the bound: nothing more is answered until it is written
    // (without the bound, 32 replies, 32 MB, were made and held for a peer that never reads).
    assert.equal(state.finished.length, 1, "commands run while the peer does not read");
    for (let i = 0; i < 40; i++) {
      const line = await client.line();
      assert.equal(line?.length, '{"return": ""}'.length + 1_000_000);
    }
    assert.equal(state.finished.length, 40);
    client.close();
  });
});
